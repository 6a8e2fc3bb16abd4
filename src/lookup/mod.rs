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
