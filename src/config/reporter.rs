//! Wire types of the `reporters:` config section and their validation into
//! [`ReporterSettings`] (compiled regexes, checked limits), without IO: the
//! settings `crate::report` runs on. The category and source lists are the ones
//! the ipinsights report endpoint documents; its client takes them from here.
//!
//! Every problem is returned at once, keyed by its path below the reporter
//! (`rules[0].when[1].matches`), so `config::validate` can prefix `reporters[i].`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// The provider's own duplicate window: "the same IP repeatedly within 15 minutes
/// from the same key is rate-limited" (ipinsights-api.txt, report section).
pub const MIN_COOLDOWN: Duration = Duration::from_secs(15 * 60);

/// Placeholders a comment template may use.
pub const PLACEHOLDERS: [&str; 9] = [
    "ip",
    "rule",
    "count",
    "findtime",
    "categories",
    "source",
    "sample",
    "reporter",
    "threat_score",
];

// The report endpoint's documented limits and fixed lists (ipinsights-api.txt,
// report section): the YAML names them as the API does.

/// Documented report limits.
pub const MAX_REPORT_CATEGORIES: usize = 5;
/// Documented comment limit (characters).
pub const MAX_REPORT_COMMENT: usize = 1024;

/// A report category, from the documented fixed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportCategory {
    SshBruteforce,
    RdpBruteforce,
    WebBruteforce,
    WebAttack,
    SqlInjection,
    Xss,
    PortScan,
    VulnerabilityScan,
    ExploitAttempt,
    CredentialStuffing,
    Phishing,
    Spam,
    Malware,
    Ddos,
    Botnet,
    C2,
    TorAbuse,
    OpenProxyAbuse,
    Other,
}

/// The integration that saw the attacker, from the documented fixed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportSource {
    Wazuh,
    Graylog,
    Splunk,
    Sentinel,
    Crowdsec,
    Fail2ban,
    Suricata,
    Thehive,
    N8n,
    HomeAssistant,
    Manual,
}

/// One reporter: signal stage, decision stage, submitter, audit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReporterConfig {
    /// Name used in metric labels, logs and the default consumer group ids.
    pub name: String,
    /// Kafka bootstrap servers (`host:port,host:port`).
    pub brokers: String,
    /// Enriched topics to read: the `sink.kafka.topic` of the pipelines to watch.
    pub topics: Vec<String>,
    /// Dotted path of the enrichment object in those events (the pipeline's
    /// `output.field`, e.g. `event.enrichment`).
    #[serde(default = "default_enrichment_field")]
    pub enrichment_field: String,
    /// Consumer group of the signal stage; default `ipenrich-report-<name>-signals`.
    #[serde(default)]
    pub signal_group_id: Option<String>,
    /// Consumer group of the decision stage; default `ipenrich-report-<name>-decide`.
    #[serde(default)]
    pub decision_group_id: Option<String>,
    /// Topic the signals go to, keyed by attacker IP (one partition per IP).
    pub signals_topic: String,
    /// Compacted topic of per-IP counters and the report ledger, keyed by IP. Needs at
    /// least as many partitions as `signals_topic` (partition n holds the state of
    /// the IPs of signal partition n).
    pub changelog_topic: String,
    /// Create the signals, changelog and audit topics at start when they are
    /// missing (default true): the changelog with `cleanup.policy=compact` and the
    /// signals topic's partition count. Where the brokers do not permit it, start
    /// (and `ipenrich check`) say which topic to create and how.
    #[serde(default = "default_create_topics")]
    pub create_topics: bool,
    /// Partitions of a signals topic created at start (default 6): the most
    /// decision replicas that share the work.
    #[serde(default = "default_topic_partitions")]
    pub topic_partitions: i32,
    /// Replication factor of created topics; -1 (default) is the brokers'
    /// `default.replication.factor`.
    #[serde(default = "default_topic_replication")]
    pub topic_replication_factor: i32,
    /// Extra librdkafka properties for every client of this reporter (`security.protocol`, `sasl.*`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Which events are attack signals. An event may match several rules.
    pub rules: Vec<RuleConfig>,
    /// Networks never reported: your own, partners, scanners you trust.
    #[serde(default)]
    pub allow_list: Vec<IpNet>,
    /// Least time between two reports of one IP; at least 15 minutes.
    #[serde(default = "default_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
    /// Most reports per UTC day for the whole group: each signal partition gets its
    /// share (`daily_cap` ÷ partitions), counted in the changelog its owner keeps, so
    /// no number of replicas, restarts or rebalances exceeds the cap. At least the
    /// signals topic's partition count.
    #[serde(default = "default_daily_cap")]
    pub daily_cap: u32,
    /// Dotted path of the field that says when an event happened (Wazuh and
    /// Suricata `timestamp`, or `message` for a syslog line); without it, or when
    /// it does not parse, the record's Kafka timestamp (the input record's, carried
    /// through the pipeline). `findtime` is counted in this time.
    #[serde(default)]
    pub event_time_field: Option<String>,
    /// How much older than `findtime` a signal may be (relative to now) and still
    /// count; older ones are audited `stale` and never count. Default 0.
    #[serde(default, with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Most attackers (IPs, IPv6 networks) a decision replica keeps in memory; past
    /// it the least recently signalled is forgotten (its reports still count
    /// against the day's cap). Default 1,000,000.
    #[serde(default = "default_max_tracked")]
    pub max_tracked: usize,
    /// IPv6 attackers are one attacker per network of this many bits (default 64):
    /// counted, reported and cooled down together, whichever address they use.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// Log and audit what would be sent, send nothing.
    #[serde(default = "default_dry_run")]
    pub dry_run: bool,
    /// The report comment.
    #[serde(default)]
    pub comment: CommentConfig,
    /// The ipinsights endpoint and key; required unless `dry_run`.
    #[serde(default)]
    pub ipinsights: Option<IpInsightsConfig>,
    /// Where every decision is written.
    pub audit: AuditConfig,
    /// Attempts per report on 429 and transient errors before it is audited `failed`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

