//! Signal rules: pure functions from one enriched event to attack signals.
//!
//! Contract: [`RuleSet::evaluate`] does no IO. A rule fires when all its conditions
//! hold; it then names one attacker address (by the role or field of an extracted
//! address in `enrichment.ips[]`, or by a named regex group, canonicalised by
//! [`crate::extract::text::scan`] so `::ffff:1.2.3.4` becomes `1.2.3.4`). The signal
//! carries the rule, the attacker, the event's threat score for that address, and a
//! short sample of the matched text with user names, host names, every other address
//! and the configured patterns already redacted, so no raw log text travels further.
//! Guards (public, allow-list) are the decision stage's job, not this one's.

use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::reporter::{Attacker, Op, ReporterSettings, Rule};
use crate::extract::text::scan;
use crate::lookup::providers::ipinsights::MAX_REPORT_COMMENT;

/// Longest sample kept in a signal (characters).
pub const MAX_SAMPLE: usize = 300;

/// One attack signal, the value of a record of the signals topic (key: the IP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Reporter that produced it.
    pub reporter: String,
    /// Rule that fired.
    pub rule: String,
    /// The attacker.
    pub ip: IpAddr,
    /// Event time, ms since the epoch: the event's `event_time_field`, else the
    /// enriched record's Kafka timestamp (the input record's), else when it was read;
    /// never later than when it was read.
    pub at_ms: u64,
    /// Stable id of (rule, event content): a re-read or replayed event is not counted twice.
    pub id: u64,
    /// The enrichment's threat score for the attacker, 0-100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat_score: Option<u8>,
    /// Redacted excerpt of the matched text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<String>,
}

/// The rules of one reporter, ready to run.
pub struct RuleSet {
    reporter: String,
    enrichment_field: String,
    rules: Vec<Rule>,
    redact: Vec<Regex>,
}

impl RuleSet {
    /// From validated settings.
    pub fn new(settings: &ReporterSettings) -> Self {
        Self {
            reporter: settings.name.clone(),
            enrichment_field: settings.enrichment_field.clone(),
            rules: settings.rules.clone(),
            redact: settings.redact.clone(),
        }
    }

    /// Names of the rules that fire on `event` and the attacker each names (tests, `check`).
    pub fn matching(&self, event: &Value) -> Vec<(String, IpAddr)> {
        self.evaluate(event, "", 0)
            .into_iter()
            .map(|s| (s.rule, s.ip))
            .collect()
    }

    /// Signals of one event. `origin` names the event (`topic/partition/offset`).
    pub fn evaluate(&self, event: &Value, origin: &str, at_ms: u64) -> Vec<Signal> {
        let mut out = Vec::new();
        // A signal's id is its rule and the event's own content (without the
        // enrichment, which may differ between runs): an event read twice, whether
        // re-read after a crash or replayed into the topic, counts once. `origin` only
        // names the event in logs.
        let _ = origin;
        let enrichment = locate(event, &self.enrichment_field);
        let content = match &enrichment {
            Some(path) => {
                let mut own = event.clone();
                if let Some((last, parent)) = path.split_last() {
                    let parent = parent
                        .iter()
                        .try_fold(&mut own, |v, k| v.get_mut(k.as_str()));
                    if let Some(Value::Object(map)) = parent {
                        map.remove(last.as_str());
                    }
                }
                own.to_string()
            }
            None => event.to_string(),
        };
        let enrichment =
            enrichment.and_then(|path| path.iter().try_fold(event, |v, k| v.get(k.as_str())));
        for rule in &self.rules {
            let Some(hit) = self.fire(rule, event) else {
                continue;
            };
            let ips = enrichment
                .and_then(|e| e.get("ips"))
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let ip = match &rule.attacker {
                Attacker::Role(role) => first_ip(ips, "role", role),
                Attacker::Field(field) => first_ip(ips, "field", field),
                Attacker::Capture(group) => hit
                    .captures
                    .iter()
                    .find(|(name, _)| name == group)
                    .and_then(|(_, text)| canonical(text)),
            };
            let Some(ip) = ip else { continue };
            let threat_score = ips
                .iter()
                .filter(|e| e.get("ip").and_then(Value::as_str).and_then(canonical) == Some(ip))
                .filter_map(|e| e.pointer("/threat/score").and_then(Value::as_f64))
                .map(|s| s.clamp(0.0, 100.0) as u8)
                .max();
            let sample = hit.text.map(|t| {
                let mut s = redact(&t, ip, &self.redact);
                truncate(&mut s, MAX_SAMPLE);
                s
            });
            out.push(Signal {
                reporter: self.reporter.clone(),
                rule: rule.name.clone(),
                ip,
                at_ms,
                id: fnv1a(format!("{}|{content}", rule.name).as_bytes()),
                threat_score,
                sample,
            });
        }
        out
    }

