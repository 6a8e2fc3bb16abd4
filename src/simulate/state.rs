//! Shared simulator state: the live configuration, the dataset, per-key rate windows
//! and quotas, the ipinsights report memory and the accounting. One `std` mutex guards
//! the mutable part; it is never held across an `.await`.
//!
//! The simulated wall clock starts at 2026-02-20T12:00:00Z (the `queried_at` of the
//! ipinsights examples) and advances with the tokio clock, so answers do not depend on
//! the host's date.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::accounting::{Accounting, ProviderAccounting, RateLimitEvent};
use super::config::{Provider, SimConfig};
use super::data::Dataset;
use crate::lookup::window::{Admission, SlidingWindow};

/// Unix seconds of 2026-02-20T12:00:00Z.
const SIM_EPOCH: i64 = 1_771_588_800;

/// How a presented key fares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Accepted.
    Ok,
    /// No key presented.
    Missing,
    /// Unknown key.
    Invalid,
    /// Known but without access (IPTrust 403).
    Forbidden,
}

#[derive(Default)]
struct Mutable {
    accounting: Accounting,
    windows: HashMap<(Provider, String), SlidingWindow>,
    quota_used: HashMap<(Provider, String), u64>,
    reports_seen: HashMap<(String, IpAddr), Instant>,
    fault_seq: HashMap<Provider, u64>,
    next_report_id: u64,
    downloads: HashMap<String, SlidingWindow>,
}

/// The state every handler shares.
pub struct SimState {
    start: Instant,
    config: RwLock<Arc<SimConfig>>,
    data: RwLock<Arc<Dataset>>,
    inner: Mutex<Mutable>,
}