/// Merge's default field name (README "Output").
fn default_enrichment_field() -> String {
    "enrichment".to_owned()
}

/// The issue: "cooldown per IP (default 60 min, never below the provider's 15 min)".
fn default_cooldown() -> Duration {
    Duration::from_secs(60 * 60)
}

/// Each report costs one unit of the hourly lookup quota (ipinsights-api.txt); 500 a
/// day leaves most of a small plan to lookups.
fn default_daily_cap() -> u32 {
    500
}

/// The issue: an example must start on a fresh broker.
fn default_create_topics() -> bool {
    true
}

/// Six decision replicas at most; more than a reporter's load needs.
fn default_topic_partitions() -> i32 {
    6
}

/// The brokers' `default.replication.factor`.
fn default_topic_replication() -> i32 {
    -1
}

/// A million attackers of ~200 bytes each: ~200 MB at worst, far more than a
/// day of real attacks.
fn default_max_tracked() -> usize {
    1_000_000
}

/// A /64 is what one subscriber or one server gets; rotating through it is one attacker.
fn default_ipv6_prefix() -> u8 {
    64
}

/// The issue: dry-run is the default; sending is an explicit decision.
fn default_dry_run() -> bool {
    true
}

/// A 429 pause is usually seconds; five attempts ride out a short burst.
fn default_max_attempts() -> u32 {
    5
}

/// One signal rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule name: counters are kept per rule; shown in comments and the audit.
    pub name: String,
    /// Conditions that must all hold.
    pub when: Vec<ConditionConfig>,
    /// Which address of the event is the attacker.
    pub attacker: AttackerConfig,
    /// One to five ipinsights categories.
    pub categories: Vec<ReportCategory>,
    /// The ipinsights `source` value (wazuh, splunk, fail2ban, suricata, ...).
    pub source: ReportSource,
    /// Signals needed within `findtime` before the IP is reported.
    #[serde(default = "default_maxretry")]
    pub maxretry: u32,
    /// Window in which `maxretry` signals must fall.
    #[serde(default = "default_findtime", with = "humantime_serde")]
    pub findtime: Duration,
    /// Also require a threat score (0-100) of at least this in the enrichment.
    #[serde(default)]
    pub min_threat_score: Option<u8>,
}

/// fail2ban's `jail.conf` default `maxretry = 5`: one forged line is never enough.
fn default_maxretry() -> u32 {
    5
}

