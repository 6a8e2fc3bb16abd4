//! Shared helpers of the integration tests: the real Kafka broker, topics, the
//! `ipenrich` binary as a child process.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `ipenrich` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipenrich"))
}

/// Bootstrap address of the real test broker: `KAFKA_BOOTSTRAP` when set (scripts/test.sh),
/// else `scripts/kafka.sh start` is run once (idempotent) and its address used.
pub fn kafka() -> String {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| {
        if let Ok(addr) = std::env::var("KAFKA_BOOTSTRAP") {
            return addr;
        }
        let out = Command::new("bash")
            .arg(root().join("scripts/kafka.sh"))
            .arg("start")
            .stderr(Stdio::inherit())
            .output()
            .expect("running scripts/kafka.sh start");
        assert!(
            out.status.success(),
            "scripts/kafka.sh start failed; see its output above"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix("KAFKA_BOOTSTRAP="))
            .next_back()
            .expect("kafka.sh start prints KAFKA_BOOTSTRAP=")
            .to_string()
    })
    .clone()
}

/// A port of 127.0.0.1 that was free a moment ago (for a child that must be told one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A topic name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Creates topics with `partitions` partitions each and waits until they exist.
pub fn create_topics(bootstrap: &str, names: &[&str], partitions: i32) {
    create_topics_with(bootstrap, names, partitions, &[]);
}

/// Creates topics with topic configs (e.g. `max.message.bytes`).
pub fn create_topics_with(
    bootstrap: &str,
    names: &[&str],
    partitions: i32,
    configs: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            configs.iter().fold(
                NewTopic::new(n, partitions, TopicReplication::Fixed(1)),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results =
        futures::executor::block_on(admin.create_topics(&topics, &opts)).expect("create topics");
    for r in results {
        r.expect("topic created");
    }
    // Wait for the metadata to show every partition with a leader.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in names {
        loop {
            let md = consumer.fetch_metadata(Some(name), Duration::from_secs(5));
            if let Ok(md) = md {
                let t = &md.topics()[0];
                if t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
                {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "topic {name} did not appear");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A message to produce.
pub struct Out<'a> {
    pub partition: i32,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// Produces messages (in order per partition) and waits until all are acknowledged.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    messages: impl IntoIterator<Item = (i32, Option<Vec<u8>>, Vec<u8>)>,
) -> usize {
    produce_at(
        bootstrap,
        topic,
        messages.into_iter().map(|(p, k, v)| (p, k, v, None)),
    )
}

/// As [`produce`], each message with its own timestamp (ms since the epoch) when given.
pub fn produce_at(
    bootstrap: &str,
    topic: &str,
    messages: impl IntoIterator<Item = (i32, Option<Vec<u8>>, Vec<u8>, Option<i64>)>,
) -> usize {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.max.bytes", "20000000")
        .create()
        .expect("producer");
    let mut n = 0;
    for (partition, key, payload, timestamp) in messages {
        let mut headers = OwnedHeaders::new();
        headers = headers.insert(Header {
            key: "test-seq",
            value: Some(n.to_string().as_bytes()),
        });
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition(partition)
            .payload(payload.as_slice())
            .headers(headers);
        if let Some(k) = key.as_deref() {
            rec = rec.key(k);
        }
        if let Some(t) = timestamp {
            rec = rec.timestamp(t);
        }
        let mut rec = rec;
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, back)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "produce: {e}"
                    );
                    producer.poll(Duration::from_millis(10));
                    rec = back;
                }
            }
        }
        producer.poll(Duration::ZERO);
        n += 1;
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    n
}

/// A consumed message.
#[derive(Debug, Clone)]
pub struct Got {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, Vec<u8>>,
}

/// A consumer assigned every partition of `topic` from the beginning, in a group of
/// its own that never commits; `options` are extra client properties.
pub fn reader(bootstrap: &str, topic: &str, options: &[(&str, &str)]) -> BaseConsumer {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false");
    for (k, v) in options {
        cc.set(*k, *v);
    }
    let consumer: BaseConsumer = cc.create().expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// The provider simulator on a free port of 127.0.0.1.
pub async fn start_sim(config: ipenrich::simulate::SimConfig) -> ipenrich::simulate::SimHandle {
    ipenrich::simulate::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

/// Reads every partition of `topic` from the beginning (no group) until `count`
/// messages arrived or `timeout` passed with no progress goal met. Returns what it got.
pub fn consume(bootstrap: &str, topic: &str, count: usize, timeout: Duration) -> Vec<Got> {
    let consumer = reader(bootstrap, topic, &[("fetch.message.max.bytes", "20971520")]);
    let mut got = Vec::with_capacity(count);
    let deadline = Instant::now() + timeout;
    while got.len() < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => got.push(Got {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(e)) => panic!("consume {topic}: {e}"),
            None => {}
        }
    }
    got
}

/// Committed offsets of a group, per partition.
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let c = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| match c.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// Writes a config file into `dir` and returns its path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write config");
    path
}

/// A child `ipenrich` process, killed when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Starts `ipenrich run --config <config>`, logs to `log`.
    pub fn run(config: &Path, log: &Path) -> Proc {
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ipenrich");
        Proc(child)
    }

    /// Sends SIGTERM (through the `kill` command) and waits up to `bound` for the exit code.
    pub fn terminate(&mut self, bound: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The child's metrics address, from its start-up log line.
pub fn metrics_addr(log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = strip_ansi(&std::fs::read_to_string(log).unwrap_or_default());
        if let Some(line) = text.lines().find(|l| l.contains("serving /metrics")) {
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .unwrap_or_else(|| panic!("no addr= in {line:?}"));
            return addr.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the child never served /metrics (log: {})",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `GET /metrics` of the child (plain HTTP/1.0 on loopback).
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read /metrics");
    text
}

/// Sum of the samples of `name` whose labels contain every one of `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// xorshift64: a deterministic stream for the Zipf draws.
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `count` ranks drawn from Zipf(s = 1) over `n` ranks, deterministically.
pub fn zipf(n: usize, count: usize, seed: u64) -> Vec<usize> {
    let total: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
    let mut acc = 0.0;
    let cdf: Vec<f64> = (1..=n)
        .map(|k| {
            acc += 1.0 / k as f64 / total;
            acc
        })
        .collect();
    let mut state = seed;
    (0..count)
        .map(|_| {
            let u = (xorshift(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
            cdf.partition_point(|&c| c < u).min(n - 1)
        })
        .collect()
}
