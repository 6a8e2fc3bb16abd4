//! The decision book: per-IP counters and the report ledger, and the verdict on
//! each signal. Pure: no IO, time passed in as milliseconds since the epoch.
//!
//! Contract: an IP gets a `Report` verdict only if it is public
//! ([`crate::extract::classify`] says [`IpClass::Public`]), not allow-listed, one rule
//! has `maxretry` distinct signals within its `findtime` (and the threat score it
//! asks for), the last report is older than the cooldown, and fewer than its
//! partition's share of `daily_cap` reports were made there this UTC day. The shares
//! of all partitions add up to `daily_cap`, and each partition has one owner, so the
//! cap holds for the whole group whatever the number of replicas. An IPv6 attacker
//! is one attacker per `ipv6_prefix` network: the book keys it by that network
//! ([`Book::key`]), and the signal stage partitions by the same key. The verdict already writes the
//! report into the ledger (the caller persists it *before* sending), so a crash
//! between persisting and sending loses a report but never repeats one. A signal
//! id seen before is not counted again (re-read after a crash or a rebalance).
//! Every [`IpState`] is what the changelog topic holds under the IP's key.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use ipnet::IpNet;
use lru::LruCache;
use serde::{Deserialize, Serialize};

use super::rules::Signal;
use crate::config::reporter::ReporterSettings;
use crate::extract::class::canonical;
use crate::extract::{classify, IpClass};
use crate::lookup::engine::key_of;
use crate::lookup::providers::ipinsights::{ReportCategory, ReportSource};

const DAY_MS: u64 = 86_400_000;

/// Wall-clock milliseconds driven by tokio's clock: read `SystemTime` once, then
/// advance with `tokio::time::Instant`, so paused-time tests move it with `advance()`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: u64,
    start: tokio::time::Instant,
}

impl Clock {
    /// Anchored at the current wall-clock time.
    pub fn system() -> Self {
        let base_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self::starting_at(base_ms)
    }

    /// Anchored at `base_ms` (tests).
    pub fn starting_at(base_ms: u64) -> Self {
        Self {
            base_ms,
            start: tokio::time::Instant::now(),
        }
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> u64 {
        self.base_ms + self.start.elapsed().as_millis() as u64
    }
}

/// One counted signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    /// Signal time, ms since the epoch.
    pub at: u64,
    /// Signal id.
    pub id: u64,
    /// Threat score carried by the signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u8>,
}

/// Everything known about one IP: the changelog value under its key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpState {
    /// Recent signals per rule, newest last, at most `maxretry` of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hits: BTreeMap<String, Vec<Hit>>,
    /// When the IP was last reported (or would have been, in dry-run), ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report: Option<u64>,
    /// Whether that last report was a dry run.
    #[serde(default)]
    pub last_report_dry_run: bool,
    /// Latest redacted sample, for the comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<String>,
    /// The outbox: the last report, decided and written but not yet known to be
    /// accepted. Cleared when the provider accepts it (or says it already has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<Pending>,
    /// The provider's id of the last report accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_id: Option<u64>,
}

/// A report in the outbox: what is needed to send it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// When it was decided, ms since the epoch: it is sent again only within the
    /// provider's 15-minute duplicate window from then, where a second copy is
    /// refused as a duplicate instead of reported twice.
    pub since_ms: u64,
    pub ip: IpAddr,
    pub rule: String,
    pub categories: Vec<ReportCategory>,
    pub source: ReportSource,
    pub count: usize,
    pub findtime_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat_score: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<String>,
}

impl Pending {
    /// The report again, as a candidate (nothing to revert to).
    pub fn candidate(&self) -> Candidate {
        Candidate {
            ip: self.ip,
            rule: self.rule.clone(),
            categories: self.categories.clone(),
            source: self.source,
            count: self.count,
            findtime: Duration::from_millis(self.findtime_ms),
            threat_score: self.threat_score,
            sample: self.sample.clone(),
            previous: IpState::default(),
        }
    }
}

/// A report to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub ip: IpAddr,
    pub rule: String,
    pub categories: Vec<ReportCategory>,
    pub source: ReportSource,
    pub count: usize,
    pub findtime: Duration,
    pub threat_score: Option<u8>,
    pub sample: Option<String>,
    /// The IP's state just before the report (signal counted, ledger untouched),
    /// put back if the report could not be sent and may be tried again.
    pub previous: IpState,
}

/// The decision on one signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not a public address.
    NotPublic,
    /// In the allow-list.
    AllowListed,
    /// Not (yet) enough signals, or too low a threat score; `count` within findtime.
    BelowThreshold { count: usize },
    /// Happened longer than `findtime` (plus `allowed_lateness`) ago: never counted.
    Stale,
    /// Reported less than `cooldown` ago.
    Cooldown,
    /// The daily cap is reached.
    Capped,
    /// Report it (the ledger already says so).
    Report(Box<Candidate>),
}