impl SimState {
    /// Fresh state with this (validated) configuration and dataset.
    pub fn new(config: SimConfig, data: Dataset) -> SimState {
        SimState {
            start: Instant::now(),
            config: RwLock::new(Arc::new(config)),
            data: RwLock::new(Arc::new(data)),
            inner: Mutex::new(Mutable::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Mutable> {
        // A panic while holding the lock leaves plain counters behind: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live configuration.
    pub fn config(&self) -> Arc<SimConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the configuration (and the dataset, when given).
    pub fn set_config(&self, config: SimConfig, data: Option<Dataset>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        if let Some(d) = data {
            *self.data.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(d);
        }
    }

    /// The dataset.
    pub fn data(&self) -> Arc<Dataset> {
        self.data.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Milliseconds since the simulator started.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The simulated wall clock as RFC 3339 (`2026-02-20T12:00:05Z`).
    pub fn iso_now(&self) -> String {
        rfc3339(SIM_EPOCH + self.start.elapsed().as_secs() as i64)
    }

    /// Days since 1970-01-01 on the simulated wall clock.
    pub fn sim_day(&self) -> i64 {
        (SIM_EPOCH + self.start.elapsed().as_secs() as i64).div_euclid(86_400)
    }

    /// Clears accounting, windows, quotas, report memory and fault counters.
    pub fn reset(&self) {
        *self.lock() = Mutable::default();
    }

    /// A snapshot of the accounting.
    pub fn accounting(&self) -> Accounting {
        self.lock().accounting.clone()
    }

    /// Applies `f` to the accounting of one provider.
    pub fn account<R>(&self, p: Provider, f: impl FnOnce(&mut ProviderAccounting) -> R) -> R {
        f(self.lock().accounting.provider_mut(p))
    }

    /// Records an arrival; returns its 1-based sequence number (for fault injection).
    pub fn arrive(&self, p: Provider) -> u64 {
        let now = self.now_ms();
        let mut m = self.lock();
        let a = m.accounting.provider_mut(p);
        a.requests_total += 1;
        a.arrivals_ms.push(now);
        let seq = m.fault_seq.entry(p).or_insert(0);
        *seq += 1;
        *seq
    }

    /// Counts a request for an endpoint.
    pub fn endpoint(&self, p: Provider, name: &str) {
        self.account(p, |a| {
            *a.requests_by_endpoint.entry(name.to_string()).or_insert(0) += 1
        });
    }

    /// Checks a presented key against the live configuration.
    pub fn auth(&self, p: Provider, key: Option<&str>) -> Auth {
        let cfg = self.config();
        let pc = cfg.provider(p);
        let result = match key.map(str::trim).filter(|k| !k.is_empty()) {
            None => Auth::Missing,
            Some(k) if pc.keys(p).iter().any(|a| a == k) => Auth::Ok,
            Some(k) if pc.forbidden_keys.iter().any(|a| a == k) => Auth::Forbidden,
            Some(_) => Auth::Invalid,
        };
        if result != Auth::Ok {
            self.account(p, |a| a.auth_failures += 1);
        }
        result
    }

    /// Takes `cost` rate-limit units for `key`. `Ok(remaining)` or `Err(retry_after_secs)`;
    /// a refusal is recorded as a 429 event of `endpoint`.
    pub fn take(&self, p: Provider, key: &str, endpoint: &str, cost: u64) -> Result<u64, u64> {
        let rate = self.config().provider(p).rate(p);
        let now = Instant::now();
        let sent_ms = self.now_ms();
        let mut m = self.lock();
        let window = m.windows.entry((p, key.to_string())).or_default();
        match window.try_take(now, cost, rate.requests, rate.window()) {
            Admission::Admitted { remaining } => {
                m.accounting.provider_mut(p).units_charged += cost;
                Ok(remaining)
            }
            Admission::Refused {
                retry_after_secs, ..
            } => {
                m.accounting
                    .provider_mut(p)
                    .rate_limited
                    .push(RateLimitEvent {
                        sent_ms,
                        retry_after_secs,
                        endpoint: endpoint.to_string(),
                    });
                Err(retry_after_secs)
            }
        }
    }

    /// `(limit, remaining)` of `key`'s window without taking anything.
    pub fn window_status(&self, p: Provider, key: &str) -> (u64, u64) {
        let rate = self.config().provider(p).rate(p);
        let mut m = self.lock();
        let remaining = match m.windows.get_mut(&(p, key.to_string())) {
            Some(w) => w.remaining(Instant::now(), rate.requests, rate.window()),
            None => rate.requests,
        };
        (rate.requests, remaining)
    }

    /// Counts `n` lookups against the configured quota; `false` (and a recorded 429
    /// event without retry) when it is used up.
    /// Lookups charged to `key`'s quota so far.
    pub fn quota_used(&self, p: Provider, key: &str) -> u64 {
        self.lock()
            .quota_used
            .get(&(p, key.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn quota_take(&self, p: Provider, key: &str, endpoint: &str, n: u64) -> bool {
        let Some(quota) = self.config().provider(p).quota else {
            return true;
        };
        let sent_ms = self.now_ms();
        let mut m = self.lock();
        let used = m.quota_used.entry((p, key.to_string())).or_insert(0);
        if *used + n > quota {
            m.accounting
                .provider_mut(p)
                .rate_limited
                .push(RateLimitEvent {
                    sent_ms,
                    retry_after_secs: 0,
                    endpoint: endpoint.to_string(),
                });
            return false;
        }
        *used += n;
        true
    }

    /// Records the IPs of a lookup request and the public ones charged.
    pub fn lookup_ips(&self, p: Provider, ips: usize, public_charged: u64) {
        self.account(p, |a| {
            a.ips_per_request.push(ips);
            a.public_ips_charged += public_charged;
        });
    }

    /// ipinsights: `true` when `key` reported `ip` less than 15 minutes ago.
    pub fn report_is_duplicate(&self, key: &str, ip: IpAddr) -> bool {
        let m = self.lock();
        m.reports_seen
            .get(&(key.to_string(), ip))
            .is_some_and(|at| at.elapsed() < Duration::from_secs(15 * 60))
    }

    /// ipinsights: remembers a report and returns its id (18429, 18430, ...; the first
    /// is the id of the documented example).
    pub fn remember_report(&self, key: &str, ip: IpAddr) -> u64 {
        let mut m = self.lock();
        m.reports_seen.insert((key.to_string(), ip), Instant::now());
        let id = 18_429 + m.next_report_id;
        m.next_report_id += 1;
        id
    }

    /// OpenIPApi: 10 MMDB downloads per source per day; `Err(retry_after_secs)` beyond.
    pub fn take_download(&self, source: &str) -> Result<(), u64> {
        let mut m = self.lock();
        let w = m.downloads.entry(source.to_string()).or_default();
        match w.try_take(Instant::now(), 1, 10, Duration::from_secs(86_400)) {
            Admission::Admitted { .. } => Ok(()),
            Admission::Refused {
                retry_after_secs, ..
            } => Err(retry_after_secs),
        }
    }
}

/// Formats unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Howard Hinnant's `civil_from_days`.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Howard Hinnant's `days_from_civil`.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_epoch_is_the_documented_timestamp() {
        assert_eq!(rfc3339(SIM_EPOCH), "2026-02-20T12:00:00Z");
        assert_eq!(days_from_civil(2026, 2, 20), SIM_EPOCH.div_euclid(86_400));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[tokio::test(start_paused = true)]
    async fn report_memory_expires_after_15_minutes() {
        let s = SimState::new(SimConfig::default(), Dataset::builtin());
        let ip: IpAddr = "8.8.8.8".parse().unwrap();
        assert!(!s.report_is_duplicate("k", ip));
        assert_eq!(s.remember_report("k", ip), 18_429);
        tokio::time::advance(Duration::from_secs(14 * 60 + 59)).await;
        assert!(s.report_is_duplicate("k", ip));
        assert!(!s.report_is_duplicate("other", ip));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!s.report_is_duplicate("k", ip));
        assert_eq!(s.iso_now(), "2026-02-20T12:15:00Z");
    }

    #[tokio::test(start_paused = true)]
    async fn take_records_429_with_retry_after() {
        let yaml = "iptrust: {rate_limit: {requests: 2, window_ms: 10000}}";
        let s = SimState::new(SimConfig::from_yaml_str(yaml).unwrap(), Dataset::builtin());
        assert_eq!(s.take(Provider::Iptrust, "k", "ip", 1), Ok(1));
        assert_eq!(s.take(Provider::Iptrust, "k", "ip", 1), Ok(0));
        tokio::time::advance(Duration::from_millis(2500)).await;
        assert_eq!(s.take(Provider::Iptrust, "k", "ip", 1), Err(8));
        let acc = s.accounting();
        assert_eq!(acc.iptrust.rate_limited[0].sent_ms, 2500);
        assert_eq!(acc.iptrust.rate_limited[0].retry_after_secs, 8);
        assert_eq!(acc.iptrust.units_charged, 2);
    }
}
