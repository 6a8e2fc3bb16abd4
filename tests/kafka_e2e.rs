//! End-to-end tests against a real Apache Kafka broker (scripts/kafka.sh):
//! ordering, enrichment, at-least-once across SIGKILL, dead letters, SIGTERM drain.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Addresses with the ASN the demo database gives them (samples/demo-asn.csv);
/// `None`: public but not in the database.
const IPS: [(&str, Option<u64>); 10] = [
    ("8.8.8.8", Some(15169)),
    ("8.1.2.3", Some(3356)),
    ("1.1.1.1", Some(13335)),
    ("185.220.101.45", Some(60729)),
    ("218.92.0.112", Some(4134)),
    ("2a01:4f8::5", Some(24940)),
    ("2001:4860:4860::8888", Some(15169)),
    ("88.198.1.1", Some(24940)),
    ("73.12.4.5", Some(7922)),
    ("23.1.2.3", None),
];

fn event(seq: usize) -> Vec<u8> {
    let (ip, _) = IPS[seq % IPS.len()];
    format!(r#"{{"seq":{seq},"data":{{"srcip":"{ip}","dstip":"10.0.0.1"}},"msg":"login failed"}}"#)
        .into_bytes()
}

fn config(
    bootstrap: &str,
    input: &str,
    output: &str,
    dlq: &str,
    group: &str,
    extra: &str,
) -> String {
    let mmdb = root().join("samples/demo-asn.mmdb");
    format!(
        r#"
pipelines:
  - name: e2e
    source:
      kafka:
        brokers: "{bootstrap}"
        topics: [{input}]
        group_id: {group}
        options:
          session.timeout.ms: "6000"
          heartbeat.interval.ms: "1000"
    extract:
      fields:
        - path: data.srcip
          role: source
        - path: data.dstip
          role: destination
      text: [msg]
    providers:
      - mmdb:
          path: {mmdb}
    sink:
      kafka:
        topic: {output}
    dead_letter:
      kafka:
        topic: {dlq}
    shutdown_timeout: 20s
{extra}"#,
        mmdb = mmdb.display()
    )
}

fn seq_of(payload: &[u8]) -> usize {
    let v: Value = serde_json::from_slice(payload).expect("output is json");
    v["seq"].as_u64().expect("seq") as usize
}

#[test]
fn fifty_thousand_events_keep_partition_order_and_get_asn() {
    const N: usize = 50_000;
    let kafka = kafka();
    let (input, output, dlq, group) = (unique("in"), unique("out"), unique("dlq"), unique("g"));
    create_topics(&kafka, &[&input, &output], 4);
    create_topics(&kafka, &[&dlq], 1);
    produce(
        &kafka,
        &input,
        (0..N).map(|i| ((i % 4) as i32, Some(format!("k{i}").into_bytes()), event(i))),
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "p.yaml",
        &config(&kafka, &input, &output, &dlq, &group, ""),
    );
    let mut proc = Proc::run(&cfg, &dir.path().join("log"));
    let got = consume(&kafka, &output, N, Duration::from_secs(240));
    assert_eq!(
        got.len(),
        N,
        "output holds every event (log: {})",
        dir.path().join("log").display()
    );

    let mut by_partition: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for m in &got {
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        let seq = v["seq"].as_u64().unwrap() as usize;
        assert!(seen.insert(seq), "seq {seq} twice");
        assert_eq!(
            m.key.as_deref(),
            Some(format!("k{seq}").as_bytes()),
            "key preserved"
        );
        assert_eq!(
            m.headers.get("test-seq").map(Vec::as_slice),
            Some(seq.to_string().as_bytes()),
            "headers preserved"
        );
        assert_eq!(m.partition as usize, seq % 4, "same partition as the input");
        by_partition.entry(m.partition).or_default().push(seq);
        let (ip, asn) = IPS[seq % IPS.len()];
        let ips = v["enrichment"]["ips"].as_array().expect("enrichment.ips");
        assert_eq!(ips[0]["ip"], ip, "{v}");
        assert_eq!(ips[0]["role"], "source");
        assert_eq!(ips[1]["ip"], "10.0.0.1");
        assert_eq!(ips[1]["class"], "private");
        assert!(
            ips[1].get("asn").is_none(),
            "private addresses are not looked up"
        );
        match asn {
            Some(n) => {
                assert_eq!(ips[0]["asn"]["number"], n, "{v}");
                assert_eq!(v["enrichment"]["status"], "ok");
            }
            None => {
                assert_eq!(ips[0]["status"], "no_data", "{v}");
                assert_eq!(v["enrichment"]["status"], "no_data");
            }
        }
    }
    for (p, seqs) in &by_partition {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of order"
        );
        assert_eq!(seqs.len(), N / 4);
    }

    assert_eq!(
        proc.terminate(Duration::from_secs(30)),
        Some(0),
        "SIGTERM: drain, commit, exit 0"
    );
    assert_eq!(
        committed(&kafka, &group, &input, 4),
        vec![(N / 4) as i64; 4],
        "every offset committed after the drain"
    );
    assert!(
        consume(&kafka, &dlq, 1, Duration::from_secs(2)).is_empty(),
        "nothing dead-lettered"
    );
}

