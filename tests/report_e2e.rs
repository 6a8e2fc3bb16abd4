//! Reciprocal reporting end to end: raw sshd lines on a real Kafka broker, the
//! `ipenrich run` binary (pipeline + reporter), the provider simulator in this test
//! process as ipinsights. Issue 5 acceptance points 1-4.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    bin, consume, create_topics, free_port, kafka, produce, produce_at, root, strip_ansi, unique,
    write_config, Proc,
};
use ipenrich::report::rules::RuleSet;
use ipenrich::report::state::{Book, Verdict};
use ipenrich::simulate::{self, SimConfig, SimHandle};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// The simulator on its own runtime, so tests can block freely.
struct Sim {
    handle: SimHandle,
    _rt: tokio::runtime::Runtime,
}

fn sim() -> Sim {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = rt
        .block_on(simulate::start(
            SimConfig::default(),
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();
    Sim { handle, _rt: rt }
}

impl Sim {
    fn reports(&self) -> Vec<ipenrich::simulate::accounting::ReportRecord> {
        self.handle.accounting().ipinsights.reports
    }

    /// Every report request that reached the simulator, accepted or not.
    fn report_requests(&self) -> u64 {
        self.handle.accounting().ipinsights.endpoint("report")
    }
}

fn create_compacted(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in futures::executor::block_on(admin.create_topics([&topic], &opts)).unwrap() {
        r.unwrap();
    }
}

struct Topics {
    raw: String,
    enriched: String,
    signals: String,
    changelog: String,
    group: String,
}

fn topics(bootstrap: &str, prefix: &str) -> Topics {
    let t = Topics {
        raw: unique(&format!("{prefix}-raw")),
        enriched: unique(&format!("{prefix}-enriched")),
        signals: unique(&format!("{prefix}-signals")),
        changelog: unique(&format!("{prefix}-state")),
        group: unique(prefix),
    };
    create_topics(bootstrap, &[&t.raw, &t.enriched], 2);
    create_topics(bootstrap, &[&t.signals], 3);
    create_compacted(bootstrap, &t.changelog, 3);
    t
}

const SSHD: &str = r"sshd\[\d+\]: Failed password for (?:invalid user )?\S+ from (?P<ip>[0-9A-Fa-f.:]+) port \d+ ssh2\s*$";

fn config(
    t: &Topics,
    sim: &Sim,
    dir: &Path,
    audit: &Path,
    maxretry: u32,
    http: Option<u16>,
) -> String {
    let key = dir.join("ipinsights.key");
    std::fs::write(&key, "sim-ipinsights-key\n").unwrap();
    let http = http
        .map(|p| format!("http:\n  listen: 127.0.0.1:{p}\n"))
        .unwrap_or_default();
    format!(
        r#"{http}pipelines:
  - name: sshd
    source:
      kafka:
        brokers: {b}
        topics: [{raw}]
        group_id: {g}-pipe
        format: text
    extract:
      text: [message]
    providers:
      - mmdb:
          path: {root}/samples/demo-asn.mmdb
    sink:
      kafka:
        topic: {enriched}
    shutdown_timeout: 5s
reporters:
  - name: sshd
    brokers: {b}
    topics: [{enriched}]
    signal_group_id: {g}-signals
    decision_group_id: {g}-decide
    signals_topic: {signals}
    changelog_topic: {changelog}
    dry_run: false
    ipinsights:
      base_url: {url}
      api_key: {{file: {key}}}
    allow_list: [93.184.216.0/24, 2a02:26f0::/32]
    cooldown: 60m
    comment:
      template: "{{count}} failed SSH logins from this IP within {{findtime}}: {{sample}}"
    rules:
      - name: sshd-failed-password
        when:
          - field: message
            matches: '{SSHD}'
        attacker: {{capture: ip}}
        categories: [ssh_bruteforce]
        source: fail2ban
        maxretry: {maxretry}
        findtime: 10m
    audit:
      file: {{path: {audit}}}
"#,
        b = kafka(),
        raw = t.raw,
        g = t.group,
        root = root().display(),
        enriched = t.enriched,
        signals = t.signals,
        changelog = t.changelog,
        url = sim.handle.base_url("ipinsights"),
        key = key.display(),
        audit = audit.display(),
    )
}

fn sshd_line(ip: &str, n: usize) -> Vec<u8> {
    format!(
        "Nov 23 04:{:02}:{:02} bastion sshd[{}]: Failed password for invalid user admin{n} from {ip} port {} ssh2",
        (n / 60) % 60,
        n % 60,
        4000 + n,
        40000 + n
    )
    .into_bytes()
}

/// Lines for `ips`, `per_ip` each, round-robin over both partitions.
fn stream(ips: &[(String, usize)]) -> Vec<(i32, Option<Vec<u8>>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut n = 0;
    let most = ips.iter().map(|(_, k)| *k).max().unwrap_or(0);
    for round in 0..most {
        for (ip, k) in ips {
            if round < *k {
                out.push(((n % 2) as i32, None, sshd_line(ip, n)));
                n += 1;
            }
        }
    }
    out
}

fn audit(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until `f` holds, panicking with `what` after `timeout`.
fn wait(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the audit file has at least `min` records and stopped growing for 3 s.
fn wait_audit(path: &Path, min: usize, timeout: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    let mut last = (0, Instant::now());
    loop {
        let n = audit(path).len();
        if n != last.0 {
            last = (n, Instant::now());
        }
        if n >= min && last.1.elapsed() > Duration::from_secs(3) {
            return audit(path);
        }
        assert!(
            Instant::now() < deadline,
            "audit has {n} records, expected at least {min}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn reported(sim: &Sim) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in sim.reports() {
        *m.entry(r.ip).or_default() += 1;
    }
    m
}

fn canonical(ip: &str) -> String {
    ip.parse::<IpAddr>().unwrap().to_canonical().to_string()
}

/// Acceptance 1: 50 IPs, the exact set reported once each; replay in cooldown: 0 new
/// requests; SIGKILL + restart (ledger restored from the changelog): 0 duplicates.
#[test]
fn sshd_bruteforce_from_50_ips_reported_once_across_replay_and_sigkill() {
    let sim = sim();
    let bootstrap = kafka();
    let t = topics(&bootstrap, "rep1");
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let cfg = write_config(
        dir.path(),
        "c.yaml",
        &config(&t, &sim, dir.path(), &audit_path, 5, None),
    );

    let mut attackers: Vec<String> = Vec::new();
    for i in 0..15 {
        attackers.push(format!("218.92.0.{}", 100 + i));
        attackers.push(format!("61.177.172.{}", 10 + i));
    }
    for i in 0..5 {
        attackers.push(format!("2a01:4f8:c17:{:x}::2", 0x1000 + i));
    }
    let private = [
        "10.1.2.3",
        "192.168.7.7",
        "172.20.1.1",
        "::ffff:10.0.0.1",
        "fd00::17",
    ];
    let allowed = [
        "93.184.216.34",
        "93.184.216.35",
        "93.184.216.36",
        "2a02:26f0::1",
        "2a02:26f0::2",
    ];
    let below = [
        "45.9.20.1",
        "45.9.20.2",
        "45.9.20.3",
        "45.9.20.4",
        "2604:a880:400:d1::7",
    ];
    let mut plan: Vec<(String, usize)> = attackers.iter().map(|ip| (ip.clone(), 6)).collect();
    plan.extend(
        private
            .iter()
            .chain(allowed.iter())
            .map(|ip| (ip.to_string(), 6)),
    );
    plan.extend(below.iter().map(|ip| (ip.to_string(), 4)));
    assert_eq!(plan.len(), 50);
    let lines = stream(&plan);
    let signals_per_pass = lines.len();
    // Benign lines on the same topic never signal.
    let benign: Vec<_> = (0..20)
        .map(|n| {
            (
                n % 2,
                None,
                format!("Nov 23 05:00:{n:02} bastion sshd[9{n}]: Accepted publickey for deploy from 81.2.69.{n} port 5{n:04} ssh2").into_bytes(),
            )
        })
        .collect();

    let mut p1 = Proc::run(&cfg, &dir.path().join("p1.log"));
    produce(&bootstrap, &t.raw, lines.clone());
    produce(&bootstrap, &t.raw, benign.clone());
    let expected: BTreeSet<String> = attackers.iter().map(|ip| canonical(ip)).collect();
    wait(Duration::from_secs(120), "35 reports", || {
        sim.reports().len() >= expected.len()
    });
    let records = wait_audit(&audit_path, signals_per_pass, Duration::from_secs(60));
    let got = reported(&sim);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(got.values().all(|n| *n == 1), "{got:?}");
    assert_eq!(sim.report_requests(), expected.len() as u64);
    for r in sim.reports() {
        assert_eq!(r.categories, ["ssh_bruteforce"]);
        assert_eq!(r.source.as_deref(), Some("fail2ban"));
        let comment = r.comment.unwrap();
        assert!(
            comment.starts_with("5 failed SSH logins from this IP within 10m: "),
            "{comment}"
        );
        assert!(
            !comment.contains("bastion") && !comment.contains("admin"),
            "not redacted: {comment}"
        );
        assert!(comment.chars().count() <= 1024);
    }
    let outcome_of = |ip: &str| -> BTreeSet<String> {
        records
            .iter()
            .filter(|r| r["ip"] == canonical(ip))
            .map(|r| r["outcome"].as_str().unwrap().to_owned())
            .collect()
    };
    for ip in private {
        assert_eq!(
            outcome_of(ip),
            BTreeSet::from(["not_public".to_owned()]),
            "{ip}"
        );
    }
    for ip in allowed {
        assert_eq!(
            outcome_of(ip),
            BTreeSet::from(["allow_listed".to_owned()]),
            "{ip}"
        );
    }
    for ip in below {
        assert_eq!(
            outcome_of(ip),
            BTreeSet::from(["below_threshold".to_owned()]),
            "{ip}"
        );
    }
    assert_eq!(
        records.len(),
        signals_per_pass,
        "one decision per signal, none for benign lines"
    );

    // Replay within the cooldown: 0 new reports. Reported IPs are in cooldown, and
    // a replayed line is the same signal again (same rule, same content), so the
    // below-threshold IPs do not climb to the threshold on copies.
    produce(&bootstrap, &t.raw, lines.clone());
    let records = wait_audit(&audit_path, 2 * signals_per_pass, Duration::from_secs(60));
    let got = reported(&sim);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(got.values().all(|n| *n == 1), "{got:?}");
    assert_eq!(
        sim.report_requests(),
        expected.len() as u64,
        "replay made a new report"
    );
    assert!(
        records[signals_per_pass..]
            .iter()
            .all(|r| r["outcome"] != "sent"),
        "replay made a new report"
    );
    assert!(records.iter().any(|r| r["outcome"] == "cooldown"));

    // SIGKILL, restart: the new process knows the ledger only from the changelog.
    p1.kill();
    let before = audit(&audit_path).len();
    let mut p2 = Proc::run(&cfg, &dir.path().join("p2.log"));
    produce(&bootstrap, &t.raw, lines.clone());
    let fresh = ["141.98.11.23", "141.98.11.24", "2a06:4883:1000::6d"];
    produce(
        &bootstrap,
        &t.raw,
        stream(&fresh.map(|ip| (ip.to_owned(), 5))),
    );
    wait(Duration::from_secs(120), "reports after restart", || {
        sim.reports().len() >= expected.len() + fresh.len()
    });
    wait_audit(
        &audit_path,
        before + signals_per_pass + 15,
        Duration::from_secs(60),
    );
    let got = reported(&sim);
    assert_eq!(got.len(), expected.len() + fresh.len());
    assert!(got.values().all(|n| *n == 1), "{got:?}");
    assert_eq!(
        sim.report_requests(),
        (expected.len() + fresh.len()) as u64,
        "a request was repeated after the restart"
    );
    assert_eq!(p2.terminate(Duration::from_secs(20)), Some(0));
}

fn scrape(port: u16, metric: &str) -> f64 {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0.0;
    };
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with(metric))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Acceptance 2: two processes in one group; every IP's signals are split across
/// both input partitions (two per partition, maxretry 4), so only the keyed
/// signals topic can bring them together; each IP is reported exactly once. An
/// IPv6 attacker rotating through four addresses of one /64 (one signal each) is
/// one attacker: reported once, under one of those addresses.
#[test]
fn two_processes_share_the_load_and_split_signals_reach_the_threshold() {
    let sim = sim();
    let bootstrap = kafka();
    let t = topics(&bootstrap, "rep2");
    let dir = tempfile::tempdir().unwrap();
    let (port1, port2) = (free_port(), free_port());
    let a1 = dir.path().join("a1.jsonl");
    let a2 = dir.path().join("a2.jsonl");
    let c1 = write_config(
        dir.path(),
        "c1.yaml",
        &config(&t, &sim, dir.path(), &a1, 4, Some(port1)),
    );
    let c2 = write_config(
        dir.path(),
        "c2.yaml",
        &config(&t, &sim, dir.path(), &a2, 4, Some(port2)),
    );
    let log1 = dir.path().join("p1.log");
    let log2 = dir.path().join("p2.log");
    let mut p1 = Proc::run(&c1, &log1);
    let mut p2 = Proc::run(&c2, &log2);
    let assigned = |log: &PathBuf| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("partitions assigned")
            .count()
    };
    wait(
        Duration::from_secs(60),
        "both processes in the group",
        || assigned(&log1) > 0 && assigned(&log2) > 0,
    );
    std::thread::sleep(Duration::from_secs(5));

    let ips: Vec<String> = (0..20).map(|i| format!("185.220.101.{}", 10 + i)).collect();
    let mut lines = Vec::new();
    let mut n = 0;
    for round in 0..2 {
        for ip in &ips {
            for partition in 0..2 {
                lines.push((partition, None, sshd_line(ip, n + round)));
                n += 1;
            }
        }
    }
    let network: Vec<String> = (1..=4).map(|i| format!("2a01:4f8:c17:1a2b::{i}")).collect();
    for (i, ip) in network.iter().enumerate() {
        lines.push(((i % 2) as i32, None, sshd_line(ip, n)));
        n += 1;
    }
    produce(&bootstrap, &t.raw, lines);
    wait(Duration::from_secs(120), "21 reports", || {
        sim.reports().len() > ips.len()
    });
    std::thread::sleep(Duration::from_secs(5));
    let mut got = reported(&sim);
    let from_network: Vec<_> = network.iter().filter_map(|ip| got.remove(ip)).collect();
    assert_eq!(
        from_network,
        [1],
        "the /64 is one attacker: {from_network:?}"
    );
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        ips.iter().cloned().collect()
    );
    assert!(got.values().all(|n| *n == 1), "{got:?}");
    assert_eq!(sim.report_requests(), ips.len() as u64 + 1);
    let s1 = scrape(port1, "ipenrich_report_signals_total");
    let s2 = scrape(port2, "ipenrich_report_signals_total");
    assert!(
        s1 > 0.0 && s2 > 0.0,
        "both processes must have seen signals: {s1} {s2}"
    );
    assert_eq!(s1 + s2, 84.0);
    assert_eq!(p1.terminate(Duration::from_secs(20)), Some(0));
    assert_eq!(p2.terminate(Duration::from_secs(20)), Some(0));
}

/// Every special-purpose block of the IANA registries, IPv4 and IPv6.
const SPECIAL: [&str; 34] = [
    "0.1.2.3",
    "10.1.2.3",
    "100.64.1.1",
    "100.127.255.254",
    "127.0.0.1",
    "169.254.10.1",
    "172.16.5.4",
    "172.31.255.1",
    "192.0.0.9",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.19.255.1",
    "198.51.100.1",
    "203.0.113.1",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
    "64:ff9b::a00:1",
    "100::1",
    "2001::1",
    "2001:2::1",
    "2001:db8::1",
    "2002:a00:1::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "ff02::1",
    "3fff::1",
];

/// Acceptance 3: nothing special-purpose is ever reported, through the whole chain
/// and straight through the decision guards.
#[test]
fn special_purpose_addresses_are_never_reported() {
    // The guard itself, for every block, with far more signals than needed.
    let cfg: ipenrich::config::ReporterConfig = serde_yaml_ng::with::singleton_map_recursive::deserialize(
        serde_yaml_ng::Deserializer::from_str(
            "name: g\nbrokers: b\ntopics: [i]\nsignals_topic: s\nchangelog_topic: c\naudit: {file: {path: /dev/null}}\nrules:\n - {name: r, when: [{field: m, exists: true}], attacker: {role: source}, categories: [other], source: manual, maxretry: 1}\n",
        ),
    )
    .unwrap();
    let mut book = Book::new(&cfg.validate().unwrap());
    for (i, ip) in SPECIAL.iter().enumerate() {
        for k in 0..10 {
            let s = ipenrich::report::rules::Signal {
                reporter: "g".into(),
                rule: "r".into(),
                ip: ip.parse().unwrap(),
                at_ms: 1,
                id: (i * 100 + k) as u64,
                threat_score: Some(100),
                sample: None,
            };
            assert_eq!(book.on_signal(0, &s, 1).0, Verdict::NotPublic, "{ip}");
        }
    }

    let sim = sim();
    let bootstrap = kafka();
    let t = topics(&bootstrap, "rep3");
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let cfg = write_config(
        dir.path(),
        "c.yaml",
        &config(&t, &sim, dir.path(), &audit_path, 5, None),
    );
    let mut plan: Vec<(String, usize)> = SPECIAL.iter().map(|ip| (ip.to_string(), 8)).collect();
    // A public control, so "no report" cannot come from a dead chain.
    plan.push(("218.92.0.200".to_owned(), 8));
    let lines = stream(&plan);
    let mut p = Proc::run(&cfg, &dir.path().join("p.log"));
    produce(&bootstrap, &t.raw, lines);
    wait(Duration::from_secs(120), "the control report", || {
        !sim.reports().is_empty()
    });
    let records = wait_audit(&audit_path, 8, Duration::from_secs(60));
    let got = reported(&sim);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), ["218.92.0.200"]);
    assert_eq!(sim.report_requests(), 1);
    let special: BTreeSet<String> = SPECIAL.iter().map(|ip| canonical(ip)).collect();
    let decided: BTreeSet<String> = records
        .iter()
        .filter(|r| r["outcome"] == "not_public")
        .map(|r| r["ip"].as_str().unwrap().to_owned())
        .collect();
    assert!(records
        .iter()
        .filter(|r| special.contains(r["ip"].as_str().unwrap()))
        .all(|r| r["outcome"] == "not_public"));
    // Most blocks come through the text path as signals (a few, like `0.1.2.3`, are
    // not taken for addresses by the scanner at all); all of those were refused.
    assert!(decided.len() >= 25, "{decided:?}");
    assert_eq!(p.terminate(Duration::from_secs(20)), Some(0));
}

