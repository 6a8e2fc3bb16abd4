//! Looking addresses up: the normalised record, the providers and the chain.
//!
//! A [`Chain`] asks its providers in configured order and merges their answers by
//! section: the ASN comes from the first provider that knows the ASN, the threat
//! assessment from the first that has one, and so on. So `[mmdb, ipinsights]` takes
//! the ASN from the local database and the threat score from the API. Local
//! providers (MMDB) answer synchronously and never leave the process.

use std::net::IpAddr;
use std::sync::Arc;

pub mod batcher;
pub mod breaker;
pub mod build;
pub mod cache;
pub mod engine;
pub mod providers;
pub mod rate_limit;
pub mod record;
pub mod time;

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
}

impl Status {
    /// Every status, in declaration order (`ALL[s as usize] == s`).
    pub const ALL: [Status; 6] = [
        Status::Ok,
        Status::NoData,
        Status::Error,
        Status::RateLimited,
        Status::CircuitOpen,
        Status::Timeout,
    ];

    /// The word written into events.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NoData => "no_data",
            Status::Error => "error",
            Status::RateLimited => "rate_limited",
            Status::CircuitOpen => "circuit_open",
            Status::Timeout => "timeout",
        }
    }
}

/// The merged answer for one address.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub status: Status,
    pub record: IntelRecord,
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
}

impl Chain {
    /// A chain of the given members, first has precedence.
    pub fn new(members: Vec<Member>) -> Self {
        Chain { members }
    }

    /// True when no provider is configured: addresses are classified only.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Names of the providers, in order.
    pub fn names(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| match m {
                Member::Local(p) => Provider::name(p.as_ref()).to_string(),
                Member::Remote(e) => e.name().to_string(),
            })
            .collect()
    }

    /// Looks one public address up through every provider. A provider that cannot
    /// answer (rate limited, breaker open, failed) is skipped and the next one fills
    /// the same fields: the chain falls back instead of failing.
    pub async fn lookup(&self, ip: IpAddr) -> Resolved {
        let mut merged = IntelRecord::default();
        let mut answered = false;
        let mut failure: Option<Status> = None;
        for member in &self.members {
            let answer = match member {
                Member::Local(p) => Ok(p.lookup_sync(ip)),
                Member::Remote(e) => match e.cached(ip) {
                    Some(a) => Ok(a),
                    None => match e.lookup(ip).await {
                        Outcome::Answer(a) => Ok(a),
                        Outcome::RateLimited => Err(Status::RateLimited),
                        Outcome::CircuitOpen => Err(Status::CircuitOpen),
                        Outcome::Failed => Err(Status::Error),
                    },
                },
            };
            match answer {
                Ok(Answer::Found(record)) => {
                    answered = true;
                    merge_missing(&mut merged, record);
                }
                Ok(Answer::NoData) => answered = true,
                Err(status) => {
                    failure.get_or_insert(status);
                }
            }
            if is_complete(&merged) {
                break;
            }
        }
        let status = if !merged.is_empty() {
            Status::Ok
        } else if answered {
            Status::NoData
        } else {
            failure.unwrap_or(Status::NoData)
        };
        Resolved {
            status,
            record: merged,
        }
    }
}

/// Fills each section of `into` that is still empty from `from`.
fn merge_missing(into: &mut IntelRecord, from: IntelRecord) {
    if into.asn.is_none() {
        into.asn = from.asn;
    }
    if into.geo.is_none() {
        into.geo = from.geo;
    }
    if into.threat.is_none() {
        into.threat = from.threat;
    }
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
}
