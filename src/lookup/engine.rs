//! The lookup engine of one remote provider: cache, single-flight, batcher, rate
//! limiter and circuit breaker around one `Arc<dyn Provider>`.
//!
//! Contract: each distinct address is asked upstream at most once per TTL (cache),
//! concurrent misses for one address share one upstream query (single-flight),
//! misses from many events leave together in batches of up to `max_batch` (or after
//! `max_wait`), and a request is only sent when the [`RateLimiter`] covers it and
//! the [`Breaker`] allows it. [`Engine::lookup`] never waits without bound: a paused
//! or rate-limited provider answers [`Outcome::RateLimited`], an open breaker
//! [`Outcome::CircuitOpen`], and a full queue of pending addresses `RateLimited`,
//! all at once. The caller applies its per-event deadline with a timeout and may
//! drop the future: the query goes on and its answer still fills the cache.
//! Errors are never cached; a failed address is asked again by the next lookup.
//! Every batch answers all its addresses and hands its breaker ticket back, even
//! when the provider panics or the batch task is cancelled (a drop guard), and
//! every duration from a provider or the config is added to instants saturating
//! (see [`super::time`]): no waiter is left waiting on a batch that is gone.
//!
//! `Engine::try_new` spawns the batcher task, so it needs a tokio runtime; the task
//! ends when the engine is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};
use tokio::sync::{mpsc, watch};

use super::batcher::{self, BatchSettings};
use super::breaker::{Breaker, BreakerSettings, BreakerState, Ticket, Verdict};
use super::cache::{Cache, CacheError, CacheMetrics, CacheSettings, Count, Origin};
use super::prefix::Networks;
use super::providers::{Answer, Provider};
use super::rate_limit::{RateLimitError, RateLimiter, RateSettings};
use super::table::Share;

/// Metric names; every metric has the single label `provider`.
pub mod names {
    pub const CACHE_HITS: &str = "ipenrich_lookup_cache_hits_total";
    /// With a second label, `origin`: `local`, `table` (the shared intel table) or
    /// `prefix` (another address of the announced prefix, [`super::prefix`]).
    pub const CACHE_HITS_BY_ORIGIN: &str = "ipenrich_lookup_cache_hits_by_origin_total";
    pub const CACHE_MISSES: &str = "ipenrich_lookup_cache_misses_total";
    pub const CACHE_EVICTIONS: &str = "ipenrich_lookup_cache_evictions_total";
    pub const CACHE_EXPIRATIONS: &str = "ipenrich_lookup_cache_expirations_total";
    pub const CACHE_ENTRIES: &str = "ipenrich_lookup_cache_entries";
    pub const CACHE_BYTES: &str = "ipenrich_lookup_cache_bytes";
    pub const UPSTREAM_REQUESTS: &str = "ipenrich_lookup_upstream_requests_total";
    pub const UPSTREAM_FAILURES: &str = "ipenrich_lookup_upstream_failures_total";
    pub const IPS_PER_REQUEST: &str = "ipenrich_lookup_upstream_ips_per_request";
    pub const RATE_LIMITED: &str = "ipenrich_lookup_upstream_rate_limited_total";
    pub const SHED: &str = "ipenrich_lookup_shed_total";
    pub const BREAKER_STATE: &str = "ipenrich_lookup_breaker_state";
    /// With a second label, `of`: `headers` (the provider's latest
    /// `X-RateLimit-Remaining`), `window` (what this replica may still spend in
    /// the provider's window: its share, less its own and the others' spending),
    /// `budget` (the tightest budget, for the deployment).
    pub const QUOTA_REMAINING: &str = "ipenrich_lookup_quota_remaining";
}

/// Why an engine cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid cache settings")]
    Cache(#[source] CacheError),
    #[error("invalid engine settings: {0}")]
    Settings(String),
    #[error("rate limit unit burst {burst} is below the batch size {batch}")]
    BurstBelowBatch { burst: u32, batch: usize },
    #[error("cannot register engine metrics")]
    Metrics(#[source] prometheus::Error),
}

/// Settings of one engine. `Default` values and where they come from:
///
/// - `ttl` 24 h: ASN and geo facts move on a scale of days; a day bounds how stale
///   a threat score gets.
/// - `negative_ttl` 1 h: "no data" for a public address (not yet announced, not yet
///   in the provider's data) can change soon.
/// - `cache_entries` 1,000,000 and `cache_bytes` 192 MiB: the memory target
///   (a million addresses in at most 256 MiB RSS, with room for the rest).
/// - `cache_shards` 16: two worker threads never meet on one lock in practice.
/// - `max_batch` `None`: the provider's own `max_batch()` (ipinsights 100).
/// - `max_wait` 50 ms: a small share of an event's enrichment deadline.
/// - `concurrency` 4: requests in flight per provider; with 50 ms batches that is
///   far above any documented rate limit.
/// - `max_pending` 10,000: distinct addresses waiting for upstream before new
///   misses are answered `RateLimited` (bounded memory, no unbounded queue).
/// - `max_token_wait` 500 ms: longest a batch waits for tokens; beyond, its
///   addresses answer `RateLimited` instead of queueing.
/// - `rate`: ipinsights' documented 600 units per hour (the strictest provider);
///   build the shared limiter from it with [`EngineSettings::limiter`].
/// - `breaker` 5 failures, 30 s open: five failed calls in a row is an outage,
///   not noise; 30 s keeps probing cheap.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub cache_entries: NonZeroUsize,
    pub cache_bytes: NonZeroUsize,
    pub cache_shards: NonZeroUsize,
    pub max_batch: Option<NonZeroUsize>,
    pub max_wait: Duration,
    pub concurrency: NonZeroUsize,
    pub max_pending: NonZeroUsize,
    pub max_token_wait: Duration,
    pub rate: RateSettings,
    pub breaker: BreakerSettings,
    /// IPv6 addresses are cached, asked and counted by their network of this
    /// many bits (default 64: one subscriber's or one host's allocation).
    pub ipv6_prefix: u8,
    /// The key's name in metrics (`provider` label) and logs; the provider's
    /// own name when `None`.
    pub name: Option<String>,
}

