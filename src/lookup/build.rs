//! Turning the `providers:` section of a pipeline into a [`Chain`].
//!
//! Opening a database or reading an API key happens here, at start-up, so that a
//! missing file or variable stops the process with the config key that named it,
//! rather than surfacing as lookup errors later.
//!
//! Every API provider gets a lookup [`Engine`] (cache, single-flight, batching,
//! token buckets, breaker). Engines and rate limiters live in [`SharedProviders`],
//! one per process, keyed by provider, base URL and API key: pipelines that use the
//! same key share one cache and one budget, and the attacker reporter draws its
//! report units from the same ipinsights bucket as the lookups.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex, PoisonError};

use super::engine::{Engine, EngineSettings};
use super::providers::cloudflare_radar::CloudflareRadarClient;
use super::providers::http::HttpSettings;
use super::providers::ipgeolocation::IpGeolocationClient;
use super::providers::ipinsights::IpInsightsClient;
use super::providers::iptrust::IpTrustClient;
use super::providers::mmdb::MmdbProvider;
use super::providers::openipapi::OpenIpApiClient;
use super::providers::Provider;
use super::rate_limit::{Budget, Counts, Period, RateLimiter, RateSettings};
use super::{Chain, Member};
use crate::config::{
    BudgetPeriod, EngineConfig, KeySource, OpenIpApiPlan, ProviderConfig, TimeoutsConfig,
};
use crate::secret::Secret;
use crate::telemetry::error_chain;

/// A provider that could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct BuildError {
    /// Config key path of the provider, e.g. `providers[1].ipinsights`.
    pub key: String,
    /// What went wrong, with its causes (never contains a key's value).
    pub reason: String,
}

/// Production hosts, from the providers' documents (../shared/providers/).
fn default_base_url(kind: &str) -> &'static str {
    match kind {
        "ipinsights" => "https://ipinsights.io",
        "openipapi" => "https://api.openipapi.com",
        "iptrust" => "https://api.iptrust.co",
        "ipgeolocation" => "https://api.ipgeolocation.io",
        _ => "https://api.cloudflare.com",
    }
}

/// Reads an API key from where the config says it is.
pub fn secret(source: &KeySource) -> Result<Secret, String> {
    Secret::from_source(source).map_err(|e| error_chain(&e))
}

fn settings(url: &str, key: Secret, t: &TimeoutsConfig) -> Result<HttpSettings, String> {
    Ok(HttpSettings::new(url, key)
        .map_err(|e| error_chain(&e))?
        .with_timeouts(t.connect, t.read, t.request))
}

/// Engines and limiters of one process, shared by every pipeline and reporter.
pub struct SharedProviders {
    registry: prometheus::Registry,
    /// By key identity, with the settings it was built with.
    engines: Mutex<HashMap<String, (Arc<Engine>, EngineSettings)>>,
    /// Key identity by name: one name, one key (the `provider` metric label).
    names: Mutex<HashMap<String, String>>,
    /// Engines by the source of their data (provider and base URL, not key).
    sources: Mutex<HashMap<String, Vec<Arc<Engine>>>>,
    limiters: Mutex<HashMap<String, Arc<RateLimiter>>>,
    databases: Mutex<HashMap<std::path::PathBuf, Arc<MmdbProvider>>>,
    /// Read the providers' own quota counts (`ipenrich run`; never `check`).
    sync_quotas: bool,
    /// Keys whose quota is synced already.
    synced: Mutex<std::collections::HashSet<String>>,
}

impl SharedProviders {
    /// Engines register their metrics on `registry`.
    pub fn new(registry: prometheus::Registry) -> Self {
        SharedProviders {
            registry,
            engines: Mutex::default(),
            names: Mutex::default(),
            sources: Mutex::default(),
            limiters: Mutex::default(),
            databases: Mutex::default(),
            sync_quotas: false,
            synced: Mutex::default(),
        }
    }

