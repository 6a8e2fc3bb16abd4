//! Circuit breaker of one provider.
//!
//! Contract: closed, it lets every request through and counts consecutive
//! failures; after `failures` of them in a row it opens and refuses everything
//! for `open_for`. Then it is half-open: exactly one request (the probe) may go;
//! its success closes the breaker, its failure opens it for another `open_for`.
//! Only failures that a retry could fix count (5xx, timeouts, resets, transport),
//! and a body past the size cap (a provider streaming without end is broken):
//! a 4xx, a 429 (the rate limiter handles those) or "no data" is not the
//! provider being down. Time is `tokio::time`, so tests use paused time.

use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::providers::ProviderError;

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker.
    pub failures: NonZeroU32,
    /// How long it stays open before a probe is let through.
    pub open_for: Duration,
}

/// The state, also exported as a gauge (`as_gauge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; `failures` in a row so far.
    Closed { failures: u32 },
    /// Refusing until `until`.
    Open { until: Instant },
    /// One probe allowed; `probing` while it is out.
    HalfOpen { probing: bool },
}

impl BreakerState {
    /// 0 closed, 1 half-open, 2 open.
    pub fn as_gauge(&self) -> i64 {
        match self {
            BreakerState::Closed { .. } => 0,
            BreakerState::HalfOpen { .. } => 1,
            BreakerState::Open { .. } => 2,
        }
    }
}

/// Permission to send one request; hand it back with the result.
#[derive(Debug)]
#[must_use = "report the result with success/failure/neutral"]
pub struct Ticket {
    probe: bool,
}

/// The breaker refused: open (or half-open with the probe out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open")]
pub struct Open;

/// What a request's result means for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The provider answered.
    Success,
    /// The provider is (probably) down.
    Failure,
    /// Says nothing about the provider's health (4xx, 429, not sent).
    Neutral,
}

impl Verdict {
    /// How a provider error counts: retryable errors other than 429 are failures,
    /// and so is a body past the cap.
    pub fn of_error(e: &ProviderError) -> Verdict {
        if matches!(e, ProviderError::BodyTooLarge { .. })
            || (e.is_retryable() && !matches!(e, ProviderError::RateLimited { .. }))
        {
            Verdict::Failure
        } else {
            Verdict::Neutral
        }
    }
}

/// One provider's breaker.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: Mutex<BreakerState>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state (an expired `Open` reads as half-open).
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            BreakerState::Open { until } if Instant::now() >= until => {
                BreakerState::HalfOpen { probing: false }
            }
            s => s,
        }
    }

    /// True when a request now would be refused (for the fast path, takes nothing).
    pub fn is_refusing(&self) -> bool {
        matches!(
            self.state(),
            BreakerState::Open { .. } | BreakerState::HalfOpen { probing: true }
        )
    }

    /// Asks to send one request.
    pub fn try_acquire(&self) -> Result<Ticket, Open> {
        let mut s = self.lock();
        match *s {
            BreakerState::Closed { .. } => Ok(Ticket { probe: false }),
            BreakerState::Open { until } if Instant::now() < until => Err(Open),
            BreakerState::Open { .. } | BreakerState::HalfOpen { probing: false } => {
                *s = BreakerState::HalfOpen { probing: true };
                Ok(Ticket { probe: true })
            }
            BreakerState::HalfOpen { probing: true } => Err(Open),
        }
    }

    /// Reports the result of the request `ticket` allowed; returns the new state.
    pub fn record(&self, ticket: Ticket, verdict: Verdict) -> BreakerState {
        let mut s = self.lock();
        let next = match (verdict, *s) {
            (Verdict::Success, _) => BreakerState::Closed { failures: 0 },
            (Verdict::Failure, BreakerState::Closed { failures }) => {
                if failures + 1 >= self.settings.failures.get() {
                    self.open()
                } else {
                    BreakerState::Closed {
                        failures: failures + 1,
                    }
                }
            }
            // A failed probe, or a late failure of a request sent before opening.
            (Verdict::Failure, BreakerState::HalfOpen { .. }) if ticket.probe => self.open(),
            (Verdict::Failure, st) => st,
            (Verdict::Neutral, BreakerState::HalfOpen { .. }) if ticket.probe => {
                BreakerState::HalfOpen { probing: false }
            }
            (Verdict::Neutral, st) => st,
        };
        if next.as_gauge() != s.as_gauge() {
            tracing::debug!(
                from = s.as_gauge(),
                to = next.as_gauge(),
                "breaker state changed"
            );
        }
        *s = next;
        next
    }

    fn open(&self) -> BreakerState {
        BreakerState::Open {
            until: super::time::from_now(self.settings.open_for),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            failures: NonZeroU32::new(3).unwrap(),
            open_for: Duration::from_secs(10),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_probes_then_closes() {
        let b = breaker();
        for _ in 0..2 {
            let t = b.try_acquire().unwrap();
            b.record(t, Verdict::Failure);
        }
        // A success resets the count.
        let t = b.try_acquire().unwrap();
        b.record(t, Verdict::Success);
        for _ in 0..2 {
            let t = b.try_acquire().unwrap();
            b.record(t, Verdict::Failure);
        }
        assert_eq!(b.state(), BreakerState::Closed { failures: 2 });
        let t = b.try_acquire().unwrap();
        assert!(matches!(
            b.record(t, Verdict::Failure),
            BreakerState::Open { .. }
        ));
        assert!(b.is_refusing());
        assert_eq!(b.try_acquire().unwrap_err(), Open);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(b.try_acquire().is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen { probing: false });
        let probe = b.try_acquire().unwrap();
        // Only one probe at a time.
        assert!(b.try_acquire().is_err());
        assert!(b.is_refusing());
        assert_eq!(
            b.record(probe, Verdict::Success),
            BreakerState::Closed { failures: 0 }
        );
        assert!(!b.is_refusing());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_and_neutral_probe_frees_the_slot() {
        let b = breaker();
        for _ in 0..3 {
            let t = b.try_acquire().unwrap();
            b.record(t, Verdict::Failure);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = b.try_acquire().unwrap();
        assert_eq!(
            b.record(probe, Verdict::Neutral),
            BreakerState::HalfOpen { probing: false }
        );
        let probe = b.try_acquire().unwrap();
        assert!(matches!(
            b.record(probe, Verdict::Failure),
            BreakerState::Open { .. }
        ));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.try_acquire().is_err());
    }

    #[test]
    fn only_retryable_non_429_errors_count() {
        assert_eq!(
            Verdict::of_error(&ProviderError::Server {
                status: 503,
                message: String::new()
            }),
            Verdict::Failure
        );
        assert_eq!(Verdict::of_error(&ProviderError::Timeout), Verdict::Failure);
        assert_eq!(
            Verdict::of_error(&ProviderError::BodyTooLarge { limit: 1 }),
            Verdict::Failure
        );
        assert_eq!(
            Verdict::of_error(&ProviderError::RateLimited { retry_after: None }),
            Verdict::Neutral
        );
        assert_eq!(
            Verdict::of_error(&ProviderError::InvalidInput {
                message: String::new()
            }),
            Verdict::Neutral
        );
    }
}