/// Enriches a sample file with the example pipeline (`ipenrich enrich`), then runs the
/// example's own reporter rules over the enriched events.
fn example_signals(pipeline: &str, sample: &str) -> Vec<(String, IpAddr, Option<String>)> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let status = Command::new(bin())
        .current_dir(root())
        .args([
            "enrich", "--config", pipeline, "--input", sample, "--output",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "enrich {sample} with {pipeline}");
    let config = ipenrich::config::load_file(&root().join(pipeline)).unwrap();
    assert_eq!(config.reporters.len(), 1, "{pipeline} has one reporter");
    let r = &config.reporters[0];
    assert!(r.dry_run, "{pipeline}: examples are dry-run");
    let rules = RuleSet::new(&r.validate().unwrap());
    let text = std::fs::read_to_string(&out).unwrap();
    let mut signals = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        for s in rules.evaluate(&event, &format!("sample/{n}"), 0) {
            signals.push((s.rule, s.ip, s.sample));
        }
    }
    signals
}

fn check_example(pipeline: &str, attack: &str, benign: &str, expected: &[(&str, &str)]) {
    let got = example_signals(pipeline, attack);
    let pairs: BTreeSet<(String, IpAddr)> = got.iter().map(|(r, ip, _)| (r.clone(), *ip)).collect();
    let want: BTreeSet<(String, IpAddr)> = expected
        .iter()
        .map(|(r, ip)| (r.to_string(), ip.parse().unwrap()))
        .collect();
    assert_eq!(pairs, want, "{pipeline} on {attack}");
    for (_, _, sample) in &got {
        let sample = sample.as_deref().unwrap_or("");
        for secret in ["bastion", "corp.example.com", "ubuntu", "192.168.1.20"] {
            assert!(!sample.contains(secret), "{secret} in sample {sample}");
        }
    }
    let none = example_signals(pipeline, benign);
    assert!(
        none.is_empty(),
        "{pipeline} fired on benign input: {none:?}"
    );
}