    /// As [`SharedProviders::new`], and every OpenIPApi key's limiter follows the
    /// provider's count of the billing period (`GET /v1/account/usage` at start and
    /// every [`QUOTA_SYNC_EVERY`]). For `ipenrich run`: it spends requests.
    pub fn with_quota_sync(registry: prometheus::Registry) -> Self {
        SharedProviders {
            sync_quotas: true,
            ..SharedProviders::new(registry)
        }
    }

    /// Starts the quota sync of one OpenIPApi key, once per key.
    fn sync_quota(&self, client: Arc<OpenIpApiClient>, limiter: &Arc<RateLimiter>, id: String) {
        if !self.sync_quotas || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if !self
            .synced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
        {
            return;
        }
        let limiter = Arc::downgrade(limiter);
        tokio::spawn(async move {
            loop {
                let Some(l) = limiter.upgrade() else { return };
                match client.usage().await {
                    Ok(u) => {
                        let month = 31 * 86_400_000;
                        l.provider_quota(
                            u.lookups_remaining,
                            u.reset_at_ms().unwrap_or(l.wall_now() + month),
                        )
                    }
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "openipapi usage not read; the local limits stand")
                    }
                }
                drop(l);
                tokio::time::sleep(QUOTA_SYNC_EVERY).await;
            }
        });
    }

    /// One open database per path, with one reloader.
    fn database(&self, m: &crate::config::MmdbConfig) -> Result<Arc<MmdbProvider>, String> {
        let mut dbs = self
            .databases
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = dbs.get(&m.path) {
            return Ok(db.clone());
        }
        let provider = Arc::new(MmdbProvider::open(&m.path).map_err(|e| error_chain(&e))?);
        if !m.reload_interval.is_zero() && tokio::runtime::Handle::try_current().is_ok() {
            provider.spawn_reloader(m.reload_interval);
        }
        dbs.insert(m.path.clone(), provider.clone());
        Ok(provider)
    }

    /// The ipinsights limiter for a key, shared with the lookups of that key when a
    /// pipeline uses it (build the pipelines' chains first), else with the
    /// documented 600/hour.
    pub fn ipinsights_limiter(
        &self,
        base_url: &str,
        key: &Secret,
    ) -> Result<Arc<RateLimiter>, String> {
        self.limiter("ipinsights", base_url, key, RateSettings::ipinsights())
    }

    /// The limiter of one provider key, created on first use with `rate`.
    pub fn limiter(
        &self,
        kind: &str,
        base_url: &str,
        key: &Secret,
        rate: RateSettings,
    ) -> Result<Arc<RateLimiter>, String> {
        let id = identity(kind, base_url, key);
        let mut limiters = self.limiters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = limiters.get(&id) {
            return Ok(l.clone());
        }
        let limiter = RateLimiter::try_new(kind, rate)
            .map(Arc::new)
            .map_err(|e| {
                e.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
        limiters.insert(id, limiter.clone());
        Ok(limiter)
    }

    /// The engine of one key: built on first use, shared after, as long as every
    /// use asks for the same settings under the same name.
    #[allow(clippy::too_many_arguments)]
    fn engine(
        &self,
        kind: &str,
        name: &str,
        base_url: &str,
        key: &Secret,
        provider: Arc<dyn Provider>,
        plan: Option<OpenIpApiPlan>,
        config: &EngineConfig,
    ) -> Result<Arc<Engine>, String> {
        let id = identity(kind, base_url, key);
        let mut settings = engine_settings(kind, plan, config)?;
        settings.name = Some(name.to_string());
        if let Some((e, built)) = self
            .engines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            if *built != settings {
                return Err(format!(
                    "this {kind} key is already configured with other settings (name {:?}); \
                     one key has one cache and one quota: give every use of it the same \
                     `name`, `plan` and `lookup` settings",
                    e.name()
                ));
            }
            return Ok(e.clone());
        }
        {
            let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
            match names.get(name) {
                Some(other) if *other != id => {
                    return Err(format!(
                        "the name {name:?} is already another {kind} key's: give each key its own \
                         `name` (it labels the key's metrics)"
                    ))
                }
                _ => {
                    names.insert(name.to_string(), id.clone());
                }
            }
        }
        let limiter = self.limiter(kind, base_url, key, settings.rate.clone())?;
        let settings_built = settings.clone();
        let engine = Engine::try_new(provider, settings, limiter, &self.registry)
            .map_err(|e| error_chain(&e))?;
        self.engines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (engine.clone(), settings_built));
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(source(kind, base_url))
            .or_default()
            .push(engine.clone());
        Ok(engine)
    }

    /// Every limiter, by provider key identity (provider, URL, a hash of the key;
    /// never the key): the name its usage is shared under between replicas.
    pub fn limiters_by_id(&self) -> HashMap<String, Arc<RateLimiter>> {
        self.limiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every engine, by the source of its data (see [`source`]).
    pub fn engines_by_source(&self) -> HashMap<String, Vec<Arc<Engine>>> {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Where an engine's data comes from: provider and base URL. Two keys of one
/// provider share it; the shared intel table keys its records by it.
pub fn source(kind: &str, base_url: &str) -> String {
    format!("{kind}|{}", base_url.trim_end_matches('/'))
}

/// How often an OpenIPApi key's billing-period count is read again.
pub const QUOTA_SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Provider, URL and a hash of the key: never the key itself.
fn identity(kind: &str, base_url: &str, key: &Secret) -> String {
    let mut h = DefaultHasher::new();
    key.expose().hash(&mut h);
    format!(
        "{kind}|{}|{:016x}",
        base_url.trim_end_matches('/'),
        h.finish()
    )
}

/// Documented limits per provider (../shared/providers/), as engine defaults.
fn default_rate(kind: &str, plan: Option<OpenIpApiPlan>) -> RateSettings {
    let minute = std::time::Duration::from_secs(60);
    match kind {
        // "600 requests per hour per key", each public IP of a bulk call counted.
        "ipinsights" => RateSettings::ipinsights(),
        // "Requests / minute" by plan, counted per request (a batch is one).
        "openipapi" => RateSettings::windowed(
            plan.unwrap_or(OpenIpApiPlan::Starter).per_minute(),
            Counts::Requests,
            minute,
        ),
        // IPTrust, IPGeolocation and Cloudflare document no fixed rate: 10/s, burst 20.
        _ => RateSettings {
            requests_per_second: 10.0,
            request_burst: NonZeroU32::new(20).expect("non-zero"),
            units_per_second: None,
            window_limit: None,
            window: minute,
            ..RateSettings::ipinsights()
        },
    }
}

/// A configured budget as the limiter counts it.
fn budget(b: &crate::config::BudgetConfig) -> Budget {
    Budget {
        period: match b.period {
            BudgetPeriod::Every(d) => Period::Every(d),
            BudgetPeriod::Month => Period::Month,
        },
        limit: b.limit,
        anchor_ms: b.reset_at.map_or(0, |t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        }),
    }
}

fn engine_settings(
    kind: &str,
    plan: Option<OpenIpApiPlan>,
    c: &EngineConfig,
) -> Result<EngineSettings, String> {
    let nz = |n: usize, what: &str| {
        NonZeroUsize::new(n).ok_or_else(|| format!("lookup.{what} must be at least 1"))
    };
    let nz32 = |n: u32, what: &str| {
        NonZeroU32::new(n).ok_or_else(|| format!("lookup.{what} must be at least 1"))
    };
    let mut s = EngineSettings {
        rate: default_rate(kind, plan),
        ..EngineSettings::default()
    };
    if let Some(v) = c.ttl {
        s.ttl = v;
    }
    if let Some(v) = c.negative_ttl {
        s.negative_ttl = v;
    }
    if let Some(v) = c.cache_entries {
        s.cache_entries = nz(v, "cache_entries")?;
    }
    if let Some(v) = c.max_batch {
        s.max_batch = Some(nz(v, "max_batch")?);
    }
    if let Some(v) = c.max_wait {
        s.max_wait = v;
    }
    if let Some(v) = c.concurrency {
        s.concurrency = nz(v, "concurrency")?;
    }
    // The window first: explicit rates and bursts below refine the buckets it sets.
    if c.window.is_some() || c.window_limit.is_some() {
        let counts = s.rate.window_limit.map_or(Counts::Requests, |w| w.counts);
        let window = c.window.unwrap_or(s.rate.window);
        let limit = c
            .window_limit
            .or(s.rate.window_limit.map(|w| w.limit))
            .unwrap_or(u64::from(s.rate.request_burst.get()));
        if limit == 0 {
            return Err("lookup.window_limit must be at least 1".into());
        }
        let had_window = s.rate.window_limit.is_some() || c.window_limit.is_some();
        let base = std::mem::replace(&mut s.rate, RateSettings::windowed(limit, counts, window));
        s.rate.budgets = base.budgets;
        if !had_window {
            // A provider without a documented window keeps its buckets.
            s.rate.window_limit = None;
            s.rate.requests_per_second = base.requests_per_second;
            s.rate.request_burst = base.request_burst;
        }
    }
    if let Some(v) = c.requests_per_second {
        s.rate.requests_per_second = v;
    }
    if let Some(v) = c.request_burst {
        s.rate.request_burst = nz32(v, "request_burst")?;
    }
    if let Some(v) = c.units_per_second {
        s.rate.units_per_second = Some(v);
    }
    if let Some(v) = c.unit_burst {
        s.rate.unit_burst = nz32(v, "unit_burst")?;
    }
    if let Some(v) = c.breaker_failures {
        s.breaker.failures = nz32(v, "breaker_failures")?;
    }
    if let Some(v) = c.breaker_open_for {
        s.breaker.open_for = v;
    }
    if let Some(v) = c.max_pending {
        s.max_pending = nz(v, "max_pending")?;
    }
    if let Some(v) = c.ipv6_prefix {
        if !(16..=128).contains(&v) {
            return Err(format!("lookup.ipv6_prefix must be 16-128, got {v}"));
        }
        s.ipv6_prefix = v;
    }
    if let Some(v) = c.probe_every {
        s.rate.probe_every = v;
    }
    s.rate.budgets.extend(c.budgets.iter().map(budget));
    s.rate.validate().map_err(|e| {
        e.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(s)
}

/// Builds one member of a chain.
pub fn member(
    index: usize,
    config: &ProviderConfig,
    shared: &SharedProviders,
) -> Result<Member, BuildError> {
    let kind = config.kind();
    let err = |reason: String| BuildError {
        key: format!("providers[{index}].{kind}"),
        reason,
    };
    let http = |base_url: &Option<String>, key: &KeySource, timeouts: &TimeoutsConfig| {
        let url = base_url
            .as_deref()
            .unwrap_or(default_base_url(kind))
            .to_string();
        let key = secret(key).map_err(err)?;
        let s = settings(&url, key.clone(), timeouts).map_err(err)?;
        Ok::<_, BuildError>((url, key, s))
    };
    let client = |e: super::providers::ProviderError| err(error_chain(&e));
    let mut openipapi: Option<Arc<OpenIpApiClient>> = None;
    let (url, key, provider, lookup): (String, Secret, Arc<dyn Provider>, &EngineConfig) =
        match config {
            ProviderConfig::Mmdb(m) => return Ok(Member::Local(shared.database(m).map_err(err)?)),
            ProviderConfig::Openipapi(c) => {
                let (url, key, s) = http(&c.base_url, &c.api_key, &c.timeouts)?;
                let api = Arc::new(OpenIpApiClient::new(&s, c.plan).map_err(client)?);
                openipapi = Some(api.clone());
                (url, key, api, &c.lookup)
            }
            ProviderConfig::Ipinsights(c) => {
                let (url, key, s) = http(&c.base_url, &c.api_key, &c.timeouts)?;
                (
                    url,
                    key,
                    Arc::new(IpInsightsClient::new(&s).map_err(client)?),
                    &c.lookup,
                )
            }
            ProviderConfig::Iptrust(c) => {
                let (url, key, s) = http(&c.base_url, &c.api_key, &c.timeouts)?;
                (
                    url,
                    key,
                    Arc::new(IpTrustClient::new(&s).map_err(client)?),
                    &c.lookup,
                )
            }
            ProviderConfig::Ipgeolocation(c) => {
                let (url, key, s) = http(&c.base_url, &c.api_key, &c.timeouts)?;
                (
                    url,
                    key,
                    Arc::new(IpGeolocationClient::new(&s).map_err(client)?),
                    &c.lookup,
                )
            }
            ProviderConfig::CloudflareRadar(c) => {
                let (url, key, s) = http(&c.base_url, &c.api_key, &c.timeouts)?;
                (
                    url,
                    key,
                    Arc::new(CloudflareRadarClient::new(&s).map_err(client)?),
                    &c.lookup,
                )
            }
        };
    let plan = match config {
        ProviderConfig::Openipapi(c) => Some(c.plan),
        _ => None,
    };
    let engine = shared
        .engine(kind, config.name(), &url, &key, provider, plan, lookup)
        .map_err(err)?;
    if let Some(api) = openipapi {
        shared.sync_quota(api, engine.limiter(), identity(kind, &url, &key));
    }
    Ok(Member::Remote(engine))
}

/// Builds the whole chain of a pipeline, reporting every broken provider at once.
pub fn chain(
    providers: &[ProviderConfig],
    shared: &SharedProviders,
) -> Result<Chain, Vec<BuildError>> {
    let mut members = Vec::new();
    let mut errors = Vec::new();
    for (i, p) in providers.iter().enumerate() {
        match member(i, p, shared) {
            Ok(m) => members.push(m),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(Chain::new(members))
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::rate_limit::WindowLimit;

    fn engine_config(yaml: &str) -> EngineConfig {
        serde_yaml_ng::from_str(yaml).expect("engine config parses")
    }

    #[test]
    fn defaults_follow_each_providers_documented_limits() {
        let none = EngineConfig::default();
        let ipinsights = engine_settings("ipinsights", None, &none).unwrap();
        assert_eq!(
            ipinsights.rate.window_limit,
            Some(WindowLimit {
                limit: 600,
                counts: Counts::Units
            }),
            "600/hour per key, each address counted"
        );
        assert_eq!(ipinsights.rate.window, std::time::Duration::from_secs(3600));
        // Regression (issue 10): the default ignored `plan:` and called Free's 30 "Starter".
        for (plan, per_minute) in [
            (OpenIpApiPlan::Free, 30),
            (OpenIpApiPlan::Starter, 120),
            (OpenIpApiPlan::Pro, 300),
            (OpenIpApiPlan::Business, 600),
        ] {
            let rate = engine_settings("openipapi", Some(plan), &none)
                .unwrap()
                .rate;
            assert_eq!(
                rate.window_limit,
                Some(WindowLimit {
                    limit: per_minute,
                    counts: Counts::Requests
                }),
                "{plan:?}"
            );
            assert_eq!(rate.window, std::time::Duration::from_secs(60));
            assert_eq!(rate.units_per_second, None, "counted in requests only");
            assert!(
                u64::from(rate.request_burst.get()) >= per_minute,
                "{plan:?}"
            );
        }
    }

    #[test]
    fn overrides_and_budgets_reach_the_engine() {
        let c = engine_config(
            "ttl: 2h\nmax_pending: 50\nunits_per_second: 2\nunit_burst: 100\nwindow: 10m\nbudgets:\n  - {period: 24h, limit: 10000}\n  - {period: 30days, limit: 250000}\n  - {period: month, limit: 10000, reset_at: 2026-01-15T09:00:00Z}\n",
        );
        let s = engine_settings("ipinsights", None, &c).unwrap();
        assert_eq!(s.ttl, std::time::Duration::from_secs(7200));
        assert_eq!(s.max_pending.get(), 50);
        assert_eq!(s.rate.units_per_second, Some(2.0));
        assert_eq!(s.rate.window, std::time::Duration::from_secs(600));
        assert_eq!(
            s.rate.budgets,
            vec![
                Budget {
                    period: Period::Every(std::time::Duration::from_secs(86_400)),
                    limit: 10_000,
                    anchor_ms: 0,
                },
                Budget {
                    period: Period::Every(std::time::Duration::from_secs(30 * 86_400)),
                    limit: 250_000,
                    anchor_ms: 0,
                },
                Budget {
                    period: Period::Month,
                    limit: 10_000,
                    anchor_ms: 1_768_467_600_000,
                },
            ]
        );
    }

    fn ipinsights(name: Option<&str>, key: &std::path::Path, ttl: Option<u64>) -> ProviderConfig {
        ProviderConfig::Ipinsights(crate::config::HttpProviderConfig {
            name: name.map(str::to_string),
            base_url: Some("http://127.0.0.1:9/ipinsights".into()),
            api_key: KeySource::File(key.to_path_buf()),
            timeouts: TimeoutsConfig::default(),
            lookup: EngineConfig {
                ttl: ttl.map(std::time::Duration::from_secs),
                ..EngineConfig::default()
            },
        })
    }

    /// Regression (issue 10): two keys of one provider failed start-up with
    /// AlreadyReg, and a second use of one key with other settings silently got
    /// the first engine.
    #[tokio::test]
    async fn keys_are_named_and_one_key_has_one_set_of_settings() {
        let dir = tempfile::tempdir().unwrap();
        let key = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, format!("key-{n}\n")).unwrap();
            p
        };
        let (a, b) = (key("a"), key("b"));
        let registry = prometheus::Registry::new();
        let shared = SharedProviders::new(registry.clone());
        member(0, &ipinsights(None, &a, None), &shared).unwrap();
        let unnamed = member(1, &ipinsights(None, &b, None), &shared)
            .err()
            .unwrap();
        assert!(
            unnamed.reason.contains("give each key its own `name`"),
            "{unnamed}"
        );
        member(1, &ipinsights(Some("ipinsights-soc"), &b, None), &shared).unwrap();
        // The same key again, same settings: the same engine.
        member(2, &ipinsights(None, &a, None), &shared).unwrap();
        let conflict = member(3, &ipinsights(None, &a, Some(60)), &shared)
            .err()
            .unwrap();
        assert!(conflict.reason.contains("other settings"), "{conflict}");
        assert!(
            !conflict.to_string().contains("key-a"),
            "never the key: {conflict}"
        );
        let labels: std::collections::BTreeSet<String> = registry
            .gather()
            .iter()
            .filter(|f| f.name() == crate::lookup::engine::names::UPSTREAM_REQUESTS)
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| m.get_label()[0].value().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            labels,
            ["ipinsights", "ipinsights-soc"].map(String::from).into()
        );
    }

    #[test]
    fn a_budget_resets_when_the_provider_says() {
        let c = engine_config(
            "budgets:\n  - {period: 30days, limit: 10000, reset_at: 2026-01-15T09:00:00Z}\n",
        );
        let s = engine_settings("openipapi", Some(OpenIpApiPlan::Free), &c).unwrap();
        assert_eq!(s.rate.budgets[0].anchor_ms, 1_768_467_600_000);
        let bad = "budgets:\n  - {period: 1h, limit: 1, reset_at: soon}\n";
        assert!(serde_yaml_ng::from_str::<EngineConfig>(bad).is_err());
    }

    #[test]
    fn zero_sizes_are_refused_with_the_key() {
        let err = engine_settings("iptrust", None, &engine_config("concurrency: 0\n")).unwrap_err();
        assert_eq!(err, "lookup.concurrency must be at least 1");
    }
}
