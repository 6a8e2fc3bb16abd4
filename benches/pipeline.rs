//! Pipeline throughput against a bare rdkafka passthrough, on the same broker, in the
//! same run, reported as a ratio (target: ≥ 0.85).
//!
//! Both sides move the same N Wazuh-like events from a 4-partition topic to another:
//! the baseline consumes and produces the bytes unchanged (a StreamConsumer feeding a
//! FutureProducer, deliveries awaited concurrently); ipenrich runs a real pipeline
//! (field extraction, free-text scan, MMDB lookup, splice, at-least-once watermark).
//! The clock starts when the consumer is created and stops when the last delivery is
//! acknowledged: both sides join a fresh consumer group, and starting at the first
//! event instead would reward whichever side librdkafka happened to prefetch more for.
//! Rounds alternate to even out a noisy machine, and the medians are compared: the
//! passthrough's rounds on this 2-core machine vary by 3x (broker page cache, segment
//! rolls), so a best-of comparison would measure the outliers, not the pipeline.
//!
//! Needs the test broker: `KAFKA_BOOTSTRAP`, or `scripts/kafka.sh start` is run.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const N: usize = 400_000;
const ROUNDS: usize = 5;
const IPS: [&str; 8] = [
    "8.8.8.8",
    "185.220.101.45",
    "218.92.0.112",
    "162.142.125.11",
    "88.198.1.1",
    "2a01:4f8::5",
    "1.1.1.1",
    "23.1.2.3",
];

fn bootstrap() -> String {
    if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP") {
        return b;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/kafka.sh"))
        .arg("start")
        .output()
        .expect("kafka.sh");
    assert!(
        out.status.success(),
        "scripts/kafka.sh start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("KAFKA_BOOTSTRAP="))
        .next_back()
        .unwrap()
        .to_string()
}

fn event(i: usize) -> String {
    let ip = IPS[i % IPS.len()];
    format!(
        r#"{{"timestamp":"2026-11-23T04:14:02.120+0000","rule":{{"level":10,"description":"sshd: brute force trying to get access to the system.","id":"5712","groups":["syslog","sshd","authentication_failures"]}},"agent":{{"id":"003","name":"web-01","ip":"192.168.1.20"}},"manager":{{"name":"wazuh-manager"}},"id":"{i}","data":{{"srcip":"{ip}","srcport":"41022","dstuser":"root"}},"full_log":"Nov 23 04:14:01 web-01 sshd[912]: Failed password for root from {ip} port 41022 ssh2","location":"/var/log/auth.log"}}"#
    )
}

fn topic(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bench-{prefix}-{nanos}")
}

async fn create(bootstrap: &str, names: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, 4, TopicReplication::Fixed(1)))
        .collect();
    for r in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn fill(bootstrap: &str, topic: &str) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    for i in 0..N {
        let payload = event(i);
        let key = format!("k{i}");
        p.send(
            BaseRecord::to(topic)
                .partition((i % 4) as i32)
                .key(&key)
                .payload(&payload),
        )
        .unwrap();
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

/// Bare passthrough: consume, produce unchanged, await deliveries. Seconds to the last ack.
async fn passthrough(bootstrap: &str, input: &str, output: &str, tuned: bool) -> f64 {
    let start = Instant::now();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", topic("base"))
        // `tuned`: the same fetch setting as ipenrich's source (librdkafka's 1 s
        // fetch.queue.backoff.ms default stalls any consumer that falls behind).
        .set("fetch.queue.backoff.ms", if tuned { "10" } else { "1000" })
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[input]).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .unwrap();
    let mut pending = FuturesUnordered::new();
    for _ in 0..N {
        let m = consumer.recv().await.unwrap();
        let mut rec = FutureRecord::to(output)
            .payload(m.payload().unwrap())
            .partition(m.partition());
        if let Some(k) = m.key() {
            rec = rec.key(k);
        }
        let f = producer.send_result(rec).map_err(|(e, _)| e).unwrap();
        pending.push(f);
        while pending.len() > 100_000 {
            pending.next().await.unwrap().unwrap().unwrap();
        }
    }
    while let Some(d) = pending.next().await {
        d.unwrap().unwrap();
    }
    start.elapsed().as_secs_f64()
}