/// Most announced prefixes an engine answering per network keeps (a full routing
/// table is ~1.2 M; the prefixes an installation's traffic meets are far fewer).
const PREFIXES: usize = 65_536;

/// `ip`'s network of `prefix` bits when it is IPv6, else `ip`.
pub fn key_of(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if prefix < 128 => {
            let mask = u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0);
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
        other => other,
    }
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero constant")
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            ttl: Duration::from_secs(24 * 3600),
            negative_ttl: Duration::from_secs(3600),
            cache_entries: nz(1_000_000),
            cache_bytes: nz(192 << 20),
            cache_shards: nz(16),
            max_batch: None,
            max_wait: Duration::from_millis(50),
            concurrency: nz(4),
            max_pending: nz(10_000),
            max_token_wait: Duration::from_millis(500),
            rate: RateSettings::ipinsights(),
            breaker: BreakerSettings {
                failures: NonZeroU32::new(5).expect("non-zero"),
                open_for: Duration::from_secs(30),
            },
            ipv6_prefix: 64,
            name: None,
        }
    }
}

impl EngineSettings {
    /// A limiter for provider `name` from `self.rate`, to hand to [`Engine::try_new`]
    /// and to share with anything else spending the same key (the reporter).
    pub fn limiter(&self, name: &str) -> Result<Arc<RateLimiter>, Vec<RateLimitError>> {
        RateLimiter::try_new(name, self.rate.clone()).map(Arc::new)
    }

    fn cache(&self) -> CacheSettings {
        CacheSettings {
            ttl: self.ttl,
            negative_ttl: self.negative_ttl,
            max_entries: self.cache_entries,
            max_bytes: self.cache_bytes,
            shards: self.cache_shards,
        }
    }
}

/// What one address got.
#[allow(clippy::large_enum_variant)] // as `Answer`: the common case is `Found`
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The provider's answer (from the cache or upstream).
    Answer(Answer),
    /// Not asked: the key is paused, out of tokens or budget, or the queue is full.
    RateLimited,
    /// Not asked: the breaker is open.
    CircuitOpen,
    /// Asked, and the provider failed (5xx, timeout, reset, bad answer).
    Failed,
    /// Asked, and the provider refused the API key (401/403, plan lacks the
    /// feature): no retry helps, see [`ProviderError::is_key_rejected`].
    ///
    /// [`ProviderError::is_key_rejected`]: super::providers::ProviderError::is_key_rejected
    KeyRejected,
}

struct Metrics {
    requests: IntCounter,
    failures: IntCounter,
    ips_per_request: Histogram,
    rate_limited: IntCounter,
    shed: IntCounter,
    breaker_state: IntGauge,
    /// `headers`, `window`, `budget` (see [`names::QUOTA_REMAINING`]).
    quota_remaining: [IntGauge; 3],
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: C,
) -> Result<C, EngineError> {
    registry
        .register(Box::new(c.clone()))
        .map_err(EngineError::Metrics)?;
    Ok(c)
}

fn metrics(registry: &Registry, provider: &str) -> Result<(CacheMetrics, Metrics), EngineError> {
    let opts = |name: &str, help: &str| Opts::new(name, help).const_label("provider", provider);
    let counter = |name: &str, help: &str| {
        register(
            registry,
            IntCounter::with_opts(opts(name, help)).map_err(EngineError::Metrics)?,
        )
    };
    let gauge = |name: &str, help: &str| {
        register(
            registry,
            IntGauge::with_opts(opts(name, help)).map_err(EngineError::Metrics)?,
        )
    };
    use names::*;
    let by_origin = |origin: Origin| {
        register(
            registry,
            IntCounter::with_opts(
                opts(
                    CACHE_HITS_BY_ORIGIN,
                    "cache hits by where the answer came from",
                )
                .const_label("origin", origin.as_str()),
            )
            .map_err(EngineError::Metrics)?,
        )
    };
    let remaining = |of: &str| {
        register(
            registry,
            IntGauge::with_opts(
                opts(
                    QUOTA_REMAINING,
                    "quota left: headers, this replica's window, budget",
                )
                .const_label("of", of),
            )
            .map_err(EngineError::Metrics)?,
        )
    };
    let cache = CacheMetrics {
        hits: counter(CACHE_HITS, "lookups answered from the cache")?,
        hits_by_origin: [
            by_origin(Origin::Local)?,
            by_origin(Origin::Table)?,
            by_origin(Origin::Prefix)?,
        ],
        misses: counter(CACHE_MISSES, "lookups not in the cache")?,
        evictions: counter(CACHE_EVICTIONS, "entries evicted by the size bounds")?,
        expirations: counter(CACHE_EXPIRATIONS, "entries dropped after their ttl")?,
        entries: gauge(CACHE_ENTRIES, "entries in the cache")?,
        bytes: gauge(CACHE_BYTES, "approximate bytes held by the cache")?,
    };
    let histogram = Histogram::with_opts(
        HistogramOpts::new(IPS_PER_REQUEST, "addresses per upstream request")
            .const_label("provider", provider)
            .buckets(vec![
                1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 90.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
            ]),
    )
    .map_err(EngineError::Metrics)?;
    let m = Metrics {
        requests: counter(UPSTREAM_REQUESTS, "requests sent to the provider")?,
        failures: counter(UPSTREAM_FAILURES, "requests that failed (429 excluded)")?,
        ips_per_request: register(registry, histogram)?,
        rate_limited: counter(RATE_LIMITED, "429 answers from the provider")?,
        shed: counter(
            SHED,
            "lookups answered rate_limited or circuit_open without asking",
        )?,
        breaker_state: gauge(BREAKER_STATE, "0 closed, 1 half-open, 2 open")?,
        quota_remaining: [
            remaining("headers")?,
            remaining("window")?,
            remaining("budget")?,
        ],
    };
    Ok((cache, m))
}

