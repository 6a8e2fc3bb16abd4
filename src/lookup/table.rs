//! The shared intel table: one cache for every replica, on a compacted Kafka topic.
//!
//! Every upstream answer an engine gets is published to the topic (default
//! `ipenrich-intel`), keyed `{provider}|{base url}|{address}`, with the normalised
//! record, when it was fetched and when it expires. Every replica reads the whole
//! topic into its engines' caches before its pipelines start, then follows it, like
//! a Kafka Streams GlobalKTable: a restarted or added replica starts warm, and one
//! replica's answer is a hit for the others once it has propagated (the producer's
//! linger plus the follower's fetch wait, tens of milliseconds).
//!
//! Records past their expiry are skipped, records a replica wrote itself are not
//! applied twice, and the caches keep their entry and byte bounds, so memory stays
//! what `cache_entries` allows whatever the topic holds. The topic is compacted
//! (the newest answer per key) and has a retention beyond every TTL, so it stays
//! bounded too. Publishing never waits: a full producer queue drops the record
//! (the table is an optimisation; the answer is already in the local cache) and
//! counts it.
//!
//! The table also carries each replica's quota usage (`usage|{key id}|{replica}`:
//! what it spent in the provider's window, in wall-clock time), reported whenever it
//! changed; every replica counts the others' reports against the window, and a
//! restarted replica finds its previous life's, so a restart refills nothing.
//!
//! The table alone is not a lock: two replicas missing the same address within the
//! propagation delay would both ask upstream. With `route_misses` (the default) a
//! miss goes to the replica that owns the address ([`super::route`]), and the
//! table carries the owner's answer back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use super::engine::{Engine, Outcome};
use super::providers::Answer;
use super::rate_limit::{RateLimiter, Usage};
use super::record::IntelRecord;
use crate::config::IntelTableConfig;

/// Where an engine publishes its upstream answers.
pub trait Share: Send + Sync {
    /// `source` names the data (provider and base URL, see
    /// [`super::build::source`]); `ttl` is how long the answer is good for.
    fn publish(&self, source: &str, ip: IpAddr, answer: &Answer, ttl: Duration);

    /// Tells the replicas waiting for a routed miss that the owner could not
    /// answer it (`outcome` is not an answer); nothing is cached.
    fn publish_failure(&self, source: &str, ip: IpAddr, outcome: &Outcome);
}

/// Why the table cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("intel table topic {topic:?} is missing and was not created: {reason}; create it (cleanup.policy=compact) or allow `intel_table.create`")]
    Topic { topic: String, reason: String },
    #[error("intel table {what}: {source}")]
    Kafka {
        what: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("intel table metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The value of one table record.
#[derive(Debug, Serialize, Deserialize)]
struct Value {
    /// `None` is "no data".
    record: Option<IntelRecord>,
    /// Milliseconds since the Unix epoch.
    fetched_at: u64,
    expires_at: u64,
    /// The replica that asked upstream (a random id per process).
    by: u64,
    /// Set on a routed miss the owner could not answer: `rate_limited`,
    /// `circuit_open` or `error`. Such a record wakes the waiters, is never cached,
    /// and is ignored once older than a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failed: Option<String>,
}

/// Keys of usage reports: `usage|{limiter id}|{replica}`.
const USAGE_PREFIX: &str = "usage|";

/// How often a replica reports what it spent, when that changed.
const USAGE_EVERY: Duration = Duration::from_millis(200);

/// Reports every limiter's usage to the table whenever it changed, so that the
/// other replicas (and this one's next life) count it against the window.
fn spawn_usage_reports(
    publisher: Arc<Publisher>,
    limiters: HashMap<String, Arc<RateLimiter>>,
    stop: Arc<AtomicBool>,
) {
    tokio::spawn(async move {
        let mut reported: HashMap<String, u64> = HashMap::new();
        let mut tick = tokio::time::interval(USAGE_EVERY);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            for (id, limiter) in &limiters {
                let (version, usage) = limiter.usage();
                if reported.get(id) == Some(&version) {
                    continue;
                }
                reported.insert(id.clone(), version);
                let key = format!("{USAGE_PREFIX}{id}|{}", publisher.by);
                if let Ok(payload) = serde_json::to_vec(&usage) {
                    publisher.send_raw(&key, &payload);
                }
            }
        }
    });
}

/// How long a failure notice matters: routed misses fall back well before.
const FAILURE_NOTICE_MS: u64 = 60_000;

fn failure_word(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::RateLimited => "rate_limited",
        Outcome::CircuitOpen => "circuit_open",
        _ => "error",
    }
}