    fn fire(&self, rule: &Rule, event: &Value) -> Option<Hit> {
        let mut hit = Hit::default();
        for c in &rule.when {
            let mut values = Vec::new();
            collect(event, &c.path, &mut values);
            let ok = match &c.op {
                Op::Exists(want) => values.iter().any(|v| !v.is_null()) == *want,
                Op::Matches(re) => {
                    let mut matched = false;
                    for_each_scalar(&values, &mut |v| {
                        if matched {
                            return;
                        }
                        if let Some(text) = v.as_str() {
                            if let Some(caps) = re.captures(text) {
                                matched = true;
                                for name in re.capture_names().flatten() {
                                    if let Some(m) = caps.name(name) {
                                        hit.captures.push((name.to_owned(), m.as_str().to_owned()));
                                    }
                                }
                                if hit.text.is_none() {
                                    hit.text = Some(text.to_owned());
                                }
                            }
                        }
                    });
                    matched
                }
                Op::Contains(needle) => values.iter().any(|v| match v {
                    Value::Array(items) => items
                        .iter()
                        .any(|i| equal(i, &Value::from(needle.as_str()))),
                    Value::String(s) => s.contains(needle.as_str()),
                    _ => false,
                }),
                Op::Equals(want) => any_scalar(&values, |v| equal(v, want)),
                Op::OneOf(set) => any_scalar(&values, |v| set.iter().any(|w| equal(v, w))),
                Op::Gt(n) => any_scalar(&values, |v| number(v).is_some_and(|x| x > *n)),
                Op::Gte(n) => any_scalar(&values, |v| number(v).is_some_and(|x| x >= *n)),
                Op::Lt(n) => any_scalar(&values, |v| number(v).is_some_and(|x| x < *n)),
                Op::Lte(n) => any_scalar(&values, |v| number(v).is_some_and(|x| x <= *n)),
            };
            if !ok {
                return None;
            }
        }
        Some(hit)
    }
}

/// What a firing rule found: named captures and the first matched text.
#[derive(Default)]
struct Hit {
    captures: Vec<(String, String)>,
    text: Option<String>,
}

/// Values at a dotted path; arrays on the way are walked, a final array is kept whole.
pub(crate) fn collect<'a>(v: &'a Value, path: &[String], out: &mut Vec<&'a Value>) {
    match (path.split_first(), v) {
        (None, _) => out.push(v),
        (Some(_), Value::Array(items)) => {
            for i in items {
                collect(i, path, out);
            }
        }
        (Some((first, rest)), Value::Object(map)) => {
            if let Some(next) = map.get(first) {
                collect(next, rest, out);
            }
        }
        _ => {}
    }
}

fn for_each_scalar<'a>(values: &[&'a Value], f: &mut impl FnMut(&'a Value)) {
    for v in values {
        match v {
            Value::Array(items) => items.iter().for_each(&mut *f),
            other => f(other),
        }
    }
}

fn any_scalar(values: &[&Value], f: impl Fn(&Value) -> bool) -> bool {
    values.iter().any(|v| match v {
        Value::Array(items) => items.iter().any(&f),
        other => f(other),
    })
}

/// A number, or a string holding one (Splunk and Wazuh decoders emit both).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (number(a), number(b)) {
        (Some(x), Some(y)) if a.is_number() || b.is_number() => x == y,
        _ => a == b,
    }
}