/// Acceptance 4: the rules of every example pipeline fire on realistic attack events
/// and stay silent on realistic benign ones.
#[test]
fn example_pipelines_rules_fire_on_attacks_only() {
    check_example(
        "pipelines/fail2ban-sshd.yaml",
        "samples/report/fail2ban-sshd-attack.log",
        "samples/report/fail2ban-sshd-benign.log",
        &[
            ("sshd-failed-password", "218.92.0.112"),
            ("sshd-failed-password", "2a01:4f8:c17:1234::2"),
            ("sshd-failed-password", "193.32.162.7"),
            ("sshd-invalid-user", "61.177.172.13"),
            ("fail2ban-ban", "185.220.101.45"),
        ],
    );
    check_example(
        "pipelines/wazuh-alerts.yaml",
        "samples/report/wazuh-alerts-attack.jsonl",
        "samples/report/wazuh-alerts-benign.jsonl",
        &[
            ("wazuh-sshd-auth-failed", "162.142.125.11"),
            ("wazuh-brute-force", "162.142.125.11"),
            ("wazuh-web-attack", "45.146.164.110"),
        ],
    );
    check_example(
        "pipelines/suricata-eve.yaml",
        "samples/report/suricata-eve-attack.jsonl",
        "samples/report/suricata-eve-benign.jsonl",
        &[
            ("suricata-scan", "45.155.205.233"),
            ("suricata-exploit", "2a06:4883:1000::6d"),
        ],
    );
    check_example(
        "pipelines/splunk-hec-kafka.yaml",
        "samples/report/splunk-hec-attack.jsonl",
        "samples/report/splunk-hec-benign.jsonl",
        &[
            ("splunk-linux-secure-sshd", "141.98.11.23"),
            ("splunk-pan-threat", "179.43.180.106"),
        ],
    );
}

