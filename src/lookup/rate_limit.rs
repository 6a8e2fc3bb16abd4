//! Token buckets and header-driven pauses for one provider key.
//!
//! Contract: a request is only sent when [`RateLimiter`] covers it: room in the
//! provider's documented window (a [`SlidingWindow`] of requests or units, counted
//! the way the provider counts, so no window ever holds more than its limit, and the
//! whole window may be spent at once by a one-shot run), one token from the request
//! bucket, `units` tokens from the unit bucket (where the provider counts units:
//! ipinsights charges each public IP of a bulk call, and a report costs one unit),
//! and room in every configured hourly/daily/monthly budget.
//!
//! The provider counts a request when it arrives, which we never see; what we
//! know is that it arrived before its answer came back. So an admitted request
//! holds its room as [`Admitted`] while in flight and takes its place in the
//! window only when it is dropped after the answer: our window then never ends
//! before the provider's does.
//!
//! The provider's headers clamp the window: `X-RateLimit-Limit` minus
//! `X-RateLimit-Remaining` is what the provider has counted, and what it counted beyond
//! our own log (other processes, other tools on the same key). When only that
//! outside usage keeps the window full, one request goes out every
//! `probe_every` to learn whether the provider has room again, instead of pausing
//! blindly for a whole window. A `Retry-After` pauses the whole key until it has
//! passed. The buckets are GCRA from the `governor` crate, driven by a
//! `tokio::time` clock so tests run on paused time.
//!
//! One limiter stands for one provider *key*, and it is meant to be shared: the
//! lookup engine and the attacker reporter hold the same `Arc<RateLimiter>`, so a
//! report draws from the same buckets, budgets and pauses as the lookups.

use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::Quota;
use tokio::time::Instant;

use super::providers::http::RateInfo;
use super::time::{after, from_now, provider_pause};
use super::window::SlidingWindow;

/// Why a limiter cannot be built, or a request can never pass.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RateLimitError {
    /// A rate is zero, negative or not a number.
    #[error("{field} must be a positive number, got {value}")]
    BadRate { field: &'static str, value: f64 },
    /// A budget has a zero period or limit.
    #[error("budget {index}: period and limit must be > 0")]
    BadBudget { index: usize },
    /// A bucket would take longer than [`MAX_REFILL`] to refill its burst: far
    /// slower than any provider's limit, and beyond what the bucket's nanosecond
    /// arithmetic can hold.
    #[error("{field} of {rate}/s takes longer than {max_days} days to refill a burst of {burst}")]
    TooSlow {
        field: &'static str,
        rate: f64,
        burst: u32,
        max_days: u64,
    },
    /// More tokens asked at once than the bucket can ever hold.
    #[error("{asked} {what} exceed the burst of {burst}")]
    ExceedsBurst {
        what: &'static str,
        asked: u32,
        burst: u32,
    },
    /// A budget is used up until its period rolls over.
    #[error("unit budget is used up for another {wait:?}")]
    BudgetExhausted { wait: Duration },
}

/// Why a request is not admitted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The provider asked for a pause (`Retry-After`, `X-RateLimit-Remaining: 0`).
    Paused,
    /// The request or unit bucket is empty.
    Bucket,
    /// An hourly/daily/monthly budget is used up.
    Budget,
    /// The provider's window is full (our requests, or what its headers said).
    Window,
    /// More than the burst asked at once: never admitted.
    TooLarge,
}

/// A refusal: why, and how long until the same request could pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub reason: DenyReason,
    pub wait: Duration,
}

/// A fixed-window budget of units (IPs looked up, reports sent), aligned with the
/// provider's calendar: windows start at `anchor` plus whole periods (or, for
/// calendar months, on the anchor's day and time of every month), so every replica
/// (and every restart) agrees on the window and the replicas' reported spending
/// adds up in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Window length.
    pub period: Period,
    /// Units allowed per window.
    pub limit: u64,
    /// Milliseconds since the Unix epoch at which some window starts (the
    /// provider's reset time); 0 gives whole UTC hours and days, and months
    /// starting on the 1st at 00:00 UTC.
    pub anchor_ms: u64,
}

/// How long a budget's window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A fixed length (1 h, 24 h, 30 days).
    Every(Duration),
    /// A calendar month (UTC): from the anchor's day and time of one month to the
    /// same day and time of the next, the day clamped to the month's length
    /// (an anchor on the 31st resets on Feb 28 or 29), as billing periods run.
    Month,
}

impl Period {
    /// True for a fixed length of zero.
    pub fn is_zero(&self) -> bool {
        matches!(self, Period::Every(d) if d.is_zero())
    }
}

impl Budget {
    /// The window holding `wall_ms`: its start and end (ms since the epoch).
    fn window(&self, wall_ms: u64) -> (u64, u64) {
        match self.period {
            Period::Every(period) => {
                let period = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
                let start = if wall_ms >= self.anchor_ms {
                    wall_ms - (wall_ms - self.anchor_ms) % period
                } else {
                    let back = (self.anchor_ms - wall_ms).div_ceil(period);
                    self.anchor_ms.saturating_sub(back.saturating_mul(period))
                };
                (start, start.saturating_add(period))
            }
            Period::Month => month_window(self.anchor_ms, wall_ms),
        }
    }

    /// Start of the window holding `wall_ms`.
    fn window_start(&self, wall_ms: u64) -> u64 {
        self.window(wall_ms).0
    }
}

/// The calendar month (UTC) holding `wall_ms` whose windows start on the day and
/// time of `anchor_ms`. Times beyond what the calendar library represents
/// (year 9999) saturate to a window that never ends.
fn month_window(anchor_ms: u64, wall_ms: u64) -> (u64, u64) {
    use time::{Date, Month, OffsetDateTime};
    let at = |ms: u64| {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    let anchor = at(anchor_ms);
    let start_of = |year: i32, month: Month| -> Option<u64> {
        let day = anchor.day().min(time::util::days_in_month(month, year));
        let t = Date::from_calendar_date(year, month, day)
            .ok()?
            .with_time(anchor.time())
            .assume_utc();
        u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
    };
    let previous = |(y, m): (i32, Month)| {
        if m == Month::January {
            (y - 1, Month::December)
        } else {
            (y, m.previous())
        }
    };
    let next = |(y, m): (i32, Month)| {
        if m == Month::December {
            (y + 1, Month::January)
        } else {
            (y, m.next())
        }
    };
    let wall = at(wall_ms);
    let here = (wall.year(), wall.month());
    let month = match start_of(here.0, here.1) {
        Some(start) if start <= wall_ms => here,
        _ => previous(here),
    };
    let start = start_of(month.0, month.1).unwrap_or(0);
    let (y, m) = next(month);
    (start, start_of(y, m).unwrap_or(u64::MAX))
}

/// What a provider's window counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counts {
    /// Requests, whatever they carry (OpenIPApi: "Requests / minute").
    Requests,
    /// Units: each public IP of a bulk call, each report (ipinsights).
    Units,
}

