//! The sliding window the providers count in: a request of `cost` units is admitted
//! when the units admitted during the last `window` plus `cost` stay within `limit`;
//! a refusal says how long until enough units leave the window. The client's limiter
//! ([`super::rate_limit`]) counts its own requests with it, so it never sends more in
//! any window than the provider allows, and the simulator counts with the same code
//! when it plays the provider (its `Retry-After`). Time is passed in as
//! `tokio::time::Instant`, so tests drive it with paused time.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The outcome of [`SlidingWindow::try_take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; `remaining` units are left in the window.
    Admitted {
        /// Units still available after this request.
        remaining: u64,
    },
    /// Refused; retry after this long (whole seconds, rounded up, at least 1).
    Refused {
        /// Seconds until the request would be admitted (whole, at least 1).
        retry_after_secs: u64,
        /// The same, exactly.
        wait: Duration,
    },
}

/// The units admitted during the current window, oldest first.
#[derive(Debug, Default)]
pub struct SlidingWindow {
    entries: VecDeque<(Instant, u64)>,
    used: u64,
}

impl SlidingWindow {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(&(at, units)) = self.entries.front() {
            if now.saturating_duration_since(at) >= window {
                self.entries.pop_front();
                self.used = self.used.saturating_sub(units);
            } else {
                break;
            }
        }
    }

    /// The admissions still in the log, oldest first (call [`SlidingWindow::used`]
    /// first to drop the expired ones).
    pub fn entries(&self) -> impl Iterator<Item = (Instant, u64)> + '_ {
        self.entries.iter().copied()
    }

    /// Units admitted during the window that ends at `now`.
    pub fn used(&mut self, now: Instant, window: Duration) -> u64 {
        self.expire(now, window);
        self.used
    }

    /// Units left in the window at `now` without taking any.
    pub fn remaining(&mut self, now: Instant, limit: u64, window: Duration) -> u64 {
        self.expire(now, window);
        limit.saturating_sub(self.used)
    }

    /// Records `cost` units admitted at `now`, whatever the limit.
    pub fn record(&mut self, now: Instant, cost: u64) {
        if cost > 0 {
            self.entries.push_back((now, cost));
            self.used = self.used.saturating_add(cost);
        }
    }

    /// `None` when `cost` units fit in the window now, else how long until enough
    /// units have left it (a whole window when `cost` exceeds `limit`).
    pub fn wait_for(
        &mut self,
        now: Instant,
        cost: u64,
        limit: u64,
        window: Duration,
    ) -> Option<Duration> {
        self.expire(now, window);
        if cost == 0 || self.used.saturating_add(cost) <= limit {
            return None;
        }
        // Walk the log until enough units would have left the window.
        let mut freed = 0;
        let mut wait = window;
        if cost <= limit {
            for &(at, units) in &self.entries {
                freed += units;
                if (self.used - freed).saturating_add(cost) <= limit {
                    wait = super::time::after(at, window).saturating_duration_since(now);
                    break;
                }
            }
        }
        Some(wait)
    }

    /// Takes `cost` units if they fit; a zero cost is always admitted.
    pub fn try_take(&mut self, now: Instant, cost: u64, limit: u64, window: Duration) -> Admission {
        match self.wait_for(now, cost, limit, window) {
            None => {
                self.record(now, cost);
                Admission::Admitted {
                    remaining: limit.saturating_sub(self.used),
                }
            }
            Some(wait) => Admission::Refused {
                retry_after_secs: ceil_secs(wait).max(1),
                wait,
            },
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn limit_then_retry_after_then_admitted() {
        let mut w = SlidingWindow::default();
        for i in 0..600 {
            let a = w.try_take(Instant::now(), 1, 600, HOUR);
            assert_eq!(a, Admission::Admitted { remaining: 599 - i });
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        // 60 s after the first unit: it leaves the window 3540 s from now.
        let refused = w.try_take(Instant::now(), 1, 600, HOUR);
        assert_eq!(
            refused,
            Admission::Refused {
                retry_after_secs: 3540,
                wait: Duration::from_secs(3540)
            }
        );
        tokio::time::advance(Duration::from_secs(3539)).await;
        assert!(matches!(
            w.try_take(Instant::now(), 1, 600, HOUR),
            Admission::Refused { .. }
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            w.try_take(Instant::now(), 1, 600, HOUR),
            Admission::Admitted { remaining: 0 }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bulk_cost_waits_for_enough_units() {
        let mut w = SlidingWindow::default();
        let minute = Duration::from_secs(60);
        assert!(matches!(
            w.try_take(Instant::now(), 6, 10, minute),
            Admission::Admitted { remaining: 4 }
        ));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(
            w.try_take(Instant::now(), 4, 10, minute),
            Admission::Admitted { remaining: 0 }
        ));
        // Needs 5: the first entry (6 units) must leave, 50 s from now.
        assert_eq!(
            w.try_take(Instant::now(), 5, 10, minute),
            Admission::Refused {
                retry_after_secs: 50,
                wait: Duration::from_secs(50)
            }
        );
        // A cost above the limit can never pass: one full window.
        assert_eq!(
            w.try_take(Instant::now(), 11, 10, minute),
            Admission::Refused {
                retry_after_secs: 60,
                wait: Duration::from_secs(60)
            }
        );
        assert_eq!(
            w.try_take(Instant::now(), 0, 10, minute),
            Admission::Admitted { remaining: 0 }
        );
        assert_eq!(w.remaining(Instant::now(), 10, minute), 0);
    }
}
