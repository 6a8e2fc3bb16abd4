//! Issue 8, "never stop, never lose": hostile input, oversize records, file runs
//! with stalled lookups, idle failures, unreachable brokers and fatal errors. Every
//! test asserts what must hold on any machine: nothing lost (in = out + dead
//! letters), no process restart, a clear non-zero exit where a one-shot run cannot
//! go on, and a restart with back-off, said in readiness and metrics, where a Kafka
//! pipeline fails.
//! Bounds on waiting are generous: they catch hangs, not slowness.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Hostile events interleaved with good ones, and the dead-letter kind each must get
/// (`None`: it must come out enriched).
fn hostile(with_huge: bool) -> Vec<(Vec<u8>, Option<&'static str>)> {
    let mut v: Vec<(Vec<u8>, Option<&'static str>)> = Vec::new();
    let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n - 1), "]".repeat(n - 1));
    // 10 MB: over max_event_bytes.
    let mut big = b"{\"pad\":\"".to_vec();
    big.resize(10_000_000, b'x');
    big.extend_from_slice(b"\"}");
    v.push((big, Some("too_large")));
    if with_huge {
        // 300 MB: the line source keeps 64 MiB of it for the dead letter.
        let mut huge = b"{\"pad\":\"".to_vec();
        huge.resize(300 << 20, b'y');
        huge.extend_from_slice(b"\"}");
        v.push((huge, Some("too_large")));
    }
    v.push((deep(100_000).into_bytes(), Some("invalid_json")));
    v.push((deep(128).into_bytes(), Some("invalid_json")));
    v.push((deep(127).into_bytes(), None));
    v.push((br#"{"a":1e400,"data":{"srcip":"1.1.1.1"}}"#.to_vec(), None));
    v.push((br#"{"msg":"\ud800 from 1.1.1.1"}"#.to_vec(), None));
    v.push((b"{\"a\":\"\xff\xfe\"}".to_vec(), Some("invalid_utf8")));
    v.push((b"{\"a\":\"x\x00y\"}".to_vec(), Some("invalid_json")));
    v.push((b"\x00\x00\x00".to_vec(), Some("invalid_json")));
    let many: Vec<String> = (0..10_000)
        .map(|i| format!("8.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))
        .collect();
    v.push((
        format!("{{\"msg\":\"{}\"}}", many.join(" ")).into_bytes(),
        None,
    ));
    v.push((b"[1,2]".to_vec(), Some("not_an_object")));
    v.push((b"42".to_vec(), Some("not_an_object")));
    v.push((b"\"s\"".to_vec(), Some("not_an_object")));
    v.push((br#"{"a":{"b":"#.to_vec(), Some("invalid_json")));
    v
}

fn good(i: usize) -> Vec<u8> {
    format!(r#"{{"seq":{i},"data":{{"srcip":"1.1.1.1"}},"msg":"from 8.8.8.8"}}"#).into_bytes()
}

fn config(kafka: &str, input: &str, output: &str, dlq: &str, group: &str) -> String {
    let mmdb = root().join("samples/demo-asn.mmdb");
    format!(
        r#"
pipelines:
  - name: hostile
    source:
      kafka:
        brokers: "{kafka}"
        topics: [{input}]
        group_id: {group}
        format: json
        options:
          session.timeout.ms: "6000"
          heartbeat.interval.ms: "1000"
    extract:
      fields:
        - path: data.srcip
          role: source
      text: [msg]
    providers:
      - mmdb:
          path: {mmdb}
    output:
      format: both
    sink:
      kafka:
        topic: {output}
        options:
          message.max.bytes: "1100000"
    dead_letter:
      kafka:
        topic: {dlq}
    shutdown_timeout: 10s
"#,
        mmdb = mmdb.display()
    )
}

/// Acceptance 3 of issue 8 on the real broker: every hostile record is either
/// enriched or dead-lettered with its reason, the process never restarts, and the
/// committed offsets reach the end of every partition. Also pins 8.2: events of
/// 999,000 and 1,000,020 bytes; the output topic refuses the latter at the broker
/// (RECORD_TOO_LARGE), which used to block its partition for good.
#[test]
fn hostile_input_on_the_broker_loses_nothing_and_never_stops() {
    let kafka = kafka();
    let (input, output, dlq, group) = (unique("hin"), unique("hout"), unique("hdlq"), unique("hg"));
    create_topics_with(&kafka, &[&input], 2, &[("max.message.bytes", "20000000")]);
    create_topics_with(&kafka, &[&output], 2, &[("max.message.bytes", "1000000")]);
    create_topics_with(&kafka, &[&dlq], 1, &[("max.message.bytes", "2000000")]);
    let mut events: Vec<(Vec<u8>, Option<&'static str>)> = Vec::new();
    let near = |size: usize, kind| {
        let mut e = br#"{"data":{"srcip":"1.1.1.1"},"pad":""#.to_vec();
        // Incompressible padding: the broker checks the compressed batch.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        while e.len() < size - 2 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            e.push(b"abcdefghijklmnopqrstuvwxyz012345"[(x % 32) as usize]);
        }
        e.extend_from_slice(b"\"}");
        (e, kind)
    };
    let sized = [
        near(999_000, None),
        near(1_000_020, Some("refused")),
        (Vec::new(), Some("invalid_json")),
    ];
    for (i, bad) in hostile(false).into_iter().chain(sized).enumerate() {
        events.push((good(i), None));
        events.push(bad);
    }
    events.push((good(9999), None));
    let n = produce(
        &kafka,
        &input,
        events.iter().enumerate().map(|(i, (e, _))| {
            (
                (i % 2) as i32,
                Some(format!("k{i}").into_bytes()),
                e.clone(),
            )
        }),
    );
    let want_dead = events.iter().filter(|(_, k)| k.is_some()).count();
    let want_out = n - want_dead;

    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "p.yaml",
        &config(&kafka, &input, &output, &dlq, &group),
    );
    let log = dir.path().join("log");
    let mut proc = Proc::run(&cfg, &log);
    let out = consume(&kafka, &output, want_out, Duration::from_secs(300));
    let dead = consume(&kafka, &dlq, want_dead, Duration::from_secs(120));
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        proc.0.try_wait().unwrap().is_none(),
        "ipenrich stopped on hostile input:\n{}",
        logs()
    );
    assert_eq!(out.len(), want_out, "enriched events\n{}", logs());
    assert_eq!(dead.len(), want_dead, "dead letters\n{}", logs());
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for d in &dead {
        let kind = String::from_utf8_lossy(&d.headers["ipenrich.error.kind"]).to_string();
        assert!(d.headers.contains_key("ipenrich.error"));
        assert!(d.payload.len() <= 2_000_000);
        *kinds.entry(kind).or_default() += 1;
    }
    let mut want: HashMap<String, usize> = HashMap::new();
    for (_, k) in &events {
        if let Some(k) = k {
            *want.entry(k.to_string()).or_default() += 1;
        }
    }
    assert_eq!(kinds, want, "dead-letter kinds");
    // The lone surrogate hid 1.1.1.1 before; now it is found and enriched.
    let surrogate = out
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).to_string())
        .find(|s| s.contains("\\ud800"))
        .expect("the lone-surrogate event comes out");
    assert!(surrogate.contains(r#""ip":"1.1.1.1""#), "{surrogate}");
    // Every partition's committed offset reaches its end, without a restart.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ends = [
        events.iter().step_by(2).count() as i64,
        events.iter().skip(1).step_by(2).count() as i64,
    ];
    loop {
        let c = committed(&kafka, &group, &input, 2);
        if c == ends {
            break;
        }
        assert!(Instant::now() < deadline, "committed {c:?}, want {ends:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        proc.terminate(Duration::from_secs(60)),
        Some(0),
        "{}",
        logs()
    );
}

/// The same hostile lines, plus a 300 MB one, through a file run: in = out + dead
/// letters exactly, exit 0.
#[test]
fn hostile_lines_in_a_file_run_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    let events: Vec<(Vec<u8>, Option<&'static str>)> = hostile(true)
        .into_iter()
        .enumerate()
        .flat_map(|(i, bad)| [(good(i), None), bad])
        // A line cannot hold a newline: the NUL-only line stands in for "empty".
        .filter(|(e, _)| !e.contains(&b'\n'))
        .collect();
    for (e, _) in &events {
        f.write_all(e).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.write_all(b"\n").unwrap(); // an empty line is skipped, not an event
    drop(f);
    let out = dir.path().join("out.jsonl");
    let dead = dir.path().join("dead.jsonl");
    let cfg = write_config(
        dir.path(),
        "p.yaml",
        &format!(
            "pipelines:\n  - name: f\n    source:\n      file:\n        path: {}\n        format: json\n    extract:\n      scan_all_strings: true\n    output:\n      format: both\n    sink:\n      file:\n        path: {}\n    dead_letter:\n      file:\n        path: {}\n",
            input.display(),
            out.display(),
            dead.display()
        ),
    );
    let status = Command::new(bin())
        .args(["enrich", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let lines = |p: &std::path::Path| std::fs::read_to_string(p).unwrap().lines().count();
    let want_dead = events.iter().filter(|(_, k)| k.is_some()).count();
    assert_eq!(lines(&out), events.len() - want_dead);
    assert_eq!(lines(&dead), want_dead);
}

/// Issue 8.3: a file run with lookups still pending at the end of the input wrote
/// 256 of 311 lines and exited 0. Now every line is written, the stalled one with a
/// `timeout` marker, and the summary is true.
#[test]
fn file_run_writes_every_event_when_lookups_stall_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let input = dir.path().join("in.log");
    let mut text = String::new();
    for i in 0..300 {
        text.push_str(&format!("line {i} from 10.0.0.{}\n", i % 250));
    }
    text.push_str("failed login from 8.8.8.8\n");
    for i in 0..10 {
        text.push_str(&format!("after {i} from 192.168.1.1\n"));
    }
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("out.jsonl");
    std::fs::write(dir.path().join("key"), "sim-iptrust-key").unwrap();
    let cfg = write_config(
        dir.path(),
        "p.yaml",
        &format!(
            "pipelines:\n  - name: f\n    source:\n      file:\n        path: {input}\n        format: text\n    extract:\n      scan_all_strings: true\n    providers:\n      - iptrust:\n          base_url: http://127.0.0.1:{port}/iptrust\n          api_key:\n            file: {key}\n    sink:\n      file:\n        path: {out}\n    limits:\n      on_slow_lookup: backpressure\n    shutdown_timeout: 2s\n",
            input = input.display(),
            out = out.display(),
            key = dir.path().join("key").display(),
        ),
    );
    let output = Command::new(bin())
        .args(["enrich", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let written = std::fs::read_to_string(&out).unwrap();
    assert_eq!(written.lines().count(), 311, "{stderr}");
    let stalled = written
        .lines()
        .find(|l| l.contains("8.8.8.8"))
        .expect("the stalled event is written");
    let v: Value = serde_json::from_str(stalled).unwrap();
    assert_eq!(v["enrichment"]["ips"][0]["status"], "timeout", "{stalled}");
    assert!(!stderr.contains("will be re-read"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}

/// Issue 8.8: with an unreachable broker, readiness said 200 and SIGTERM took about
/// 100 s. Now readiness is 503 and the process exits within its bound. The same with
/// an intel table on the unreachable broker: its start waits for the brokers (a
/// transient condition) and yields to SIGTERM.
#[test]
fn unreachable_broker_is_not_ready_and_sigterm_is_honoured() {
    for table in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let http_port = http.local_addr().unwrap().port();
        drop(http);
        let intel_table = if table {
            format!("intel_table:\n  brokers: 127.0.0.1:{port}\n")
        } else {
            String::new()
        };
        let cfg = write_config(
            dir.path(),
            "p.yaml",
            &format!(
                "http:\n  listen: 127.0.0.1:{http_port}\npipelines:\n  - name: k\n    source:\n      kafka:\n        brokers: 127.0.0.1:{port}\n        topics: [t]\n        group_id: g\n    extract:\n      scan_all_strings: true\n    sink:\n      kafka:\n        topic: out\n    shutdown_timeout: 3s\n{intel_table}"
            ),
        );
        let log = dir.path().join("log");
        let mut proc = Proc::run(&cfg, &log);
        // Readiness must say 503 (not 200) for as long as nothing can flow.
        let mut answered = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while answered < 5 && Instant::now() < deadline {
            if let Some(code) = http_status(http_port, "/health/ready") {
                assert_eq!(
                    code, 503,
                    "ready with an unreachable broker (table: {table})"
                );
                answered += 1;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(
            answered > 0,
            "health endpoint never answered (table: {table})"
        );
        let code = proc.terminate(Duration::from_secs(45));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            code.is_some(),
            "SIGTERM not honoured with an unreachable broker (table: {table}):\n{text}"
        );
        if table {
            assert_eq!(code, Some(0), "{text}");
            assert!(
                text.contains("shutdown requested while the intel table was starting"),
                "{text}"
            );
        }
    }
}

/// Issue 8.5, and issue 11 (isolation): a fatal error while the input is idle (the
/// output topic name is illegal, so it can never be created within
/// message.timeout.ms) used to hang with readiness 200. Now the pipeline's own
/// supervisor restarts it with back-off, and while it fails it says so: the error on
/// stderr, `ipenrich_restarts_total`, readiness 503 for the process and for the
/// pipeline. Nothing undelivered is committed, and SIGTERM is honoured.
#[test]
fn a_fatal_error_while_idle_restarts_the_pipeline_and_says_so() {
    let kafka = kafka();
    let (input, group) = (unique("fin"), unique("fg"));
    create_topics(&kafka, &[&input], 1);
    produce(&kafka, &input, [(0, None, good(1))]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "p.yaml",
        &format!(
            "http:\n  listen: 127.0.0.1:0\npipelines:\n  - name: k\n    source:\n      kafka:\n        brokers: \"{kafka}\"\n        topics: [{input}]\n        group_id: {group}\n    extract:\n      scan_all_strings: true\n    sink:\n      kafka:\n        topic: \"bad..topic..name!\"\n        partitioning: key\n        options:\n          message.timeout.ms: \"3000\"\n    shutdown_timeout: 3s\n"
        ),
    );
    let log = dir.path().join("log");
    let mut proc = Proc::run(&cfg, &log);
    let addr = common::metrics_addr(&log);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = common::scrape(&addr);
        let restarts = common::metric(&text, "ipenrich_restarts_total", &["name=\"k\""]);
        if restarts >= 2.0 {
            break;
        }
        assert!(proc.0.try_wait().unwrap().is_none(), "the process exited");
        assert!(
            Instant::now() < deadline,
            "no restart:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    // Between two failed runs (the back-off) the pipeline is not ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_status(port, "/health/ready/pipeline/k") != Some(503) {
        assert!(Instant::now() < deadline, "never unready while failing");
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("ipenrich: pipeline k"), "{text}");
    // Nothing was delivered, so nothing was committed.
    assert_eq!(committed(&kafka, &group, &input, 1), vec![-1]);
    assert!(
        proc.terminate(Duration::from_secs(30)).is_some(),
        "SIGTERM not honoured"
    );
}

/// Issue 8.4: a Kafka source with a file sink committed offsets while the output sat
/// in a user-space buffer. Now an offset is committed only after `sync_data`, so a
/// SIGKILL right after a commit loses nothing committed.
///
/// The window is made wide rather than hoped for: the first 1,000 events carry
/// private addresses (no lookup, written at once), the next ones public addresses
/// whose lookups wait 5 s at the simulator. The old writer flushed only when no
/// finished batch was queued, so the private events' output stayed in its buffer,
/// acked, while it waited for the first slow batch, and auto-commit committed them.
#[test]
fn kafka_to_file_commits_only_durable_output() {
    let kafka = kafka();
    let (input, group) = (unique("sin"), unique("sg"));
    create_topics(&kafka, &[&input], 1);
    const PRIVATE: usize = 1_000;
    const N: usize = 2_000;
    let ip = |i: usize| {
        let net = if i < PRIVATE { 10 } else { 8 };
        format!("{net}.0.{}.{}", (i / 256) % 256, i % 256)
    };
    produce(
        &kafka,
        &input,
        (0..N).map(|i| {
            (
                0,
                None,
                format!(r#"{{"seq":{i},"src":"{}"}}"#, ip(i)).into_bytes(),
            )
        }),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut sim_config = ipenrich::simulate::SimConfig::default();
    sim_config.ipinsights.rate_limit = Some(ipenrich::simulate::RateLimitConfig {
        requests: 100_000_000,
        window_ms: 3_600_000,
    });
    sim_config.ipinsights.faults.latency_ms = 5_000;
    let sim = runtime
        .block_on(ipenrich::simulate::start(
            sim_config,
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sim-ipinsights-key\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = write_config(
        dir.path(),
        "p.yaml",
        &format!(
            "pipelines:\n  - name: k\n    source:\n      kafka:\n        brokers: \"{kafka}\"\n        topics: [{input}]\n        group_id: {group}\n    extract:\n      fields:\n        - {{path: src, role: source}}\n    providers:\n      - ipinsights:\n          base_url: {url}\n          api_key: {{file: {key}}}\n          timeouts: {{connect: 5s, read: 30s, request: 60s}}\n    sink:\n      file:\n        path: {out}\n    limits:\n      max_enrichment_delay: 30s\n",
            url = sim.base_url("ipinsights"),
            key = key.display(),
            out = out.display(),
        ),
    );
    let mut proc = Proc::run(&cfg, &dir.path().join("log"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let c = loop {
        let c = committed(&kafka, &group, &input, 1)[0];
        if c > 0 {
            break c;
        }
        assert!(Instant::now() < deadline, "nothing committed");
        std::thread::sleep(Duration::from_millis(20));
    };
    proc.kill();
    runtime.block_on(sim.shutdown());
    let written = std::fs::read_to_string(&out).unwrap_or_default();
    let seqs: std::collections::HashSet<u64> = written
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["seq"].as_u64())
        .collect();
    for seq in 0..c as u64 {
        assert!(
            seqs.contains(&seq),
            "offset {seq} committed but its output lost ({} lines written, {c} committed)",
            seqs.len()
        );
    }
}

/// A minimal HTTP/1.0 GET on loopback; the status code, or None if nothing answered.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// Issue 8.8: with `backpressure` and a provider that never answers, SIGTERM was
/// never honoured. Now lookups give up at half of `shutdown_timeout`, the event is
/// written with a `timeout` marker and the process exits.
#[test]
fn sigterm_is_honoured_while_backpressure_waits_on_a_dead_provider() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(dir.path().join("key"), "sim-iptrust-key").unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = write_config(
        dir.path(),
        "p.yaml",
        &format!(
            "pipelines:\n  - name: s\n    source:\n      stdin:\n        format: text\n    extract:\n      scan_all_strings: true\n    providers:\n      - iptrust:\n          base_url: http://127.0.0.1:{port}/iptrust\n          api_key:\n            file: {key}\n    sink:\n      file:\n        path: {out}\n    limits:\n      on_slow_lookup: backpressure\n    shutdown_timeout: 2s\n",
            key = dir.path().join("key").display(),
            out = out.display(),
        ),
    );
    let log = dir.path().join("log");
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Stdin stays open: the input never ends by itself.
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "failed login from 8.8.8.8").unwrap();
    writeln!(stdin, "local 10.1.1.1").unwrap();
    stdin.flush().unwrap();
    let mut proc = Proc(child);
    std::thread::sleep(Duration::from_secs(2));
    let code = proc.terminate(Duration::from_secs(45));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        code.is_some(),
        "SIGTERM not honoured under backpressure:\n{text}"
    );
    drop(stdin);
    let written = std::fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(written.lines().count(), 2, "{written}\n{text}");
    assert!(written.contains(r#""status":"timeout""#), "{written}");
}

/// Issue 8.9 and issue 11: a source topic that does not exist was logged as a
/// warning forever while the pipeline reported ready; then it stopped the process,
/// so an example could not start on a fresh cluster. Now the pipeline waits for
/// the topic, says so in its log and stays not ready meanwhile, then reads the
/// topic once it exists (its first event creates it, as on a fresh cluster).
#[test]
fn a_missing_source_topic_is_waited_for_while_not_ready() {
    let kafka = kafka();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("missing");
    let out = dir.path().join("out.jsonl");
    let cfg = write_config(
        dir.path(),
        "p.yaml",
        &format!(
            "http:\n  listen: 127.0.0.1:0\npipelines:\n  - name: m\n    source:\n      kafka:\n        brokers: \"{kafka}\"\n        topics: [{topic}]\n        group_id: {group}\n    extract:\n      scan_all_strings: true\n    sink:\n      file: {{path: {out}}}\n    shutdown_timeout: 3s\n",
            group = unique("mg"),
            out = out.display(),
        ),
    );
    let log = dir.path().join("log");
    let mut proc = Proc::run(&cfg, &log);
    let addr = common::metrics_addr(&log);
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("does not exist yet")
    {
        assert!(Instant::now() < deadline, "the missing topic is not said");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        http_status(port, "/health/ready"),
        Some(503),
        "ready without its topic"
    );
    assert!(proc.0.try_wait().unwrap().is_none(), "the process exited");
    produce(&kafka, &topic, [(0, None, good(1))]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .count()
        < 1
    {
        assert!(
            Instant::now() < deadline,
            "the topic was never read:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while http_status(port, "/health/ready") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "never ready once the topic exists"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(proc.terminate(Duration::from_secs(30)), Some(0));
}