/// The provider's documented limit per window (`RateSettings::window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimit {
    /// Requests or units allowed in any window.
    pub limit: u64,
    /// What is counted.
    pub counts: Counts,
}

/// Settings of one provider key.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSettings {
    /// Sustained requests per second (fractions allowed: 600/h is 0.1667).
    pub requests_per_second: f64,
    /// Requests that may go out back to back.
    pub request_burst: NonZeroU32,
    /// Sustained units per second, where the provider counts units (IPs); `None`
    /// when it counts requests only.
    pub units_per_second: Option<f64>,
    /// Units that may be spent back to back; must cover the largest batch.
    pub unit_burst: NonZeroU32,
    /// Budgets of units per period.
    pub budgets: Vec<Budget>,
    /// The provider's documented limit per `window`, kept as a sliding window;
    /// `None` where the provider documents none.
    pub window_limit: Option<WindowLimit>,
    /// The provider's rate window (ipinsights: 1 h, OpenIPApi: 1 min).
    pub window: Duration,
    /// While only usage the provider reported (and we did not send) fills the
    /// window, one request goes out this often to see whether it has room again.
    pub probe_every: Duration,
    /// Pause after a 429 that carries no `Retry-After`.
    pub default_pause: Duration,
}

impl RateSettings {
    /// ipinsights.io: "600 requests per hour per key" counted per public IP
    /// (ipinsights-api.txt "Rate Limits"): a sliding hour of 600 units, which a
    /// one-shot run may spend at once. The buckets refill at the same average rate
    /// and hold a whole window, so they never refuse what the window allows.
    pub fn ipinsights() -> Self {
        Self::windowed(600, Counts::Units, Duration::from_secs(3600))
    }

    /// `limit` requests or units per sliding `window`, all of it usable at once.
    pub fn windowed(limit: u64, counts: Counts, window: Duration) -> Self {
        let burst =
            NonZeroU32::new(u32::try_from(limit).unwrap_or(u32::MAX).max(1)).expect("at least one");
        let per_second = burst.get() as f64 / window.as_secs_f64().max(1e-3);
        RateSettings {
            requests_per_second: per_second,
            request_burst: burst,
            units_per_second: (counts == Counts::Units).then_some(per_second),
            unit_burst: burst,
            budgets: Vec::new(),
            window_limit: Some(WindowLimit { limit, counts }),
            window,
            probe_every: Duration::from_secs(120),
            default_pause: Duration::from_secs(60),
        }
    }

    /// Every problem at once, joined.
    pub fn validate(&self) -> Result<(), Vec<RateLimitError>> {
        let mut problems = Vec::new();
        let mut check = |field: &'static str, rate: f64, burst: NonZeroU32| {
            if !(rate.is_finite() && rate > 0.0) {
                problems.push(RateLimitError::BadRate { field, value: rate });
            } else if f64::from(burst.get()) / rate > MAX_REFILL.as_secs_f64() {
                problems.push(RateLimitError::TooSlow {
                    field,
                    rate,
                    burst: burst.get(),
                    max_days: MAX_REFILL.as_secs() / 86_400,
                });
            }
        };
        check(
            "requests_per_second",
            self.requests_per_second,
            self.request_burst,
        );
        if let Some(u) = self.units_per_second {
            check("units_per_second", u, self.unit_burst);
        }
        for (index, b) in self.budgets.iter().enumerate() {
            if b.period.is_zero() || b.limit == 0 {
                problems.push(RateLimitError::BadBudget { index });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// How often a request waits again while requests in flight hold the whole window.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(50);

/// Longest time a bucket may take to refill its whole burst. `governor` keeps the
/// bucket in `u64` nanoseconds (584 years) and multiplies the period by the burst
/// unchecked, so a config like `units_per_second: 1e-12` must be refused up front.
pub const MAX_REFILL: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// `governor` clock on `tokio::time`, so paused-time tests drive the buckets.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

type Bucket = governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// A bucket of validated settings (the rate is positive and refills the burst
/// within [`MAX_REFILL`]; the clamps only keep this total on any input).
fn bucket(per_second: f64, burst: NonZeroU32, clock: &TokioClock) -> Bucket {
    let period = Duration::try_from_secs_f64(1.0 / per_second)
        .unwrap_or(MAX_REFILL)
        .clamp(Duration::from_nanos(1), MAX_REFILL);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    governor::RateLimiter::direct_with_clock(quota, clock.clone())
}

#[derive(Debug, Default)]
struct Mutable {
    paused_until: Option<Instant>,
    /// What was answered during the provider's window (requests or units).
    sent: SlidingWindow,
    /// Admitted and not answered yet, by [`Admitted`] id.
    in_flight: std::collections::HashMap<u64, u64>,
    in_flight_units: u64,
    next_id: u64,
    /// Usage the provider counted beyond `sent`, and when it said so; it leaves
    /// the window one window after that.
    outside: Option<(Instant, u64)>,
    /// This replica's share of the window, `(owned, of)` partitions of the
    /// deployment's addresses (1 of 1 alone).
    share: (u64, u64),
    /// When the latest probe went out (see [`RateSettings::probe_every`]).
    probed_at: Option<Instant>,
    /// Per budget: (window start in wall ms, units this replica used in it).
    budgets: Vec<(u64, u64)>,
    /// What the other replicas of this key (and this replica's earlier lives)
    /// spent, as they reported it through the intel table, by replica id.
    peers: std::collections::HashMap<u64, Usage>,
    /// Bumped on every admission: the usage to report has changed.
    version: u64,
    /// The provider's own count of the billing period (OpenIPApi
    /// `/v1/account/usage`): units left when read, units admitted since, and when
    /// the period resets (wall ms).
    provider_quota: Option<(u64, u64, u64)>,
}

/// What one replica spent on a key, as it reports it to the others.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// In the provider's window: (wall-clock ms, units), oldest first.
    pub entries: Vec<(u64, u64)>,
    /// Per budget, in configured order: (window start in wall ms, units used).
    #[serde(default)]
    pub budgets: Vec<(u64, u64)>,
}

/// Milliseconds since the Unix epoch, now.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Window room held by one admitted request until it is dropped, after the
/// provider's answer (or its failure) came back; see the module contract.
#[derive(Debug)]
pub struct Admitted<'a> {
    limiter: &'a RateLimiter,
    id: Option<u64>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let mut s = self.limiter.lock();
            if let Some(cost) = s.in_flight.remove(&id) {
                s.in_flight_units = s.in_flight_units.saturating_sub(cost);
                s.sent.record(Instant::now(), cost);
                s.version = s.version.wrapping_add(1);
            }
        }
    }
}