/// A cooldown under the provider's 15 minutes is refused at load, with the key.
#[test]
fn cooldown_below_15_minutes_is_rejected_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("pipelines/fail2ban-sshd.yaml"))
        .unwrap()
        .replace(
            "    dry_run: true\n",
            "    dry_run: true\n    cooldown: 10m\n",
        );
    let path = write_config(dir.path(), "c.yaml", &text);
    let err = ipenrich::config::load_file(&path).unwrap_err().to_string();
    assert!(err.contains("reporters[0].cooldown"), "{err}");
}

/// Fresh topics named after `prefix`, a temp dir, its audit file, and the config
/// (maxretry 5) with each `(from, to)` edit applied.
fn setup(
    sim: &Sim,
    prefix: &str,
    edits: &[(&str, &str)],
) -> (String, Topics, tempfile::TempDir, PathBuf, PathBuf) {
    let bootstrap = kafka();
    let t = topics(&bootstrap, prefix);
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let mut text = config(&t, sim, dir.path(), &audit_path, 5, None);
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} not in the config");
        text = text.replacen(from, to, 1);
    }
    let cfg = write_config(dir.path(), "c.yaml", &text);
    (bootstrap, t, dir, audit_path, cfg)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// An sshd line whose syslog time is `at_ms` (UTC).
fn sshd_line_at(ip: &str, n: usize, at_ms: i64) -> Vec<u8> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000).unwrap();
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {:2} {:02}:{:02}:{:02} bastion sshd[{}]: Failed password for invalid user admin{n} from {ip} port {} ssh2",
        MONTHS[t.month() as usize - 1],
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        4000 + n,
        40000 + n
    )
    .into_bytes()
}

/// Waits for `n` audit records, then returns the outcome of each IP's records.
fn outcomes(path: &Path, n: usize) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_ip: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in wait_audit(path, n, Duration::from_secs(120)) {
        by_ip
            .entry(r["ip"].as_str().unwrap().to_string())
            .or_default()
            .insert(r["outcome"].as_str().unwrap().to_string());
    }
    by_ip
}

/// Issue 11, acceptance 1: a first deployment on a topic holding last week's attacks
/// (the input records' own timestamps are 7 days old) reports none of them, and
/// audits every one `stale`; the enriched records keep the input's timestamps. An
/// attack happening now, in the same stream, is reported.
#[test]
fn a_week_old_replay_reports_nobody() {
    let sim = sim();
    let (bootstrap, t, dir, audit_path, cfg) = setup(&sim, "stale", &[]);
    let week_ago = now_ms() - 7 * 86_400_000;
    let old: Vec<String> = (0..10).map(|i| format!("218.92.0.{}", 150 + i)).collect();
    let mut lines = Vec::new();
    let mut n = 0;
    for round in 0..6 {
        for ip in &old {
            let at = week_ago + (round * 30_000) as i64;
            lines.push(((n % 2) as i32, None, sshd_line_at(ip, n, at), Some(at)));
            n += 1;
        }
    }
    let fresh = "61.177.172.99";
    for _ in 0..6 {
        lines.push(((n % 2) as i32, None, sshd_line(fresh, n), None));
        n += 1;
    }
    produce_at(&bootstrap, &t.raw, lines);
    let mut p = Proc::run(&cfg, &dir.path().join("p.log"));
    let by_ip = outcomes(&audit_path, n);
    assert_eq!(p.terminate(Duration::from_secs(20)), Some(0));
    for ip in &old {
        assert_eq!(
            by_ip.get(ip).cloned().unwrap_or_default(),
            BTreeSet::from(["stale".to_string()]),
            "{ip}: {by_ip:?}"
        );
    }
    assert_eq!(
        reported(&sim),
        BTreeMap::from([(fresh.to_string(), 1)]),
        "only the attack happening now"
    );
    // The enriched records carry their input records' timestamps.
    let enriched = consume(&bootstrap, &t.enriched, n, Duration::from_secs(60));
    let old_ones = enriched
        .iter()
        .filter(|g| {
            let text = String::from_utf8_lossy(&g.payload);
            old.iter().any(|ip| text.contains(&format!("from {ip} ")))
        })
        .count();
    assert_eq!(old_ones, 60);
}