fn failure_outcome(word: &str) -> Outcome {
    match word {
        "rate_limited" => Outcome::RateLimited,
        "circuit_open" => Outcome::CircuitOpen,
        _ => Outcome::Failed,
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) fn key(source: &str, ip: IpAddr) -> String {
    format!("{source}|{ip}")
}

/// `(source, address)` of a record key.
pub(super) fn parse_key(key: &[u8]) -> Option<(&str, IpAddr)> {
    let key = std::str::from_utf8(key).ok()?;
    let (source, ip) = key.rsplit_once('|')?;
    Some((source, ip.parse().ok()?))
}

/// What happened to records read from the table (the `result` label).
#[derive(Debug, Clone, Copy)]
enum Read {
    Applied,
    Expired,
    Own,
    /// A failure notice for a routed miss.
    Failure,
    /// Another replica's report of what it spent.
    Usage,
    UnknownSource,
    Malformed,
}

impl Read {
    fn as_str(self) -> &'static str {
        match self {
            Read::Applied => "applied",
            Read::Expired => "expired",
            Read::Own => "own",
            Read::Failure => "failure",
            Read::Usage => "usage",
            Read::UnknownSource => "unknown_source",
            Read::Malformed => "malformed",
        }
    }
}

struct Metrics {
    published: IntCounter,
    dropped: IntCounter,
    read: IntCounterVec,
}

impl Metrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let published = IntCounter::new(
            "ipenrich_intel_table_published_total",
            "records published to the shared intel table (answers, failure notices, usage reports)",
        )?;
        let dropped = IntCounter::new(
            "ipenrich_intel_table_publish_dropped_total",
            "answers not published (producer queue full or record refused)",
        )?;
        let read = IntCounterVec::new(
            Opts::new(
                "ipenrich_intel_table_records_total",
                "records read from the shared intel table, by what became of them",
            ),
            &["result"],
        )?;
        registry.register(Box::new(published.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(read.clone()))?;
        Ok(Metrics {
            published,
            dropped,
            read,
        })
    }
}

/// The publishing side, shared by every engine of the process.
struct Publisher {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    by: u64,
    metrics: Arc<Metrics>,
}

impl Share for Publisher {
    fn publish(&self, source: &str, ip: IpAddr, answer: &Answer, ttl: Duration) {
        let fetched_at = now_ms();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let value = Value {
            record: match answer {
                Answer::Found(r) => Some(r.clone()),
                Answer::NoData => None,
            },
            fetched_at,
            expires_at: fetched_at.saturating_add(ttl_ms),
            by: self.by,
            failed: None,
        };
        self.send(source, ip, &value);
    }

    fn publish_failure(&self, source: &str, ip: IpAddr, outcome: &Outcome) {
        let now = now_ms();
        let value = Value {
            record: None,
            fetched_at: now,
            expires_at: now,
            by: self.by,
            failed: Some(failure_word(outcome).to_string()),
        };
        self.send(source, ip, &value);
    }
}

impl Publisher {
    fn send(&self, source: &str, ip: IpAddr, value: &Value) {
        let Ok(payload) = serde_json::to_vec(value) else {
            self.metrics.dropped.inc();
            return;
        };
        self.send_raw(&key(source, ip), &payload);
    }

