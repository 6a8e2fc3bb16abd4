//! Looking addresses up: the normalised record, the providers and the chain.
//!
//! A [`Chain`] asks its providers in configured order and merges their answers by
//! section: the ASN comes from the first provider that knows the ASN, the threat
//! assessment from the first that has one, and so on. So `[mmdb, ipinsights]` takes
//! the ASN from the local database and the threat score from the API. Local
//! providers (MMDB) answer synchronously and never leave the process.
//!
//! [`Chain::lookup_until`] takes the event's deadline: each remote provider is
//! waited for until then and no longer, answers already gotten are kept, and local
//! providers are still asked after a remote one timed out (they never wait). The
//! address is `timeout` only when nothing at all was found and a remote provider
//! ran out of time.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::time::Instant;

pub mod batcher;
pub mod breaker;
pub mod build;
pub mod cache;
pub mod engine;
pub mod prefix;
pub mod providers;
pub mod rate_limit;
pub mod record;
pub mod route;
pub mod table;
pub mod time;
pub mod window;

use engine::{Engine, Outcome};
use providers::mmdb::MmdbProvider;
use providers::{Answer, Provider};
use record::IntelRecord;

/// How the lookup of one address went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// At least one provider had data.
    Ok,
    /// Every provider answered, none had data.
    NoData,
    /// No provider could answer (errors); see the logs and metrics.
    Error,
    /// Not asked: the key's rate limit or budget is spent for now.
    RateLimited,
    /// Not asked: the provider's circuit breaker is open.
    CircuitOpen,
    /// The event's `max_enrichment_delay` passed before an answer came.
    Timeout,
    /// A provider refused its API key (401/403): fatal, no retry helps. Wins over
    /// answers from the rest of the chain, so that it cannot go unnoticed.
    Unauthorized,
}

impl Status {
    /// Every status, in declaration order (`ALL[s as usize] == s`).
    pub const ALL: [Status; 7] = [
        Status::Ok,
        Status::NoData,
        Status::Error,
        Status::RateLimited,
        Status::CircuitOpen,
        Status::Timeout,
        Status::Unauthorized,
    ];

    /// True for a status no retry can fix: the pipeline must stop (see
    /// [`Chain::key_rejected`] for which provider).
    pub fn is_fatal(self) -> bool {
        self == Status::Unauthorized
    }

    /// The word written into events.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NoData => "no_data",
            Status::Error => "error",
            Status::RateLimited => "rate_limited",
            Status::CircuitOpen => "circuit_open",
            Status::Timeout => "timeout",
            Status::Unauthorized => "unauthorized",
        }
    }
}

/// Providers that refused their API key: a fatal condition, the pipeline must stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("api key rejected by {} (401/403): fix the key or plan and restart", .providers.join(", "))]
pub struct KeyRejected {
    /// Names of the providers, in chain order.
    pub providers: Vec<String>,
}

/// The merged answer for one address.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub status: Status,
    pub record: IntelRecord,
    /// The providers whose answers make up `record`, in chain order (ECS
    /// `threat.enrichments.indicator.provider`); empty when nothing was found.
    pub sources: Vec<Arc<str>>,
}

/// One member of the chain.
#[derive(Clone)]
pub enum Member {
    /// In-process database, answered synchronously.
    Local(Arc<MmdbProvider>),
    /// A remote API behind its lookup engine (cache, batching, limits, breaker).
    Remote(Arc<Engine>),
}

/// Providers in order of precedence.
#[derive(Clone, Default)]
pub struct Chain {
    members: Vec<Member>,
    /// The members' names, shared so that a [`Resolved`] names its sources
    /// without allocating.
    names: Vec<Arc<str>>,
}

impl Chain {
    /// A chain of the given members, first has precedence.
    pub fn new(members: Vec<Member>) -> Self {
        let names = members
            .iter()
            .map(|m| match m {
                Member::Local(p) => Arc::from(Provider::name(p.as_ref())),
                Member::Remote(e) => Arc::from(e.name()),
            })
            .collect();
        Chain { members, names }
    }