/// Issue 11, acceptance 2: one IP's failures spread over 2 hours of event time (the
/// syslog time of each line, `event_time_field: message`) and delivered within a
/// second, with `findtime: 10m`: never reported. Five failures within the last
/// minutes of another IP, in the same delivery, are.
#[test]
fn failures_spread_over_two_hours_delivered_at_once_are_no_burst() {
    let sim = sim();
    let (bootstrap, t, dir, audit_path, cfg) = setup(
        &sim,
        "spread",
        &[(
            "    cooldown: 60m\n",
            "    cooldown: 60m\n    event_time_field: message\n",
        )],
    );
    let now = now_ms();
    let spread = "218.92.0.200";
    let burst = "218.92.0.201";
    let mut lines = Vec::new();
    // 12 failures, one every 10 minutes over the last 2 hours (the newest 5 minutes ago).
    for k in 0..12usize {
        let at = now - 5 * 60_000 - (k as i64) * 10 * 60_000;
        lines.push(((k % 2) as i32, None, sshd_line_at(spread, k, at)));
    }
    for k in 0..5usize {
        let at = now - 4 * 60_000 + (k as i64) * 30_000;
        lines.push(((k % 2) as i32, None, sshd_line_at(burst, 100 + k, at)));
    }
    let n = lines.len();
    produce(&bootstrap, &t.raw, lines);
    let mut p = Proc::run(&cfg, &dir.path().join("p.log"));
    let by_ip = outcomes(&audit_path, n);
    assert_eq!(p.terminate(Duration::from_secs(20)), Some(0));
    assert_eq!(
        reported(&sim),
        BTreeMap::from([(burst.to_string(), 1)]),
        "{by_ip:?}"
    );
    assert!(by_ip[spread].contains("stale"), "{by_ip:?}");
    assert!(!by_ip[spread].contains("sent"), "{by_ip:?}");
}