/// Where the enrichment object of `event` is: the dotted `field` (the pipeline's
/// `output.field`, e.g. `event.enrichment`), or, where a value that is not an
/// object blocked that path, the top-level key of its last segment (where the
/// pipeline then writes it).
fn locate(event: &Value, field: &str) -> Option<Vec<String>> {
    let path: Vec<String> = field.split('.').map(str::to_string).collect();
    if path
        .iter()
        .try_fold(event, |v, k| v.get(k.as_str()))
        .is_some()
    {
        return Some(path);
    }
    let last = path.last()?.clone();
    event.get(&last).is_some().then(|| vec![last])
}

fn first_ip(ips: &[Value], key: &str, want: &str) -> Option<IpAddr> {
    ips.iter()
        .filter(|e| e.get(key).and_then(Value::as_str) == Some(want))
        .find_map(|e| e.get("ip").and_then(Value::as_str).and_then(canonical))
}

/// The first address in `text`, canonical (IPv4-mapped IPv6 as IPv4).
pub fn canonical(text: &str) -> Option<IpAddr> {
    let mut first = None;
    scan(text, |ip| {
        if first.is_none() {
            first = Some(ip);
        }
    });
    first
}

/// 64-bit FNV-1a: stable across processes and releases, unlike `DefaultHasher`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Cuts `s` to at most `max` characters.
pub fn truncate(s: &mut String, max: usize) {
    if let Some((at, _)) = s.char_indices().nth(max) {
        s.truncate(at);
    }
}

static USER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b(for(?: invalid| illegal)? user|invalid user|illegal user|for|user(?:name)?|login|account|acct|logname|ruser|euser|dstuser|srcuser)(\s*[=:]\s*|\s+)("[^"]*"|'[^']*'|[^\s,;)\]]+)"#,
    )
    .expect("valid regex")
});
static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[\w.+-]+@[\w-]+(\.[\w-]+)+").expect("valid regex"));
/// The host of a syslog header: `Nov 23 04:12:01 bastion sshd[1]:` or an ISO stamp.
static SYSLOG_HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(<\d+>)?([A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT[\d:.+Z-]+) +(\S+)",
    )
    .expect("valid regex")
});
static FQDN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]*[a-z]\b")
        .expect("valid regex")
});
static HOST_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(host(?:name)?|shost|dhost|computer)(\s*[=:]\s*)([^\s,;]+)")
        .expect("valid regex")
});
static IP_LIKE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[0-9A-Fa-f:]*[.:][0-9A-Fa-f.:]+").expect("valid regex"));

/// Event text made fit for a public comment: configured patterns, user names, host
/// names (syslog header, `host=`, FQDNs) and every address except the attacker's
/// are replaced by placeholders. Errs on the side of redacting too much.
pub fn redact(text: &str, attacker: IpAddr, extra: &[Regex]) -> String {
    let mut s = text.to_owned();
    for re in extra {
        s = re.replace_all(&s, "<redacted>").into_owned();
    }
    s = IP_LIKE
        .replace_all(&s, |c: &regex::Captures<'_>| {
            let m = &c[0];
            let trimmed = m.trim_end_matches(['.', ':']);
            match canonical(trimmed) {
                Some(ip) if ip == attacker => m.to_owned(),
                Some(_) if trimmed.parse::<IpAddr>().is_ok() => {
                    format!("<ip>{}", &m[trimmed.len()..])
                }
                _ => m.to_owned(),
            }
        })
        .into_owned();
    s = SYSLOG_HOST.replace(&s, "$1$2 <host>").into_owned();
    s = EMAIL.replace_all(&s, "<user>").into_owned();
    s = USER.replace_all(&s, "$1$2<user>").into_owned();
    s = HOST_KEY.replace_all(&s, "$1$2<host>").into_owned();
    s = FQDN.replace_all(&s, "<host>").into_owned();
    s
}

