//! The lookup engine against the provider simulator: the real ipinsights client,
//! real HTTP on 127.0.0.1, the simulator's accounting as the witness.
//!
//! - quota economy: 200,000 Zipf-distributed lookups over 20,000 addresses ask each
//!   distinct address once, in bulks of about 100;
//! - rate limits: configured below the simulator's limit there is no 429; with the
//!   simulator stricter, no request arrives inside a `Retry-After` and lookups keep
//!   answering (`RateLimited`, never hanging);
//! - faults: 503s, resets and latency give `Failed`/`CircuitOpen` promptly; the
//!   breaker opens and closes again once the faults are gone.
//!
//! Nothing here depends on the machine's speed (issue 8 item 14): client timeouts
//! are far above a healthy answer from 127.0.0.1, the latency fault far above the
//! read timeout, and the callers' deadlines are give-up bounds ([`GIVE_UP`]) that
//! only a hung lookup reaches.

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use common::start_sim;
use ipenrich::lookup::breaker::{BreakerSettings, BreakerState};
use ipenrich::lookup::engine::{Engine, EngineSettings, Outcome};
use ipenrich::lookup::providers::http::HttpSettings;
use ipenrich::lookup::providers::ipinsights::IpInsightsClient;
use ipenrich::lookup::rate_limit::{Counts, RateSettings};
use ipenrich::secret::Secret;
use ipenrich::simulate::{FaultConfig, RateLimitConfig, SimConfig, SimHandle};
use tokio::task::JoinSet;

/// A caller's bound that only a hung lookup reaches: the engine answers at once
/// when it cannot ask, and within the client's timeouts when it can.
const GIVE_UP: Duration = Duration::from_secs(120);

/// Read timeout of the clients: no healthy answer from the in-process simulator
/// takes this long, however busy the machine.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

fn client(sim: &SimHandle, read_timeout: Duration) -> Arc<IpInsightsClient> {
    let settings = HttpSettings::new(
        &sim.base_url("ipinsights"),
        Secret::new("sim-ipinsights-key").unwrap(),
    )
    .unwrap()
    .with_timeouts(Duration::from_secs(1), read_timeout, read_timeout * 2);
    Arc::new(IpInsightsClient::new(&settings).unwrap())
}

fn generous_rate() -> RateSettings {
    RateSettings {
        requests_per_second: 10_000.0,
        request_burst: NonZeroU32::new(10_000).unwrap(),
        units_per_second: Some(1_000_000.0),
        unit_burst: NonZeroU32::new(100_000).unwrap(),
        window_limit: None,
        ..RateSettings::ipinsights()
    }
}

fn engine(sim_client: Arc<IpInsightsClient>, settings: EngineSettings) -> Arc<Engine> {
    let limiter = settings.limiter("ipinsights").unwrap();
    Engine::try_new(sim_client, settings, limiter, &prometheus::Registry::new()).unwrap()
}