#[derive(Debug, Clone)]
struct Policy {
    maxretry: usize,
    findtime_ms: u64,
    findtime: Duration,
    min_threat_score: Option<u8>,
    categories: Vec<ReportCategory>,
    source: ReportSource,
}

/// The state of the IPs of the partitions this consumer owns.
pub struct Book {
    policies: HashMap<String, std::sync::Arc<Policy>>,
    allow_list: Vec<IpNet>,
    cooldown_ms: u64,
    /// How much older than its rule's `findtime` a signal may be and still count.
    lateness_ms: u64,
    daily_cap: u32,
    /// Partitions of the signals topic, over which `daily_cap` is shared.
    partitions: u32,
    ipv6_prefix: u8,
    dry_run: bool,
    /// By [`Book::key`]: the address, or an IPv6 address's network; at most
    /// `max_tracked`, least recently signalled first out.
    ips: LruCache<IpAddr, (i32, IpState)>,
    /// Reports that count in this mode, by partition and UTC day: kept as the
    /// ledger changes, so the cap costs no scan, and a forgotten attacker's
    /// report still counts.
    days: HashMap<(i32, u64), u32>,
    /// Keys whose state has a report in the outbox, and their partition.
    outbox: HashMap<IpAddr, i32>,
}

/// The UTC day a state's report counts on in this mode (a dry run counts dry-run
/// and real reports, a real run only real ones).
fn counted_day(dry_run: bool, s: &IpState) -> Option<u64> {
    s.last_report
        .filter(|_| dry_run || !s.last_report_dry_run)
        .map(|t| t / DAY_MS)
}