/// Values of the comment placeholders.
pub struct CommentVars<'a> {
    pub ip: IpAddr,
    pub rule: &'a str,
    pub count: usize,
    pub findtime: &'a str,
    pub categories: &'a str,
    pub source: &'a str,
    pub sample: &'a str,
    pub reporter: &'a str,
    pub threat_score: Option<u8>,
}

/// Fills the template (checked at load) and cuts the result to the provider's 1,024 characters.
pub fn render_comment(template: &str, vars: &CommentVars<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 128);
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        let Some(close) = tail.find('}').filter(|_| tail.starts_with('{')) else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
            continue;
        };
        let name = &tail[1..close];
        match name {
            "ip" => out.push_str(&vars.ip.to_string()),
            "rule" => out.push_str(vars.rule),
            "count" => out.push_str(&vars.count.to_string()),
            "findtime" => out.push_str(vars.findtime),
            "categories" => out.push_str(vars.categories),
            "source" => out.push_str(vars.source),
            "sample" => out.push_str(vars.sample),
            "reporter" => out.push_str(vars.reporter),
            "threat_score" => out.push_str(
                &vars
                    .threat_score
                    .map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
            ),
            other => {
                out.push('{');
                out.push_str(other);
                out.push('}');
            }
        }
        rest = &tail[close + 1..];
    }
    out.push_str(rest);
    truncate(&mut out, MAX_REPORT_COMMENT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReporterConfig;

    fn rules(yaml: &str) -> RuleSet {
        let cfg: ReporterConfig = serde_yaml_ng::with::singleton_map_recursive::deserialize(
            serde_yaml_ng::Deserializer::from_str(yaml),
        )
        .unwrap();
        RuleSet::new(&cfg.validate().unwrap())
    }

    const BASE: &str = "name: t\nbrokers: b\ntopics: [in]\nsignals_topic: s\nchangelog_topic: c\naudit: {file: {path: /tmp/x}}\n";

    #[test]
    fn wazuh_groups_level_and_role() {
        let r = rules(&format!(
            "{BASE}rules:\n - name: w\n   when:\n    - {{field: rule.groups, contains: authentication_failed}}\n    - {{field: rule.level, gte: 10}}\n   attacker: {{role: source}}\n   categories: [ssh_bruteforce]\n   source: wazuh\n"
        ));
        let ev = |groups: &str, level: &str| -> Value {
            serde_json::from_str(&format!(r#"{{"rule":{{"level":{level},"groups":{groups}}},"enrichment":{{"ips":[{{"ip":"10.0.0.1","role":"host","field":"agent.ip"}},{{"ip":"45.9.20.1","role":"source","field":"data.srcip","threat":{{"score":80}}}}]}}}}"#)).unwrap()
        };
        let s = r.evaluate(&ev(r#"["sshd","authentication_failed"]"#, "10"), "t/0/1", 5);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].ip, "45.9.20.1".parse::<IpAddr>().unwrap());
        assert_eq!(s[0].threat_score, Some(80));
        assert!(r
            .evaluate(&ev(r#"["sshd","authentication_failed"]"#, "9"), "", 0)
            .is_empty());
        assert!(r.evaluate(&ev(r#"["sshd"]"#, "12"), "", 0).is_empty());
        // Level as a string still compares numerically.
        assert_eq!(
            r.evaluate(&ev(r#"["authentication_failed"]"#, "\"11\""), "", 0)
                .len(),
            1
        );
    }

    /// A pipeline with `output.field: event.enrichment` (HEC) nests the object into
    /// `event`, or writes it on the top when `event` is raw text; the reporter finds
    /// it in both places, and the signal id still leaves it out.
    #[test]
    fn a_dotted_enrichment_field_is_found_where_the_pipeline_put_it() {
        let r = rules(&format!(
            "{BASE}enrichment_field: event.enrichment\nrules:\n - name: pan\n   when: [{{field: sourcetype, equals: pan}}]\n   attacker: {{role: source}}\n   categories: [port_scan]\n   source: splunk\n"
        ));
        let ips = serde_json::json!({"ips": [{"ip": "45.9.20.1", "role": "source", "threat": {"score": 90}}]});
        let nested = serde_json::json!({"sourcetype": "pan", "event": {"src": "45.9.20.1", "enrichment": ips}});
        let s = r.evaluate(&nested, "", 0);
        assert_eq!(s[0].ip, "45.9.20.1".parse::<IpAddr>().unwrap());
        assert_eq!(s[0].threat_score, Some(90));
        let bare = serde_json::json!({"sourcetype": "pan", "event": {"src": "45.9.20.1"}});
        assert!(
            r.evaluate(&bare, "", 0).is_empty(),
            "no enrichment, no role"
        );
        let mut again = nested.clone();
        again["event"]["enrichment"]["status"] = "timeout".into();
        assert_eq!(r.evaluate(&again, "", 0)[0].id, s[0].id);
        let raw =
            serde_json::json!({"sourcetype": "pan", "event": "raw 45.9.20.1", "enrichment": ips});
        assert_eq!(r.evaluate(&raw, "", 0)[0].ip, s[0].ip);
    }

    #[test]
    fn regex_capture_canonicalises_mapped_ipv6() {
        let r = rules(&format!(
            "{BASE}rules:\n - name: sshd\n   when:\n    - {{field: message, matches: 'Failed password for .* from (?P<ip>\\S+) port'}}\n   attacker: {{capture: ip}}\n   categories: [ssh_bruteforce]\n   source: fail2ban\n"
        ));
        let ev = serde_json::json!({"message": "Nov 23 04:12:01 bastion sshd[1]: Failed password for invalid user admin from ::ffff:10.0.0.1 port 22 ssh2"});
        let s = r.evaluate(&ev, "x", 0);
        assert_eq!(s[0].ip, "10.0.0.1".parse::<IpAddr>().unwrap());
        let sample = s[0].sample.as_deref().unwrap();
        assert!(
            !sample.contains("admin") && !sample.contains("bastion"),
            "{sample}"
        );
        // Ids follow the event's content, not where it was read: a replay is the same
        // signal, a different line is another one, and the enrichment does not count.
        assert_eq!(r.evaluate(&ev, "y", 0)[0].id, s[0].id);
        let enriched =
            serde_json::json!({"message": ev["message"], "enrichment": {"status": "timeout"}});
        assert_eq!(r.evaluate(&enriched, "z", 0)[0].id, s[0].id);
        let other = serde_json::json!({"message": "Nov 23 04:12:02 bastion sshd[1]: Failed password for invalid user admin from ::ffff:10.0.0.1 port 22 ssh2"});
        assert_ne!(r.evaluate(&other, "x", 0)[0].id, s[0].id);
    }

    #[test]
    fn redaction_keeps_only_the_attacker() {
        let attacker: IpAddr = "218.92.0.112".parse().unwrap();
        let extra = [Regex::new("ACME-[0-9]+").unwrap()];
        let out = redact(
            "Nov 23 04:12:01 bastion sshd[4121]: Failed password for invalid user admin from 218.92.0.112 port 52144 ssh2 to 10.1.2.3 host=db1.corp.example.com ticket ACME-42 mail bob@example.org",
            attacker,
            &extra,
        );
        for secret in ["bastion", "admin", "10.1.2.3", "db1", "ACME-42", "bob@"] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        assert!(out.contains("218.92.0.112"), "{out}");
        assert!(out.contains("Failed password"), "{out}");
    }

    #[test]
    fn comment_is_filled_and_capped() {
        let vars = CommentVars {
            ip: "1.2.3.4".parse().unwrap(),
            rule: "sshd",
            count: 5,
            findtime: "10m",
            categories: "ssh_bruteforce",
            source: "fail2ban",
            sample: &"x".repeat(5000),
            reporter: "r",
            threat_score: None,
        };
        let c = render_comment(
            "{count} {rule} from {ip} in {findtime} {{literal}} score {threat_score}",
            &vars,
        );
        assert_eq!(c, "5 sshd from 1.2.3.4 in 10m {literal} score unknown");
        let long = render_comment("{sample}", &vars);
        assert_eq!(long.chars().count(), MAX_REPORT_COMMENT);
    }
}