/// fail2ban's `jail.conf` default `findtime = 10m`.
fn default_findtime() -> Duration {
    Duration::from_secs(600)
}

/// A condition on one event field; exactly one operator.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// Dotted path of the field (`rule.level`); arrays along the way are walked.
    pub field: String,
    /// The value equals this (numbers compare numerically, `"10"` equals `10`).
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// The value equals one of these.
    #[serde(default)]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// An array holding this element, or a string holding this substring.
    #[serde(default)]
    pub contains: Option<String>,
    /// Numeric comparisons (strings holding numbers count).
    #[serde(default)]
    pub gt: Option<f64>,
    /// Greater or equal.
    #[serde(default)]
    pub gte: Option<f64>,
    /// Less than.
    #[serde(default)]
    pub lt: Option<f64>,
    /// Less or equal.
    #[serde(default)]
    pub lte: Option<f64>,
    /// A regex the text matches; named groups can pick the attacker (`capture`).
    #[serde(default)]
    pub matches: Option<String>,
    /// The field is present (true) or absent (false).
    #[serde(default)]
    pub exists: Option<bool>,
}

/// Which address is the attacker; exactly one key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackerConfig {
    /// The first extracted address with this role (`source`, `client`, ...).
    #[serde(default)]
    pub role: Option<String>,
    /// The first extracted address from this field path (`data.srcip`).
    #[serde(default)]
    pub field: Option<String>,
    /// A named group of this rule's `matches` regex (`(?P<ip>...)`).
    #[serde(default)]
    pub capture: Option<String>,
}

/// The report comment: a template and what to redact from event text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommentConfig {
    /// Template with `{ip}`, `{rule}`, `{count}`, `{findtime}`, `{categories}`,
    /// `{source}`, `{sample}`, `{reporter}`, `{threat_score}`; cut to 1,024 characters.
    #[serde(default = "default_template")]
    pub template: String,
    /// Extra regexes whose matches are replaced by `<redacted>` in the sample text.
    #[serde(default)]
    pub redact: Vec<String>,
}

impl Default for CommentConfig {
    fn default() -> Self {
        Self {
            template: default_template(),
            redact: Vec::new(),
        }
    }
}

/// Shaped like the documented example comment ("10 failed SSH logins from this IP in 60s").
fn default_template() -> String {
    "{count} {rule} events from this IP within {findtime} (ipenrich); sample: {sample}".to_owned()
}

/// The ipinsights report endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpInsightsConfig {
    /// Base URL; tests point it at the simulator.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The API key: `{env: VAR}` or `{file: /run/secrets/ipinsights}`; required unless `dry_run`.
    #[serde(default)]
    pub api_key: Option<super::KeySource>,
}

/// The production endpoint of ipinsights-api.txt.
fn default_base_url() -> String {
    "https://ipinsights.io".to_owned()
}

/// Where decisions are audited.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum AuditConfig {
    /// A Kafka topic, one JSON record per decision keyed by IP.
    Kafka(AuditKafkaConfig),
    /// A file of JSON lines (appended).
    File(AuditFileConfig),
}

/// Audit topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditKafkaConfig {
    /// Topic name.
    pub topic: String,
}

/// Audit file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFileConfig {
    /// Path of the JSON-lines file.
    pub path: PathBuf,
}

/// A checked condition.
#[derive(Debug, Clone)]
pub enum Op {
    Equals(serde_json::Value),
    OneOf(Vec<serde_json::Value>),
    Contains(String),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    Matches(Regex),
    Exists(bool),
}

/// A checked condition on a field.
#[derive(Debug, Clone)]
pub struct Condition {
    /// Path segments.
    pub path: Vec<String>,
    /// The dotted path, for samples.
    pub field: String,
    /// The operator.
    pub op: Op,
}

/// A checked attacker selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attacker {
    Role(String),
    Field(String),
    Capture(String),
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub when: Vec<Condition>,
    pub attacker: Attacker,
    pub categories: Vec<ReportCategory>,
    pub source: ReportSource,
    pub maxretry: u32,
    pub findtime: Duration,
    pub min_threat_score: Option<u8>,
}

