//! What the simulator saw, per provider: every arrival, every 429 with its
//! `Retry-After`, IPs per request, charges and reports. Times are milliseconds since the
//! simulator started (tokio clock), so a test can prove that no request arrived before a
//! `Retry-After` had elapsed: `arrival_ms >= sent_ms + retry_after_secs * 1000`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::Provider;

/// A snapshot of the accounting of every provider (`GET /_sim/accounting`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Accounting {
    /// ipinsights.io.
    pub ipinsights: ProviderAccounting,
    /// OpenIPApi.
    pub openipapi: ProviderAccounting,
    /// IPTrust.
    pub iptrust: ProviderAccounting,
    /// IPGeolocation.io.
    pub ipgeolocation: ProviderAccounting,
    /// Cloudflare Radar.
    pub cloudflare: ProviderAccounting,
}

impl Accounting {
    /// The accounting of one provider.
    pub fn provider(&self, p: Provider) -> &ProviderAccounting {
        match p {
            Provider::Ipinsights => &self.ipinsights,
            Provider::Openipapi => &self.openipapi,
            Provider::Iptrust => &self.iptrust,
            Provider::Ipgeolocation => &self.ipgeolocation,
            Provider::Cloudflare => &self.cloudflare,
        }
    }

    pub(crate) fn provider_mut(&mut self, p: Provider) -> &mut ProviderAccounting {
        match p {
            Provider::Ipinsights => &mut self.ipinsights,
            Provider::Openipapi => &mut self.openipapi,
            Provider::Iptrust => &mut self.iptrust,
            Provider::Ipgeolocation => &mut self.ipgeolocation,
            Provider::Cloudflare => &mut self.cloudflare,
        }
    }
}

/// The accounting of one provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderAccounting {
    /// Every request that reached the provider prefix, faulted or not.
    pub requests_total: u64,
    /// Requests by endpoint name (`lookup_ip`, `bulk_lookup`, `batch`, ...), counted once
    /// the handler recognised the endpoint (before auth).
    pub requests_by_endpoint: BTreeMap<String, u64>,
    /// Responses by HTTP status (injected faults included; resets are not responses).
    pub responses_by_status: BTreeMap<u16, u64>,
    /// Arrival time of every request, ms since start, in arrival order.
    pub arrivals_ms: Vec<u64>,
    /// Number of IPs in every authenticated, well-formed lookup request (1 for single
    /// lookups), in arrival order: the mean bulk size is their mean.
    pub ips_per_request: Vec<usize>,
    /// Public IPs charged to a quota (private ones in an ipinsights bulk are free).
    pub public_ips_charged: u64,
    /// Rate-limit units consumed (IPs, requests, reports: whatever the provider counts).
    pub units_charged: u64,
    /// IPGeolocation credits (`X-Credits-Charged`), 1 per 200 answer.
    pub credits: u64,
    /// Every 429 sent because of a rate limit or quota.
    pub rate_limited: Vec<RateLimitEvent>,
    /// Requests refused for a missing or wrong key.
    pub auth_failures: u64,
    /// Reports accepted by ipinsights `POST /api/v1/report`.
    pub reports: Vec<ReportRecord>,
    /// Faults injected.
    pub faults: FaultCounts,
}

impl ProviderAccounting {
    /// Mean IPs per lookup request, `None` before the first one.
    pub fn mean_ips_per_request(&self) -> Option<f64> {
        if self.ips_per_request.is_empty() {
            return None;
        }
        let sum: usize = self.ips_per_request.iter().sum();
        Some(sum as f64 / self.ips_per_request.len() as f64)
    }

    /// Number of 429 answers sent.
    pub fn rate_limited_count(&self) -> usize {
        self.rate_limited.len()
    }

    /// Requests counted for one endpoint.
    pub fn endpoint(&self, name: &str) -> u64 {
        self.requests_by_endpoint.get(name).copied().unwrap_or(0)
    }

    /// Arrivals that came earlier than the `Retry-After` of a 429 sent before them.
    /// Only meaningful with a single client key; a well-behaved client keeps it at 0.
    pub fn early_retries(&self) -> usize {
        self.arrivals_ms
            .iter()
            .filter(|&&arrival| {
                self.rate_limited
                    .iter()
                    .any(|e| e.sent_ms < arrival && arrival < e.sent_ms + e.retry_after_secs * 1000)
            })
            .count()
    }
}

/// One 429 answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitEvent {
    /// When it was sent, ms since start.
    pub sent_ms: u64,
    /// The `Retry-After` it carried, in seconds.
    pub retry_after_secs: u64,
    /// The endpoint it answered.
    pub endpoint: String,
}

/// One accepted report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRecord {
    /// Reported address.
    pub ip: String,
    /// Categories, in request order.
    pub categories: Vec<String>,
    /// Integration identifier, if given.
    pub source: Option<String>,
    /// Comment, if given.
    pub comment: Option<String>,
    /// Assigned report id.
    pub report_id: u64,
    /// When it arrived, ms since start.
    pub received_ms: u64,
}

/// Injected faults by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// Requests that got the configured latency.
    pub delayed: u64,
    /// Injected 5xx answers.
    pub server_errors: u64,
    /// Injected truncated bodies.
    pub malformed: u64,
    /// Connections reset instead of answered.
    pub resets: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_retries_counts_arrivals_inside_retry_after() {
        let mut a = ProviderAccounting {
            arrivals_ms: vec![0, 500, 1_500, 2_000, 2_001],
            ..Default::default()
        };
        a.rate_limited.push(RateLimitEvent {
            sent_ms: 1_000,
            retry_after_secs: 1,
            endpoint: "lookup_ip".into(),
        });
        assert_eq!(a.early_retries(), 1);
        a.ips_per_request = vec![100, 50];
        assert_eq!(a.mean_ips_per_request(), Some(75.0));
    }
}