    /// True when no provider is configured: addresses are classified only.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Names of the providers, in order.
    pub fn names(&self) -> Vec<String> {
        self.names.iter().map(|n| n.to_string()).collect()
    }

    /// The providers whose latest answer refused their API key, if any.
    pub fn key_rejected(&self) -> Option<KeyRejected> {
        let providers: Vec<String> = self
            .members
            .iter()
            .filter_map(|m| match m {
                Member::Remote(e) if e.key_rejected() => Some(e.name().to_string()),
                _ => None,
            })
            .collect();
        (!providers.is_empty()).then_some(KeyRejected { providers })
    }

    /// Looks one public address up through every provider, with no deadline (the
    /// engines answer in bounded time by their contract). A provider that cannot
    /// answer (rate limited, breaker open, failed) is skipped and the next one fills
    /// the same fields: the chain falls back instead of failing.
    pub async fn lookup(&self, ip: IpAddr) -> Resolved {
        self.resolve(ip, None).await
    }

    /// As [`Chain::lookup`], done by `deadline`: a remote provider still waiting
    /// then counts as [`Status::Timeout`] and the chain goes on with what it has.
    /// Local providers are asked after it all the same (they answer at once);
    /// remote ones after the deadline only from their cache. The provider's query
    /// goes on and fills its cache for the next event.
    pub async fn lookup_until(&self, ip: IpAddr, deadline: Instant) -> Resolved {
        self.resolve(ip, Some(deadline)).await
    }

    async fn resolve(&self, ip: IpAddr, deadline: Option<Instant>) -> Resolved {
        let mut merged = IntelRecord::default();
        let mut failure: Option<Status> = None;
        let mut rejected = false;
        let mut sources = Vec::new();
        for (member, name) in self.members.iter().zip(&self.names) {
            let answer = match member {
                Member::Local(p) => Ok(p.lookup_sync(ip)),
                Member::Remote(e) => match e.cached(ip) {
                    Some(a) => Ok(a),
                    None => match deadline {
                        None => from_outcome(e.lookup(ip).await),
                        // `timeout_at` polls its future once even past the deadline,
                        // which would queue a query nobody waits for: don't ask.
                        Some(d) if Instant::now() >= d => Err(Status::Timeout),
                        Some(d) => match tokio::time::timeout_at(d, e.lookup(ip)).await {
                            Ok(outcome) => from_outcome(outcome),
                            Err(_) => Err(Status::Timeout),
                        },
                    },
                },
            };
            match answer {
                Ok(Answer::Found(record)) => {
                    if merge_missing(&mut merged, record) {
                        sources.push(name.clone());
                    }
                }
                Ok(Answer::NoData) => {}
                Err(Status::Unauthorized) => rejected = true,
                Err(status) => {
                    failure.get_or_insert(status);
                }
            }
            if is_complete(&merged) {
                break;
            }
        }
        // `NoData` only when every provider answered: a provider that failed or
        // ran out of time might have known the address.
        let status = if rejected {
            Status::Unauthorized
        } else if merged.is_empty() {
            failure.unwrap_or(Status::NoData)
        } else {
            Status::Ok
        };
        Resolved {
            status,
            record: merged,
            sources,
        }
    }
}

fn from_outcome(outcome: Outcome) -> Result<Answer, Status> {
    match outcome {
        Outcome::Answer(a) => Ok(a),
        Outcome::RateLimited => Err(Status::RateLimited),
        Outcome::CircuitOpen => Err(Status::CircuitOpen),
        Outcome::Failed => Err(Status::Error),
        Outcome::KeyRejected => Err(Status::Unauthorized),
    }
}