/// A validated reporter.
#[derive(Debug, Clone)]
pub struct ReporterSettings {
    pub name: String,
    pub brokers: String,
    pub topics: Vec<String>,
    pub enrichment_field: String,
    pub signal_group_id: String,
    pub decision_group_id: String,
    pub signals_topic: String,
    pub changelog_topic: String,
    pub create_topics: bool,
    pub topic_partitions: i32,
    pub topic_replication_factor: i32,
    pub options: BTreeMap<String, String>,
    pub rules: Vec<Rule>,
    pub allow_list: Vec<IpNet>,
    pub cooldown: Duration,
    pub daily_cap: u32,
    pub ipv6_prefix: u8,
    pub max_tracked: usize,
    /// Path segments of `event_time_field`.
    pub event_time_field: Option<Vec<String>>,
    pub allowed_lateness: Duration,
    pub dry_run: bool,
    pub template: String,
    pub redact: Vec<Regex>,
    pub ipinsights: Option<IpInsightsConfig>,
    pub audit: AuditConfig,
    pub max_attempts: u32,
}

/// `(key, problem)` pairs, in the order they were found.
type Problems = Vec<(String, String)>;

impl ReporterConfig {
    /// Checks everything the parser cannot; returns `(key, problem)` for every problem.
    pub fn validate(&self) -> Result<ReporterSettings, Problems> {
        let mut problems = Problems::new();
        self.check_name_and_topics(&mut problems);
        self.check_limits(&mut problems);
        self.check_ipinsights(&mut problems);
        if let Err(problem) = check_template(&self.comment.template) {
            problems.push(("comment.template".into(), problem));
        }
        let redact = self.redact(&mut problems);
        let rules = self.rules(&mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(self.settings(rules, redact))
    }

    /// The name, the brokers, and input and output topics that do not overlap.
    fn check_name_and_topics(&self, problems: &mut Problems) {
        let mut bad = |key: &str, problem: String| problems.push((key.into(), problem));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bad("name", "use letters, digits, '-' and '_' only".into());
        }
        if self.brokers.trim().is_empty() {
            bad("brokers", "must not be empty".into());
        }
        if self.topics.is_empty() {
            bad("topics", "at least one enriched topic is required".into());
        }
        let mut own = vec![
            ("signals_topic", &self.signals_topic),
            ("changelog_topic", &self.changelog_topic),
        ];
        if let AuditConfig::Kafka(a) = &self.audit {
            own.push(("audit.kafka.topic", &a.topic));
        }
        let mut seen = HashSet::new();
        for (key, topic) in &own {
            if topic.is_empty() {
                bad(key, "must not be empty".into());
            } else if self.topics.contains(topic) {
                bad(
                    key,
                    format!("{topic:?} is also an input topic: signals would loop"),
                );
            } else if !seen.insert(topic.as_str()) {
                bad(key, format!("{topic:?} is used twice"));
            }
        }
    }

    /// Cooldown, daily cap and attempts.
    fn check_limits(&self, problems: &mut Problems) {
        if self.cooldown < MIN_COOLDOWN {
            problems.push((
                "cooldown".into(),
                format!(
                    "{} is below the provider's 15 minute duplicate window",
                    fmt_duration(self.cooldown)
                ),
            ));
        }
        if self.daily_cap == 0 {
            problems.push(("daily_cap".into(), "must be at least 1".into()));
        }
        if self.max_attempts == 0 {
            problems.push(("max_attempts".into(), "must be at least 1".into()));
        }
        if self.max_tracked == 0 {
            problems.push(("max_tracked".into(), "must be at least 1".into()));
        }
        if self.topic_partitions < 1 {
            problems.push(("topic_partitions".into(), "must be at least 1".into()));
        }
        if self.topic_replication_factor == 0 || self.topic_replication_factor < -1 {
            problems.push((
                "topic_replication_factor".into(),
                "must be -1 (the brokers' default) or at least 1".into(),
            ));
        }
        if !(16..=128).contains(&self.ipv6_prefix) {
            problems.push((
                "ipv6_prefix".into(),
                format!("must be 16-128, got {}", self.ipv6_prefix),
            ));
        }
    }