/// The real pipeline, in process. Seconds to the last ack.
async fn ipenrich_run(bootstrap: &str, input: &str, output: &str) -> f64 {
    let root = env!("CARGO_MANIFEST_DIR");
    let yaml = format!(
        "pipelines:\n  - name: bench\n    source:\n      kafka:\n        brokers: \"{bootstrap}\"\n        topics: [{input}]\n        group_id: {}\n    extract:\n      fields:\n        - {{path: data.srcip, role: source}}\n        - {{path: agent.ip, role: host}}\n      text: [full_log]\n    providers:\n      - mmdb: {{path: {root}/samples/demo-asn.mmdb}}\n    sink:\n      kafka: {{topic: {output}}}\n",
        topic("g")
    );
    let config = ipenrich::config::load_str(&yaml, "bench.yaml", |_| None).unwrap();
    let metrics = Arc::new(ipenrich::metrics::Metrics::new());
    let m = metrics.pipeline("bench");
    let (stop, rx) = tokio::sync::watch::channel(false);
    let p = config.pipelines[0].clone();
    let start = Instant::now();
    let shared = ipenrich::lookup::build::SharedProviders::new(metrics.registry().clone());
    let task = tokio::spawn(async move { ipenrich::pipeline::run(&p, m, &shared, rx).await });
    let watch = metrics.pipeline("bench");
    let mut first_out = None;
    let mut all_in = None;
    let mut max_in_flight = 0;
    while (watch.events_out.get() as usize) < N {
        max_in_flight = max_in_flight.max(watch.in_flight.get());
        if all_in.is_none() && watch.events_in.get() as usize >= N {
            all_in = Some(start.elapsed());
        }
        if first_out.is_none() && watch.events_out.get() > 0 {
            first_out = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    if std::env::var("IPENRICH_BENCH_VERBOSE").is_ok() {
        eprintln!("ipenrich: first event out after {first_out:?}, all read after {all_in:?}, all out after {secs:.2}s, max in flight {max_in_flight}");
    }
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    secs
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` only checks that it builds
    // (a debug build would measure nothing useful and take minutes).
    if !std::env::args().any(|a| a == "--bench") {
        println!("pipeline bench: skipped (run it with `cargo bench --bench pipeline`)");
        return;
    }
    let bootstrap = bootstrap();
    let input = topic("in");
    create(&bootstrap, &[&input]).await;
    fill(&bootstrap, &input);
    let (mut bases, mut tuned_bases, mut ours_all) = (Vec::new(), Vec::new(), Vec::new());
    // IPENRICH_BENCH_ONLY=ipenrich skips the baselines (for profiling).
    let only_ours = std::env::var("IPENRICH_BENCH_ONLY").is_ok_and(|v| v == "ipenrich");
    for round in 0..ROUNDS {
        let (o1, o2, o3) = (topic("base-out"), topic("tuned-out"), topic("ipenrich-out"));
        create(&bootstrap, &[&o1, &o2, &o3]).await;
        let (base, tuned) = if only_ours {
            (f64::NAN, f64::NAN)
        } else {
            (
                passthrough(&bootstrap, &input, &o1, false).await,
                passthrough(&bootstrap, &input, &o2, true).await,
            )
        };
        let ours = ipenrich_run(&bootstrap, &input, &o3).await;
        println!(
            "round {round}: passthrough {:>8.0} ev/s, tuned passthrough {:>8.0} ev/s, ipenrich {:>8.0} ev/s",
            N as f64 / base,
            N as f64 / tuned,
            N as f64 / ours
        );
        bases.push(base);
        tuned_bases.push(tuned);
        ours_all.push(ours);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (base, tuned, ours) = (
        median(&mut bases),
        median(&mut tuned_bases),
        median(&mut ours_all),
    );
    let ratio = base / ours;
    println!(
        "pipeline throughput (medians of {ROUNDS} rounds): ipenrich {:.0} ev/s; bare passthrough (librdkafka defaults) {:.0} ev/s, ratio {ratio:.2} (target >= 0.85){}; passthrough with ipenrich's fetch setting {:.0} ev/s, ratio {:.2}",
        N as f64 / ours,
        N as f64 / base,
        if ratio >= 0.85 { "" } else { "  BELOW TARGET" },
        N as f64 / tuned,
        tuned / ours,
    );
}