/// Public addresses in 45.0.0.0/8 (documentation and special ranges avoided).
fn public(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x2D00_0000 + n * 7))
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `count` ranks drawn from Zipf(s = 1) over `n` ranks, deterministically.
fn zipf(n: usize, count: usize, seed: u64) -> Vec<u32> {
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / k as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(n);
    let mut acc = 0.0;
    for w in weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut state = seed;
    (0..count)
        .map(|_| {
            let u = (xorshift(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
            cdf.partition_point(|&c| c < u).min(n - 1) as u32
        })
        .collect()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    answers: usize,
    rate_limited: usize,
    circuit_open: usize,
    failed: usize,
    /// Lookups that did not answer within the caller's deadline.
    hung: usize,
}

impl Tally {
    fn add(&mut self, outcome: Option<Outcome>) {
        match outcome {
            Some(Outcome::Answer(_)) => self.answers += 1,
            Some(Outcome::RateLimited) => self.rate_limited += 1,
            Some(Outcome::CircuitOpen) => self.circuit_open += 1,
            Some(Outcome::Failed | Outcome::KeyRejected) => self.failed += 1,
            None => self.hung += 1,
        }
    }
}

/// Looks all `ips` up at once, each with the caller's `deadline`.
async fn wave(engine: &Arc<Engine>, ips: &[IpAddr], deadline: Duration) -> Tally {
    let mut set = JoinSet::new();
    for &ip in ips {
        let e = engine.clone();
        set.spawn(async move { tokio::time::timeout(deadline, e.lookup(ip)).await.ok() });
    }
    let mut tally = Tally::default();
    while let Some(r) = set.join_next().await {
        tally.add(r.unwrap());
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_economy_zipf_stream() {
    let mut config = SimConfig::default();
    config.ipinsights.rate_limit = Some(RateLimitConfig {
        requests: 100_000_000,
        window_ms: 3_600_000,
    });
    let sim = start_sim(config).await;
    let settings = EngineSettings {
        rate: generous_rate(),
        max_pending: NonZeroUsize::new(50_000).unwrap(),
        // A partial bulk waits longer for company, so a slow machine that enqueues
        // misses slowly still sends full ones while a backlog exists.
        max_wait: Duration::from_millis(500),
        ..EngineSettings::default()
    };
    let engine = engine(client(&sim, READ_TIMEOUT), settings);

    let draws: Vec<IpAddr> = zipf(20_000, 200_000, 0x5EED)
        .into_iter()
        .map(public)
        .collect();
    let distinct = draws.iter().collect::<HashSet<_>>().len();

    // A stream: events arrive in waves of 1,000, at most 5,000 lookups in flight.
    let mut set = JoinSet::new();
    let mut tally = Tally::default();
    for chunk in draws.chunks(1_000) {
        for &ip in chunk {
            let e = engine.clone();
            set.spawn(async move { tokio::time::timeout(GIVE_UP, e.lookup(ip)).await.ok() });
        }
        while set.len() > 4_000 {
            tally.add(set.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(r) = set.join_next().await {
        tally.add(r.unwrap());
    }
    assert_eq!(tally.answers, 200_000, "{tally:?}");

    let acc = sim.accounting().ipinsights;
    let upstream_ips: usize = acc.ips_per_request.iter().sum();
    let mean = acc.mean_ips_per_request().unwrap();
    // The last bulk of the run leaves at its deadline with what is left: "while a
    // backlog exists" excludes it.
    let backlog = &acc.ips_per_request[..acc.ips_per_request.len() - 1];
    let backlog_mean = backlog.iter().sum::<usize>() as f64 / backlog.len().max(1) as f64;
    println!(
        "quota economy: {distinct} distinct addresses, {upstream_ips} upstream ip lookups \
         ({:.4} x distinct) in {} requests; mean bulk {mean:.1}, {backlog_mean:.1} without the final partial bulk",
        upstream_ips as f64 / distinct as f64,
        acc.ips_per_request.len()
    );
    assert!(upstream_ips as f64 <= 1.02 * distinct as f64);
    assert!(upstream_ips >= distinct, "every distinct address was asked");
    assert!(backlog_mean >= 90.0, "mean bulk {backlog_mean}");
    assert_eq!(acc.rate_limited_count(), 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_below_the_simulator_limit_never_sees_429() {
    // Simulator: 2,000 units in any 10 s. Engine: the same limit, exactly; it may
    // never see a 429, because a request's place in the engine's window is taken
    // when its answer is back, no earlier than the simulator counted it.
    let mut config = SimConfig::default();
    config.ipinsights.rate_limit = Some(RateLimitConfig {
        requests: 2_000,
        window_ms: 10_000,
    });
    let sim = start_sim(config).await;
    let settings = EngineSettings {
        rate: RateSettings::windowed(2_000, Counts::Units, Duration::from_secs(10)),
        ..EngineSettings::default()
    };
    let engine = engine(client(&sim, READ_TIMEOUT), settings);
    // Offer far more than the limit: 600 new addresses every 250 ms for 6 s.
    let mut total = Tally::default();
    for w in 0..24u32 {
        let ips: Vec<IpAddr> = (0..600).map(|i| public(w * 600 + i)).collect();
        let t = wave(&engine, &ips, GIVE_UP).await;
        total.answers += t.answers;
        total.rate_limited += t.rate_limited;
        total.hung += t.hung;
        total.failed += t.failed;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let acc = sim.accounting().ipinsights;
    println!(
        "below the limit: {total:?}, {} units charged, {} requests",
        acc.units_charged,
        acc.ips_per_request.len()
    );
    assert_eq!(acc.rate_limited_count(), 0, "no 429");
    assert_eq!(acc.responses_by_status.get(&429), None);
    assert_eq!((total.hung, total.failed), (0, 0));
    assert!(total.rate_limited > 0, "the engine's own limit was reached");
    assert!(total.answers >= 600, "{total:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stricter_simulator_retry_after_is_honoured_and_lookups_keep_answering() {
    // Simulator: 250 units per 4 s; the engine believes in 100,000 units/s. Two
    // bulks of 100 pass, the third is refused with a Retry-After.
    let mut config = SimConfig::default();
    config.ipinsights.rate_limit = Some(RateLimitConfig {
        requests: 250,
        window_ms: 4_000,
    });
    let sim = start_sim(config).await;
    let settings = EngineSettings {
        rate: RateSettings {
            window: Duration::from_secs(4),
            ..generous_rate()
        },
        // One request at a time: a request sent before the 429 arrived could
        // otherwise land inside the Retry-After.
        concurrency: NonZeroUsize::new(1).unwrap(),
        ..EngineSettings::default()
    };
    let engine = engine(client(&sim, READ_TIMEOUT), settings);
    let mut total = Tally::default();
    let mut answered_after_first_429 = 0;
    for w in 0..40u32 {
        let ips: Vec<IpAddr> = (0..100).map(|i| public(w * 100 + i)).collect();
        let t = wave(&engine, &ips, GIVE_UP).await;
        if sim.accounting().ipinsights.rate_limited_count() > 0 {
            answered_after_first_429 += t.answers;
        }
        total.answers += t.answers;
        total.rate_limited += t.rate_limited;
        total.hung += t.hung;
        total.failed += t.failed;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let acc = sim.accounting().ipinsights;
    println!(
        "stricter simulator: {total:?}, 429s {:?}, arrivals {}, early retries {}",
        acc.rate_limited,
        acc.arrivals_ms.len(),
        acc.early_retries()
    );
    assert!(acc.rate_limited_count() >= 1, "the simulator refused");
    assert_eq!(
        acc.early_retries(),
        0,
        "a request arrived inside a Retry-After"
    );
    assert_eq!(total.hung, 0, "lookups never hang");
    assert!(total.rate_limited > 0);
    assert!(answered_after_first_429 > 0, "the stream keeps flowing");
    sim.shutdown().await;
}

fn faults(sim: &SimHandle, f: FaultConfig) {
    let mut config = SimConfig::default();
    config.ipinsights.rate_limit = Some(RateLimitConfig {
        requests: 1_000_000,
        window_ms: 3_600_000,
    });
    config.ipinsights.faults = f;
    sim.set_config(config).unwrap();
}

/// Waits until an open breaker's pause has passed (it reads half-open then).
async fn until_not_open(engine: &Engine) {
    while let BreakerState::Open { until } = engine.breaker_state() {
        tokio::time::sleep_until(until).await;
    }
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, t: Tally) {
        self.answers += t.answers;
        self.rate_limited += t.rate_limited;
        self.circuit_open += t.circuit_open;
        self.failed += t.failed;
        self.hung += t.hung;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_fail_fast_breaker_opens_and_closes() {
    let sim = start_sim(SimConfig::default()).await;
    let open_for = Duration::from_millis(800);
    let settings = EngineSettings {
        rate: generous_rate(),
        concurrency: NonZeroUsize::new(1).unwrap(),
        breaker: BreakerSettings {
            failures: NonZeroU32::new(3).unwrap(),
            open_for,
        },
        ..EngineSettings::default()
    };
    // Read timeout 5 s: far above a healthy answer, far below the latency phase's
    // 60 s (so that phase times out whatever the machine's speed).
    let engine = engine(client(&sim, Duration::from_secs(5)), settings);
    let mut next = 0u32;
    let mut batch = |n: u32| {
        let ips: Vec<IpAddr> = (next..next + n).map(public).collect();
        next += n;
        ips
    };

    // 503 on every request: failed requests open the breaker after three. How
    // many waves that takes depends on how the batcher cut them, so count.
    faults(
        &sim,
        FaultConfig {
            server_error_rate: 1.0,
            server_error_status: Some(503),
            ..FaultConfig::default()
        },
    );
    let mut failing = Tally::default();
    let mut waves = 0;
    while !matches!(engine.breaker_state(), BreakerState::Open { .. }) {
        waves += 1;
        assert!(waves <= 10, "the breaker never opened: {failing:?}");
        failing += wave(&engine, &batch(10), GIVE_UP).await;
    }
    assert_eq!(
        failing.failed + failing.circuit_open,
        10 * waves,
        "{failing:?}"
    );
    assert!(failing.failed >= 3, "{failing:?}");
    let BreakerState::Open { until } = engine.breaker_state() else {
        panic!("just seen open")
    };
    let arrivals = sim.accounting().ipinsights.requests_total;
    let t = wave(&engine, &batch(50), GIVE_UP).await;
    // Only a wave that ended inside the open period can promise that nothing was
    // sent: past it the breaker lets a probe through (checked below).
    if tokio::time::Instant::now() < until {
        assert_eq!(t.circuit_open, 50, "{t:?}");
        assert_eq!(
            sim.accounting().ipinsights.requests_total,
            arrivals,
            "nothing is sent while open"
        );
    } else {
        println!("the wave outlasted the open period: {t:?}");
        assert_eq!(t.circuit_open + t.failed, 50, "{t:?}");
    }

    // Resets: the half-open probe fails, the breaker opens again.
    faults(
        &sim,
        FaultConfig {
            reset_rate: 1.0,
            ..FaultConfig::default()
        },
    );
    until_not_open(&engine).await;
    let t = wave(&engine, &batch(10), GIVE_UP).await;
    assert_eq!(t.failed + t.circuit_open, 10, "{t:?}");
    assert!(t.failed >= 1, "the probe went out and failed: {t:?}");
    assert!(!matches!(
        engine.breaker_state(),
        BreakerState::Closed { .. }
    ));

    // 60 s latency against a 5 s read timeout: the probe times out.
    faults(
        &sim,
        FaultConfig {
            latency_ms: 60_000,
            ..FaultConfig::default()
        },
    );
    until_not_open(&engine).await;
    let t = wave(&engine, &batch(10), GIVE_UP).await;
    assert_eq!(t.hung, 0, "answered, not hung: {t:?}");
    assert_eq!(t.failed + t.circuit_open, 10, "{t:?}");
    assert!(t.failed >= 1, "{t:?}");
    assert!(!matches!(
        engine.breaker_state(),
        BreakerState::Closed { .. }
    ));

    // Faults gone: a probe succeeds and the breaker closes (the first one, unless
    // the machine is slower than the read timeout; then a later one).
    faults(&sim, FaultConfig::default());
    let mut probes = 0;
    loop {
        probes += 1;
        until_not_open(&engine).await;
        let t = wave(&engine, &batch(1), GIVE_UP).await;
        if t.answers == 1 {
            break;
        }
        assert!(probes < 5, "no probe succeeded: {t:?}");
    }
    assert_eq!(engine.breaker_state(), BreakerState::Closed { failures: 0 });
    let t = wave(&engine, &batch(200), GIVE_UP).await;
    assert_eq!(t.answers, 200, "{t:?}");
    sim.shutdown().await;
}

/// Issue 10: the monthly remainder of an OpenIPApi key comes from the provider
/// (`GET /v1/account/usage`, read at start under `ipenrich run`), so lookups stop
/// where the billing period's quota does instead of meeting `limit_exceeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openipapi_lookups_stop_at_the_providers_monthly_remainder() {
    use ipenrich::config::{
        EngineConfig, KeySource, OpenIpApiConfig, OpenIpApiPlan, ProviderConfig,
    };
    use ipenrich::lookup::build::{member, SharedProviders};
    use ipenrich::lookup::providers::openipapi::OpenIpApiClient;
    use ipenrich::lookup::Member;

    let mut config = SimConfig::default();
    config.openipapi.quota = Some(30);
    let sim = start_sim(config).await;
    let base = sim.base_url("openipapi");
    // Another tool already spent 20 of the key's 30 lookups this month.
    let other = OpenIpApiClient::new(
        &HttpSettings::new(&base, Secret::new("sim-openipapi-key").unwrap()).unwrap(),
        OpenIpApiPlan::Business,
    )
    .unwrap();
    let spent: Vec<IpAddr> = (0..20).map(|n| public(10_000 + n)).collect();
    other.lookup_batch(&spent).await.unwrap();
    assert_eq!(other.usage().await.unwrap().lookups_remaining, 10);

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sim-openipapi-key\n").unwrap();
    let provider = ProviderConfig::Openipapi(OpenIpApiConfig {
        name: None,
        base_url: Some(base),
        api_key: KeySource::File(key),
        plan: OpenIpApiPlan::Business,
        timeouts: Default::default(),
        lookup: EngineConfig {
            max_batch: Some(10),
            ..EngineConfig::default()
        },
    });
    let shared = SharedProviders::with_quota_sync(prometheus::Registry::new());
    let Member::Remote(engine) = member(0, &provider, &shared).unwrap() else {
        panic!("an engine");
    };
    // The sync's first read.
    for _ in 0..200 {
        let reads = sim
            .accounting()
            .openipapi
            .requests_by_endpoint
            .get("usage")
            .copied();
        if reads >= Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut tally = Tally::default();
    for chunk in (0..50).map(public).collect::<Vec<_>>().chunks(10) {
        let t = wave(&engine, chunk, GIVE_UP).await;
        tally.answers += t.answers;
        tally.rate_limited += t.rate_limited;
        tally.failed += t.failed;
    }
    let acc = sim.accounting().openipapi;
    println!(
        "monthly remainder 10: {tally:?}; 429s {:?}",
        acc.rate_limited
    );
    assert_eq!(tally.answers, 10, "{tally:?}");
    assert_eq!(tally.rate_limited, 40, "{tally:?}");
    assert!(
        acc.rate_limited.is_empty(),
        "limit_exceeded: {:?}",
        acc.rate_limited
    );
    sim.shutdown().await;
}

/// Prefix-aware caching: IPGeolocation's ASN answer names the announced route
/// that holds the address (`include=routes`), so every other address of that
/// route is answered without a call, and with the same ASN the provider gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipgeolocation_asks_once_per_announced_prefix() {
    use ipenrich::lookup::providers::ipgeolocation::IpGeolocationClient;
    use ipenrich::lookup::providers::{Answer, Provider};
    let sim = start_sim(SimConfig::default()).await;
    let settings = HttpSettings::new(
        &sim.base_url("ipgeolocation"),
        Secret::new("sim-ipgeolocation-key").unwrap(),
    )
    .unwrap()
    .with_timeouts(Duration::from_secs(1), READ_TIMEOUT, READ_TIMEOUT * 2);
    let client = Arc::new(IpGeolocationClient::new(&settings).unwrap());
    let settings = EngineSettings {
        rate: generous_rate(),
        ..EngineSettings::default()
    };
    let limiter = settings.limiter("ipgeolocation").unwrap();
    let registry = prometheus::Registry::new();
    let engine = Engine::try_new(client.clone(), settings, limiter, &registry).unwrap();
    // 300 addresses over six /16s, one after the other (concurrent misses of one
    // prefix would each be asked before the first answer names the prefix).
    let ips: Vec<IpAddr> = (0..300u32)
        .map(|n| {
            IpAddr::V4(Ipv4Addr::new(
                45,
                20 + (n % 6) as u8,
                (n / 6) as u8,
                7 + (n % 5) as u8,
            ))
        })
        .collect();
    let mut routes = HashSet::new();
    let mut answers = Vec::new();
    for ip in &ips {
        let outcome = tokio::time::timeout(GIVE_UP, engine.lookup(*ip))
            .await
            .unwrap();
        let Outcome::Answer(Answer::Found(record)) = outcome else {
            panic!("{ip}: {outcome:?}")
        };
        let asn = record.asn.clone().unwrap();
        let route: ipnet::IpNet = asn.route.as_deref().unwrap().parse().unwrap();
        assert!(route.contains(ip), "{ip} is not in its route {route}");
        routes.insert(route);
        answers.push((*ip, asn.number));
    }
    let credits = sim.accounting().ipgeolocation.credits;
    println!(
        "{} addresses, {} routes, {credits} credits",
        ips.len(),
        routes.len()
    );
    assert_eq!(
        credits,
        routes.len() as u64,
        "one call per announced prefix"
    );
    assert!(routes.len() < ips.len() / 10);
    let metrics = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    let by_prefix = common::metric(
        &metrics,
        "ipenrich_lookup_cache_hits_by_origin_total",
        &["origin=\"prefix\""],
    );
    assert_eq!(by_prefix, (ips.len() as u64 - credits) as f64, "{metrics}");
    // What the provider says when asked about each address itself.
    for (ip, number) in answers.iter().step_by(7) {
        let direct = client.lookup(&[*ip]).await.unwrap();
        let Answer::Found(r) = &direct[0] else {
            panic!("{ip}: {direct:?}")
        };
        assert_eq!(r.asn.as_ref().unwrap().number, *number, "{ip}");
    }
}
