//! Token buckets and header-driven pauses for one provider key.
//!
//! Contract: a request is only sent when [`RateLimiter`] covers it: one token from
//! the request bucket, `units` tokens from the unit bucket (where the provider
//! counts units: ipinsights charges each public IP of a bulk call, and a report
//! costs one unit), and room in every configured hourly/daily/monthly budget. A
//! `Retry-After` pauses the whole key until it has passed; `X-RateLimit-Remaining: 0`
//! pauses it until the provider's window resets. The buckets are GCRA from the
//! `governor` crate, driven by a `tokio::time` clock so tests run on paused time.
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
    /// More than the burst asked at once: never admitted.
    TooLarge,
}

/// A refusal: why, and how long until the same request could pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub reason: DenyReason,
    pub wait: Duration,
}

/// A fixed-window budget of units (IPs looked up, reports sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Window length (1 h, 24 h, 30 days); windows start at the first use.
    pub period: Duration,
    /// Units allowed per window.
    pub limit: u64,
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
    /// The provider's rate window: after `X-RateLimit-Remaining: 0` the key pauses
    /// until this long after the window's first request (ipinsights: 1 h).
    pub window: Duration,
    /// Pause after a 429 that carries no `Retry-After`.
    pub default_pause: Duration,
}

impl RateSettings {
    /// ipinsights.io: "600 requests per hour per key" counted per public IP
    /// (ipinsights-api.txt "Rate Limits"), so 600 units/h with a 100-unit burst (one
    /// full bulk call); requests are not limited separately beyond that.
    pub fn ipinsights() -> Self {
        RateSettings {
            requests_per_second: 600.0 / 3600.0,
            request_burst: NonZeroU32::new(100).expect("non-zero"),
            units_per_second: Some(600.0 / 3600.0),
            unit_burst: NonZeroU32::new(100).expect("non-zero"),
            budgets: Vec::new(),
            window: Duration::from_secs(3600),
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
    /// First request of the provider's current window (for `Remaining: 0`).
    window_started: Option<Instant>,
    /// Per budget: (window start, units used).
    budgets: Vec<Option<(Instant, u64)>>,
}

/// The buckets, budgets and pause of one provider key.
pub struct RateLimiter {
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
            name: name.to_owned(),
            requests: bucket(settings.requests_per_second, settings.request_burst, &clock),
            units: settings
                .units_per_second
                .map(|u| bucket(u, settings.unit_burst, &clock)),
            state: Mutex::new(Mutable {
                budgets: vec![None; settings.budgets.len()],
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

    /// Applies the rate headers of a response: `Retry-After` pauses for its value,
    /// `X-RateLimit-Remaining: 0` until the window resets.
    pub fn observe(&self, info: &RateInfo) {
        if let Some(wait) = info.retry_after {
            self.pause_for(wait);
        }
        if info.remaining == Some(0) {
            let started = self.lock().window_started;
            let reset = started.map_or(self.settings.window, |s| {
                after(s, self.settings.window).saturating_duration_since(Instant::now())
            });
            self.pause_for(reset);
        }
    }

    /// A 429 arrived: pause for its `Retry-After`, or the default pause without one.
    pub fn rate_limited(&self, retry_after: Option<Duration>) {
        self.pause_for(retry_after.unwrap_or(self.settings.default_pause));
    }

    /// Takes `requests` and `units` if everything covers them now, else says why not
    /// and how long to wait. Tokens of one bucket may be spent when the other then
    /// refuses: that errs on the side of sending less, never more.
    pub fn try_acquire(&self, requests: u32, units: u32) -> Result<(), Denied> {
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
        for (i, b) in self.settings.budgets.iter().enumerate() {
            let slot = &mut s.budgets[i];
            if slot.is_some_and(|(start, _)| now >= after(start, b.period)) {
                *slot = None;
            }
            let used = slot.map_or(0, |(_, u)| u);
            if used.saturating_add(u64::from(units)) > b.limit {
                let wait = slot.map_or(b.period, |(start, _)| {
                    after(start, b.period).saturating_duration_since(now)
                });
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
        for slot in s.budgets.iter_mut() {
            let used = &mut slot.get_or_insert((now, 0)).1;
            *used = used.saturating_add(u64::from(units));
        }
        let window = self.settings.window;
        if s.window_started.is_none_or(|w| now >= after(w, window)) {
            s.window_started = Some(now);
        }
        Ok(())
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
    ) -> Result<(), Denied> {
        let deadline = from_now(max_wait);
        loop {
            match self.try_acquire(requests, units) {
                Ok(()) => return Ok(()),
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
    /// the request can never pass or a budget is used up for the period.
    pub async fn acquire(&self, requests: u32, units: u32) -> Result<(), RateLimitError> {
        loop {
            match self.try_acquire(requests, units) {
                Ok(()) => return Ok(()),
                Err(d) => match d.reason {
                    DenyReason::Paused | DenyReason::Bucket => {
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
            window: Duration::from_secs(3600),
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

    #[tokio::test(start_paused = true)]
    async fn remaining_zero_pauses_until_the_window_resets() {
        let l = RateLimiter::try_new("t", settings(100.0, 10)).unwrap();
        l.try_acquire(1, 1).unwrap(); // opens the hourly window
        tokio::time::advance(Duration::from_secs(600)).await;
        l.observe(&RateInfo {
            limit: Some(600),
            remaining: Some(0),
            retry_after: None,
        });
        assert_eq!(l.paused_for(), Some(Duration::from_secs(3000)));
        l.observe(&RateInfo {
            limit: Some(600),
            remaining: Some(5),
            retry_after: None,
        });
        assert_eq!(l.paused_for(), Some(Duration::from_secs(3000)));
        tokio::time::advance(Duration::from_secs(3000)).await;
        l.try_acquire(1, 1).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn budgets_refuse_until_the_period_rolls() {
        let mut s = settings(1000.0, 1000);
        s.budgets = vec![Budget {
            period: Duration::from_secs(3600),
            limit: 10,
        }];
        let l = RateLimiter::try_new("t", s).unwrap();
        l.try_acquire(1, 6).unwrap();
        tokio::time::advance(Duration::from_secs(100)).await;
        l.try_acquire(1, 4).unwrap();
        let d = l.try_acquire(1, 1).unwrap_err();
        assert_eq!(
            (d.reason, d.wait),
            (DenyReason::Budget, Duration::from_secs(3500))
        );
        assert!(matches!(
            l.acquire(1, 1).await,
            Err(RateLimitError::BudgetExhausted { .. })
        ));
        tokio::time::advance(Duration::from_secs(3500)).await;
        l.try_acquire(1, 10).unwrap();
    }

    #[test]
    fn bad_settings_are_all_reported() {
        let mut s = settings(0.0, 1);
        s.units_per_second = Some(f64::NAN);
        s.budgets = vec![Budget {
            period: Duration::ZERO,
            limit: 1,
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
            period: Duration::from_secs(3600),
            limit: u64::MAX,
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
