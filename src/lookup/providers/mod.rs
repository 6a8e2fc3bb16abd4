//! Providers of IP intelligence behind one [`Provider`] trait.
//!
//! A provider answers for a slice of public addresses, in order. Single-IP APIs say
//! `max_batch() == 1`; bulk APIs say how many addresses one call may carry, and the
//! lookup engine batches misses across events up to that size. The offline MMDB
//! provider also offers a synchronous path, since it never leaves the process.
//!
//! The HTTP clients map every documented status and error body of their provider
//! to one [`ProviderError`] variant, and never put an API key or a request URL into
//! an error or a log line (see [`http`]).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use super::record::IntelRecord;

pub mod cloudflare_radar;
pub mod examples;
pub mod http;
pub mod ipgeolocation;
pub mod ipinsights;
pub mod iptrust;
pub mod mmdb;
pub mod openipapi;

/// A boxed future, so that providers can live behind `dyn Provider`.
pub type ProviderFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a provider says about one address.
// `Found` is the common case; boxing it would add an allocation per answer to
// save bytes only on `NoData`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The provider knows the address.
    Found(IntelRecord),
    /// The provider has nothing on it (unknown, bogon, not announced).
    NoData,
}

/// A source of IP intelligence.
pub trait Provider: Send + Sync {
    /// Stable lowercase name used in config, metrics and logs.
    fn name(&self) -> &str;
    /// The most addresses one call may carry; 1 for single-IP APIs.
    fn max_batch(&self) -> usize {
        1
    }
    /// Looks up `ips` (at most `max_batch()` of them) and answers in the same order.
    fn lookup<'a>(
        &'a self,
        ips: &'a [IpAddr],
    ) -> ProviderFuture<'a, Result<Vec<Answer>, ProviderError>>;
    /// Rate-limit headers of the latest response, for the engine's pauses.
    fn last_rate_info(&self) -> Option<http::RateInfo> {
        None
    }
    /// True when an answer depends only on the network that announces the address
    /// and names it in `asn.route` (an ASN-only answer): the engine then answers the
    /// other addresses of that prefix without a call ([`crate::lookup::prefix`]).
    fn per_network(&self) -> bool {
        false
    }
}

/// `Provider::lookup` for single-address APIs: no call for no address, one call for
/// one, and `BatchTooLarge` for more (the engine never sends more to them).
pub fn one_at_a_time<'a, F, Fut>(
    ips: &'a [IpAddr],
    lookup_ip: F,
) -> ProviderFuture<'a, Result<Vec<Answer>, ProviderError>>
where
    F: FnOnce(IpAddr) -> Fut + Send + 'a,
    Fut: Future<Output = Result<Answer, ProviderError>> + Send + 'a,
{
    Box::pin(async move {
        match ips {
            [] => Ok(Vec::new()),
            [ip] => Ok(vec![lookup_ip(*ip).await?]),
            _ => Err(ProviderError::BatchTooLarge {
                len: ips.len(),
                max: 1,
            }),
        }
    })
}

/// `Provider` for the client of a single-address API (a type with an `http` client,
/// a `lookup_ip` method and a `NAME` constant in its module): rate information
/// from its HTTP client, and [`one_at_a_time`] over `lookup_ip`; `per_network` says
/// whether [`Provider::per_network`] holds.
macro_rules! single_address_provider {
    ($client:ty) => {
        $crate::lookup::providers::single_address_provider!($client, per_network: false);
    };
    ($client:ty, per_network: $per_network:expr) => {
        impl $crate::lookup::providers::Provider for $client {
            fn per_network(&self) -> bool {
                $per_network
            }

            fn last_rate_info(&self) -> Option<$crate::lookup::providers::http::RateInfo> {
                self.http.last_rate_info()
            }

            fn name(&self) -> &str {
                NAME
            }

            fn lookup<'a>(
                &'a self,
                ips: &'a [std::net::IpAddr],
            ) -> $crate::lookup::providers::ProviderFuture<
                'a,
                Result<
                    Vec<$crate::lookup::providers::Answer>,
                    $crate::lookup::providers::ProviderError,
                >,
            > {
                $crate::lookup::providers::one_at_a_time(ips, move |ip| self.lookup_ip(ip))
            }
        }
    };
}
pub(crate) use single_address_provider;