/// Addresses waiting for an answer: the channel their callers wait on, and whether
/// the miss was routed to another replica (not queued here).
type Waiters = HashMap<IpAddr, (watch::Sender<Option<Outcome>>, bool)>;

/// Cache + single-flight + batcher + limiter + breaker around one provider.
pub struct Engine {
    provider: Arc<dyn Provider>,
    cache: Cache,
    limiter: Arc<RateLimiter>,
    breaker: Breaker,
    in_flight: Mutex<Waiters>,
    /// The latest answer was a key rejection (cleared by the next success).
    key_rejected: AtomicBool,
    queue: mpsc::UnboundedSender<IpAddr>,
    max_pending: usize,
    max_token_wait: Duration,
    metrics: Metrics,
    /// IPv6 addresses are keyed by their network of this many bits.
    ipv6_prefix: u8,
    /// The key's name in metrics and logs.
    name: String,
    /// Misses of addresses another replica owns go to it (see [`super::route`]).
    route: std::sync::OnceLock<Arc<super::route::Router>>,
    /// This engine, for timers that must not keep it alive.
    me: Weak<Engine>,
    /// Where upstream answers are shared, and the name of their source there.
    share: std::sync::OnceLock<(Arc<dyn Share>, String)>,
    /// Answers by announced prefix, for a provider that answers per network.
    networks: Option<Networks>,
}

impl Engine {
    /// Builds the engine and spawns its batcher task (needs a tokio runtime).
    /// `limiter` is shared with whatever else spends the provider key.
    pub fn try_new(
        provider: Arc<dyn Provider>,
        settings: EngineSettings,
        limiter: Arc<RateLimiter>,
        registry: &Registry,
    ) -> Result<Arc<Self>, EngineError> {
        let name = settings
            .name
            .clone()
            .unwrap_or_else(|| provider.name().to_owned());
        let provider_max = provider.max_batch().max(1);
        let max_batch = settings
            .max_batch
            .map_or(provider_max, |m| m.get().min(provider_max));
        let rate = limiter.settings();
        if rate.units_per_second.is_some() && (rate.unit_burst.get() as usize) < max_batch {
            return Err(EngineError::BurstBelowBatch {
                burst: rate.unit_burst.get(),
                batch: max_batch,
            });
        }
        if settings.max_wait.is_zero() && max_batch > 1 {
            return Err(EngineError::Settings(
                "max_wait must be > 0 for a batching provider".into(),
            ));
        }
        let (cache_metrics, metrics) = metrics(registry, &name)?;
        let cache = Cache::try_new(&settings.cache(), cache_metrics).map_err(EngineError::Cache)?;
        let (queue, rx) = mpsc::unbounded_channel();
        let networks = provider
            .per_network()
            .then(|| Networks::new(settings.cache_entries.min(nz(PREFIXES))));
        let engine = Arc::new_cyclic(|me| Engine {
            networks,
            me: me.clone(),
            route: std::sync::OnceLock::new(),
            provider,
            cache,
            limiter,
            breaker: Breaker::new(settings.breaker),
            in_flight: Mutex::new(HashMap::new()),
            key_rejected: AtomicBool::new(false),
            queue,
            max_pending: settings.max_pending.get(),
            max_token_wait: settings.max_token_wait,
            metrics,
            ipv6_prefix: settings.ipv6_prefix.min(128),
            name: name.clone(),
            share: std::sync::OnceLock::new(),
        });
        let weak: Weak<Engine> = Arc::downgrade(&engine);
        batcher::spawn(
            rx,
            BatchSettings {
                max_batch: nz(max_batch),
                max_wait: settings.max_wait,
                concurrency: settings.concurrency,
            },
            move |batch| {
                let weak = weak.clone();
                async move {
                    // Engine gone: dropping the batch drops nothing anyone waits on
                    // (the waiters' senders went with the engine).
                    if let Some(engine) = weak.upgrade() {
                        engine.send(batch).await;
                    }
                }
            },
        );
        Ok(engine)
    }

    /// From now on, every upstream answer is also published through `share` as
    /// coming from `source` (the provider and its base URL). Set once.
    pub fn share_through(&self, share: Arc<dyn Share>, source: String) {
        let _ = self.share.set((share, source));
    }

    /// From now on, a miss of an address another replica owns is asked of that
    /// replica through `router` (needs [`Engine::share_through`] first). Set once.
    pub fn route_through(&self, router: Arc<super::route::Router>) {
        let _ = self.route.set(router);
    }

    /// The source name this engine shares its answers under, once sharing.
    pub fn source(&self) -> Option<&str> {
        self.share.get().map(|(_, source)| source.as_str())
    }

    /// An answer the intel table brought (`ip` already keyed): cached for `ttl`
    /// and handed to whoever waits for that address here.
    pub fn from_table(&self, ip: IpAddr, answer: &Answer, ttl: Duration) {
        self.cache.insert_for(ip, answer, ttl, Origin::Table);
        self.learn(ip, answer, ttl);
        self.finish([(ip, Outcome::Answer(answer.clone()))]);
    }

    /// The owner replica could not answer `ip`: whoever waits for it here gets
    /// `outcome` (nothing is cached).
    pub fn owner_failed(&self, ip: IpAddr, outcome: Outcome) {
        self.finish([(ip, outcome)]);
    }