impl Book {
    /// An empty book for these settings.
    pub fn new(settings: &ReporterSettings) -> Self {
        Self {
            policies: settings
                .rules
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        std::sync::Arc::new(Policy {
                            maxretry: r.maxretry.max(1) as usize,
                            findtime_ms: r.findtime.as_millis() as u64,
                            findtime: r.findtime,
                            min_threat_score: r.min_threat_score,
                            categories: r.categories.clone(),
                            source: r.source,
                        }),
                    )
                })
                .collect(),
            allow_list: settings.allow_list.clone(),
            cooldown_ms: settings.cooldown.as_millis() as u64,
            lateness_ms: u64::try_from(settings.allowed_lateness.as_millis()).unwrap_or(u64::MAX),
            daily_cap: settings.daily_cap,
            partitions: 1,
            ipv6_prefix: settings.ipv6_prefix,
            dry_run: settings.dry_run,
            ips: LruCache::new(
                NonZeroUsize::new(settings.max_tracked).unwrap_or(NonZeroUsize::MIN),
            ),
            days: HashMap::new(),
            outbox: HashMap::new(),
        }
    }

    /// Keeps the outbox index in step with `key`'s state.
    fn index(&mut self, key: IpAddr, partition: i32, state: Option<&IpState>) {
        if state.is_some_and(|s| s.outbox.is_some()) {
            self.outbox.insert(key, partition);
        } else {
            self.outbox.remove(&key);
        }
    }

    /// Every report in the outbox: partition, key and the report.
    pub fn pending(&self) -> Vec<(i32, IpAddr, Pending)> {
        self.outbox
            .iter()
            .filter_map(|(key, p)| {
                let (_, s) = self.ips.peek(key)?;
                Some((*p, *key, s.outbox.clone()?))
            })
            .collect()
    }

    /// Empties `key`'s outbox (accepted with `report_id`, a duplicate, or given
    /// up); the ledger entry stays. Returns the partition and the state to write.
    pub fn settle(&mut self, key: IpAddr, report_id: Option<u64>) -> Option<(i32, IpState)> {
        self.outbox.remove(&key);
        let (p, s) = self.ips.get_mut(&key)?;
        s.outbox = None;
        if report_id.is_some() {
            s.report_id = report_id;
        }
        Some((*p, s.clone()))
    }

    /// Moves the day counts from `old` (a state that was) to `new` (what is now).
    fn recount(&mut self, partition: i32, old: Option<&IpState>, new: Option<&IpState>) {
        if let Some(day) = old.and_then(|s| counted_day(self.dry_run, s)) {
            if let Some(n) = self.days.get_mut(&(partition, day)) {
                *n = n.saturating_sub(1);
            }
        }
        if let Some(day) = new.and_then(|s| counted_day(self.dry_run, s)) {
            *self.days.entry((partition, day)).or_default() += 1;
        }
    }

    /// Holds `state` under `key`; a least recently used other attacker may go.
    fn put(&mut self, key: IpAddr, partition: i32, state: IpState) {
        self.recount(partition, None, Some(&state));
        self.index(key, partition, Some(&state));
        if let Some((k, (p, old))) = self.ips.push(key, (partition, state)) {
            if k == key {
                self.recount(p, Some(&old), None);
            } else if self.outbox.remove(&k).is_some() {
                tracing::warn!(ip = %k, partition = p, "max_tracked reached: a report in the outbox was forgotten");
            }
        }
    }

    /// Shares the daily cap over the signals topic's `partitions`.
    pub fn set_partitions(&mut self, partitions: u32) {
        self.partitions = partitions.max(1);
    }

    /// What one partition may report in a UTC day: `daily_cap` ÷ partitions, the
    /// remainder going to the lowest partitions, so the shares add up to the cap.
    pub fn cap_of(&self, partition: i32) -> u32 {
        let n = self.partitions;
        let p = u32::try_from(partition).unwrap_or(u32::MAX);
        self.daily_cap / n + u32::from(p < self.daily_cap % n)
    }

    /// The key an attacker is counted under (and the changelog and signals keys):
    /// the address (IPv4-mapped IPv6 as IPv4), an IPv6 address's `ipv6_prefix` network.
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        key_of(canonical(ip), self.ipv6_prefix)
    }

    /// The state of one attacker (by any of its addresses), if any.
    pub fn state(&self, ip: &IpAddr) -> Option<&IpState> {
        self.ips.peek(&self.key(*ip)).map(|(_, s)| s)
    }

    /// Number of IPs held.
    pub fn len(&self) -> usize {
        self.ips.len()
    }

    /// True when no IP is held.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }

    /// Applies one changelog record (`None`: a tombstone).
    pub fn restore(&mut self, partition: i32, ip: IpAddr, state: Option<IpState>) {
        let ip = self.key(ip);
        match state {
            Some(s) => self.put(ip, partition, s),
            None => {
                self.outbox.remove(&ip);
                if let Some((p, old)) = self.ips.pop(&ip) {
                    self.recount(p, Some(&old), None);
                }
            }
        }
    }

    /// Forgets the IPs of a partition this consumer no longer owns.
    pub fn drop_partition(&mut self, partition: i32) {
        let gone: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(|(_, (p, _))| *p == partition)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in gone {
            self.ips.pop(&ip);
        }
        self.days.retain(|(p, _), _| *p != partition);
        self.outbox.retain(|_, p| *p != partition);
    }

    /// True when `ip` is in the allow-list (IPv4-mapped and NAT64 IPv6 are matched
    /// as the IPv4 address they carry).
    pub fn allow_listed(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allow_list.iter().any(|n| n.contains(&ip))
    }

    /// Decides on a signal. The second value says whether the IP's state changed
    /// and must be written to the changelog before anything else happens.
    pub fn on_signal(&mut self, partition: i32, signal: &Signal, now_ms: u64) -> (Verdict, bool) {
        let ip = signal.ip;
        if classify(ip) != IpClass::Public {
            return (Verdict::NotPublic, false);
        }
        if self.allow_listed(ip) {
            return (Verdict::AllowListed, false);
        }
        let Some(policy) = self.policies.get(&signal.rule).cloned() else {
            return (Verdict::BelowThreshold { count: 0 }, false);
        };
        if self.stale(signal, &policy, now_ms) {
            return (Verdict::Stale, false);
        }
        let reports_today = self.reports_in(partition, now_ms);
        let cap = self.cap_of(partition);
        let key = self.key(ip);
        if !self.ips.contains(&key) {
            self.put(key, partition, IpState::default());
        }
        let dry_run = self.dry_run;
        let Some((slot, state)) = self.ips.get_mut(&key) else {
            return (Verdict::BelowThreshold { count: 0 }, false);
        };
        *slot = partition;
        let hits = state.hits.entry(signal.rule.clone()).or_default();
        let mut dirty = false;
        if !hits.iter().any(|h| h.id == signal.id) {
            let at = hits.partition_point(|h| h.at <= signal.at_ms);
            hits.insert(
                at,
                Hit {
                    at: signal.at_ms,
                    id: signal.id,
                    score: signal.threat_score,
                },
            );
            dirty = true;
            if signal.sample.is_some() {
                state.sample = signal.sample.clone();
            }
        }
        let newest = hits.last().map_or(0, |h| h.at);
        let before = hits.len();
        hits.retain(|h| h.at + policy.findtime_ms >= newest);
        if hits.len() > policy.maxretry {
            hits.drain(..hits.len() - policy.maxretry);
        }
        dirty |= hits.len() != before;
        let count = hits.len();
        let score = hits.iter().filter_map(|h| h.score).max();
        let threat_ok = policy
            .min_threat_score
            .is_none_or(|min| score.is_some_and(|s| s >= min));
        if count < policy.maxretry || !threat_ok {
            return (Verdict::BelowThreshold { count }, dirty);
        }
        let counts = !state.last_report_dry_run || self.dry_run;
        if let Some(last) = state.last_report.filter(|_| counts) {
            if now_ms.saturating_sub(last) < self.cooldown_ms {
                return (Verdict::Cooldown, dirty);
            }
        }
        if reports_today >= cap {
            return (Verdict::Capped, dirty);
        }
        let previous = state.clone();
        state.last_report = Some(now_ms);
        state.last_report_dry_run = dry_run;
        // As fail2ban resets the failure count on a ban: after the cooldown a fresh
        // `maxretry` signals are needed.
        state.hits.clear();
        state.outbox = (!dry_run).then(|| Pending {
            since_ms: now_ms,
            ip: canonical(ip),
            rule: signal.rule.clone(),
            categories: policy.categories.clone(),
            source: policy.source,
            count,
            findtime_ms: policy.findtime_ms,
            threat_score: score,
            sample: state.sample.clone(),
        });
        let current = state.clone();
        let candidate = Candidate {
            // The peer a NAT64 or IPv4-mapped address carries is who is reported.
            ip: canonical(ip),
            rule: signal.rule.clone(),
            categories: policy.categories.clone(),
            source: policy.source,
            count,
            findtime: policy.findtime,
            threat_score: score,
            sample: state.sample.clone(),
            previous,
        };
        self.recount(partition, Some(&candidate.previous), Some(&current));
        self.index(key, partition, Some(&current));
        (Verdict::Report(Box::new(candidate)), true)
    }

    /// Event time: a backlog or a replay is not an attack happening now.
    fn stale(&self, signal: &Signal, policy: &Policy, now_ms: u64) -> bool {
        let counts_until = signal
            .at_ms
            .saturating_add(policy.findtime_ms)
            .saturating_add(self.lateness_ms);
        counts_until < now_ms
    }

    /// Undoes a report that could not be sent (retryable failure, shutdown): the
    /// ledger entry goes and the counted signals come back.
    pub fn revert(&mut self, candidate: &Candidate) {
        let key = self.key(candidate.ip);
        if let Some((p, s)) = self.ips.get_mut(&key) {
            let (p, undone) = (*p, std::mem::replace(s, candidate.previous.clone()));
            self.recount(p, Some(&undone), Some(&candidate.previous));
            self.index(key, p, Some(&candidate.previous));
        }
    }

    /// Reports made in the UTC day of `now_ms` that count in this mode (a dry run
    /// counts dry-run and real ones, a real run only real ones).
    pub fn reports_today(&self, now_ms: u64) -> u32 {
        let today = now_ms / DAY_MS;
        self.days
            .iter()
            .filter(|((_, day), _)| *day == today)
            .map(|(_, n)| *n)
            .sum()
    }

    /// As [`Book::reports_today`], in one partition: what its share is spent on.
    pub fn reports_in(&self, partition: i32, now_ms: u64) -> u32 {
        self.days
            .get(&(partition, now_ms / DAY_MS))
            .copied()
            .unwrap_or(0)
    }

    /// Forgets IPs with no signal within any findtime and no ledger entry that still
    /// matters (cooldown over and not from today); returns them for tombstones.
    pub fn sweep(&mut self, now_ms: u64) -> Vec<(i32, IpAddr)> {
        let longest = self
            .policies
            .values()
            .map(|p| p.findtime_ms)
            .max()
            .unwrap_or(0);
        let cooldown = self.cooldown_ms;
        let today = now_ms / DAY_MS;
        let gone: Vec<(i32, IpAddr)> = self
            .ips
            .iter()
            .filter(|(_, (_, s))| {
                let live_hits = s.hits.values().flatten().any(|h| h.at + longest >= now_ms);
                let ledger = s
                    .last_report
                    .is_some_and(|t| t / DAY_MS == today || now_ms.saturating_sub(t) < cooldown);
                !(live_hits || ledger)
            })
            .map(|(ip, (p, _))| (*p, *ip))
            .collect();
        for (_, ip) in &gone {
            self.outbox.remove(ip);
            if let Some((p, old)) = self.ips.pop(ip) {
                self.recount(p, Some(&old), None);
            }
        }
        // Past days' counts are no longer asked for.
        self.days.retain(|(_, day), n| *day >= today && *n > 0);
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReporterConfig;

    fn settings(extra: &str) -> ReporterSettings {
        let yaml = format!(
            "name: t\nbrokers: b\ntopics: [in]\nsignals_topic: s\nchangelog_topic: c\naudit: {{file: {{path: /tmp/x}}}}\nallow_list: [198.51.100.0/24, 8.8.8.0/24]\n{extra}rules:\n - name: sshd\n   when: [{{field: message, exists: true}}]\n   attacker: {{role: source}}\n   categories: [ssh_bruteforce]\n   source: fail2ban\n   maxretry: 3\n   findtime: 10m\n - name: scored\n   when: [{{field: message, exists: true}}]\n   attacker: {{role: source}}\n   categories: [port_scan]\n   source: suricata\n   maxretry: 1\n   min_threat_score: 50\n"
        );
        let cfg: ReporterConfig = serde_yaml_ng::with::singleton_map_recursive::deserialize(
            serde_yaml_ng::Deserializer::from_str(&yaml),
        )
        .unwrap();
        cfg.validate().unwrap()
    }

    fn sig(ip: &str, rule: &str, at: u64, id: u64) -> Signal {
        Signal {
            reporter: "t".into(),
            rule: rule.into(),
            ip: ip.parse().unwrap(),
            at_ms: at,
            id,
            threat_score: None,
            sample: Some("s".into()),
        }
    }

    fn is_report(v: &Verdict) -> bool {
        matches!(v, Verdict::Report(_))
    }

    const T0: u64 = 1_763_856_000_000; // 2025-11-23T00:00:00Z

    #[tokio::test(start_paused = true)]
    async fn findtime_window_needs_maxretry_signals_within_it() {
        let mut b = Book::new(&settings(""));
        let clock = Clock::starting_at(T0);
        let ip = "45.9.20.1";
        assert_eq!(
            b.on_signal(0, &sig(ip, "sshd", clock.now_ms(), 1), clock.now_ms())
                .0,
            Verdict::BelowThreshold { count: 1 }
        );
        tokio::time::advance(Duration::from_secs(6 * 60)).await;
        b.on_signal(0, &sig(ip, "sshd", clock.now_ms(), 2), clock.now_ms());
        tokio::time::advance(Duration::from_secs(6 * 60)).await;
        // The first signal is now 12 minutes old: outside the 10-minute findtime.
        let (v, dirty) = b.on_signal(0, &sig(ip, "sshd", clock.now_ms(), 3), clock.now_ms());
        assert_eq!(v, Verdict::BelowThreshold { count: 2 });
        assert!(dirty);
        // A re-read signal (same id) is not counted again.
        let (v, dirty) = b.on_signal(0, &sig(ip, "sshd", clock.now_ms(), 3), clock.now_ms());
        assert_eq!(v, Verdict::BelowThreshold { count: 2 });
        assert!(!dirty);
        tokio::time::advance(Duration::from_secs(60)).await;
        let (v, _) = b.on_signal(0, &sig(ip, "sshd", clock.now_ms(), 4), clock.now_ms());
        let Verdict::Report(c) = v else {
            panic!("{v:?}")
        };
        assert_eq!(c.count, 3);
        assert_eq!(c.categories, [ReportCategory::SshBruteforce]);
        assert_eq!(c.source, ReportSource::Fail2ban);
    }

    #[tokio::test(start_paused = true)]
    async fn guards_not_public_allow_list_and_threat_score() {
        let mut b = Book::new(&settings(""));
        for ip in [
            "10.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "fe80::1",
            "100.64.0.1",
            "127.0.0.1",
        ] {
            assert_eq!(
                b.on_signal(0, &sig(ip, "sshd", T0, 1), T0).0,
                Verdict::NotPublic,
                "{ip}"
            );
        }
        assert_eq!(
            b.on_signal(0, &sig("8.8.8.8", "sshd", T0, 1), T0).0,
            Verdict::AllowListed
        );
        assert_eq!(
            b.on_signal(0, &sig("::ffff:8.8.8.8", "sshd", T0, 1), T0).0,
            Verdict::AllowListed
        );
        let mut s = sig("45.9.20.2", "scored", T0, 1);
        s.threat_score = Some(49);
        assert!(matches!(
            b.on_signal(0, &s, T0).0,
            Verdict::BelowThreshold { .. }
        ));
        s.threat_score = Some(50);
        s.id = 2;
        assert!(is_report(&b.on_signal(0, &s, T0).0));
        assert!(b.is_empty() || b.state(&"10.0.0.1".parse().unwrap()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn cooldown_then_fresh_maxretry() {
        let mut b = Book::new(&settings("cooldown: 60m\n"));
        let clock = Clock::starting_at(T0);
        let ip = "45.9.20.3";
        let mut id = 0;
        let mut burst = |b: &mut Book| {
            let mut last = None;
            for _ in 0..3 {
                id += 1;
                last = Some(
                    b.on_signal(0, &sig(ip, "sshd", clock.now_ms(), id), clock.now_ms())
                        .0,
                );
            }
            last.unwrap()
        };
        assert!(is_report(&burst(&mut b)));
        tokio::time::advance(Duration::from_secs(30 * 60)).await;
        assert_eq!(burst(&mut b), Verdict::Cooldown);
        // Still in cooldown 59 minutes after the report.
        tokio::time::advance(Duration::from_secs(29 * 60)).await;
        assert_eq!(burst(&mut b), Verdict::Cooldown);
        tokio::time::advance(Duration::from_secs(11 * 60)).await;
        // Cooldown over; the signals of the cooldown are outside findtime, so a
        // fresh `maxretry` is needed: one signal is not enough, three are.
        let v = b
            .on_signal(0, &sig(ip, "sshd", clock.now_ms(), 1000), clock.now_ms())
            .0;
        assert_eq!(v, Verdict::BelowThreshold { count: 1 });
        let v = b
            .on_signal(0, &sig(ip, "sshd", clock.now_ms(), 1001), clock.now_ms())
            .0;
        assert_eq!(v, Verdict::BelowThreshold { count: 2 });
        let v = b
            .on_signal(0, &sig(ip, "sshd", clock.now_ms(), 1002), clock.now_ms())
            .0;
        assert!(is_report(&v), "{v:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn daily_cap_resets_at_utc_midnight() {
        let mut b = Book::new(&settings("daily_cap: 2\n"));
        let clock = Clock::starting_at(T0 + 23 * 3_600_000);
        let mut verdicts = Vec::new();
        for n in 1..=3u64 {
            let ip = format!("45.9.21.{n}");
            let mut v = Verdict::Cooldown;
            for k in 0..3 {
                v = b
                    .on_signal(
                        0,
                        &sig(&ip, "sshd", clock.now_ms(), n * 10 + k),
                        clock.now_ms(),
                    )
                    .0;
            }
            verdicts.push(v);
        }
        assert!(is_report(&verdicts[0]) && is_report(&verdicts[1]));
        assert_eq!(verdicts[2], Verdict::Capped);
        assert_eq!(b.reports_today(clock.now_ms()), 2);
        // Past UTC midnight the cap starts again.
        tokio::time::advance(Duration::from_secs(3600)).await;
        let mut v = Verdict::Cooldown;
        for id in 97..100 {
            v = b
                .on_signal(
                    0,
                    &sig("45.9.21.3", "sshd", clock.now_ms(), id),
                    clock.now_ms(),
                )
                .0;
        }
        assert!(is_report(&v), "{v:?}");
        assert_eq!(b.reports_today(clock.now_ms()), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn ledger_restored_from_changelog_prevents_a_second_report() {
        let s = settings("");
        let mut a = Book::new(&s);
        let clock = Clock::starting_at(T0);
        let ip: IpAddr = "45.9.20.4".parse().unwrap();
        let mut changelog: Vec<(IpAddr, Option<String>)> = Vec::new();
        for id in 0..3 {
            let (_, dirty) = a.on_signal(
                2,
                &sig("45.9.20.4", "sshd", clock.now_ms(), id),
                clock.now_ms(),
            );
            if dirty {
                changelog.push((
                    ip,
                    Some(serde_json::to_string(a.state(&ip).unwrap()).unwrap()),
                ));
            }
        }
        // A new owner (restart, rebalance) replays the changelog.
        let mut b = Book::new(&s);
        for (ip, value) in &changelog {
            b.restore(
                2,
                *ip,
                value.as_deref().map(|v| serde_json::from_str(v).unwrap()),
            );
        }
        assert_eq!(b.state(&ip), a.state(&ip));
        tokio::time::advance(Duration::from_secs(60)).await;
        let mut v = Verdict::NotPublic;
        for id in 10..13 {
            v = b
                .on_signal(
                    2,
                    &sig("45.9.20.4", "sshd", clock.now_ms(), id),
                    clock.now_ms(),
                )
                .0;
        }
        assert_eq!(v, Verdict::Cooldown);
        // Counters split across owners add up: two signals before, one after.
        let mut c = Book::new(&s);
        let other = "45.9.20.5";
        c.on_signal(1, &sig(other, "sshd", clock.now_ms(), 1), clock.now_ms());
        c.on_signal(1, &sig(other, "sshd", clock.now_ms(), 2), clock.now_ms());
        let saved = c.state(&other.parse().unwrap()).cloned();
        let mut d = Book::new(&s);
        d.restore(1, other.parse().unwrap(), saved);
        assert!(is_report(
            &d.on_signal(1, &sig(other, "sshd", clock.now_ms(), 3), clock.now_ms())
                .0
        ));
        d.drop_partition(1);
        assert!(d.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn revert_and_sweep() {
        let mut b = Book::new(&settings(""));
        let clock = Clock::starting_at(T0);
        let ip: IpAddr = "45.9.20.6".parse().unwrap();
        let mut v = Verdict::NotPublic;
        for id in 0..3 {
            v = b
                .on_signal(
                    0,
                    &sig("45.9.20.6", "sshd", clock.now_ms(), id),
                    clock.now_ms(),
                )
                .0;
        }
        let Verdict::Report(c) = v else { panic!() };
        assert!(b.state(&ip).unwrap().last_report.is_some());
        b.revert(&c);
        assert_eq!(b.state(&ip).unwrap().last_report, None);
        assert_eq!(b.state(&ip).unwrap().hits["sshd"].len(), 3);
        // After a revert the next signal decides again at once.
        let v = b
            .on_signal(
                0,
                &sig("45.9.20.6", "sshd", clock.now_ms(), 2),
                clock.now_ms(),
            )
            .0;
        assert!(is_report(&v), "{v:?}");
        b.revert(&c);
        tokio::time::advance(Duration::from_secs(11 * 60)).await;
        assert_eq!(b.sweep(clock.now_ms()), vec![(0, ip)]);
        assert!(b.is_empty());
    }

    /// Issue 11: signals older than `findtime` (plus the allowed lateness) never
    /// count, however many arrive at once.
    #[tokio::test(start_paused = true)]
    async fn stale_signals_never_count() {
        let mut b = Book::new(&settings("allowed_lateness: 2m\n"));
        let now = Clock::starting_at(T0).now_ms();
        let ip = "45.9.23.1";
        let minute = 60_000;
        // 10m findtime + 2m lateness: 12m and one ms ago is stale, 12m ago is not.
        for id in 0..5 {
            let v = b.on_signal(0, &sig(ip, "sshd", now - 12 * minute - 1, id), now);
            assert_eq!(v, (Verdict::Stale, false));
        }
        assert!(b.is_empty());
        assert_eq!(
            b.on_signal(0, &sig(ip, "sshd", now - 12 * minute, 9), now)
                .0,
            Verdict::BelowThreshold { count: 1 }
        );
    }

    /// Issue 11 item 8: a NAT64 address is its IPv4 peer, for the allow-list, the
    /// book and the report.
    #[tokio::test(start_paused = true)]
    async fn nat64_addresses_are_their_ipv4_peer() {
        let mut b = Book::new(&settings(""));
        let now = Clock::starting_at(T0).now_ms();
        // 8.8.8.0/24 is allow-listed in these settings.
        assert_eq!(
            b.on_signal(0, &sig("64:ff9b::808:808", "sshd", now, 1), now)
                .0,
            Verdict::AllowListed
        );
        let mut last = Verdict::Cooldown;
        for (id, ip) in ["64:ff9b::2d09:1801", "::ffff:45.9.24.1", "45.9.24.1"]
            .iter()
            .enumerate()
        {
            last = b.on_signal(0, &sig(ip, "sshd", now, id as u64 + 10), now).0;
        }
        let Verdict::Report(c) = last else {
            panic!("{last:?}")
        };
        assert_eq!(c.ip, "45.9.24.1".parse::<IpAddr>().unwrap());
        assert_eq!(b.len(), 1);
    }

    /// Issue 11 item 7: spraying addresses cannot grow the book past `max_tracked`,
    /// and a forgotten attacker's report still counts against the day's cap.
    #[tokio::test(start_paused = true)]
    async fn the_book_is_bounded_and_forgetting_keeps_the_count() {
        let mut b = Book::new(&settings("max_tracked: 3\ndaily_cap: 2\n"));
        let now = Clock::starting_at(T0).now_ms();
        let attack = |b: &mut Book, ip: &str, id: u64| {
            (0..3)
                .map(|k| b.on_signal(0, &sig(ip, "sshd", now, id * 10 + k), now).0)
                .last()
                .unwrap()
        };
        assert!(is_report(&attack(&mut b, "45.9.25.1", 1)));
        // A spray of 1,000 networks, one signal each: the book keeps 3.
        for n in 0..1_000u64 {
            let ip = format!("2a01:4f8:{:x}:1::1", n);
            b.on_signal(0, &sig(&ip, "sshd", now, 100_000 + n), now);
            assert!(b.len() <= 3);
        }
        assert!(
            b.state(&"45.9.25.1".parse().unwrap()).is_none(),
            "forgotten"
        );
        assert_eq!(b.reports_today(now), 1, "its report still counts");
        assert!(is_report(&attack(&mut b, "45.9.25.2", 2)));
        assert_eq!(attack(&mut b, "45.9.25.3", 3), Verdict::Capped);
        // Revert and restore keep the count right.
        let mut c = Book::new(&settings("daily_cap: 5\n"));
        let Verdict::Report(cand) = attack(&mut c, "45.9.25.4", 4) else {
            panic!()
        };
        assert_eq!(c.reports_in(0, now), 1);
        c.revert(&cand);
        assert_eq!(c.reports_in(0, now), 0);
        let reported = IpState {
            last_report: Some(now),
            ..IpState::default()
        };
        c.restore(1, "45.9.25.5".parse().unwrap(), Some(reported.clone()));
        c.restore(1, "45.9.25.5".parse().unwrap(), Some(reported));
        assert_eq!(
            c.reports_in(1, now),
            1,
            "a record restored twice counts once"
        );
        c.restore(1, "45.9.25.5".parse().unwrap(), None);
        assert_eq!(c.reports_in(1, now), 0);
    }

    /// The cap's shares add up to the cap, the remainder on the lowest partitions.
    #[test]
    fn the_daily_cap_is_shared_over_the_partitions() {
        let mut b = Book::new(&settings("daily_cap: 8\n"));
        b.set_partitions(3);
        assert_eq!((0..3).map(|p| b.cap_of(p)).collect::<Vec<_>>(), [3, 3, 2]);
        b.set_partitions(1);
        assert_eq!(b.cap_of(0), 8);
    }

    /// One process owning every partition reaches the whole cap, one partition's
    /// share at a time.
    #[tokio::test(start_paused = true)]
    async fn one_owner_of_every_partition_reaches_the_whole_cap() {
        let mut b = Book::new(&settings("daily_cap: 5\n"));
        b.set_partitions(2);
        let now = Clock::starting_at(T0).now_ms();
        let mut reports = [0, 0];
        for n in 0..40u64 {
            let partition = (n % 2) as i32;
            let ip = format!("45.9.22.{n}");
            for k in 0..3 {
                if is_report(
                    &b.on_signal(partition, &sig(&ip, "sshd", now, n * 10 + k), now)
                        .0,
                ) {
                    reports[partition as usize] += 1;
                }
            }
        }
        assert_eq!(reports, [3, 2]);
    }

    /// IPv6 addresses of one /64 are one attacker: their signals add up, and once
    /// one of them is reported the whole network is in cooldown.
    #[tokio::test(start_paused = true)]
    async fn an_ipv6_network_is_one_attacker() {
        let mut b = Book::new(&settings(""));
        let now = Clock::starting_at(T0).now_ms();
        let v = |b: &mut Book, ip: &str, id| b.on_signal(0, &sig(ip, "sshd", now, id), now).0;
        assert!(!is_report(&v(&mut b, "2a01:4f8:10:20::1", 1)));
        assert!(!is_report(&v(&mut b, "2a01:4f8:10:20::2", 2)));
        let third = v(&mut b, "2a01:4f8:10:20:aaaa::3", 3);
        let Verdict::Report(c) = third else {
            panic!("{third:?}")
        };
        // The report names the address that was seen, the book holds the network.
        assert_eq!(c.ip, "2a01:4f8:10:20:aaaa::3".parse::<IpAddr>().unwrap());
        assert_eq!(b.len(), 1);
        assert_eq!(b.key(c.ip), "2a01:4f8:10:20::".parse::<IpAddr>().unwrap());
        for id in 4..7 {
            let ip = format!("2a01:4f8:10:20::{id}");
            assert_ne!(v(&mut b, &ip, id), Verdict::Report(Box::new((*c).clone())));
        }
        assert_eq!(v(&mut b, "2a01:4f8:10:20::9", 9), Verdict::Cooldown);
        // The next /64 is another attacker.
        for id in 10..12 {
            assert!(!is_report(&v(&mut b, "2a01:4f8:10:21::1", id)));
        }
        assert!(is_report(&v(&mut b, "2a01:4f8:10:21::1", 12)));
    }

    /// Owners of one partition each, moved around at random and restored from the
    /// changelog as a rebalance does: the whole group never reports more than the
    /// daily cap.
    mod group_cap {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Step {
            /// Partition p goes to owner o (0-2).
            Move(usize, usize),
            /// `maxretry` signals of attacker n.
            Attack(u32),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                1 => (0..6usize, 0..3usize).prop_map(|(p, o)| Step::Move(p, o)),
                3 => (0..200u32).prop_map(Step::Attack),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn never_more_than_the_cap(
                cap in 6..30u32,
                partitions in 1..=6usize,
                steps in proptest::collection::vec(step(), 1..300),
            ) {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .start_paused(true)
                    .build()
                    .unwrap();
                let _guard = rt.enter();
                let now = Clock::starting_at(T0).now_ms();
                let settings = settings(&format!("daily_cap: {cap}\n"));
                let mut owners: Vec<Book> = (0..3)
                    .map(|_| {
                        let mut b = Book::new(&settings);
                        b.set_partitions(partitions as u32);
                        b
                    })
                    .collect();
                let mut owner_of = vec![0usize; partitions];
                let mut changelog: Vec<HashMap<IpAddr, IpState>> = vec![HashMap::new(); partitions];
                let (mut reports, mut id) = (0u32, 0u64);
                for s in steps {
                    match s {
                        Step::Move(p, o) => {
                            let p = p % partitions;
                            owners[owner_of[p]].drop_partition(p as i32);
                            owner_of[p] = o;
                            for (ip, st) in &changelog[p] {
                                owners[o].restore(p as i32, *ip, Some(st.clone()));
                            }
                        }
                        Step::Attack(n) => {
                            let p = n as usize % partitions;
                            let ip: IpAddr = format!("45.10.{}.{}", n / 250, n % 250).parse().unwrap();
                            let book = &mut owners[owner_of[p]];
                            for _ in 0..3 {
                                id += 1;
                                let (v, dirty) = book.on_signal(p as i32, &sig(&ip.to_string(), "sshd", now, id), now);
                                if dirty {
                                    changelog[p].insert(book.key(ip), book.state(&ip).unwrap().clone());
                                }
                                reports += u32::from(is_report(&v));
                            }
                        }
                    }
                }
                prop_assert!(reports <= cap, "{reports} reports, cap {cap}");
            }
        }
    }
}
