//! Routing misses to their owner replica, so that one address is asked upstream
//! once in the whole deployment.
//!
//! Every address (keyed as in the intel table: `{source}|{address}`) belongs to one
//! partition of the topic `<table topic>-requests`, by a hash every replica computes
//! the same way, and the replicas share those partitions as one consumer group
//! (cooperative-sticky). A replica that misses an address it owns asks upstream
//! itself, as without routing. A miss of an address another replica owns is
//! produced to that partition instead; the owner answers it from its cache or
//! asks upstream (batched with its own misses), and the answer reaches the asking
//! replica through the intel table, which wakes its waiters. When the owner cannot
//! answer (rate limited, breaker open, error), it publishes a failure notice that
//! wakes them with that outcome. A miss nobody answered within `route_timeout`
//! (the owner died, a rebalance moved the partition) is asked locally after all:
//! routing saves quota, and holds an event no longer than that.
//!
//! Requests older than `route_timeout` when the owner reads them are skipped: the
//! replica that asked has fallen back already.

use std::collections::HashMap;
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge, Registry};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use rdkafka::Message;
use tracing::warn;

use super::engine::{Engine, Outcome};
use super::table::{key, now_ms, parse_key, Share, TableError};
use crate::config::IntelTableConfig;

/// Retention of the request topic: requests matter for seconds.
const REQUEST_RETENTION: Duration = Duration::from_secs(3600);

/// FNV-1a: stable across processes and versions, unlike std's hasher.
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The partition of `key` among `partitions`.
fn partition_of(key: &str, partitions: usize) -> usize {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.write(key.as_bytes());
    (h.finish() % partitions.max(1) as u64) as usize
}

struct Metrics {
    requests: IntCounter,
    fallbacks: IntCounter,
    served: IntCounter,
    owned: IntGauge,
}

impl Metrics {
    fn register(registry: &Registry, partitions: usize) -> Result<Self, prometheus::Error> {
        let requests = IntCounter::new(
            "ipenrich_route_requests_total",
            "misses sent to the replica that owns the address",
        )?;
        let fallbacks = IntCounter::new(
            "ipenrich_route_fallbacks_total",
            "routed misses not answered in route_timeout and asked here",
        )?;
        let served = IntCounter::new(
            "ipenrich_route_served_total",
            "routed misses of other replicas answered here",
        )?;
        let owned = IntGauge::new(
            "ipenrich_route_owned_partitions",
            "request partitions this replica owns (its share of the addresses)",
        )?;
        let total = IntGauge::new("ipenrich_route_partitions", "request partitions in all")?;
        total.set(partitions as i64);
        for c in [&requests, &fallbacks, &served] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(owned.clone()))?;
        registry.register(Box::new(total))?;
        Ok(Metrics {
            requests,
            fallbacks,
            served,
            owned,
        })
    }
}

/// The asking side: which partitions this replica owns, and the producer.
pub struct Router {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    owned: Vec<AtomicBool>,
    timeout: Duration,
    metrics: Metrics,
    /// True once this replica owned a partition (the group has formed).
    assigned: tokio::sync::watch::Sender<bool>,
}

impl Router {
    /// Waits until the owners' group gave this replica its first partitions, or
    /// `timeout` passed; true when it did. Until then every miss is routed.
    pub async fn assigned(&self, timeout: Duration) -> bool {
        let mut rx = self.assigned.subscribe();
        let assigned = tokio::time::timeout(timeout, rx.wait_for(|a| *a))
            .await
            .is_ok_and(|r| r.is_ok());
        assigned
    }

    /// True when this replica answers `ip`'s misses itself.
    pub fn owns(&self, source: &str, ip: IpAddr) -> bool {
        let p = partition_of(&key(source, ip), self.owned.len());
        self.owned[p].load(Ordering::Relaxed)
    }

    /// Asks the owner of `ip` (never waits; a failed send is covered by the
    /// fall-back after [`Router::timeout`]).
    pub fn request(&self, source: &str, ip: IpAddr) {
        let key = key(source, ip);
        let p = partition_of(&key, self.owned.len());
        let record = BaseRecord::<str, [u8]>::to(&self.topic)
            .key(key.as_str())
            .payload(&[])
            .partition(i32::try_from(p).unwrap_or(0));
        match self.producer.send(record) {
            Ok(()) => self.metrics.requests.inc(),
            Err((e, _)) => warn!(error = %e, topic = %self.topic, "routed miss not sent"),
        }
    }

    /// How long a routed miss waits for its owner.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Counts a routed miss asked here after all.
    pub fn fell_back(&self) {
        self.metrics.fallbacks.inc();
    }
}

/// The routing of one process: the router the engines ask through, and the
/// thread that serves the partitions this replica owns. Dropping it stops that.
pub struct Routing {
    stop: Arc<AtomicBool>,
    router: Arc<Router>,
}