    /// The replica that owns `ip`'s misses is another one: the router to ask it.
    fn remote_owner(&self, ip: IpAddr) -> Option<(&super::route::Router, &str)> {
        let router = self.route.get()?;
        let source = self.source()?;
        (!router.owns(source, ip)).then_some((router.as_ref(), source))
    }

    /// After `after`, a routed miss nobody answered is asked here after all (the
    /// owner may have gone in a rebalance).
    fn fall_back_after(&self, ip: IpAddr, after: Duration) {
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(engine) = me.upgrade() {
                if engine.ask_routed_here(ip) {
                    if let Some(router) = engine.route.get() {
                        router.fell_back();
                    }
                }
            }
        });
    }

    /// Queues a miss that was routed and is still unanswered for the next batch
    /// here; true when it did.
    fn ask_routed_here(&self, ip: IpAddr) -> bool {
        let mut waiters = self.waiters();
        match waiters.get_mut(&ip) {
            Some((_, routed)) if *routed && self.cache.probe(ip, Count::None).is_none() => {
                *routed = false;
                self.queue.send(ip).is_ok()
            }
            _ => false,
        }
    }

    /// The owner's side of a routed miss: as [`Engine::lookup_here`], and when this
    /// process itself routed a miss of `ip` before it owned it, that miss is asked
    /// now instead of waiting for its fall-back.
    pub async fn serve_routed(&self, ip: IpAddr) -> Outcome {
        let ip = self.key_of(ip);
        self.ask_routed_here(ip);
        self.lookup_here(ip).await
    }

    /// The key's name (the provider's unless configured).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shared limiter (the reporter draws report units from it).
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }

    /// True while the provider's latest answer was a rejection of the API key.
    pub fn key_rejected(&self) -> bool {
        self.key_rejected.load(Ordering::Relaxed)
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The cache (sizes, for tests and diagnostics).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Addresses waiting for an upstream answer.
    pub fn pending(&self) -> usize {
        self.waiters().len()
    }

    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached answer, without awaiting anything (counts hits; a miss is
    /// counted by the [`Engine::lookup`] that follows).
    pub fn cached(&self, ip: IpAddr) -> Option<Answer> {
        self.cache.probe(self.key_of(ip), Count::HitsOnly)
    }

    /// The address an IPv6 address is cached, asked and counted as: its network
    /// of `ipv6_prefix` bits (an attacker holding a /64 otherwise spends the quota
    /// one address at a time). IPv4 addresses are themselves.
    pub fn key_of(&self, ip: IpAddr) -> IpAddr {
        key_of(ip, self.ipv6_prefix)
    }

    /// The answer for one public address: cached, joined to a query in flight, or
    /// queued for the next batch. Answers at once when the provider cannot be
    /// asked (see the module contract); never hangs on a dead batcher.
    pub async fn lookup(&self, ip: IpAddr) -> Outcome {
        self.lookup_with(ip, true).await
    }

    /// As [`Engine::lookup`], never routed to another replica: the owner's side
    /// of a routed miss.
    pub async fn lookup_here(&self, ip: IpAddr) -> Outcome {
        self.lookup_with(ip, false).await
    }

    async fn lookup_with(&self, ip: IpAddr, may_route: bool) -> Outcome {
        let ip = self.key_of(ip);
        if let Some(answer) = self.cache.probe(ip, Count::HitsOnly) {
            return Outcome::Answer(answer);
        }
        if let Some(answer) = self.by_network(ip) {
            self.cache.count(Some(Origin::Prefix));
            return Outcome::Answer(answer);
        }
        self.cache.count(None);
        let mut rx = {
            let mut waiters = self.waiters();
            if let Some((tx, _)) = waiters.get(&ip) {
                tx.subscribe()
            } else {
                // The query may have finished between the cache probe and the lock.
                if let Some(answer) = self.cache.probe(ip, Count::None) {
                    return Outcome::Answer(answer);
                }
                let remote = if may_route {
                    self.remote_owner(ip)
                } else {
                    None
                };
                if remote.is_none() && self.breaker.is_refusing() {
                    self.metrics.shed.inc();
                    return Outcome::CircuitOpen;
                }
                if (remote.is_none() && self.limiter.paused_for().is_some())
                    || waiters.len() >= self.max_pending
                {
                    self.metrics.shed.inc();
                    return Outcome::RateLimited;
                }
                let (tx, rx) = watch::channel(None);
                let routed = remote.is_some();
                match remote {
                    Some((router, source)) => {
                        router.request(source, ip);
                        self.fall_back_after(ip, router.timeout());
                    }
                    None => {
                        if self.queue.send(ip).is_err() {
                            return Outcome::Failed;
                        }
                    }
                }
                waiters.insert(ip, (tx, routed));
                rx
            }
        };
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or(Outcome::Failed),
            Err(_) => Outcome::Failed,
        };
        outcome
    }

    /// A provider answering per network answered another address of the announced
    /// prefix that holds `ip`: that answer, cached for `ip` for what is left of it.
    fn by_network(&self, ip: IpAddr) -> Option<Answer> {
        let (record, ttl) = self.networks.as_ref()?.get(ip)?;
        let answer = Answer::Found(record);
        self.cache.insert_for(ip, &answer, ttl, Origin::Prefix);
        Some(answer)
    }

    /// Keeps an upstream answer for `ip` by the prefix it names too, when the
    /// provider answers per network.
    fn learn(&self, ip: IpAddr, answer: &Answer, ttl: Duration) {
        if let (Some(networks), Answer::Found(record)) = (&self.networks, answer) {
            networks.learn(ip, record, ttl);
        }
    }

    /// Hands every waiter of `ips` its outcome.
    fn finish(&self, ips: impl IntoIterator<Item = (IpAddr, Outcome)>) {
        let mut waiters = self.waiters();
        for (ip, outcome) in ips {
            if let Some((tx, _)) = waiters.remove(&ip) {
                tx.send_replace(Some(outcome));
            }
        }
    }

    /// One upstream request for `ips` (the batcher's handler). Every address is
    /// answered and the breaker ticket handed back on every path, including a
    /// panic inside the provider and cancellation: see [`InFlight`].
    async fn send(&self, ips: Vec<IpAddr>) {
        let n = ips.len();
        let mut batch = InFlight {
            engine: self,
            ips,
            ticket: None,
        };
        match self.breaker.try_acquire() {
            Ok(t) => batch.ticket = Some(t),
            Err(_) => {
                self.metrics.shed.inc_by(n as u64);
                return batch.finish_all(Outcome::CircuitOpen);
            }
        };
        self.metrics
            .breaker_state
            .set(self.breaker.state().as_gauge());
        let units = u32::try_from(n).unwrap_or(u32::MAX);
        let admitted = match self
            .limiter
            .acquire_within(1, units, self.max_token_wait)
            .await
        {
            Ok(admitted) => admitted,
            Err(denied) => {
                tracing::debug!(provider = self.name(), batch = n, reason = ?denied.reason, wait_ms = u64::try_from(denied.wait.as_millis()).unwrap_or(u64::MAX), "batch not sent: rate limit");
                batch.record(Verdict::Neutral);
                self.metrics.shed.inc_by(n as u64);
                return batch.finish_all(Outcome::RateLimited);
            }
        };
        self.metrics.requests.inc();
        self.metrics.ips_per_request.observe(n as f64);
        let result = self.provider.lookup(&batch.ips).await;
        // Answered: the request's place in the provider's window is now at the latest.
        drop(admitted);
        if let Some(info) = self.provider.last_rate_info() {
            self.limiter.observe(&info);
            if let Some(r) = info.remaining {
                self.metrics.quota_remaining[0].set(i64::try_from(r).unwrap_or(i64::MAX));
            }
        }
        let (window, budget) = self.limiter.remaining();
        let gauge = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        self.metrics.quota_remaining[1].set(gauge(window));
        self.metrics.quota_remaining[2].set(gauge(budget));
        let state = match result {
            Ok(answers) if answers.len() == n => {
                self.key_rejected.store(false, Ordering::Relaxed);
                let state = batch.record(Verdict::Success);
                let share = self.share.get();
                for (ip, answer) in batch.ips.iter().zip(&answers) {
                    self.cache.insert(*ip, answer);
                    self.learn(*ip, answer, self.cache.ttl_of(answer));
                    if let Some((share, source)) = share {
                        share.publish(source, *ip, answer, self.cache.ttl_of(answer));
                    }
                }
                batch.finish(answers);
                state
            }
            Ok(answers) => {
                tracing::warn!(
                    provider = self.name(),
                    batch = n,
                    answers = answers.len(),
                    "provider answered a different number of addresses"
                );
                self.metrics.failures.inc();
                let state = batch.record(Verdict::Neutral);
                batch.finish_all(Outcome::Failed);
                state
            }
            Err(error) => {
                let state = batch.record(Verdict::of_error(&error));
                if let super::providers::ProviderError::RateLimited { retry_after } = &error {
                    self.metrics.rate_limited.inc();
                    self.limiter.rate_limited(*retry_after);
                    tracing::warn!(%error, provider = self.name(), batch = n, "provider rate limited us");
                    batch.finish_all(Outcome::RateLimited);
                } else if error.is_key_rejected() {
                    self.metrics.failures.inc();
                    self.key_rejected.store(true, Ordering::Relaxed);
                    tracing::error!(%error, provider = self.name(), batch = n, "provider rejected the api key");
                    batch.finish_all(Outcome::KeyRejected);
                } else {
                    self.metrics.failures.inc();
                    tracing::warn!(%error, provider = self.name(), batch = n, "lookup request failed");
                    batch.finish_all(Outcome::Failed);
                }
                state
            }
        };
        self.metrics.breaker_state.set(state.as_gauge());
    }
}