/// The buckets, budgets and pause of one provider key.
pub struct RateLimiter {
    /// Wall-clock ms when the limiter was built; budgets read the wall clock as
    /// this plus the `tokio::time` elapsed since, so paused-time tests drive them.
    wall_at_start: u64,
    name: String,
    settings: RateSettings,
    clock: TokioClock,
    requests: Bucket,
    units: Option<Bucket>,
    state: Mutex<Mutable>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter for provider `name` (used in logs) with validated settings.
    pub fn try_new(name: &str, settings: RateSettings) -> Result<Self, Vec<RateLimitError>> {
        settings.validate()?;
        let clock = TokioClock {
            start: Instant::now(),
        };
        Ok(RateLimiter {
            wall_at_start: wall_ms(),
            name: name.to_owned(),
            requests: bucket(settings.requests_per_second, settings.request_burst, &clock),
            units: settings
                .units_per_second
                .map(|u| bucket(u, settings.unit_burst, &clock)),
            state: Mutex::new(Mutable {
                budgets: vec![(0, 0); settings.budgets.len()],
                share: (1, 1),
                ..Mutable::default()
            }),
            settings,
            clock,
        })
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &RateSettings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How much longer the key is paused by the provider, if at all.
    pub fn paused_for(&self) -> Option<Duration> {
        let until = self.lock().paused_until?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Pauses the key for `d` from now (a `Retry-After`); never shortens a pause.
    /// `d` comes from a provider's header: it is clamped to
    /// [`MAX_PROVIDER_PAUSE`](super::time::MAX_PROVIDER_PAUSE).
    pub fn pause_for(&self, d: Duration) {
        let d = provider_pause(d);
        let until = from_now(d);
        let mut s = self.lock();
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
            tracing::debug!(provider = %self.name, pause_ms = d.as_millis() as u64, "provider paused");
        }
    }

    /// Applies the rate headers of a response: `Retry-After` pauses for its value;
    /// `X-RateLimit-Limit` and `X-RateLimit-Remaining` clamp the window (see the
    /// module contract). Without a documented window, `Remaining: 0` pauses the key
    /// until the next probe.
    pub fn observe(&self, info: &RateInfo) {
        if let Some(wait) = info.retry_after {
            self.pause_for(wait);
        }
        let Some(window) = self.settings.window_limit else {
            if info.remaining == Some(0) {
                self.pause_for(self.settings.probe_every);
            }
            return;
        };
        let now = Instant::now();
        let mut s = self.lock();
        if let Some(remaining) = info.remaining {
            // What the provider has counted in its window, by its own limit. Its
            // window length is not in the headers, so the limit is not adopted:
            // a 4 s window announced as "250" must not become 250 an hour.
            let counted = info.limit.unwrap_or(window.limit).saturating_sub(remaining);
            let ours = s.sent.used(now, self.settings.window) + s.in_flight_units;
            let outside = counted.saturating_sub(ours);
            s.outside = (outside > 0).then_some((now, outside));
        }
    }

    /// Room for `cost` in the provider's window now, or how long until there is.
    /// `Ok(true)` when the request goes as a probe.
    fn window_room(&self, s: &mut Mutable, now: Instant, cost: u64) -> Result<bool, Denied> {
        let Some(w) = self.settings.window_limit else {
            return Ok(false);
        };
        let window = self.settings.window;
        if cost > w.limit {
            return Err(Denied {
                reason: DenyReason::TooLarge,
                wait: Duration::MAX,
            });
        }
        let (owned, of) = s.share;
        let mine = u64::try_from(u128::from(w.limit) * u128::from(owned) / u128::from(of.max(1)))
            .unwrap_or(u64::MAX);
        if s.outside.is_some_and(|(at, _)| now >= after(at, window)) {
            s.outside = None;
        }
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let since = wall_ms().saturating_sub(window_ms);
        let mut peers = 0u64;
        let mut peer_leaves: Option<u64> = None;
        for usage in s.peers.values_mut() {
            usage.entries.retain(|&(at, _)| at > since);
            for &(at, units) in usage.entries.iter() {
                peers = peers.saturating_add(units);
                peer_leaves = Some(peer_leaves.map_or(at, |l| l.min(at)));
            }
        }
        let outside = s.outside.map_or(0, |(_, n)| n);
        let flying = s.in_flight_units;
        let ours = s.sent.used(now, window).saturating_add(flying);
        if ours.saturating_add(cost) > mine {
            // Our own requests fill our share: wait until enough of them leave it
            // (requests in flight leave no sooner than a window after their answer;
            // a share too small for the request waits for a rebalance).
            let wait = if flying.saturating_add(cost) > mine {
                IN_FLIGHT_POLL
            } else {
                s.sent
                    .wait_for(now, cost + flying, mine, window)
                    .unwrap_or(IN_FLIGHT_POLL)
            };
            return Err(Denied {
                reason: DenyReason::Window,
                wait,
            });
        }
        if ours.saturating_add(outside.max(peers)).saturating_add(cost) <= w.limit {
            return Ok(false);
        }
        if ours.saturating_add(peers).saturating_add(cost) > w.limit {
            // The other replicas' reported usage fills the window: it is exact, not
            // a stale header, so wait for it to leave instead of probing.
            let oldest = peer_leaves.unwrap_or(since);
            let wait = Duration::from_millis(oldest.saturating_sub(since)).max(IN_FLIGHT_POLL);
            return Err(Denied {
                reason: DenyReason::Window,
                wait,
            });
        }
        // Only what the provider reported keeps the window full: probe now and then.
        match s.probed_at.map(|p| after(p, self.settings.probe_every)) {
            Some(next) if now < next => {
                let leaves = s.outside.map_or(next, |(at, _)| after(at, window));
                Err(Denied {
                    reason: DenyReason::Window,
                    wait: next.min(leaves).saturating_duration_since(now),
                })
            }
            _ => Ok(true),
        }
    }

    /// From now on this replica may spend `owned / of` of the provider's window:
    /// the replicas own the deployment's addresses by partition, and each spends
    /// the share of the quota that goes with its share of the work, so together
    /// they stay within the window.
    pub fn set_share(&self, owned: u64, of: u64) {
        let mut s = self.lock();
        let share = (owned.min(of), of.max(1));
        if s.share != share {
            tracing::info!(provider = %self.name, owned, of, "quota share");
            s.share = share;
        }
    }

    /// What this replica spent in the current window, to report to the others:
    /// wall-clock milliseconds and units, requests in flight counted as of now;
    /// with a version that changes whenever it does.
    pub fn usage(&self) -> (u64, Usage) {
        let now = Instant::now();
        let wall = wall_ms();
        let mut s = self.lock();
        let window = self.settings.window;
        let ms_ago = |at: Instant| {
            u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX)
        };
        let _ = s.sent.used(now, window);
        let mut entries: Vec<(u64, u64)> = s
            .sent
            .entries()
            .map(|(at, units)| (wall.saturating_sub(ms_ago(at)), units))
            .collect();
        if s.in_flight_units > 0 {
            entries.push((wall, s.in_flight_units));
        }
        let usage = Usage {
            entries,
            budgets: s.budgets.clone(),
        };
        (s.version, usage)
    }