impl Drop for Routing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Routing {
    /// The router the engines ask through.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Creates the request topic if allowed and missing, joins the owners' group
    /// and makes every engine of `engines` route its misses. Blocking; call it
    /// from a blocking thread inside the runtime (owners' lookups run on it).
    pub fn start(
        config: &IntelTableConfig,
        engines: HashMap<String, Vec<Arc<Engine>>>,
        share: Arc<dyn Share>,
        registry: &Registry,
    ) -> Result<Self, TableError> {
        let topic = format!("{}-requests", config.topic);
        super::table::ensure_topic(config, &topic, "delete", REQUEST_RETENTION)?;
        let kafka = |what| move |source| TableError::Kafka { what, source };
        let group = format!("{}-owners", config.topic);
        let consumer: BaseConsumer = crate::kafka::client_config(
            &config.brokers,
            &[
                ("client.id", "ipenrich-intel-owner"),
                ("auto.offset.reset", "earliest"),
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "1000"),
                ("fetch.wait.max.ms", "20"),
            ],
            &config.options,
            &[
                ("group.id", group.as_str()),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("enable.auto.commit", "true"),
            ],
            "routing misses",
        )
        .create()
        .map_err(kafka("owner consumer"))?;
        let partitions = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(kafka("metadata"))?
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        if partitions == 0 {
            return Err(TableError::Topic {
                topic,
                reason: "it has no partitions".into(),
            });
        }
        consumer.subscribe(&[&topic]).map_err(kafka("subscribe"))?;
        let producer: ThreadedProducer<DefaultProducerContext> = crate::kafka::client_config(
            &config.brokers,
            &[("client.id", "ipenrich-intel-router"), ("linger.ms", "5")],
            &config.options,
            &[],
            "routing misses",
        )
        .create()
        .map_err(kafka("router producer"))?;
        let router = Arc::new(Router {
            producer,
            topic: topic.clone(),
            owned: (0..partitions).map(|_| AtomicBool::new(false)).collect(),
            timeout: config.route_timeout,
            metrics: Metrics::register(registry, partitions)?,
            assigned: tokio::sync::watch::channel(false).0,
        });
        for list in engines.values() {
            for e in list {
                e.route_through(router.clone());
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let owner = Owner {
            consumer,
            topic,
            engines,
            share,
            router,
            runtime: tokio::runtime::Handle::current(),
            stop: stop.clone(),
        };
        let router = owner.router.clone();
        std::thread::Builder::new()
            .name("intel-owner".into())
            .spawn(move || owner.run())
            .map_err(|e| TableError::Topic {
                topic: format!("{}-requests", config.topic),
                reason: format!("cannot start the owner thread: {e}"),
            })?;
        Ok(Routing { stop, router })
    }
}

/// Serves the routed misses of the partitions this replica owns.
struct Owner {
    consumer: BaseConsumer,
    topic: String,
    engines: HashMap<String, Vec<Arc<Engine>>>,
    share: Arc<dyn Share>,
    router: Arc<Router>,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
}

impl Owner {
    fn run(self) {
        let mut refreshed = std::time::Instant::now();
        self.refresh_owned();
        while !self.stop.load(Ordering::Relaxed) {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let fresh = m
                        .timestamp()
                        .to_millis()
                        .and_then(|t| u64::try_from(t).ok())
                        .is_none_or(|t| {
                            now_ms().saturating_sub(t)
                                < u64::try_from(self.router.timeout.as_millis()).unwrap_or(u64::MAX)
                        });
                    if fresh {
                        self.serve(m.key());
                    }
                }
                Some(Err(e)) => warn!(error = %e, topic = %self.topic, "routed miss read error"),
                None => {}
            }
            if refreshed.elapsed() >= Duration::from_millis(100) {
                self.refresh_owned();
                refreshed = std::time::Instant::now();
            }
        }
    }

    /// Which partitions are ours now (cooperative rebalances move a few at a time).
    fn refresh_owned(&self) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let mut mine = vec![false; self.router.owned.len()];
        for e in assignment.elements_for_topic(&self.topic) {
            if let Some(slot) = usize::try_from(e.partition())
                .ok()
                .and_then(|p| mine.get_mut(p))
            {
                *slot = true;
            }
        }
        let mut count = 0u64;
        for (flag, own) in self.router.owned.iter().zip(mine) {
            flag.store(own, Ordering::Relaxed);
            count += u64::from(own);
        }
        let total = self.router.owned.len() as u64;
        self.router
            .metrics
            .owned
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        // Each replica spends the share of the quota that goes with its share of
        // the addresses (see `RateLimiter::set_share`).
        for e in self.engines.values().flatten() {
            e.limiter().set_share(count, total);
        }
        if count > 0 {
            self.router
                .assigned
                .send_if_modified(|a| !std::mem::replace(a, true));
        }
    }

    /// Answers one routed miss: from the cache (republished), or by asking
    /// upstream here (the batch publishes the answer), or with a failure notice.
    fn serve(&self, key: Option<&[u8]>) {
        let Some((source, ip)) = key.and_then(parse_key) else {
            return;
        };
        let Some(engine) = self.engines.get(source).and_then(|l| l.first()).cloned() else {
            return;
        };
        self.router.metrics.served.inc();
        let share = self.share.clone();
        let source = source.to_string();
        self.runtime.spawn(async move {
            if let Some((answer, ttl)) = engine.cache().remaining(ip) {
                share.publish(&source, ip, &answer, ttl);
                return;
            }
            match engine.serve_routed(ip).await {
                Outcome::Answer(_) => {}
                failed => share.publish_failure(&source, ip, &failed),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Pinned: every replica and every version must agree (FNV-1a of "a" is
        // 0xaf63dc4c8601ec8c).
        assert_eq!(partition_of("a", 6), 4);
        let mut counts = [0usize; 6];
        for n in 0..6_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x2D00_0000 + n));
            counts[partition_of(&key("ipinsights|https://ipinsights.io", ip), 6)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(partition_of("anything", 0), 0);
    }
}