#[test]
fn sigkill_mid_stream_loses_nothing() {
    const N: usize = 30_000;
    let kafka = kafka();
    let (input, output, dlq, group) = (unique("in"), unique("out"), unique("dlq"), unique("g"));
    create_topics(&kafka, &[&input, &output], 4);
    create_topics(&kafka, &[&dlq], 1);
    produce(
        &kafka,
        &input,
        (0..N).map(|i| ((i % 4) as i32, None, event(i))),
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "p.yaml",
        &config(&kafka, &input, &output, &dlq, &group, ""),
    );
    let mut first = Proc::run(&cfg, &dir.path().join("log1"));
    // Let it get going, then pull the plug without warning.
    let partial = consume(&kafka, &output, N / 5, Duration::from_secs(120));
    assert!(partial.len() >= N / 5, "the first run made progress");
    first.kill();

    let mut second = Proc::run(&cfg, &dir.path().join("log2"));
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while seen.len() < N && std::time::Instant::now() < deadline {
        got = consume(&kafka, &output, N + N / 2, Duration::from_secs(5));
        seen.clear();
        for m in &got {
            *seen.entry(seq_of(&m.payload)).or_default() += 1;
        }
    }
    let lost = (0..N).filter(|s| !seen.contains_key(s)).count();
    let duplicates = got.len() - seen.len();
    println!(
        "sigkill: {} events in, {} out, {} lost, {} duplicates",
        N,
        got.len(),
        lost,
        duplicates
    );
    assert_eq!(lost, 0, "at-least-once: every input event is in the output");
    assert_eq!(second.terminate(Duration::from_secs(30)), Some(0));
}

#[test]
fn bad_events_go_to_the_dead_letter_topic_with_reasons() {
    let kafka = kafka();
    let (input, output, dlq, group) = (unique("in"), unique("out"), unique("dlq"), unique("g"));
    create_topics(&kafka, &[&input, &output], 2);
    create_topics(&kafka, &[&dlq], 1);
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let many_ips: String = (0..10_000)
        .map(|i| format!("8.{}.{}.{} ", i / 65536 % 256, i / 256 % 256, i % 256 + 1))
        .collect();
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("ok", event(1)),
        ("invalid_json", b"{\"seq\": 2, oops".to_vec()),
        (
            "invalid_utf8",
            b"{\"seq\": 3, \"x\": \"\xff\xfe\"}".to_vec(),
        ),
        ("not_an_object", b"[1,2,3]".to_vec()),
        ("invalid_json", deep.into_bytes()),
        (
            "too_large",
            format!("{{\"seq\":6,\"pad\":\"{}\"}}", "x".repeat(300_000)).into_bytes(),
        ),
        (
            "capped",
            format!("{{\"seq\":7,\"msg\":\"{many_ips}\"}}").into_bytes(),
        ),
        ("ok", event(8)),
    ];
    produce(
        &kafka,
        &input,
        inputs
            .iter()
            .enumerate()
            .map(|(i, (_, p))| (0, Some(format!("key{i}").into_bytes()), p.clone())),
    );

    let dir = tempfile::tempdir().unwrap();
    let extra = "    limits:\n      max_event_bytes: 262144\n      max_ips_per_event: 50\n";
    let cfg = write_config(
        dir.path(),
        "p.yaml",
        &config(&kafka, &input, &output, &dlq, &group, extra),
    );
    let mut proc = Proc::run(&cfg, &dir.path().join("log"));
    let out = consume(&kafka, &output, 3, Duration::from_secs(60));
    let dead = consume(&kafka, &dlq, 5, Duration::from_secs(60));
    assert_eq!(proc.terminate(Duration::from_secs(30)), Some(0));
    assert_eq!(
        out.len() + dead.len(),
        inputs.len(),
        "in = out + dead letter"
    );
    assert_eq!(out.len(), 3);
    assert_eq!(dead.len(), 5);

    let capped: Value = serde_json::from_slice(&out[1].payload).unwrap();
    assert_eq!(capped["seq"], 7);
    assert_eq!(capped["enrichment"]["capped"], true);
    assert_eq!(capped["enrichment"]["ips"].as_array().unwrap().len(), 50);

    let expected_dead: Vec<(usize, &str)> = inputs
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| !matches!(*k, "ok" | "capped"))
        .map(|(i, (k, _))| (i, *k))
        .collect();
    for (m, (i, kind)) in dead.iter().zip(expected_dead) {
        assert_eq!(
            m.key.as_deref(),
            Some(format!("key{i}").as_bytes()),
            "key kept"
        );
        assert_eq!(m.payload, inputs[i].1, "original bytes kept");
        assert_eq!(m.headers["ipenrich.error.kind"], kind.as_bytes());
        let reason = String::from_utf8(m.headers["ipenrich.error"].clone()).unwrap();
        assert!(!reason.is_empty());
        assert_eq!(
            m.headers["ipenrich.source"],
            format!("{input}/0@{i}").into_bytes(),
            "dead letter names its source offset"
        );
    }
}