    /// The provider says `remaining` units are left in its billing period, which
    /// resets at `reset_at_ms` (wall ms): from now on no more than that goes out
    /// until then (what the other replicas spend is in the provider's count at
    /// their next sync). Replaces the previous reading.
    pub fn provider_quota(&self, remaining: u64, reset_at_ms: u64) {
        let mut s = self.lock();
        s.provider_quota = Some((remaining, 0, reset_at_ms));
        tracing::info!(provider = %self.name, remaining, "provider quota synced");
    }

    /// What replica `replica` reported it spent (see [`RateLimiter::usage`]);
    /// replaces its earlier report.
    pub fn peer_usage(&self, replica: u64, usage: Usage) {
        self.lock().peers.insert(replica, usage);
    }

    /// What this replica may still spend now: in the provider's window (its share
    /// less its own and the others' spending) and in the tightest budget (for the
    /// deployment); `None` where there is no window or budget.
    pub fn remaining(&self) -> (Option<u64>, Option<u64>) {
        let now = Instant::now();
        let wall = self.wall_now();
        let mut s = self.lock();
        let window = self.settings.window_limit.map(|w| {
            let (owned, of) = s.share;
            let mine =
                u64::try_from(u128::from(w.limit) * u128::from(owned) / u128::from(of.max(1)))
                    .unwrap_or(u64::MAX);
            let ours = s
                .sent
                .used(now, self.settings.window)
                .saturating_add(s.in_flight_units);
            let window_ms = u64::try_from(self.settings.window.as_millis()).unwrap_or(u64::MAX);
            let since = wall_ms().saturating_sub(window_ms);
            let peers: u64 = s
                .peers
                .values()
                .flat_map(|u| u.entries.iter())
                .filter(|(at, _)| *at > since)
                .map(|(_, n)| n)
                .sum();
            let outside = s.outside.map_or(0, |(_, n)| n);
            mine.saturating_sub(ours).min(
                w.limit
                    .saturating_sub(ours.saturating_add(outside.max(peers))),
            )
        });
        let budget = self
            .settings
            .budgets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let start = b.window_start(wall);
                let own = if s.budgets[i].0 == start {
                    s.budgets[i].1
                } else {
                    0
                };
                let peers: u64 = s
                    .peers
                    .values()
                    .filter_map(|u| u.budgets.get(i))
                    .filter(|(st, _)| *st == start)
                    .map(|(_, n)| n)
                    .sum();
                b.limit.saturating_sub(own.saturating_add(peers))
            })
            .min();
        (window, budget)
    }

    /// The wall clock as the budgets read it (ms since the epoch).
    pub fn wall_now(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.clock.start);
        self.wall_at_start
            .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }

    /// A 429 arrived: pause for its `Retry-After`, or the default pause without one.
    pub fn rate_limited(&self, retry_after: Option<Duration>) {
        self.pause_for(retry_after.unwrap_or(self.settings.default_pause));
    }

    /// Takes `requests` and `units` if everything covers them now, else says why not
    /// and how long to wait. Tokens of one bucket may be spent when the other then
    /// refuses: that errs on the side of sending less, never more.
    pub fn try_acquire(&self, requests: u32, units: u32) -> Result<Admitted<'_>, Denied> {
        let now = Instant::now();
        let mut s = self.lock();
        if let Some(until) = s.paused_until {
            if until > now {
                return Err(Denied {
                    reason: DenyReason::Paused,
                    wait: until - now,
                });
            }
            s.paused_until = None;
        }
        let cost = match self.settings.window_limit.map(|w| w.counts) {
            Some(Counts::Units) => u64::from(units),
            _ => u64::from(requests),
        };
        let probe = self.window_room(&mut s, now, cost)?;
        let wall = self.wall_now();
        if let Some((left, since, reset_at)) = s.provider_quota {
            if wall >= reset_at {
                s.provider_quota = None;
            } else if since.saturating_add(u64::from(units))
                > u64::try_from(
                    u128::from(left) * u128::from(s.share.0) / u128::from(s.share.1.max(1)),
                )
                .unwrap_or(u64::MAX)
            {
                return Err(Denied {
                    reason: DenyReason::Budget,
                    wait: Duration::from_millis(reset_at - wall),
                });
            }
        }
        for (i, b) in self.settings.budgets.iter().enumerate() {
            let start = b.window_start(wall);
            if s.budgets[i].0 != start {
                s.budgets[i] = (start, 0);
            }
            let peers: u64 = s
                .peers
                .values()
                .filter_map(|u| u.budgets.get(i))
                .filter(|(their_start, _)| *their_start == start)
                .map(|(_, used)| used)
                .sum();
            let used = s.budgets[i].1.saturating_add(peers);
            if used.saturating_add(u64::from(units)) > b.limit {
                let end = b.window(wall).1;
                let wait = Duration::from_millis(end.saturating_sub(wall));
                let reason = if u64::from(units) > b.limit {
                    DenyReason::TooLarge
                } else {
                    DenyReason::Budget
                };
                return Err(Denied { reason, wait });
            }
        }
        if let (Some(bucket), Some(n)) = (&self.units, NonZeroU32::new(units)) {
            self.take(bucket, n, self.settings.unit_burst)?;
        }
        if let Some(n) = NonZeroU32::new(requests) {
            self.take(&self.requests, n, self.settings.request_burst)?;
        }
        for (_, used) in s.budgets.iter_mut() {
            *used = used.saturating_add(u64::from(units));
        }
        if let Some((_, since, _)) = &mut s.provider_quota {
            *since = since.saturating_add(u64::from(units));
        }
        s.version = s.version.wrapping_add(1);
        if probe {
            s.probed_at = Some(now);
            tracing::debug!(provider = %self.name, "probing whether the provider's window has room");
        }
        let mut admitted = Admitted {
            limiter: self,
            id: None,
        };
        if self.settings.window_limit.is_some() && cost > 0 {
            let id = s.next_id;
            s.next_id = s.next_id.wrapping_add(1);
            s.in_flight.insert(id, cost);
            s.in_flight_units = s.in_flight_units.saturating_add(cost);
            admitted.id = Some(id);
        }
        Ok(admitted)
    }

    fn take(&self, bucket: &Bucket, n: NonZeroU32, burst: NonZeroU32) -> Result<(), Denied> {
        // `governor` multiplies its period by `n` before comparing with the burst,
        // unchecked: refuse what can never pass before it can overflow.
        if n > burst {
            return Err(Denied {
                reason: DenyReason::TooLarge,
                wait: Duration::MAX,
            });
        }
        match bucket.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Denied {
                reason: DenyReason::Bucket,
                wait: not_until.wait_time_from(self.clock.now()),
            }),
            Err(_) => Err(Denied {
                reason: DenyReason::TooLarge,
                wait: Duration::MAX,
            }),
        }
    }

    /// Waits until the buckets and budgets cover the request, but never longer than
    /// `max_wait`: a wait that would exceed it is refused at once.
    pub async fn acquire_within(
        &self,
        requests: u32,
        units: u32,
        max_wait: Duration,
    ) -> Result<Admitted<'_>, Denied> {
        let deadline = from_now(max_wait);
        loop {
            match self.try_acquire(requests, units) {
                Ok(admitted) => return Ok(admitted),
                Err(d) if d.reason == DenyReason::TooLarge => return Err(d),
                Err(d) => {
                    let now = Instant::now();
                    let wake = now.checked_add(d.wait).filter(|w| *w <= deadline);
                    match wake {
                        Some(at) => tokio::time::sleep_until(at.max(now)).await,
                        None => return Err(d),
                    }
                }
            }
        }
    }

    /// Waits until the buckets cover the request, sitting out provider pauses too
    /// (the reporter's path: a report may wait, a lookup may not). Fails only when
    /// the request can never pass or a budget is used up for the period. The
    /// request takes its place in the window at once (see [`Admitted`]).
    pub async fn acquire(&self, requests: u32, units: u32) -> Result<(), RateLimitError> {
        loop {
            match self.try_acquire(requests, units) {
                Ok(_answered_now) => return Ok(()),
                Err(d) => match d.reason {
                    DenyReason::Paused | DenyReason::Bucket | DenyReason::Window => {
                        tokio::time::sleep(d.wait.max(Duration::from_millis(1))).await
                    }
                    DenyReason::Budget => {
                        return Err(RateLimitError::BudgetExhausted { wait: d.wait })
                    }
                    DenyReason::TooLarge => {
                        let (what, burst) =
                            if self.units.is_some() && units > self.settings.unit_burst.get() {
                                ("units", self.settings.unit_burst.get())
                            } else {
                                ("requests", self.settings.request_burst.get())
                            };
                        return Err(RateLimitError::ExceedsBurst {
                            what,
                            asked: if what == "units" { units } else { requests },
                            burst,
                        });
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings(rps: f64, burst: u32) -> RateSettings {
        RateSettings {
            requests_per_second: rps,
            request_burst: NonZeroU32::new(burst).unwrap(),
            units_per_second: None,
            unit_burst: NonZeroU32::new(1).unwrap(),
            budgets: Vec::new(),
            window_limit: None,
            window: Duration::from_secs(3600),
            probe_every: Duration::from_secs(120),
            default_pause: Duration::from_secs(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_refills_at_the_rate() {
        let l = RateLimiter::try_new("t", settings(2.0, 4)).unwrap();
        for _ in 0..4 {
            l.try_acquire(1, 0).unwrap();
        }
        let d = l.try_acquire(1, 0).unwrap_err();
        assert_eq!(d.reason, DenyReason::Bucket);
        assert_eq!(d.wait, Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(l.try_acquire(1, 0).is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        l.try_acquire(1, 0).unwrap();
        // Waiting acquire returns exactly when the next token is there.
        let t0 = Instant::now();
        l.acquire(1, 0).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn units_are_counted_separately() {
        let mut s = settings(100.0, 100);
        s.units_per_second = Some(10.0);
        s.unit_burst = NonZeroU32::new(100).unwrap();
        let l = RateLimiter::try_new("t", s).unwrap();
        l.try_acquire(1, 100).unwrap();
        let d = l.try_acquire(1, 50).unwrap_err();
        assert_eq!(
            (d.reason, d.wait),
            (DenyReason::Bucket, Duration::from_secs(5))
        );
        assert_eq!(
            l.try_acquire(1, 101).unwrap_err().reason,
            DenyReason::TooLarge
        );
        assert!(matches!(
            l.acquire(1, 101).await,
            Err(RateLimitError::ExceedsBurst { what: "units", .. })
        ));
        // acquire_within refuses at once when the wait is too long, waits otherwise.
        let t0 = Instant::now();
        assert!(l
            .acquire_within(1, 50, Duration::from_secs(4))
            .await
            .is_err());
        assert_eq!(t0.elapsed(), Duration::ZERO);
        l.acquire_within(1, 50, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_until_it_passed() {
        let l = RateLimiter::try_new("t", settings(100.0, 10)).unwrap();
        l.rate_limited(Some(Duration::from_secs(30)));
        let d = l.try_acquire(1, 1).unwrap_err();
        assert_eq!(
            (d.reason, d.wait),
            (DenyReason::Paused, Duration::from_secs(30))
        );
        assert_eq!(l.paused_for(), Some(Duration::from_secs(30)));
        // A shorter pause never shortens a longer one.
        l.pause_for(Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(l.try_acquire(1, 1).is_err());
        let t0 = Instant::now();
        l.acquire(1, 1).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        assert_eq!(l.paused_for(), None);
        // Without Retry-After: the default pause.
        l.rate_limited(None);
        assert_eq!(l.paused_for(), Some(Duration::from_secs(60)));
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// Regression (issue 10): the burst came on top of the rate, so 700 of 600
    /// went out in an hour, and a one-shot run could spend only a sixth of it.
    #[tokio::test(start_paused = true)]
    async fn a_whole_window_may_go_at_once_and_never_more() {
        let l = RateLimiter::try_new("t", RateSettings::ipinsights()).unwrap();
        for _ in 0..6 {
            l.try_acquire(1, 100).unwrap();
        }
        let d = l.try_acquire(1, 1).unwrap_err();
        assert_eq!((d.reason, d.wait), (DenyReason::Window, HOUR));
        tokio::time::advance(HOUR / 2).await;
        assert_eq!(l.try_acquire(1, 1).unwrap_err().reason, DenyReason::Window);
        tokio::time::advance(HOUR / 2).await;
        l.try_acquire(1, 100).unwrap();
        assert_eq!(
            l.try_acquire(1, 601).unwrap_err().reason,
            DenyReason::TooLarge
        );
    }

    /// Regression (issue 10): `Remaining: 0` paused the key for up to an hour more
    /// than the provider required; now the headers clamp the window and a probe
    /// goes out every `probe_every` while only the provider's count fills it.
    #[tokio::test(start_paused = true)]
    async fn headers_clamp_the_window_and_a_spent_window_is_probed() {
        let l = RateLimiter::try_new("t", RateSettings::ipinsights()).unwrap();
        l.try_acquire(1, 100).unwrap();
        let info = |limit, remaining| RateInfo {
            limit: Some(limit),
            remaining: Some(remaining),
            retry_after: None,
        };
        // Someone else spent 500 on this key: the provider says nothing is left.
        l.observe(&info(600, 0));
        l.try_acquire(1, 1).unwrap(); // the probe
        let d = l.try_acquire(1, 1).unwrap_err();
        assert_eq!(
            (d.reason, d.wait),
            (DenyReason::Window, Duration::from_secs(120))
        );
        tokio::time::advance(Duration::from_secs(120)).await;
        l.try_acquire(1, 1).unwrap(); // the next probe
                                      // The provider's window moved on: 400 left, so 400 more go and no more.
        l.observe(&info(600, 400));
        for _ in 0..4 {
            l.try_acquire(1, 100).unwrap();
        }
        assert_eq!(l.try_acquire(1, 1).unwrap_err().reason, DenyReason::Window);
        // What the provider counted beyond our own log leaves after a window.
        tokio::time::advance(HOUR).await;
        l.try_acquire(1, 600).unwrap();
        // The provider's count is by its own announced limit: 300 - 100 = 200
        // counted, none of it ours, so 400 of our 600 are left.
        tokio::time::advance(HOUR).await;
        l.observe(&info(300, 100));
        l.try_acquire(1, 400).unwrap();
        l.try_acquire(1, 1).unwrap(); // full by the provider's word: one probe
        assert_eq!(l.try_acquire(1, 1).unwrap_err().reason, DenyReason::Window);
    }

    /// A request holds its room while in flight and takes its place in the window
    /// when answered: the provider counted it on arrival, which we never see.
    #[tokio::test(start_paused = true)]
    async fn in_flight_requests_leave_the_window_a_window_after_their_answer() {
        let minute = Duration::from_secs(60);
        let l =
            RateLimiter::try_new("t", RateSettings::windowed(10, Counts::Units, minute)).unwrap();
        let slow = l.try_acquire(1, 10).unwrap();
        tokio::time::advance(2 * minute).await;
        assert_eq!(l.try_acquire(1, 1).unwrap_err().reason, DenyReason::Window);
        drop(slow);
        tokio::time::advance(minute - Duration::from_secs(1)).await;
        assert_eq!(l.try_acquire(1, 1).unwrap_err().reason, DenyReason::Window);
        tokio::time::advance(Duration::from_secs(1)).await;
        l.try_acquire(1, 10).unwrap();
    }

    /// Replicas spend the share of the window that goes with their share of the
    /// addresses; a share too small waits (for a rebalance), it is not refused.
    #[tokio::test(start_paused = true)]
    async fn a_replica_spends_its_share_of_the_window() {
        let l = RateLimiter::try_new("t", RateSettings::ipinsights()).unwrap();
        l.set_share(2, 6);
        assert_eq!(l.remaining(), (Some(200), None));
        l.try_acquire(1, 100).unwrap();
        l.try_acquire(1, 100).unwrap();
        assert_eq!(l.try_acquire(1, 1).unwrap_err().reason, DenyReason::Window);
        assert_eq!(l.remaining(), (Some(0), None));
        // What the others spent (the provider's count) is theirs, not ours.
        l.observe(&RateInfo {
            limit: Some(600),
            remaining: Some(200),
            retry_after: None,
        });
        l.set_share(3, 6);
        l.try_acquire(1, 100).unwrap();
        assert_eq!(l.try_acquire(1, 1).unwrap_err().reason, DenyReason::Window);
        l.set_share(0, 6);
        let d = l.try_acquire(1, 1).unwrap_err();
        assert_eq!(
            d.reason,
            DenyReason::Window,
            "waits for a share, not refused"
        );
        assert_eq!(
            l.try_acquire(1, 601).unwrap_err().reason,
            DenyReason::TooLarge
        );
    }

    /// What the other replicas of the key reported they spent counts against the
    /// window (exactly: no probing past it); reports older than a window do not.
    #[tokio::test(start_paused = true)]
    async fn other_replicas_reported_usage_counts_against_the_window() {
        let l = RateLimiter::try_new("t", RateSettings::ipinsights()).unwrap();
        let (v0, none) = l.usage();
        assert!(none.entries.is_empty());
        let report = |at: u64| Usage {
            entries: vec![(at, 500)],
            budgets: vec![],
        };
        l.peer_usage(7, report(wall_ms()));
        l.try_acquire(1, 100).unwrap();
        let d = l.try_acquire(1, 1).unwrap_err();
        assert_eq!(d.reason, DenyReason::Window);
        assert!(d.wait >= IN_FLIGHT_POLL);
        l.peer_usage(7, report(wall_ms() - 3_600_001));
        l.try_acquire(1, 500).unwrap();
        let (v1, usage) = l.usage();
        assert_ne!(v0, v1, "admissions change the version to report");
        assert_eq!(usage.entries.iter().map(|e| e.1).sum::<u64>(), 600);
        assert!(usage
            .entries
            .iter()
            .all(|e| e.0 <= wall_ms() && e.0 + 1_000 > wall_ms()));
    }

    /// Without a documented window, `Remaining: 0` pauses until the next probe.
    #[tokio::test(start_paused = true)]
    async fn remaining_zero_without_a_window_pauses_until_the_probe() {
        let l = RateLimiter::try_new("t", settings(100.0, 10)).unwrap();
        l.observe(&RateInfo {
            limit: Some(600),
            remaining: Some(0),
            retry_after: None,
        });
        assert_eq!(l.paused_for(), Some(Duration::from_secs(120)));
        tokio::time::advance(Duration::from_secs(120)).await;
        l.try_acquire(1, 1).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn budgets_refuse_until_the_period_rolls() {
        let mut s = settings(1000.0, 1000);
        let anchor = wall_ms();
        s.budgets = vec![Budget {
            period: Period::Every(Duration::from_secs(3600)),
            limit: 10,
            anchor_ms: anchor,
        }];
        let l = RateLimiter::try_new("t", s).unwrap();
        l.try_acquire(1, 6).unwrap();
        tokio::time::advance(Duration::from_secs(100)).await;
        l.try_acquire(1, 4).unwrap();
        let d = l.try_acquire(1, 1).unwrap_err();
        assert_eq!(d.reason, DenyReason::Budget);
        // The window ends an hour after the anchor, whenever the limiter started.
        let left = Duration::from_millis(anchor + 3_600_000 - l.wall_now());
        assert_eq!(d.wait, left);
        assert!(matches!(
            l.acquire(1, 1).await,
            Err(RateLimitError::BudgetExhausted { .. })
        ));
        tokio::time::advance(left).await;
        l.try_acquire(1, 10).unwrap();
    }

    /// Calendar months: from the reset day and time of one month to the same of
    /// the next, clamped to short months, before and after the anchor.
    #[test]
    fn month_budgets_follow_the_calendar() {
        fn ms(text: &str) -> u64 {
            let t = humantime_serde::re::humantime::parse_rfc3339(text).unwrap();
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
        }
        let month = |anchor: &str, wall: &str| {
            let b = Budget {
                period: Period::Month,
                limit: 1,
                anchor_ms: if anchor.is_empty() { 0 } else { ms(anchor) },
            };
            b.window(ms(wall))
        };
        let mid = "2026-01-15T09:00:00Z";
        assert_eq!(
            month(mid, "2026-02-20T00:00:00Z"),
            (ms("2026-02-15T09:00:00Z"), ms("2026-03-15T09:00:00Z"))
        );
        assert_eq!(
            month(mid, "2026-02-15T08:59:59.999Z"),
            (ms("2026-01-15T09:00:00Z"), ms("2026-02-15T09:00:00Z"))
        );
        assert_eq!(
            month(mid, "2026-02-15T09:00:00Z").0,
            ms("2026-02-15T09:00:00Z"),
            "a window starts at its reset time"
        );
        // Before the anchor, across a year.
        assert_eq!(
            month(mid, "2025-12-31T23:00:00Z"),
            (ms("2025-12-15T09:00:00Z"), ms("2026-01-15T09:00:00Z"))
        );
        // The 31st resets on the last day of short months (and Feb 29 in leap years).
        let end = "2026-01-31T00:00:00Z";
        assert_eq!(
            month(end, "2026-02-27T12:00:00Z"),
            (ms("2026-01-31T00:00:00Z"), ms("2026-02-28T00:00:00Z"))
        );
        assert_eq!(
            month(end, "2026-03-01T00:00:00Z"),
            (ms("2026-02-28T00:00:00Z"), ms("2026-03-31T00:00:00Z"))
        );
        assert_eq!(
            month(end, "2028-02-29T01:00:00Z").0,
            ms("2028-02-29T00:00:00Z")
        );
        // No anchor: the 1st at midnight UTC; 30days would drift from it.
        assert_eq!(
            month("", "2026-12-01T02:00:00Z"),
            (ms("2026-12-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"))
        );
        let days30 = Budget {
            period: Period::Every(Duration::from_secs(30 * 86_400)),
            limit: 1,
            anchor_ms: 0,
        };
        assert_ne!(
            days30.window_start(ms("2026-12-01T02:00:00Z")),
            ms("2026-12-01T00:00:00Z")
        );
        // Out of the calendar's range: a window, not a panic.
        let (start, end) = month("", "2026-01-01T00:00:00Z");
        assert!(start < end);
        let far = Budget {
            period: Period::Month,
            limit: 1,
            anchor_ms: u64::MAX,
        };
        let _ = far.window(u64::MAX);
        let _ = far.window(0);
    }

    /// A spent month budget waits for the month's end, not for 30 days.
    #[tokio::test(start_paused = true)]
    async fn a_spent_month_budget_waits_for_the_next_reset() {
        let mut s = settings(1000.0, 1000);
        s.budgets = vec![Budget {
            period: Period::Month,
            limit: 2,
            anchor_ms: 0,
        }];
        let l = RateLimiter::try_new("t", s).unwrap();
        l.try_acquire(1, 2).unwrap();
        let denied = l.try_acquire(1, 1).unwrap_err();
        assert_eq!(denied.reason, DenyReason::Budget);
        let wall = l.wall_now();
        let (_, end) = Budget {
            period: Period::Month,
            limit: 2,
            anchor_ms: 0,
        }
        .window(wall);
        assert_eq!(denied.wait, Duration::from_millis(end - wall));
    }

    /// Regression (issue 10): budgets restarted at zero on every restart, were per
    /// replica, and did not follow the provider's hour, day or month.
    #[tokio::test(start_paused = true)]
    async fn budgets_follow_the_providers_calendar_and_count_every_replica() {
        let hour = Budget {
            period: Period::Every(Duration::from_secs(3600)),
            limit: 10,
            anchor_ms: 0,
        };
        assert_eq!(
            hour.window_start(7_200_000 + 59_999),
            7_200_000,
            "whole UTC hours"
        );
        let billing = Budget {
            anchor_ms: 7_201_000,
            ..hour
        };
        assert_eq!(
            billing.window_start(7_200_999),
            3_601_000,
            "before the anchor"
        );
        assert_eq!(billing.window_start(7_201_000), 7_201_000);
        assert_eq!(billing.window_start(10_800_999), 7_201_000);
        let mut s = settings(1000.0, 1000);
        s.budgets = vec![hour];
        let l = RateLimiter::try_new("t", s).unwrap();
        let start = hour.window_start(l.wall_now());
        // This replica's previous life spent 6 in this window, another one 3 in the
        // window before: only 4 are left here.
        l.peer_usage(
            1,
            Usage {
                entries: vec![],
                budgets: vec![(start, 6)],
            },
        );
        l.peer_usage(
            2,
            Usage {
                entries: vec![],
                budgets: vec![(start - 3_600_000, 3)],
            },
        );
        l.try_acquire(1, 4).unwrap();
        assert_eq!(l.try_acquire(1, 1).unwrap_err().reason, DenyReason::Budget);
        assert_eq!(l.usage().1.budgets, vec![(start, 4)], "what it reports");
        assert_eq!(l.remaining().1, Some(0));
    }

    #[test]
    fn bad_settings_are_all_reported() {
        let mut s = settings(0.0, 1);
        s.units_per_second = Some(f64::NAN);
        s.budgets = vec![Budget {
            period: Period::Every(Duration::ZERO),
            limit: 1,
            anchor_ms: 0,
        }];
        assert_eq!(RateLimiter::try_new("t", s).unwrap_err().len(), 3);
    }

    /// Regression (issue 8 item 6): a rate so small that its period overflowed
    /// `Duration::from_secs_f64`, or the bucket's `u64` nanoseconds, panicked in
    /// `try_new`; it is a config error now.
    #[test]
    fn absurdly_slow_rates_are_config_errors() {
        for rate in [1e-300, 1e-12, f64::MIN_POSITIVE] {
            let mut s = settings(rate, 1);
            s.units_per_second = Some(rate);
            let errors = RateLimiter::try_new("t", s).unwrap_err();
            assert_eq!(errors.len(), 2, "{rate}: {errors:?}");
            assert!(matches!(errors[0], RateLimitError::TooSlow { .. }));
        }
        // One report a month with a burst of one is slow but fine.
        assert!(RateLimiter::try_new("t", settings(1.0 / (31.0 * 86_400.0), 1)).is_ok());
    }

    /// Regression (issue 8 item 6): asking a slow bucket for more tokens than its
    /// burst overflowed `governor`'s unchecked `period * n` (a panic).
    #[tokio::test(start_paused = true)]
    async fn more_than_the_burst_is_refused_without_overflow() {
        let mut s = RateSettings::ipinsights();
        s.budgets = vec![Budget {
            period: Period::Every(Duration::from_secs(3600)),
            limit: u64::MAX,
            anchor_ms: 0,
        }];
        let l = RateLimiter::try_new("t", s).unwrap();
        let denied = l.try_acquire(1, u32::MAX).unwrap_err();
        assert_eq!(denied.reason, DenyReason::TooLarge);
        assert!(matches!(
            l.acquire(1, u32::MAX).await,
            Err(RateLimitError::ExceedsBurst { .. })
        ));
        l.try_acquire(1, 100).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// In every sliding window, at most the documented limit is admitted,
        /// whatever the headers said in between.
        #[test]
        fn no_window_ever_holds_more_than_the_limit(
            limit in 1u64..50,
            steps in proptest::collection::vec((0u64..30, 1u32..6, proptest::option::of(0u64..60)), 1..200),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let window = Duration::from_secs(60);
            let admitted: Vec<(Duration, u64)> = rt.block_on(async {
                let mut s = RateSettings::windowed(limit, Counts::Units, window);
                s.probe_every = Duration::from_secs(7);
                let l = RateLimiter::try_new("p", s).unwrap();
                let t0 = Instant::now();
                let mut admitted = Vec::new();
                for (advance_s, n, remaining) in steps {
                    tokio::time::advance(Duration::from_secs(advance_s)).await;
                    if let Some(r) = remaining {
                        l.observe(&RateInfo { limit: None, remaining: Some(r), retry_after: None });
                    }
                    if l.try_acquire(1, n).is_ok() {
                        admitted.push((t0.elapsed(), u64::from(n)));
                    }
                }
                admitted
            });
            for (i, &(start, _)) in admitted.iter().enumerate() {
                let sum: u64 = admitted[i..]
                    .iter()
                    .take_while(|(at, _)| *at < start + window)
                    .map(|(_, n)| n)
                    .sum();
                prop_assert!(sum <= limit, "{sum} admitted within a window of limit {limit}");
            }
        }

        /// In every interval of length t, at most rate * t + burst requests pass.
        #[test]
        fn never_more_than_rate_times_t_plus_burst(
            rate in 0.5f64..50.0,
            burst in 1u32..20,
            steps in proptest::collection::vec((0u64..400, 1u32..4), 1..200),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let admitted: Vec<(Duration, u32)> = rt.block_on(async {
                let l = RateLimiter::try_new("p", settings(rate, burst)).unwrap();
                let t0 = Instant::now();
                let mut admitted = Vec::new();
                for (advance_ms, n) in steps {
                    tokio::time::advance(Duration::from_millis(advance_ms)).await;
                    if l.try_acquire(n, 0).is_ok() {
                        admitted.push((t0.elapsed(), n));
                    }
                }
                admitted
            });
            for i in 0..admitted.len() {
                let mut sum = 0u64;
                for &(at, n) in &admitted[i..] {
                    sum += u64::from(n);
                    let t = (at - admitted[i].0).as_secs_f64();
                    // A nanosecond of slack for the period's rounding.
                    let bound = rate * (t + 1e-6) + f64::from(burst);
                    prop_assert!(
                        sum as f64 <= bound,
                        "{sum} admitted in {t}s with rate {rate} burst {burst}"
                    );
                }
            }
        }
    }
}