/// The addresses of one batch and the breaker ticket it holds, until answered.
///
/// Dropped before that (the provider panicked and tokio dropped the task, or the
/// task was cancelled), it answers every address it still owes `Failed` and hands
/// the ticket back as neutral: no waiter waits forever on a batch that is gone,
/// and a half-open breaker whose probe died gets its probe slot back.
struct InFlight<'a> {
    engine: &'a Engine,
    /// Addresses not answered yet; emptied by `finish*`.
    ips: Vec<IpAddr>,
    ticket: Option<Ticket>,
}

impl InFlight<'_> {
    fn finish_all(&mut self, outcome: Outcome) {
        let ips = std::mem::take(&mut self.ips);
        self.engine
            .finish(ips.into_iter().map(|ip| (ip, outcome.clone())));
    }

    /// Answers in the order of `ips`.
    fn finish(&mut self, answers: Vec<Answer>) {
        let ips = std::mem::take(&mut self.ips);
        self.engine.finish(
            ips.into_iter()
                .zip(answers)
                .map(|(ip, a)| (ip, Outcome::Answer(a))),
        );
    }

    /// Hands the ticket back with `verdict`; the breaker's new state.
    fn record(&mut self, verdict: Verdict) -> BreakerState {
        match self.ticket.take() {
            Some(ticket) => self.engine.breaker.record(ticket, verdict),
            None => self.engine.breaker.state(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.ips.is_empty() && self.ticket.is_none() {
            return;
        }
        tracing::error!(
            provider = self.engine.name(),
            batch = self.ips.len(),
            "lookup batch abandoned (provider panicked or task cancelled); answering error"
        );
        let state = self.record(Verdict::Neutral);
        self.engine.metrics.breaker_state.set(state.as_gauge());
        self.engine.metrics.failures.inc();
        self.finish_all(Outcome::Failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::providers::{ProviderError, ProviderFuture};
    use crate::lookup::record::{AsnInfo, IntelRecord};
    use std::sync::atomic::AtomicUsize;

    /// A scripted provider: answers after `latency`, fails while `failing` is set,
    /// panics mid-call while `panicking` is set, answers 429 with `retry_after`
    /// while that is set, and reports `rate_info` as its latest headers.
    struct Fake {
        calls: AtomicUsize,
        ips: Mutex<Vec<usize>>,
        failing: std::sync::atomic::AtomicBool,
        panicking: std::sync::atomic::AtomicBool,
        rejecting: std::sync::atomic::AtomicBool,
        retry_after: Mutex<Option<Duration>>,
        rate_info: Mutex<Option<crate::lookup::providers::http::RateInfo>>,
        latency: Duration,
        max: usize,
    }

    impl Fake {
        fn new(max: usize, latency_ms: u64) -> Arc<Self> {
            Arc::new(Fake {
                calls: AtomicUsize::new(0),
                ips: Mutex::new(Vec::new()),
                failing: false.into(),
                panicking: false.into(),
                rejecting: false.into(),
                retry_after: Mutex::new(None),
                rate_info: Mutex::new(None),
                latency: Duration::from_millis(latency_ms),
                max,
            })
        }
    }

    impl Provider for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        fn max_batch(&self) -> usize {
            self.max
        }
        fn lookup<'a>(
            &'a self,
            ips: &'a [IpAddr],
        ) -> ProviderFuture<'a, Result<Vec<Answer>, ProviderError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                self.ips.lock().unwrap().push(ips.len());
                tokio::time::sleep(self.latency).await;
                if self.panicking.load(Ordering::SeqCst) {
                    panic!("fake provider panics mid-batch");
                }
                if self.rejecting.load(Ordering::SeqCst) {
                    return Err(ProviderError::Unauthorized {
                        message: "api key revoked".into(),
                    });
                }
                if let Some(retry_after) = *self.retry_after.lock().unwrap() {
                    return Err(ProviderError::RateLimited {
                        retry_after: Some(retry_after),
                    });
                }
                if self.failing.load(Ordering::SeqCst) {
                    return Err(ProviderError::Server {
                        status: 503,
                        message: "down".into(),
                    });
                }
                Ok(ips
                    .iter()
                    .map(|ip| match ip {
                        IpAddr::V4(v4) if v4.octets()[0] == 9 => Answer::NoData,
                        _ => Answer::Found(IntelRecord {
                            asn: Some(AsnInfo {
                                number: Some(1),
                                ..AsnInfo::default()
                            }),
                            ..IntelRecord::default()
                        }),
                    })
                    .collect())
            })
        }
        fn last_rate_info(&self) -> Option<crate::lookup::providers::http::RateInfo> {
            *self.rate_info.lock().unwrap()
        }
    }

    fn settings() -> EngineSettings {
        EngineSettings {
            rate: RateSettings {
                requests_per_second: 1000.0,
                request_burst: NonZeroU32::new(1000).unwrap(),
                units_per_second: Some(100_000.0),
                unit_burst: NonZeroU32::new(100_000).unwrap(),
                window_limit: None,
                ..RateSettings::ipinsights()
            },
            breaker: BreakerSettings {
                failures: NonZeroU32::new(2).unwrap(),
                open_for: Duration::from_secs(10),
            },
            ..EngineSettings::default()
        }
    }

    fn engine(p: Arc<Fake>, s: EngineSettings) -> Arc<Engine> {
        let limiter = s.limiter("fake").unwrap();
        Engine::try_new(p, s, limiter, &Registry::new()).unwrap()
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0800_0000 + n))
    }

    #[tokio::test(start_paused = true)]
    async fn single_flight_and_batching_across_callers() {
        let fake = Fake::new(100, 10);
        let e = engine(fake.clone(), settings());
        let mut tasks = Vec::new();
        for round in 0..3 {
            for n in 0..150 {
                let e = e.clone();
                tasks.push(tokio::spawn(async move { (round, e.lookup(ip(n)).await) }));
            }
        }
        for t in tasks {
            let (_, outcome) = t.await.unwrap();
            assert!(matches!(outcome, Outcome::Answer(Answer::Found(_))));
        }
        assert_eq!(*fake.ips.lock().unwrap(), vec![100, 50]);
        assert!(e.cached(ip(3)).is_some());
        assert_eq!(e.pending(), 0);
    }

    #[test]
    fn ipv6_addresses_are_keyed_by_their_network() {
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(key_of(v6("2001:db8:1:2:aaaa::5"), 64), v6("2001:db8:1:2::"));
        assert_eq!(key_of(v6("2001:db8:1:2:aaaa::5"), 48), v6("2001:db8:1::"));
        assert_eq!(
            key_of(v6("2001:db8:1:2:aaaa::5"), 128),
            v6("2001:db8:1:2:aaaa::5")
        );
        assert_eq!(key_of(v6("2001:db8::1"), 0), v6("::"));
        assert_eq!(key_of(v6("45.1.2.3"), 64), v6("45.1.2.3"));
    }

    /// Regression (issue 10): an attacker with a /64 spent the quota per /128.
    #[tokio::test(start_paused = true)]
    async fn one_upstream_lookup_per_ipv6_network() {
        let p = Fake::new(100, 10);
        let e = engine(p.clone(), settings());
        let ips: Vec<IpAddr> = (1..=50u16)
            .map(|n| IpAddr::V6(std::net::Ipv6Addr::new(0x2a00, 0x1450, 0, 7, n, 0, 0, n)))
            .collect();
        let outcomes = lookup_all(&e, &ips).await;
        assert!(outcomes
            .iter()
            .all(|o| matches!(o, Some(Outcome::Answer(_)))));
        let other = IpAddr::V6(std::net::Ipv6Addr::new(0x2a00, 0x1450, 0, 8, 0, 0, 0, 1));
        assert!(matches!(e.lookup(other).await, Outcome::Answer(_)));
        assert!(e.cached(ips[0]).is_some());
        assert_eq!(p.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(*p.ips.lock().unwrap(), vec![1, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_caller_still_fills_the_cache() {
        let fake = Fake::new(100, 1000);
        let e = engine(fake.clone(), settings());
        let r = tokio::time::timeout(Duration::from_millis(100), e.lookup(ip(1))).await;
        assert!(r.is_err(), "the deadline fired first");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(e.cached(ip(1)).is_some());
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn negative_answers_expire_sooner() {
        let mut s = settings();
        s.ttl = Duration::from_secs(100);
        s.negative_ttl = Duration::from_secs(10);
        let fake = Fake::new(1, 0);
        let e = engine(fake.clone(), s);
        let nodata = IpAddr::from([9, 9, 9, 9]);
        assert_eq!(e.lookup(nodata).await, Outcome::Answer(Answer::NoData));
        e.lookup(ip(1)).await;
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(e.cached(nodata).is_none());
        assert!(e.cached(ip(1)).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_answers_at_once_and_closes_after_probe() {
        let fake = Fake::new(1, 5);
        let e = engine(fake.clone(), settings());
        fake.failing.store(true, Ordering::SeqCst);
        assert_eq!(e.lookup(ip(1)).await, Outcome::Failed);
        assert_eq!(e.lookup(ip(2)).await, Outcome::Failed);
        assert!(matches!(e.breaker_state(), BreakerState::Open { .. }));
        let calls = fake.calls.load(Ordering::SeqCst);
        let t0 = tokio::time::Instant::now();
        assert_eq!(e.lookup(ip(3)).await, Outcome::CircuitOpen);
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(fake.calls.load(Ordering::SeqCst), calls, "nothing sent");
        fake.failing.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(e.lookup(ip(3)).await, Outcome::Answer(_)));
        assert_eq!(e.breaker_state(), BreakerState::Closed { failures: 0 });
    }

    #[tokio::test(start_paused = true)]
    async fn paused_provider_answers_rate_limited_at_once() {
        let fake = Fake::new(100, 0);
        let e = engine(fake.clone(), settings());
        e.limiter().rate_limited(Some(Duration::from_secs(30)));
        assert_eq!(e.lookup(ip(1)).await, Outcome::RateLimited);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(matches!(e.lookup(ip(1)).await, Outcome::Answer(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn empty_bucket_answers_rate_limited_instead_of_queueing() {
        let mut s = settings();
        s.rate.units_per_second = Some(1.0);
        s.rate.unit_burst = NonZeroU32::new(100).unwrap();
        s.max_token_wait = Duration::from_millis(500);
        let fake = Fake::new(100, 0);
        let e = engine(fake.clone(), s);
        let batch: Vec<_> = (0..100)
            .map(|n| {
                let e = e.clone();
                tokio::spawn(async move { e.lookup(ip(n)).await })
            })
            .collect();
        for t in batch {
            assert!(matches!(t.await.unwrap(), Outcome::Answer(_)));
        }
        // 100 units spent; one more needs 1 s of refill, more than max_token_wait.
        let t0 = tokio::time::Instant::now();
        assert_eq!(e.lookup(ip(500)).await, Outcome::RateLimited);
        assert!(t0.elapsed() <= Duration::from_millis(100));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(e.lookup(ip(500)).await, Outcome::Answer(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_sheds() {
        let mut s = settings();
        s.max_pending = nz(2);
        let fake = Fake::new(100, 1000);
        let e = engine(fake, s);
        let a = tokio::spawn({
            let e = e.clone();
            async move { e.lookup(ip(1)).await }
        });
        let b = tokio::spawn({
            let e = e.clone();
            async move { e.lookup(ip(2)).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(e.pending(), 2);
        assert_eq!(e.lookup(ip(3)).await, Outcome::RateLimited);
        assert!(matches!(a.await.unwrap(), Outcome::Answer(_)));
        assert!(matches!(b.await.unwrap(), Outcome::Answer(_)));
    }

    /// Looks `ips` up concurrently; `None` for a lookup still waiting after an
    /// hour of (paused, auto-advancing) time: one that would wait forever.
    async fn lookup_all(e: &Arc<Engine>, ips: &[IpAddr]) -> Vec<Option<Outcome>> {
        let tasks: Vec<_> = ips
            .iter()
            .map(|&ip| {
                let e = e.clone();
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_secs(3600), e.lookup(ip))
                        .await
                        .ok()
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    /// Regression (issue 8 item 6): a provider that panicked mid-batch left that
    /// batch's waiters unanswered, so every later lookup of those addresses joined
    /// them and waited forever; a panicking half-open probe kept the breaker
    /// refusing for good.
    #[tokio::test(start_paused = true)]
    async fn provider_panic_answers_every_waiter_and_frees_the_probe() {
        let fake = Fake::new(100, 5);
        let e = engine(fake.clone(), settings());
        let ips: Vec<IpAddr> = (0..10).map(ip).collect();
        fake.panicking.store(true, Ordering::SeqCst);
        let got = lookup_all(&e, &ips).await;
        assert_eq!(got, vec![Some(Outcome::Failed); 10], "closed breaker");
        assert_eq!(e.pending(), 0);
        // The same addresses again: a fresh query, not the dead one's waiters.
        let got = lookup_all(&e, &ips).await;
        assert_eq!(got, vec![Some(Outcome::Failed); 10], "asked again");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);

        // Open the breaker, let it go half-open, and panic in the probe.
        fake.panicking.store(false, Ordering::SeqCst);
        fake.failing.store(true, Ordering::SeqCst);
        lookup_all(&e, &[ip(100)]).await;
        lookup_all(&e, &[ip(101)]).await;
        assert!(matches!(e.breaker_state(), BreakerState::Open { .. }));
        tokio::time::advance(Duration::from_secs(10)).await;
        fake.failing.store(false, Ordering::SeqCst);
        fake.panicking.store(true, Ordering::SeqCst);
        assert_eq!(lookup_all(&e, &ips).await, vec![Some(Outcome::Failed); 10]);
        assert_eq!(e.breaker_state(), BreakerState::HalfOpen { probing: false });
        // The provider is fine again: the next probe goes out and closes it.
        fake.panicking.store(false, Ordering::SeqCst);
        let got = lookup_all(&e, &ips).await;
        assert!(got
            .iter()
            .all(|o| matches!(o, Some(Outcome::Answer(Answer::Found(_))))));
        assert_eq!(e.breaker_state(), BreakerState::Closed { failures: 0 });
        assert_eq!(e.pending(), 0);
    }

    /// Regression (issue 8 item 6): `Retry-After: 9223372036854775808` (2^63 s)
    /// panicked at `Instant + Duration` inside the batch, and its waiters hung.
    #[tokio::test(start_paused = true)]
    async fn absurd_retry_after_pauses_the_key_instead_of_panicking() {
        use crate::lookup::providers::http::RateInfo;
        use crate::lookup::time::MAX_PROVIDER_PAUSE;
        let absurd = [
            Duration::from_secs(1 << 63),
            Duration::from_secs(u64::MAX),
            Duration::MAX,
        ];
        for (i, retry_after) in absurd.into_iter().enumerate() {
            // As a 429's Retry-After.
            let fake = Fake::new(100, 0);
            let e = engine(fake.clone(), settings());
            *fake.retry_after.lock().unwrap() = Some(retry_after);
            assert_eq!(
                lookup_all(&e, &[ip(1), ip(2)]).await,
                vec![Some(Outcome::RateLimited); 2],
                "case {i}"
            );
            assert_eq!(e.limiter().paused_for(), Some(MAX_PROVIDER_PAUSE));
            assert_eq!(e.lookup(ip(1)).await, Outcome::RateLimited, "paused");
            assert_eq!(fake.calls.load(Ordering::SeqCst), 1);

            // As the Retry-After of a successful answer's headers.
            let fake = Fake::new(100, 0);
            let e = engine(fake.clone(), settings());
            *fake.rate_info.lock().unwrap() = Some(RateInfo {
                retry_after: Some(retry_after),
                remaining: Some(0),
                limit: Some(u64::MAX),
            });
            let got = lookup_all(&e, &[ip(1)]).await;
            assert!(matches!(got[0], Some(Outcome::Answer(_))), "case {i}");
            assert_eq!(e.limiter().paused_for(), Some(MAX_PROVIDER_PAUSE));
            assert_eq!(e.pending(), 0);
        }
    }

    /// Regression (issue 8 item 6): durations from the config were added to
    /// instants unchecked (breaker pause, batch wait, budget period, TTL).
    #[tokio::test(start_paused = true)]
    async fn absurd_config_durations_do_not_panic() {
        let mut s = settings();
        s.ttl = Duration::MAX;
        s.negative_ttl = Duration::MAX;
        s.max_wait = Duration::MAX;
        s.max_token_wait = Duration::MAX;
        s.breaker.open_for = Duration::MAX;
        s.rate.window = Duration::MAX;
        s.rate.budgets = vec![crate::lookup::rate_limit::Budget {
            period: crate::lookup::rate_limit::Period::Every(Duration::MAX),
            limit: u64::MAX,
            anchor_ms: 0,
        }];
        let fake = Fake::new(1, 0);
        let e = engine(fake.clone(), s);
        assert!(matches!(e.lookup(ip(1)).await, Outcome::Answer(_)));
        assert!(e.cached(ip(1)).is_some(), "cached for as long as it runs");
        fake.failing.store(true, Ordering::SeqCst);
        assert_eq!(e.lookup(ip(2)).await, Outcome::Failed);
        assert_eq!(e.lookup(ip(3)).await, Outcome::Failed);
        assert!(matches!(e.breaker_state(), BreakerState::Open { .. }));
        assert_eq!(e.lookup(ip(4)).await, Outcome::CircuitOpen);
    }

    /// Regression (issue 8 item 13b): a 401 for a revoked key was `Failed`, like a
    /// 503, so `on_slow_lookup: backpressure` retried it for ever. It is its own
    /// outcome now, flagged on the engine until a success, and never opens the
    /// breaker (the provider is up; the key is wrong).
    #[tokio::test(start_paused = true)]
    async fn rejected_key_is_its_own_outcome() {
        let fake = Fake::new(100, 0);
        let e = engine(fake.clone(), settings());
        fake.rejecting.store(true, Ordering::SeqCst);
        for n in 0..5 {
            assert_eq!(e.lookup(ip(n)).await, Outcome::KeyRejected);
        }
        assert!(e.key_rejected());
        assert_eq!(e.breaker_state(), BreakerState::Closed { failures: 0 });
        assert!(e.cached(ip(1)).is_none(), "not cached");
        fake.rejecting.store(false, Ordering::SeqCst);
        assert!(matches!(e.lookup(ip(1)).await, Outcome::Answer(_)));
        assert!(!e.key_rejected());
    }
}