/// Issue 3: a chain (local MMDB + ipinsights through the simulator) enriches every
/// event through the real broker: the ASN from the database where it has one, else
/// from the API, and the threat score always from the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_of_mmdb_and_ipinsights_enriches_every_event() {
    use ipenrich::lookup::providers::http::HttpSettings;
    use ipenrich::lookup::providers::ipinsights::IpInsightsClient;
    use ipenrich::secret::Secret;
    use ipenrich::simulate::{RateLimitConfig, SimConfig};

    const N: usize = 2_000;
    let mut sim_config = SimConfig::default();
    sim_config.ipinsights.rate_limit = Some(RateLimitConfig {
        requests: 1_000_000,
        window_ms: 3_600_000,
    });
    let sim = ipenrich::simulate::start(sim_config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = sim.base_url("ipinsights");

    // 40 addresses: half in the demo database, half only known to the API.
    let ips: Vec<String> = (0..40)
        .map(|i| {
            if i % 2 == 0 {
                format!("88.198.{i}.7")
            } else {
                format!("45.{}.{i}.9", 60 + i)
            }
        })
        .collect();
    let client = IpInsightsClient::new(
        &HttpSettings::new(&base, Secret::new("sim-ipinsights-key").unwrap()).unwrap(),
    )
    .unwrap();
    let mut expected = HashMap::new();
    for ip in &ips {
        let ipenrich::lookup::providers::Answer::Found(record) =
            client.lookup_ip(ip.parse().unwrap()).await.unwrap()
        else {
            panic!("the simulator knows {ip}");
        };
        expected.insert(ip.clone(), record);
    }

    let kafka = kafka();
    let (input, output, dlq, group) = (unique("in"), unique("out"), unique("dlq"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("ipinsights.key");
    std::fs::write(&key_file, "sim-ipinsights-key\n").unwrap();
    let events: Vec<(i32, Option<Vec<u8>>, Vec<u8>)> = (0..N)
        .map(|i| {
            let ip = &ips[i % ips.len()];
            (
                (i % 2) as i32,
                None,
                format!(r#"{{"seq":{i},"data":{{"srcip":"{ip}"}}}}"#).into_bytes(),
            )
        })
        .collect();
    let (kafka2, input2, output2, dlq2) =
        (kafka.clone(), input.clone(), output.clone(), dlq.clone());
    tokio::task::spawn_blocking(move || {
        create_topics(&kafka2, &[&input2, &output2], 2);
        create_topics(&kafka2, &[&dlq2], 1);
        produce(&kafka2, &input2, events);
    })
    .await
    .unwrap();

    let providers = format!(
        "    providers:\n      - mmdb:\n          path: {}\n      - ipinsights:\n          base_url: {base}\n          api_key:\n            file: {}\n",
        root().join("samples/demo-asn.mmdb").display(),
        key_file.display()
    );
    let text = config(&kafka, &input, &output, &dlq, &group, "").replace(
        &format!(
            "    providers:\n      - mmdb:\n          path: {}\n",
            root().join("samples/demo-asn.mmdb").display()
        ),
        &providers,
    );
    assert!(text.contains("ipinsights"), "config rewritten");
    let cfg = write_config(dir.path(), "p.yaml", &text);
    let log = dir.path().join("log");
    let mut proc = Proc::run(&cfg, &log);
    let (kafka2, output2) = (kafka.clone(), output.clone());
    let got = tokio::task::spawn_blocking(move || {
        consume(&kafka2, &output2, N, Duration::from_secs(180))
    })
    .await
    .unwrap();
    assert_eq!(
        got.len(),
        N,
        "every event enriched (log: {})",
        log.display()
    );
    for m in &got {
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        let entry = &v["enrichment"]["ips"][0];
        let ip = entry["ip"].as_str().unwrap().to_string();
        let api = &expected[&ip];
        assert_eq!(entry["status"], "ok", "{v}");
        let threat = api
            .threat
            .as_ref()
            .expect("the simulator gives a threat assessment");
        assert_eq!(
            entry["threat"]["score"],
            threat.score.unwrap(),
            "threat from ipinsights: {v}"
        );
        if ip.starts_with("88.198.") {
            assert_eq!(entry["asn"]["number"], 24940, "asn from the database: {v}");
        } else {
            let asn = api.asn.as_ref().and_then(|a| a.number).expect("api asn");
            assert_eq!(
                entry["asn"]["number"], asn,
                "asn from ipinsights when the database has none: {v}"
            );
        }
    }
    assert_eq!(proc.terminate(Duration::from_secs(30)), Some(0));
    let acc = sim.accounting();
    assert!(
        acc.ipinsights.requests_total >= ips.len() as u64,
        "the API was really asked"
    );
    sim.shutdown().await;
}

/// Issue 2: partition revocation abandons in-flight work safely. A second process
/// joins the group mid-stream (partitions move to it), then the first one leaves
/// (SIGTERM: drain, commit, hand over): every input event still reaches the output.
#[test]
fn rebalances_mid_stream_lose_nothing() {
    const N: usize = 40_000;
    let kafka = kafka();
    let (input, output, dlq, group) = (unique("in"), unique("out"), unique("dlq"), unique("g"));
    create_topics(&kafka, &[&input, &output], 4);
    create_topics(&kafka, &[&dlq], 1);
    produce(
        &kafka,
        &input,
        (0..N / 2).map(|i| ((i % 4) as i32, None, event(i))),
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "p.yaml",
        &config(&kafka, &input, &output, &dlq, &group, ""),
    );
    let mut first = Proc::run(&cfg, &dir.path().join("log1"));
    assert!(
        consume(&kafka, &output, N / 10, Duration::from_secs(120)).len() >= N / 10,
        "first process running"
    );
    let mut second = Proc::run(&cfg, &dir.path().join("log2"));
    produce(
        &kafka,
        &input,
        (N / 2..N).map(|i| ((i % 4) as i32, None, event(i))),
    );
    assert_eq!(
        first.terminate(Duration::from_secs(30)),
        Some(0),
        "the first process leaves cleanly"
    );

    let mut seen = HashSet::new();
    let mut total = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while seen.len() < N && std::time::Instant::now() < deadline {
        let got = consume(&kafka, &output, 2 * N, Duration::from_secs(5));
        total = got.len();
        seen = got.iter().map(|m| seq_of(&m.payload)).collect();
    }
    println!(
        "rebalance: {N} in, {total} out, {} duplicates",
        total - seen.len()
    );
    assert_eq!(
        seen.len(),
        N,
        "every event survives both rebalances (logs in {})",
        dir.path().display()
    );
    assert_eq!(second.terminate(Duration::from_secs(30)), Some(0));
    assert_eq!(
        committed(&kafka, &group, &input, 4),
        vec![(N / 4) as i64; 4],
        "the survivor committed everything"
    );
}

/// Issue 13: a pipeline opens its sink first and reads only once the idempotent
/// producer has its producer id, so its first events are not held (librdkafka asks
/// for the id again only every 500 ms). The statistics that say so are read from the
/// real broker here; the wait is bounded, nothing is timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_sink_learns_its_producer_id_before_the_first_read() {
    let bootstrap = kafka();
    let topic = unique("producer-id");
    create_topics(&bootstrap, &[&topic], 2);
    let health = std::sync::Arc::new(ipenrich::health::PipelineHealth::new(
        prometheus::IntGauge::new("up", "up").unwrap(),
    ));
    let sink = ipenrich::sink::kafka::KafkaSink::new(
        &bootstrap,
        &topic,
        ipenrich::config::Partitioning::Preserve,
        &BTreeMap::new(),
        health,
    )
    .await
    .unwrap();
    assert!(
        sink.producer_id_assigned(Duration::from_secs(120)).await,
        "the producer's statistics never said its producer id was assigned"
    );
}