/// Fills each section of `into` that is still empty from `from`; true when
/// `from` filled one.
fn merge_missing(into: &mut IntelRecord, from: IntelRecord) -> bool {
    let mut took = false;
    if into.asn.is_none() && from.asn.is_some() {
        into.asn = from.asn;
        took = true;
    }
    if into.geo.is_none() && from.geo.is_some() {
        into.geo = from.geo;
        took = true;
    }
    if into.threat.is_none() && from.threat.is_some() {
        into.threat = from.threat;
        took = true;
    }
    took
}

fn is_complete(r: &IntelRecord) -> bool {
    r.asn.is_some() && r.geo.is_some() && r.threat.is_some()
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::engine::EngineSettings;
    use super::providers::{ProviderError, ProviderFuture};
    use super::rate_limit::{RateLimiter, RateSettings};
    use super::record::{AsnInfo, ThreatInfo};
    use super::*;

    /// A provider that always fails, or always answers with the given sections.
    struct Fixed {
        name: &'static str,
        asn: Option<u32>,
        threat: Option<u8>,
        failing: bool,
    }

    impl Provider for Fixed {
        fn name(&self) -> &str {
            self.name
        }
        fn lookup<'a>(
            &'a self,
            ips: &'a [IpAddr],
        ) -> ProviderFuture<'a, Result<Vec<Answer>, ProviderError>> {
            Box::pin(async move {
                if self.failing {
                    return Err(ProviderError::Server {
                        status: 503,
                        message: "down".into(),
                    });
                }
                let record = IntelRecord {
                    asn: self.asn.map(|n| AsnInfo {
                        number: Some(n),
                        ..AsnInfo::default()
                    }),
                    threat: self.threat.map(|s| ThreatInfo {
                        score: Some(s),
                        ..ThreatInfo::default()
                    }),
                    ..IntelRecord::default()
                };
                Ok(ips.iter().map(|_| Answer::Found(record.clone())).collect())
            })
        }
    }

    fn engine(p: Fixed, registry: &prometheus::Registry) -> Member {
        let settings = EngineSettings {
            rate: RateSettings {
                requests_per_second: 1000.0,
                request_burst: NonZeroU32::new(1000).unwrap(),
                units_per_second: None,
                ..RateSettings::ipinsights()
            },
            breaker: breaker::BreakerSettings {
                failures: NonZeroU32::new(2).unwrap(),
                open_for: Duration::from_secs(60),
            },
            max_wait: Duration::from_millis(1),
            ..EngineSettings::default()
        };
        let limiter = Arc::new(RateLimiter::try_new(p.name, settings.rate.clone()).unwrap());
        Member::Remote(Engine::try_new(Arc::new(p), settings, limiter, registry).unwrap())
    }

    #[tokio::test]
    async fn sections_come_from_the_first_provider_that_has_them() {
        let r = prometheus::Registry::new();
        let chain = Chain::new(vec![
            engine(
                Fixed {
                    name: "asn_only",
                    asn: Some(1),
                    threat: None,
                    failing: false,
                },
                &r,
            ),
            engine(
                Fixed {
                    name: "both",
                    asn: Some(2),
                    threat: Some(70),
                    failing: false,
                },
                &r,
            ),
        ]);
        let got = chain.lookup("8.8.8.8".parse().unwrap()).await;
        assert_eq!(got.status, Status::Ok);
        assert_eq!(
            got.sources,
            [Arc::from("asn_only"), Arc::from("both")],
            "both contributed a section"
        );
        assert_eq!(
            got.record.asn.unwrap().number,
            Some(1),
            "the first provider wins the asn"
        );
        assert_eq!(
            got.record.threat.unwrap().score,
            Some(70),
            "the second fills the threat"
        );
    }

    #[tokio::test]
    async fn a_failing_or_open_provider_falls_back_to_the_next() {
        let r = prometheus::Registry::new();
        let chain = Chain::new(vec![
            engine(
                Fixed {
                    name: "down",
                    asn: None,
                    threat: None,
                    failing: true,
                },
                &r,
            ),
            engine(
                Fixed {
                    name: "up",
                    asn: Some(2),
                    threat: Some(10),
                    failing: false,
                },
                &r,
            ),
        ]);
        // Failures first, then the breaker opens: the answer comes from "up" every time.
        for i in 0..5u8 {
            let got = chain.lookup(IpAddr::from([8, 8, 4, i])).await;
            assert_eq!(got.status, Status::Ok, "lookup {i}");
            assert_eq!(got.record.asn.unwrap().number, Some(2));
        }
    }

    #[tokio::test]
    async fn with_no_provider_answering_the_failure_is_the_status() {
        let r = prometheus::Registry::new();
        let chain = Chain::new(vec![engine(
            Fixed {
                name: "down",
                asn: None,
                threat: None,
                failing: true,
            },
            &r,
        )]);
        assert_eq!(
            chain.lookup("1.1.1.1".parse().unwrap()).await.status,
            Status::Error
        );
        assert_eq!(
            chain.lookup("1.1.1.2".parse().unwrap()).await.status,
            Status::Error
        );
        assert_eq!(
            chain.lookup("1.1.1.3".parse().unwrap()).await.status,
            Status::CircuitOpen,
            "breaker open after 2"
        );
    }

    /// A remote provider that answers only a threat score, after `latency`.
    struct Slow {
        latency: Duration,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Provider for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        fn lookup<'a>(
            &'a self,
            ips: &'a [IpAddr],
        ) -> ProviderFuture<'a, Result<Vec<Answer>, ProviderError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(self.latency).await;
                let record = IntelRecord {
                    threat: Some(ThreatInfo {
                        score: Some(90),
                        ..ThreatInfo::default()
                    }),
                    ..IntelRecord::default()
                };
                Ok(ips.iter().map(|_| Answer::Found(record.clone())).collect())
            })
        }
    }

    /// The engine of a `Slow` provider taking `latency_s`, and the provider.
    fn slow(latency_s: u64, r: &prometheus::Registry) -> (Member, Arc<Slow>) {
        let p = Arc::new(Slow {
            latency: Duration::from_secs(latency_s),
            calls: 0.into(),
        });
        let settings = EngineSettings {
            rate: RateSettings {
                requests_per_second: 1000.0,
                request_burst: NonZeroU32::new(1000).unwrap(),
                units_per_second: None,
                ..RateSettings::ipinsights()
            },
            max_wait: Duration::from_millis(1),
            ..EngineSettings::default()
        };
        let limiter = settings.limiter("slow").unwrap();
        let engine = Engine::try_new(p.clone(), settings, limiter, r).unwrap();
        (Member::Remote(engine), p)
    }

    /// The demo ASN database (samples/demo-asn.mmdb).
    fn mmdb() -> Member {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo-asn.mmdb");
        Member::Local(Arc::new(MmdbProvider::open(&path).unwrap()))
    }

    /// In the demo database (AS60729).
    fn tor_exit() -> IpAddr {
        "185.220.101.1".parse().unwrap()
    }

    /// Regression (issue 8 item 7): the event's deadline wrapped the whole chain,
    /// so with `[mmdb, ipinsights]` and a slow ipinsights the address came out
    /// `timeout` without the ASN the MMDB had already given.
    #[tokio::test(start_paused = true)]
    async fn a_slow_remote_after_mmdb_keeps_the_mmdb_answer() {
        let r = prometheus::Registry::new();
        let (api, p) = slow(10, &r);
        let chain = Chain::new(vec![mmdb(), api]);
        let t0 = Instant::now();
        let got = chain
            .lookup_until(tor_exit(), t0 + Duration::from_secs(2))
            .await;
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(2),
            "waited until the deadline"
        );
        assert_eq!(got.status, Status::Ok);
        assert_eq!(got.record.asn.unwrap().number, Some(60729));
        assert_eq!(got.record.threat, None, "not there in time");
        // The query went on: the next event gets the threat from the cache.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let got = chain
            .lookup_until(tor_exit(), Instant::now() + Duration::from_secs(2))
            .await;
        assert_eq!(got.record.asn.unwrap().number, Some(60729));
        assert_eq!(got.record.threat.unwrap().score, Some(90));
        assert_eq!(p.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// Regression (issue 8 item 7): with `[ipinsights, mmdb]` and a slow
    /// ipinsights the MMDB fallback was never asked.
    #[tokio::test(start_paused = true)]
    async fn a_slow_remote_before_mmdb_still_gets_the_fallback() {
        let r = prometheus::Registry::new();
        let (api, p) = slow(10, &r);
        let chain = Chain::new(vec![api, mmdb()]);
        let deadline = Instant::now() + Duration::from_secs(2);
        let got = chain.lookup_until(tor_exit(), deadline).await;
        assert_eq!(got.status, Status::Ok);
        assert_eq!(got.record.asn.unwrap().number, Some(60729));
        // Nothing found anywhere: then the status is the timeout.
        let unknown: IpAddr = "45.1.2.3".parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let got = chain.lookup_until(unknown, deadline).await;
        assert_eq!(got.status, Status::Timeout, "the api might have known it");
        assert!(got.record.is_empty());
        assert_eq!(p.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// After the deadline, later remote providers are not asked (their answer
    /// could not be used), only their caches read; an answer in time is kept.
    #[tokio::test(start_paused = true)]
    async fn past_the_deadline_remotes_are_not_asked() {
        let r = prometheus::Registry::new();
        let (first, _) = slow(10, &r);
        let (second, p2) = slow(0, &prometheus::Registry::new());
        let chain = Chain::new(vec![first, second]);
        let got = chain
            .lookup_until(tor_exit(), Instant::now() + Duration::from_secs(2))
            .await;
        assert_eq!(got.status, Status::Timeout);
        assert_eq!(p2.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        // A fast provider within the deadline answers as without one.
        let (fast, _) = slow(1, &prometheus::Registry::new());
        let chain = Chain::new(vec![fast]);
        let got = chain
            .lookup_until(tor_exit(), Instant::now() + Duration::from_secs(2))
            .await;
        assert_eq!(got.status, Status::Ok);
    }

    /// A remote provider whose key is revoked: every call is a 401.
    struct Revoked;

    impl Provider for Revoked {
        fn name(&self) -> &str {
            "revoked"
        }
        fn lookup<'a>(
            &'a self,
            _ips: &'a [IpAddr],
        ) -> ProviderFuture<'a, Result<Vec<Answer>, ProviderError>> {
            Box::pin(async {
                Err(ProviderError::Unauthorized {
                    message: "key revoked".into(),
                })
            })
        }
    }

    /// Regression (issue 8 item 13b): a rejected key looked like any failure, and
    /// behind a fallback like none at all (`ok` from the MMDB): the status now says
    /// `unauthorized` whatever else answered, and the chain names the provider.
    #[tokio::test(start_paused = true)]
    async fn a_rejected_key_is_unauthorized_even_with_a_fallback() {
        let r = prometheus::Registry::new();
        let settings = EngineSettings {
            max_wait: Duration::from_millis(1),
            ..EngineSettings::default()
        };
        let limiter = settings.limiter("revoked").unwrap();
        let revoked = Engine::try_new(Arc::new(Revoked), settings, limiter, &r).unwrap();
        let chains = [
            Chain::new(vec![Member::Remote(revoked.clone()), mmdb()]),
            Chain::new(vec![mmdb(), Member::Remote(revoked.clone())]),
        ];
        assert_eq!(chains[0].key_rejected(), None, "not asked yet");
        for chain in chains {
            let got = chain.lookup(tor_exit()).await;
            assert_eq!(got.status, Status::Unauthorized);
            assert!(got.status.is_fatal());
            assert_eq!(got.record.asn.unwrap().number, Some(60729), "mmdb kept");
            assert_eq!(
                chain.key_rejected(),
                Some(KeyRejected {
                    providers: vec!["revoked".into()]
                })
            );
        }
        assert!(!Status::Error.is_fatal() && !Status::Timeout.is_fatal());
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }
}