/// Why a provider could not answer.
///
/// Messages taken from a provider's error body are cut to a few hundred characters
/// and have the API key masked, so every variant is safe to log.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider failed in a way that a later retry may fix.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The client settings are unusable (bad base URL, TLS setup failed).
    #[error("invalid provider settings: {reason}")]
    Config { reason: String },
    /// More addresses than `max_batch()` were passed; nothing was sent.
    #[error("batch of {len} addresses exceeds the provider maximum of {max}")]
    BatchTooLarge { len: usize, max: usize },
    /// 401: the key is missing, invalid, revoked, or its subscription is not active.
    #[error("api key rejected: {message}")]
    Unauthorized { message: String },
    /// 403: the key may not use this resource.
    #[error("access forbidden: {message}")]
    Forbidden { message: String },
    /// 403 with a plan code: the feature needs a higher plan.
    #[error("feature needs a higher plan: {message}")]
    PlanRequired { message: String },
    /// 429: too many requests in a short window; retry after the pause if given.
    #[error("rate limited (retry after {})", wait(retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// The quota of the billing period is used up; retrying soon will not help.
    #[error("quota exhausted: {message}")]
    QuotaExceeded {
        message: String,
        retry_after: Option<Duration>,
    },
    /// 400: the provider (or the client, before sending) refused the input.
    #[error("invalid input: {message}")]
    InvalidInput { message: String },
    /// 404 on a resource that is not an IP lookup (an unknown ASN, a snapshot).
    #[error("not found: {message}")]
    NotFound { message: String },
    /// ipinsights report: the same IP was reported from this key within 15 minutes.
    #[error("duplicate report: {message}")]
    Duplicate { message: String },
    /// 422: the provider understood the request but will not process it
    /// (ipinsights: private or reserved address).
    #[error("unprocessable request: {message}")]
    Unprocessable { message: String },
    /// A 2xx answer whose envelope says the call failed (Cloudflare `success: false`).
    #[error("provider reported failure: {message}")]
    Rejected { message: String },
    /// 5xx: the provider failed; a later retry may work.
    #[error("provider server error (status {status}): {message}")]
    Server { status: u16, message: String },
    /// A status the provider's documentation does not list for this endpoint.
    #[error("unexpected status {status}: {message}")]
    UnexpectedStatus { status: u16, message: String },
    /// Connect, read or overall timeout (also 499: the provider saw us give up).
    #[error("request timed out")]
    Timeout,
    /// The TCP/TLS connection could not be set up.
    #[error("connection failed")]
    Connect {
        #[source]
        source: reqwest::Error,
    },
    /// Another transport failure (reset mid-body, protocol error). URL stripped.
    #[error("http transport failed")]
    Transport {
        #[source]
        source: reqwest::Error,
    },
    /// The body did not have the documented shape.
    #[error("undecodable response body: {reason}")]
    Decode { reason: String },
    /// The body ran past the client's cap (`http::MAX_BODY_BYTES`); the rest was
    /// not read. A provider streaming without end is broken, not busy.
    #[error("response body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
}

/// `Some(30s)` -> `30s`, `None` -> `an unknown pause`, for messages.
fn wait(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!("{}s", d.as_secs_f64()),
        None => "an unknown pause".to_owned(),
    }
}

impl ProviderError {
    /// True when the same call may succeed later without any change on our side.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_)
                | Self::RateLimited { .. }
                | Self::Server { .. }
                | Self::Timeout
                | Self::Connect { .. }
                | Self::Transport { .. }
        )
    }

    /// True when the provider refused the key itself (401, 403, a plan that lacks
    /// the feature): no retry helps until someone fixes the key or the plan, so
    /// this is fatal for a pipeline that would otherwise wait for an answer.
    /// A 401/403 that a client maps to no dedicated variant counts too.
    pub fn is_key_rejected(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized { .. }
                | Self::Forbidden { .. }
                | Self::PlanRequired { .. }
                | Self::UnexpectedStatus {
                    status: 401 | 403,
                    ..
                }
        )
    }

    /// The pause the provider asked for, if any (`Retry-After`).
    ///
    /// ```
    /// # use ipenrich::lookup::providers::ProviderError;
    /// # use std::time::Duration;
    /// let e = ProviderError::RateLimited { retry_after: Some(Duration::from_secs(30)) };
    /// assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
    /// assert_eq!(e.to_string(), "rate limited (retry after 30s)");
    /// assert!(e.is_retryable());
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::QuotaExceeded { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}