    /// An endpoint and a key unless in dry-run.
    fn check_ipinsights(&self, problems: &mut Problems) {
        match &self.ipinsights {
            None if !self.dry_run => problems.push((
                "ipinsights".into(),
                "required when dry_run is false (base_url and api_key)".into(),
            )),
            Some(i) => {
                if i.api_key.is_none() && !self.dry_run {
                    problems.push((
                        "ipinsights.api_key".into(),
                        "required when dry_run is false ({env: VAR} or {file: PATH})".into(),
                    ));
                }
                if let Err(e) = reqwest::Url::parse(&i.base_url) {
                    problems.push(("ipinsights.base_url".into(), format!("does not parse: {e}")));
                }
            }
            None => {}
        }
    }

    /// The compiled redaction patterns.
    fn redact(&self, problems: &mut Problems) -> Vec<Regex> {
        let mut redact = Vec::new();
        for (i, r) in self.comment.redact.iter().enumerate() {
            match Regex::new(r) {
                Ok(re) => redact.push(re),
                Err(e) => {
                    problems.push((format!("comment.redact[{i}]"), format!("bad regex: {e}")))
                }
            }
        }
        redact
    }

    /// The checked rules, named once each.
    fn rules(&self, problems: &mut Problems) -> Vec<Rule> {
        if self.rules.is_empty() {
            problems.push(("rules".into(), "at least one rule is required".into()));
        }
        let mut names = HashSet::new();
        let mut rules = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            if r.name.is_empty() {
                problems.push((format!("rules[{i}].name"), "must not be empty".into()));
            } else if !names.insert(r.name.as_str()) {
                problems.push((
                    format!("rules[{i}].name"),
                    format!("duplicate rule name {:?}", r.name),
                ));
            }
            if let Some(rule) = r.check(i, problems) {
                rules.push(rule);
            }
        }
        rules
    }

    /// The settings of a config that validated.
    fn settings(&self, rules: Vec<Rule>, redact: Vec<Regex>) -> ReporterSettings {
        ReporterSettings {
            name: self.name.clone(),
            brokers: self.brokers.clone(),
            topics: self.topics.clone(),
            enrichment_field: self.enrichment_field.clone(),
            signal_group_id: self
                .signal_group_id
                .clone()
                .unwrap_or_else(|| format!("ipenrich-report-{}-signals", self.name)),
            decision_group_id: self
                .decision_group_id
                .clone()
                .unwrap_or_else(|| format!("ipenrich-report-{}-decide", self.name)),
            signals_topic: self.signals_topic.clone(),
            changelog_topic: self.changelog_topic.clone(),
            create_topics: self.create_topics,
            topic_partitions: self.topic_partitions,
            topic_replication_factor: self.topic_replication_factor,
            options: self.options.clone(),
            rules,
            allow_list: self.allow_list.clone(),
            cooldown: self.cooldown,
            daily_cap: self.daily_cap,
            ipv6_prefix: self.ipv6_prefix,
            max_tracked: self.max_tracked,
            event_time_field: self
                .event_time_field
                .as_ref()
                .map(|f| f.split('.').map(str::to_owned).collect()),
            allowed_lateness: self.allowed_lateness,
            dry_run: self.dry_run,
            template: self.comment.template.clone(),
            redact,
            ipinsights: self.ipinsights.clone(),
            audit: self.audit.clone(),
            max_attempts: self.max_attempts,
        }
    }
}