    fn send_raw(&self, key: &str, payload: &[u8]) {
        let record = BaseRecord::to(&self.topic).key(key).payload(payload);
        match self.producer.send(record) {
            Ok(()) => self.metrics.published.inc(),
            Err((e, _)) => {
                self.metrics.dropped.inc();
                warn!(error = %e, topic = %self.topic, "intel table record not published");
            }
        }
    }
}

/// A running table: the follower thread and the publisher. Dropping it stops the
/// follower.
pub struct Table {
    /// Routing of misses to their owners, when on; stops with the table.
    _routing: Option<super::route::Routing>,
    stop: Arc<AtomicBool>,
    warm: watch::Receiver<bool>,
    follower: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Table {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.follower.take() {
            // The follower polls in 200 ms steps; don't block a runtime thread on it.
            drop(t);
        }
    }
}

impl Table {
    /// Creates the topic if allowed and missing, starts following it into the
    /// caches of `engines` (by source) and makes every engine publish to it.
    /// Blocking (admin calls): run it on a blocking thread.
    pub fn start(
        config: &IntelTableConfig,
        engines: HashMap<String, Vec<Arc<Engine>>>,
        limiters: HashMap<String, Arc<RateLimiter>>,
        registry: &Registry,
    ) -> Result<Self, TableError> {
        ensure_topic(config, &config.topic, "compact,delete", config.retention)?;
        let metrics = Arc::new(Metrics::register(registry)?);
        // A random id per process (std's hasher keys are random).
        let by = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            now_ms(),
        );
        let producer: ThreadedProducer<DefaultProducerContext> = crate::kafka::client_config(
            &config.brokers,
            &[
                ("client.id", "ipenrich-intel-table"),
                ("linger.ms", "20"),
                ("compression.type", "lz4"),
                ("queue.buffering.max.messages", "100000"),
            ],
            &config.options,
            &[],
            "the intel table",
        )
        .create()
        .map_err(|source| TableError::Kafka {
            what: "producer",
            source,
        })?;
        let publisher = Arc::new(Publisher {
            producer,
            topic: config.topic.clone(),
            by,
            metrics: metrics.clone(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        spawn_usage_reports(publisher.clone(), limiters.clone(), stop.clone());
        let publisher: Arc<dyn Share> = publisher;
        for (source, list) in &engines {
            for e in list {
                e.share_through(publisher.clone(), source.clone());
            }
        }
        let routing = if config.route_misses {
            Some(super::route::Routing::start(
                config,
                engines.clone(),
                publisher.clone(),
                registry,
            )?)
        } else {
            None
        };
        let consumer: BaseConsumer = crate::kafka::client_config(
            &config.brokers,
            &[
                ("client.id", "ipenrich-intel-follower"),
                ("group.id", "ipenrich-intel-follower"),
                ("fetch.wait.max.ms", "50"),
            ],
            &config.options,
            &[
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
            ],
            "the intel table",
        )
        .create()
        .map_err(|source| TableError::Kafka {
            what: "consumer",
            source,
        })?;
        let ends = assign_from_start(&consumer, &config.topic)?;
        let (warm_tx, warm) = watch::channel(ends.is_empty());
        let follower = Follower {
            consumer,
            topic: config.topic.clone(),
            engines,
            limiters,
            by,
            metrics,
            ends,
            warm: warm_tx,
            stop: stop.clone(),
        };
        let follower = std::thread::Builder::new()
            .name("intel-table".into())
            .spawn(move || follower.run())
            .map_err(|e| TableError::Topic {
                topic: config.topic.clone(),
                reason: format!("cannot start the follower thread: {e}"),
            })?;
        Ok(Table {
            _routing: routing,
            stop,
            warm,
            follower: Some(follower),
        })
    }

    /// The routing of misses, when on.
    pub fn routing(&self) -> Option<&super::route::Routing> {
        self._routing.as_ref()
    }

    /// Waits until the table as it was at start is loaded, or `timeout` passed
    /// (then warns: the pipelines start with what was loaded). True when loaded.
    pub async fn warmed(&self, timeout: Duration) -> bool {
        let mut warm = self.warm.clone();
        let loaded = tokio::time::timeout(timeout, warm.wait_for(|w| *w)).await;
        matches!(loaded, Ok(Ok(_)))
    }
}

/// An admin client on the table's brokers.
fn admin(config: &IntelTableConfig) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    crate::kafka::client_config(
        &config.brokers,
        &[],
        &config.options,
        &[],
        "the intel table",
    )
    .create()
}

/// Whether the table's brokers answer a metadata request (within 5 s); blocking.
pub fn reachable(config: &IntelTableConfig) -> Result<(), KafkaError> {
    admin(config)?
        .inner()
        .fetch_metadata(None, Duration::from_secs(5))
        .map(|_| ())
}

/// Creates `topic` with `cleanup.policy` and `retention` when it is missing and
/// creation is allowed (the table's and the routing topic's settings).
pub(super) fn ensure_topic(
    config: &IntelTableConfig,
    topic: &str,
    policy: &str,
    retention: Duration,
) -> Result<(), TableError> {
    let fail = |reason: String| TableError::Topic {
        topic: topic.to_string(),
        reason,
    };
    let admin = admin(config).map_err(|source| TableError::Kafka {
        what: "admin client",
        source,
    })?;
    // Metadata of every topic: asking for one by name lets a broker with
    // `auto.create.topics.enable` create it, with its default partitions and
    // without compaction.
    let exists = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .map(|m| {
            m.topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        })
        .map_err(|source| TableError::Kafka {
            what: "metadata",
            source,
        })?;
    if exists {
        return Ok(());
    }
    if !config.create {
        return Err(fail("`intel_table.create` is false".into()));
    }
    let retention = retention.as_millis().to_string();
    let new = NewTopic::new(
        topic,
        config.partitions,
        TopicReplication::Fixed(config.replication_factor),
    )
    .set("cleanup.policy", policy)
    .set("retention.ms", &retention);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = futures::executor::block_on(admin.create_topics([&new], &opts))
        .map_err(|e| fail(e.to_string()))?;
    for result in created {
        match result {
            Ok(_) => info!(
                topic,
                partitions = config.partitions,
                policy,
                "intel table topic created"
            ),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(fail(code.to_string())),
        }
    }
    Ok(())
}

/// Assigns every partition of `topic` from its start; the end offsets at that
/// moment, which the follower must reach to call the table loaded.
fn assign_from_start(
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<HashMap<i32, i64>, TableError> {
    let kafka = |what| move |source| TableError::Kafka { what, source };
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(kafka("metadata"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(kafka("watermarks"))?;
        if high > low {
            ends.insert(p, high);
        }
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(kafka("assign"))?;
    }
    consumer.assign(&tpl).map_err(kafka("assign"))?;
    Ok(ends)
}

/// Reads the table into the caches, forever (until stopped).
struct Follower {
    consumer: BaseConsumer,
    topic: String,
    engines: HashMap<String, Vec<Arc<Engine>>>,
    limiters: HashMap<String, Arc<RateLimiter>>,
    by: u64,
    metrics: Arc<Metrics>,
    /// Partitions still to be read up to their end offset at start.
    ends: HashMap<i32, i64>,
    warm: watch::Sender<bool>,
    stop: Arc<AtomicBool>,
}

impl Follower {
    fn run(mut self) {
        let mut loaded = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let read = self.apply(m.key(), m.payload());
                    self.metrics.read.with_label_values(&[read.as_str()]).inc();
                    loaded += 1;
                    if self
                        .ends
                        .get(&m.partition())
                        .is_some_and(|&end| m.offset() >= end - 1)
                    {
                        self.ends.remove(&m.partition());
                        self.check_warm(loaded);
                    }
                }
                Some(Err(e)) => warn!(error = %e, topic = %self.topic, "intel table read error"),
                None if !self.ends.is_empty() => {
                    // Compaction may leave gaps at the end: ask where we are.
                    if let Ok(position) = self.consumer.position() {
                        self.ends.retain(|p, end| {
                            position
                                .find_partition(&self.topic, *p)
                                .and_then(|e| e.offset().to_raw())
                                .is_none_or(|at| at < *end)
                        });
                    }
                    self.check_warm(loaded);
                }
                None => {}
            }
        }
    }