/// Issue 11 item 6: an event whose other fields hold what serde_json refuses
/// (`1e400`, a lone surrogate escape) still signals its attacker; it used to be
/// dropped silently, a way to evade the reporter.
#[test]
fn values_serde_json_refuses_do_not_hide_an_attacker() {
    let sim = sim();
    let (bootstrap, t, dir, _audit, cfg) = setup(
        &sim,
        "hostile",
        &[("        format: text\n", "        format: auto\n")],
    );
    let mut lines = Vec::new();
    for (ip, extra) in [
        ("218.92.0.210", r#""n":1e400"#),
        ("218.92.0.211", r#""who":"\ud800""#),
    ] {
        for n in 0..5 {
            let line = String::from_utf8(sshd_line(ip, n)).unwrap();
            let event = format!(
                r#"{{"message":{},{extra}}}"#,
                serde_json::Value::String(line)
            );
            lines.push(((n % 2) as i32, None, event.into_bytes()));
        }
    }
    produce(&bootstrap, &t.raw, lines);
    let mut p = Proc::run(&cfg, &dir.path().join("p.log"));
    wait(Duration::from_secs(120), "2 reports", || {
        sim.reports().len() >= 2
    });
    assert_eq!(p.terminate(Duration::from_secs(20)), Some(0));
    assert_eq!(
        reported(&sim),
        BTreeMap::from([
            ("218.92.0.210".to_string(), 1),
            ("218.92.0.211".to_string(), 1)
        ])
    );
}

/// Audit records that parse (a SIGKILL may cut the last line short).
fn audit_lenient(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Issue 11, acceptance 3: 22 SIGKILLs at random points while 50 IPs are being
/// reported, the provider taking 1 s before it records a report and 1 s more before
/// it answers (so kills land between the outbox write and the report taking effect,
/// and between that and its confirmation), and failing every report (500) for the
/// first 8 of them: no IP is reported twice (a
/// provider `400 duplicate` is no second report), and every IP is reported or
/// audited `lost`.
#[test]
fn sigkills_while_reporting_repeat_no_report_and_lose_none() {
    let sim = sim();
    let faults = |server_error_rate: f64| {
        let mut slow = SimConfig::default();
        slow.ipinsights.faults.latency_ms = 1_000;
        slow.ipinsights.faults.answer_latency_ms = 1_000;
        slow.ipinsights.faults.server_error_rate = server_error_rate;
        sim.handle.set_config(slow).unwrap();
    };
    // The provider fails every report for the first 8 lives: what was decided then
    // must still go out once it recovers.
    faults(1.0);
    let (bootstrap, t, dir, audit_path, cfg) = setup(&sim, "kill", &[]);
    let ips: Vec<String> = (0..50).map(|i| format!("218.92.1.{}", 10 + i)).collect();
    produce(
        &bootstrap,
        &t.raw,
        stream(&ips.iter().map(|ip| (ip.clone(), 5)).collect::<Vec<_>>()),
    );
    let mut seed = 0x5EED_0011_u64;
    let mut kills = 0;
    for round in 0..22 {
        if round == 8 {
            faults(0.0);
        }
        let mut p = Proc::run(&cfg, &dir.path().join(format!("p{round}.log")));
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(3_000 + seed % 6_000));
        p.kill();
        kills += 1;
    }
    let mut last = Proc::run(&cfg, &dir.path().join("last.log"));
    let settled = |sim: &Sim| {
        let reported = reported(sim);
        let lost: BTreeSet<String> = audit_lenient(&audit_path)
            .iter()
            .filter(|r| r["outcome"] == "lost")
            .map(|r| r["ip"].as_str().unwrap().to_string())
            .collect();
        (reported, lost)
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (reported, lost) = settled(&sim);
        let missing: Vec<&String> = ips
            .iter()
            .filter(|ip| !reported.contains_key(*ip) && !lost.contains(*ip))
            .collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("last.log")).unwrap_or_default();
            let audit: Vec<String> = audit_lenient(&audit_path)
                .iter()
                .filter(|r| missing.iter().any(|ip| r["ip"] == ip.as_str()))
                .map(|r| r.to_string())
                .collect();
            panic!(
                "neither reported nor lost: {missing:?}\naudit: {audit:#?}\nlast log:\n{}",
                strip_ansi(&log)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Whatever is still in flight settles.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(last.terminate(Duration::from_secs(20)), Some(0));
    let (reported, lost) = settled(&sim);
    let requests = sim.report_requests();
    let outcomes: BTreeMap<String, usize> =
        audit_lenient(&audit_path)
            .iter()
            .fold(BTreeMap::new(), |mut m, r| {
                *m.entry(r["outcome"].as_str().unwrap().to_string())
                    .or_default() += 1;
                m
            });
    println!(
        "{kills} SIGKILLs: {} IPs reported, {} lost, {requests} report requests ({} refused as duplicates or not answered); audit outcomes {outcomes:?}",
        reported.len(),
        lost.len(),
        requests - reported.values().sum::<usize>() as u64,
    );
    assert!(
        reported.values().all(|n| *n == 1),
        "reported twice: {reported:?}"
    );
    for ip in &ips {
        assert!(
            reported.contains_key(ip) || lost.contains(ip),
            "{ip} neither reported nor audited lost"
        );
    }
}

/// The HTTP status of `GET path` on the child's listener, 0 when it does not answer.
fn status(addr: &str, path: &str) -> u16 {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").is_err() {
        return 0;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Issue 11, isolation: a reporter that cannot start (its audit directory is
/// missing) is restarted with back-off on its own, and says so in its readiness and
/// `ipenrich_restarts_total`, while the pipeline beside it enriches every event;
/// once the cause is gone it recovers without a process restart, and decides every
/// signal.
#[test]
fn a_failing_reporter_restarts_alone_while_the_pipeline_enriches() {
    let sim = sim();
    let bootstrap = kafka();
    let t = topics(&bootstrap, "isolation");
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("not-yet");
    let audit_path = audit_dir.join("audit.jsonl");
    let text = config(&t, &sim, dir.path(), &audit_path, 5, Some(0));
    let cfg = write_config(dir.path(), "c.yaml", &text);
    let log = dir.path().join("run.log");
    let mut p = Proc::run(&cfg, &log);
    let addr = common::metrics_addr(&log);
    let ips: Vec<(String, usize)> = (1..=4).map(|i| (format!("45.146.164.{i}"), 6)).collect();
    let records = stream(&ips);
    produce(&bootstrap, &t.raw, records.clone());
    let enriched = consume(
        &bootstrap,
        &t.enriched,
        records.len(),
        Duration::from_secs(120),
    );
    assert_eq!(
        enriched.len(),
        records.len(),
        "the pipeline enriched every event"
    );
    wait(Duration::from_secs(60), "a reporter restart", || {
        common::metric(
            &common::scrape(&addr),
            "ipenrich_restarts_total",
            &["component=\"reporter\"", "name=\"sshd\""],
        ) >= 1.0
    });
    wait(Duration::from_secs(60), "the pipeline ready", || {
        status(&addr, "/health/ready/pipeline/sshd") == 200
    });
    assert_eq!(status(&addr, "/health/ready/reporter/sshd"), 503);
    assert_eq!(
        status(&addr, "/health/ready"),
        503,
        "the process is not all ready"
    );
    assert_eq!(status(&addr, "/health/ready/reporter/nobody"), 404);
    assert!(p.0.try_wait().unwrap().is_none(), "the process runs on");
    std::fs::create_dir(&audit_dir).unwrap();
    let decided = wait_audit(&audit_path, records.len(), Duration::from_secs(180));
    assert_eq!(decided.len(), records.len(), "every signal decided once");
    wait(Duration::from_secs(60), "the reporter ready", || {
        status(&addr, "/health/ready/reporter/sshd") == 200
    });
    let restarts = common::metric(
        &common::scrape(&addr),
        "ipenrich_restarts_total",
        &["component=\"reporter\""],
    );
    println!("reporter restarts before its audit directory appeared: {restarts}");
    assert_eq!(reported(&sim).len(), ips.len(), "each attacker reported");
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0));
}

/// The topic names of an example config: every `topic:`, `topics: [...]`,
/// `signals_topic:` and `changelog_topic:` value.
fn example_topics(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(
        r"(?m)(?:\btopic|signals_topic|changelog_topic):\s*([A-Za-z0-9._-]+)|\btopics:\s*\[([^\]]*)\]",
    )
    .unwrap();
    let mut names = BTreeSet::new();
    for c in re.captures_iter(text) {
        if let Some(one) = c.get(1) {
            names.insert(one.as_str().to_owned());
        }
        if let Some(list) = c.get(2) {
            names.extend(list.as_str().split(',').map(|s| s.trim().to_owned()));
        }
    }
    names
}

/// Acceptance 6: every example pipeline with a reporter starts with `ipenrich run`
/// on topics that do not exist yet (as on a fresh broker), with no API key (nor
/// anything else) in the environment: the reporter creates its topics (the
/// changelog compacted), becomes ready, and audits the example's attack sample.
#[test]
fn every_example_starts_on_a_fresh_broker_without_api_keys() {
    let bootstrap = kafka();
    let examples = [
        ("fail2ban-sshd", "samples/report/fail2ban-sshd-attack.log"),
        ("wazuh-alerts", "samples/report/wazuh-alerts-attack.jsonl"),
        ("suricata-eve", "samples/report/suricata-eve-attack.jsonl"),
        ("splunk-hec-kafka", "samples/report/splunk-hec-attack.jsonl"),
    ];
    let mut with_reporter = 0;
    for entry in std::fs::read_dir(root().join("pipelines")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        with_reporter += usize::from(text.contains("\nreporters:"));
    }
    assert_eq!(
        with_reporter,
        examples.len(),
        "every example with a reporter is run here"
    );
    let token = regex::Regex::new(r"[A-Za-z0-9._-]+").unwrap();
    for (name, sample) in examples {
        start_example(&bootstrap, name, sample, &token);
    }
}

/// Runs example `name` on fresh topics with an empty environment, feeds it `sample`,
/// and waits for its first audit record.
fn start_example(bootstrap: &str, name: &str, sample: &str, token: &regex::Regex) {
    let dir = tempfile::tempdir().unwrap();
    let mut text = std::fs::read_to_string(root().join(format!("pipelines/{name}.yaml"))).unwrap();
    let renamed: BTreeMap<String, String> = example_topics(&text)
        .into_iter()
        .map(|t| {
            let fresh = unique(&t);
            (t, fresh)
        })
        .collect();
    text = token
        .replace_all(&text, |c: &regex::Captures| {
            renamed
                .get(&c[0])
                .cloned()
                .unwrap_or_else(|| c[0].to_owned())
        })
        .into_owned();
    let cfg = write_config(dir.path(), "c.yaml", &text);
    let config = ipenrich::config::load_file(&cfg).unwrap();
    let reporter = config.reporters[0].validate().unwrap();
    let input = match &config.pipelines[0].source {
        ipenrich::config::SourceConfig::Kafka(k) => k.topics[0].clone(),
        other => panic!("{name}: not a Kafka source: {other:?}"),
    };
    let audit_topic = match &reporter.audit {
        ipenrich::config::reporter::AuditConfig::Kafka(k) => k.topic.clone(),
        other => panic!("{name}: audit is not a Kafka topic: {other:?}"),
    };
    let log = dir.path().join("run.log");
    let mut child = Command::new(bin())
        .current_dir(root())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KAFKA_BROKERS", bootstrap)
        .env("IPENRICH_HTTP", "127.0.0.1:0")
        .env("RUST_LOG", "info,librdkafka=warn")
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let lines: Vec<(i32, Option<Vec<u8>>, Vec<u8>)> = std::fs::read_to_string(root().join(sample))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| (0, None, l.as_bytes().to_vec()))
        .collect();
    produce(bootstrap, &input, lines);
    let http = text.contains("\nhttp:").then(|| common::metrics_addr(&log));
    let deadline = Instant::now() + Duration::from_secs(120);
    let audited = loop {
        let log_text = strip_ansi(&std::fs::read_to_string(&log).unwrap_or_default());
        assert!(
            child.try_wait().unwrap().is_none(),
            "{name}: ipenrich run exited:\n{log_text}"
        );
        assert!(
            !log_text.contains("restarting after a back-off"),
            "{name}: a component failed:\n{log_text}"
        );
        let got =
            if log_text.contains("topic created") || log_text.contains("decision stage running") {
                consume(bootstrap, &audit_topic, 1, Duration::from_secs(2))
            } else {
                Vec::new()
            };
        if !got.is_empty() {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: nothing audited:\n{log_text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(!audited.is_empty());
    let changelog = describe(bootstrap, &reporter.changelog_topic, "cleanup.policy");
    assert_eq!(
        changelog.as_deref(),
        Some("compact"),
        "{name}: changelog compacted"
    );
    if let Some(addr) = http {
        wait(Duration::from_secs(90), "the example ready", || {
            status(&addr, "/health/ready") == 200
        });
        assert_eq!(
            status(&addr, &format!("/health/ready/reporter/{}", reporter.name)),
            200
        );
    }
    let mut proc = Proc(child);
    assert_eq!(
        proc.terminate(Duration::from_secs(30)),
        Some(0),
        "{name}: clean exit"
    );
    println!(
        "{name}: started on fresh topics {:?}, audited",
        renamed.values()
    );
}

/// A topic config value, as the brokers describe it.
fn describe(bootstrap: &str, topic: &str, key: &str) -> Option<String> {
    use rdkafka::admin::ResourceSpecifier;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let results = futures::executor::block_on(
        admin.describe_configs([&ResourceSpecifier::Topic(topic)], &opts),
    )
    .unwrap();
    let resource = results.into_iter().next()?.ok()?;
    resource.get(key).and_then(|e| e.value.clone())
}

/// Issue 11: where the brokers will not create a reporter's topics (here
/// `create_topics: false`), `ipenrich check` already says which topic to create and
/// how; where they will, it says the topic is created at start, and creates nothing.
#[test]
fn check_says_which_topic_to_create() {
    let sim = sim();
    let bootstrap = kafka();
    let t = Topics {
        raw: unique("chk-raw"),
        enriched: unique("chk-enriched"),
        signals: unique("chk-signals"),
        changelog: unique("chk-state"),
        group: unique("chk"),
    };
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let text = config(&t, &sim, dir.path(), &audit_path, 5, None);
    let check = |text: &str| {
        let cfg = write_config(dir.path(), "c.yaml", text);
        let out = Command::new(bin())
            .args(["check", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = check(&text);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "topic {}: missing, created at start with 6 partitions",
            t.signals
        )),
        "{stdout}"
    );
    let refused = text.replace(
        "    dry_run: false\n",
        "    dry_run: false\n    create_topics: false\n",
    );
    let (code, stdout, stderr) = check(&refused);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stderr.contains(&format!("topic {} does not exist", t.signals))
            && stderr.contains("kafka-topics.sh"),
        "{stderr}"
    );
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    use rdkafka::consumer::Consumer;
    let md = consumer
        .fetch_metadata(Some(&t.signals), Duration::from_secs(10))
        .unwrap();
    assert!(
        md.topics()[0].partitions().is_empty(),
        "check created {}",
        t.signals
    );
}

/// Every record of `topic` as (CreateTime ms, `ipenrich.writer` header), read
/// with `isolation` (`read_committed` or `read_uncommitted`).
fn changelog_writers(bootstrap: &str, topic: &str, isolation: &str) -> Vec<(i64, String)> {
    use rdkafka::message::{Headers, Message};
    let consumer = common::reader(bootstrap, topic, &[("isolation.level", isolation)]);
    let mut out = Vec::new();
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(5) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            quiet = Instant::now();
            let writer = m
                .headers()
                .and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "ipenrich.writer")
                        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                })
                .unwrap_or_default();
            out.push((m.timestamp().to_millis().unwrap_or(0), writer));
        }
    }
    out
}