impl RuleConfig {
    /// The checked rule `rules[i]`, or None when its attacker selector is wrong;
    /// every problem goes to `problems`.
    fn check(&self, i: usize, problems: &mut Problems) -> Option<Rule> {
        let at = |k: &str| format!("rules[{i}].{k}");
        let mut distinct = self.categories.clone();
        distinct.sort_by_key(|c| *c as u8);
        distinct.dedup();
        if distinct.is_empty() || distinct.len() > MAX_REPORT_CATEGORIES {
            problems.push((
                at("categories"),
                format!("give 1 to {MAX_REPORT_CATEGORIES} distinct categories"),
            ));
        }
        if self.maxretry == 0 {
            problems.push((at("maxretry"), "must be at least 1".into()));
        }
        if self.findtime.is_zero() {
            problems.push((at("findtime"), "must be longer than 0s".into()));
        }
        if self.min_threat_score.is_some_and(|s| s > 100) {
            problems.push((at("min_threat_score"), "scores go from 0 to 100".into()));
        }
        if self.when.is_empty() {
            problems.push((at("when"), "at least one condition is required".into()));
        }
        let mut when = Vec::new();
        for (j, c) in self.when.iter().enumerate() {
            match c.check() {
                Ok(op) => when.push(Condition {
                    path: c.field.split('.').map(str::to_owned).collect(),
                    field: c.field.clone(),
                    op,
                }),
                Err(problem) => problems.push((format!("rules[{i}].when[{j}]"), problem)),
            }
        }
        let attacker = match self.attacker.check(&when) {
            Ok(attacker) => attacker,
            Err((key, problem)) => {
                // A problem fails the whole config: the rule is not needed.
                problems.push((at(key), problem));
                return None;
            }
        };
        Some(Rule {
            name: self.name.clone(),
            when,
            attacker,
            categories: distinct,
            source: self.source,
            maxretry: self.maxretry,
            findtime: self.findtime,
            min_threat_score: self.min_threat_score,
        })
    }
}

impl AttackerConfig {
    /// The selector; a capture group must be named by one of the rule's `matches`
    /// regexes. Errors are `(key below the rule, problem)`.
    fn check(&self, when: &[Condition]) -> Result<Attacker, (&'static str, String)> {
        match (&self.role, &self.field, &self.capture) {
            (Some(role), None, None) => Ok(Attacker::Role(role.clone())),
            (None, Some(field), None) => Ok(Attacker::Field(field.clone())),
            (None, None, Some(group)) => {
                let has_group = when.iter().any(|c| {
                    matches!(&c.op, Op::Matches(re) if re.capture_names().flatten().any(|n| n == group))
                });
                if has_group {
                    Ok(Attacker::Capture(group.clone()))
                } else {
                    Err((
                        "attacker.capture",
                        format!("no `matches` regex of this rule has a group named {group:?}"),
                    ))
                }
            }
            _ => Err((
                "attacker",
                "give exactly one of role, field and capture".into(),
            )),
        }
    }
}

impl ConditionConfig {
    fn check(&self) -> Result<Op, String> {
        if self.field.is_empty() || self.field.split('.').any(str::is_empty) {
            return Err(format!("bad field path {:?}", self.field));
        }
        let mut ops = Vec::new();
        if let Some(v) = &self.equals {
            ops.push(Op::Equals(v.clone()));
        }
        if let Some(v) = &self.one_of {
            ops.push(Op::OneOf(v.clone()));
        }
        if let Some(v) = &self.contains {
            ops.push(Op::Contains(v.clone()));
        }
        for (v, f) in [
            (self.gt, Op::Gt as fn(f64) -> Op),
            (self.gte, Op::Gte),
            (self.lt, Op::Lt),
            (self.lte, Op::Lte),
        ] {
            if let Some(v) = v {
                ops.push(f(v));
            }
        }
        if let Some(r) = &self.matches {
            ops.push(Op::Matches(
                Regex::new(r).map_err(|e| format!("bad regex in `matches`: {e}"))?,
            ));
        }
        if let Some(v) = self.exists {
            ops.push(Op::Exists(v));
        }
        match ops.len() {
            1 => Ok(ops.remove(0)),
            0 => Err(
                "give one operator: equals, one_of, contains, gt, gte, lt, lte, matches or exists"
                    .into(),
            ),
            _ => {
                Err("give only one operator per condition (add another condition for more)".into())
            }
        }
    }
}

/// Every `{name}` must be a known placeholder; `{{` and `}}` are literal braces.
fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if rest[open..].starts_with("{{") {
            rest = &rest[open + 2..];
            continue;
        }
        let Some(close) = rest[open..].find('}') else {
            return Err("unclosed `{`".into());
        };
        let name = &rest[open + 1..open + close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}}; known: {}",
                PLACEHOLDERS.join(", ")
            ));
        }
        rest = &rest[open + close + 1..];
    }
    if template.chars().count() > MAX_REPORT_COMMENT {
        return Err(format!(
            "longer than the provider's {MAX_REPORT_COMMENT} characters"
        ));
    }
    Ok(())
}

/// `1h`, `10m`, `90s`: durations for comments and messages.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        format!("{}ms", d.as_millis())
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