    /// A replica's report of what it spent on one key (`{id}|{replica}`).
    fn apply_usage(&self, key: &[u8], payload: Option<&[u8]>) -> Read {
        let parsed = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.rsplit_once('|'))
            .and_then(|(id, by)| Some((id, by.parse::<u64>().ok()?)));
        let (Some((id, by)), Some(payload)) = (parsed, payload) else {
            return Read::Malformed;
        };
        if by == self.by {
            return Read::Own;
        }
        let Some(limiter) = self.limiters.get(id) else {
            return Read::UnknownSource;
        };
        let Ok(usage) = serde_json::from_slice::<Usage>(payload) else {
            return Read::Malformed;
        };
        limiter.peer_usage(by, usage);
        Read::Usage
    }

    fn check_warm(&self, loaded: u64) {
        if self.ends.is_empty() && !*self.warm.borrow() {
            info!(topic = %self.topic, records = loaded, "intel table loaded");
            let _ = self.warm.send(true);
        }
    }

    /// Puts one record into the caches of the engines of its source, or a usage
    /// report into the limiter of its key.
    fn apply(&self, key: Option<&[u8]>, payload: Option<&[u8]>) -> Read {
        if let Some(rest) = key.and_then(|k| k.strip_prefix(USAGE_PREFIX.as_bytes())) {
            return self.apply_usage(rest, payload);
        }
        let (Some((source, ip)), Some(payload)) = (key.and_then(parse_key), payload) else {
            return Read::Malformed;
        };
        let Some(engines) = self.engines.get(source) else {
            return Read::UnknownSource;
        };
        let Ok(value) = serde_json::from_slice::<Value>(payload) else {
            return Read::Malformed;
        };
        if value.by == self.by {
            return Read::Own;
        }
        let now = now_ms();
        if let Some(word) = &value.failed {
            if now.saturating_sub(value.fetched_at) > FAILURE_NOTICE_MS {
                return Read::Expired;
            }
            for e in engines {
                e.owner_failed(ip, failure_outcome(word));
            }
            return Read::Failure;
        }
        if value.expires_at <= now {
            return Read::Expired;
        }
        let ttl = Duration::from_millis(value.expires_at - now);
        let answer = match value.record {
            Some(r) if !r.is_empty() => Answer::Found(r),
            _ => Answer::NoData,
        };
        for e in engines {
            e.from_table(ip, &answer, ttl);
        }
        Read::Applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_for_both_families() {
        for ip in ["45.1.2.3", "2001:db8::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let k = key("ipinsights|http://127.0.0.1:8600/ipinsights", ip);
            assert_eq!(
                parse_key(k.as_bytes()),
                Some(("ipinsights|http://127.0.0.1:8600/ipinsights", ip))
            );
        }
        assert_eq!(parse_key(b"no-bar"), None);
        assert_eq!(parse_key(b"src|not-an-ip"), None);
        assert_eq!(parse_key(&[0xff, b'|', b'1']), None);
    }

    #[test]
    fn values_round_trip() {
        let v = Value {
            record: Some(IntelRecord {
                asn: Some(crate::lookup::record::AsnInfo {
                    number: Some(64500),
                    org: Some("Example".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            fetched_at: 1,
            expires_at: 2,
            by: 3,
            failed: None,
        };
        let back: Value = serde_json::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(back.record, v.record);
        assert_eq!((back.fetched_at, back.expires_at, back.by), (1, 2, 3));
    }
}