/// Sends `signal` (STOP, CONT) to a child.
fn signal_child(p: &Proc, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &p.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal}");
}

/// Acceptance 5, zombie: replica A decides a backlog, is paused (SIGSTOP) past its
/// session, B takes its partitions over (fencing A's changelog writers) and decides
/// on; then A resumes, mid-decision, and tries to write: every write it makes after
/// resuming is refused by the broker (A says "fenced", and not one record A wrote
/// after resuming is in the committed changelog), and A's reporter restarts.
#[test]
fn a_zombie_owner_gets_every_changelog_write_rejected() {
    let sim = sim();
    let bootstrap = kafka();
    let t = topics(&bootstrap, "zombie");
    let dir = tempfile::tempdir().unwrap();
    let (audit_a, audit_b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let session = "    options:\n      session.timeout.ms: \"6000\"\n      heartbeat.interval.ms: \"500\"\n    signals_topic:";
    let text = |audit: &Path| {
        config(&t, &sim, dir.path(), audit, 100_000, None)
            .replacen("    dry_run: false\n", "    dry_run: true\n", 1)
            .replacen("    signals_topic:", session, 1)
    };
    let cfg_a = write_config(dir.path(), "a.yaml", &text(&audit_a));
    let cfg_b = write_config(dir.path(), "b.yaml", &text(&audit_b));
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = Proc::run(&cfg_a, &log_a);
    let writer_a = format!("pid-{}", a.0.id());
    let fenced = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("fenced by its new owner")
            .count()
    };
    let mut b: Option<Proc> = None;
    let mut resumed_at = Vec::new();
    for round in 0..3 {
        // A backlog of distinct attackers: every signal is a changelog write.
        let ips: Vec<(String, usize)> = (0..1500)
            .map(|i| (format!("45.{}.{}.{}", 10 + round, i / 250, i % 250 + 1), 1))
            .collect();
        produce(&bootstrap, &t.raw, stream(&ips));
        let before = audit_lenient(&audit_a).len();
        wait(Duration::from_secs(180), "A deciding", || {
            audit_lenient(&audit_a).len() > before + 50
        });
        signal_child(&a, "STOP");
        if b.is_none() {
            b = Some(Proc::run(&cfg_b, &log_b));
        }
        let b_before = audit_lenient(&audit_b).len();
        wait(
            Duration::from_secs(180),
            "B taking the partitions over",
            || audit_lenient(&audit_b).len() > b_before + 50,
        );
        resumed_at.push(now_ms());
        signal_child(&a, "CONT");
        let deadline = Instant::now() + Duration::from_secs(30);
        while fenced(&log_a) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if fenced(&log_a) > 0 {
            // Before A's reporter restarts and legitimately owns partitions again.
            a.kill();
            break;
        }
        println!("round {round}: A resumed without trying to write; pausing it again");
    }
    assert!(
        fenced(&log_a) > 0,
        "A never tried to write after resuming:\n{}",
        std::fs::read_to_string(&log_a).unwrap_or_default()
    );
    a.kill();
    let after = *resumed_at.last().unwrap();
    let committed = changelog_writers(&bootstrap, &t.changelog, "read_committed");
    let attempted = changelog_writers(&bootstrap, &t.changelog, "read_uncommitted");
    let by_a = |records: &[(i64, String)], from: i64| {
        records
            .iter()
            .filter(|(ts, w)| *w == writer_a && *ts >= from)
            .count()
    };
    println!(
        "changelog: {} committed records ({} by A before its pause), {} by A in the log after resuming, \
         {} of them committed; A fenced {} time(s)",
        committed.len(),
        by_a(&committed, 0),
        by_a(&attempted, after),
        by_a(&committed, after),
        fenced(&log_a),
    );
    assert!(by_a(&committed, 0) > 0, "A wrote nothing before its pause");
    assert_eq!(
        by_a(&committed, after),
        0,
        "a write of the zombie was accepted"
    );
    let mut b = b.unwrap();
    assert_eq!(b.terminate(Duration::from_secs(30)), Some(0));
}

