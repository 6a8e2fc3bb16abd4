//! Providers of IP intelligence behind one [`Provider`] trait.
//!
//! A provider answers for a slice of public addresses, in order. Single-IP APIs say
//! `max_batch() == 1`; bulk APIs say how many addresses one call may carry, and the
//! lookup engine batches misses across events up to that size. The offline MMDB
//! provider also offers a synchronous path, since it never leaves the process.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use super::record::IntelRecord;

pub mod mmdb;

/// A boxed future, so that providers can live behind `dyn Provider`.
pub type ProviderFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a provider says about one address.
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
}

/// Why a provider could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider failed in a way that a later retry may fix.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
}