/// Runs a Kafka CLI class with the cached classpath (`scripts/kafka.sh run`).
fn kafka_cli(class: &str, args: &[&str]) {
    let out = Command::new("bash")
        .arg(root().join("scripts/kafka.sh"))
        .arg("run")
        .arg(class)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{class} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Produces sshd lines to `topic` at about `per_second` until `stop`; returns how many.
fn feed(
    bootstrap: String,
    topic: String,
    per_second: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    std::thread::spawn(move || {
        let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
            ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("linger.ms", "5")
                .create()
                .unwrap();
        let mut n = 0usize;
        let tick = Duration::from_millis(100);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let started = Instant::now();
            for _ in 0..per_second / 10 {
                let line = sshd_line(
                    &format!("45.{}.{}.{}", 20 + n % 7, (n / 250) % 250, n % 250 + 1),
                    n,
                );
                let mut record = BaseRecord::<(), Vec<u8>>::to(&topic).payload(&line);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((_, r)) => {
                            record = r;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
                n += 1;
            }
            std::thread::sleep(tick.saturating_sub(started.elapsed()));
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        n
    })
}

/// `GET /health/ready` of a child: (status, how long it took).
fn timed_ready(addr: &str) -> (u16, Duration) {
    let started = Instant::now();
    let code = status(addr, "/health/ready");
    (code, started.elapsed())
}

/// Acceptance 4: a rebalance whose restore is deliberately slow (the brokers
/// throttle the restoring consumers to 64 KB/s with a client quota, over a
/// changelog of 30,000 records) leaves enrichment and `/health` alone: the
/// restore runs in tasks of its own while the pipelines enrich and the endpoints
/// answer. The figures are printed, not asserted against a clock; asserted: every
/// event fed is enriched, the new owner restores every partition it was given, and
/// every health probe was answered.
#[test]
fn a_slow_restore_leaves_enrichment_and_health_alone() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let sim = sim();
    let bootstrap = kafka();
    let t = topics(&bootstrap, "slowrestore");
    let state = serde_json::to_vec(&ipenrich::report::state::IpState::default()).unwrap();
    let changelog: Vec<(i32, Option<Vec<u8>>, Vec<u8>)> = (0..3)
        .flat_map(|p| {
            let state = state.clone();
            (0..10_000).map(move |i| {
                let ip = format!("11.{p}.{}.{}", i / 250, i % 250 + 1);
                (p, Some(ip.into_bytes()), state.clone())
            })
        })
        .collect();
    produce(&bootstrap, &t.changelog, changelog);
    let dir = tempfile::tempdir().unwrap();
    let text = |audit: &str| {
        config(&t, &sim, dir.path(), &dir.path().join(audit), 5, Some(0)).replacen(
            "    dry_run: false\n",
            "    dry_run: true\n",
            1,
        )
    };
    let (cfg_a, cfg_b) = (
        write_config(dir.path(), "a.yaml", &text("a.jsonl")),
        write_config(dir.path(), "b.yaml", &text("b.jsonl")),
    );
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let restored = |log: &Path| {
        strip_ansi(&std::fs::read_to_string(log).unwrap_or_default())
            .matches("decision partition restored")
            .count()
    };
    let mut a = Proc::run(&cfg_a, &log_a);
    let addr_a = common::metrics_addr(&log_a);
    wait(Duration::from_secs(180), "A restored", || {
        restored(&log_a) >= 3
    });
    // From now on the restoring consumers of this group read at 64 KB/s.
    let client = format!("{}-decide-restore", t.group);
    kafka_cli(
        "kafka.admin.ConfigCommand",
        &[
            "--bootstrap-server",
            &bootstrap,
            "--alter",
            "--add-config",
            "consumer_byte_rate=65536",
            "--entity-type",
            "clients",
            "--entity-name",
            &client,
        ],
    );
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let feeder = feed(bootstrap.clone(), t.raw.clone(), 1000, stop.clone());
    let out = |addr: &str| common::metric(&common::scrape(addr), "ipenrich_events_out_total", &[]);
    // Baseline: A alone.
    std::thread::sleep(Duration::from_secs(5));
    let (o0, t0) = (out(&addr_a), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let baseline = (out(&addr_a) - o0) / t0.elapsed().as_secs_f64();
    // B joins: the partitions it gets are restored slowly.
    let mut b = Proc::run(&cfg_b, &log_b);
    let addr_b = common::metrics_addr(&log_b);
    wait(Duration::from_secs(120), "B assigned", || {
        strip_ansi(&std::fs::read_to_string(&log_b).unwrap_or_default())
            .contains("decision stage running")
    });
    let (o1, t1) = (out(&addr_a) + out(&addr_b), Instant::now());
    let mut probes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    let b_share = loop {
        probes.push(timed_ready(&addr_a));
        probes.push(timed_ready(&addr_b));
        let text = strip_ansi(&std::fs::read_to_string(&log_b).unwrap_or_default());
        let assigned: usize = text
            .lines()
            .filter(|l| l.contains("decision partitions assigned"))
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("partitions="))
                    .and_then(|n| n.parse::<usize>().ok())
            })
            .sum();
        let done = text.matches("decision partition restored").count();
        if assigned > 0 && done >= assigned {
            break done;
        }
        assert!(Instant::now() < deadline, "B never restored:\n{text}");
        std::thread::sleep(Duration::from_millis(250));
    };
    let restore_took = t1.elapsed();
    let during = (out(&addr_a) + out(&addr_b) - o1) / restore_took.as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let fed = feeder.join().unwrap();
    kafka_cli(
        "kafka.admin.ConfigCommand",
        &[
            "--bootstrap-server",
            &bootstrap,
            "--alter",
            "--delete-config",
            "consumer_byte_rate",
            "--entity-type",
            "clients",
            "--entity-name",
            &client,
        ],
    );
    wait(Duration::from_secs(180), "every fed event enriched", || {
        out(&addr_a) + out(&addr_b) >= fed as f64
    });
    let answered = probes.iter().filter(|(c, _)| *c != 0).count();
    let slowest = probes.iter().map(|(_, d)| *d).max().unwrap_or_default();
    println!(
        "slow restore: B restored {b_share} partition(s) in {restore_took:?}; enrichment {baseline:.0} events/s before, \
         {during:.0} events/s during the restore (ratio {:.2}); /health/ready answered {answered} of {} probes, slowest {slowest:?}",
        during / baseline.max(1.0),
        probes.len(),
    );
    assert_eq!(answered, probes.len(), "a health probe went unanswered");
    assert_eq!(a.terminate(Duration::from_secs(30)), Some(0));
    assert_eq!(b.terminate(Duration::from_secs(30)), Some(0));
}
