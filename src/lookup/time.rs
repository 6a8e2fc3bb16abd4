//! Saturating time arithmetic for everything that advances an [`Instant`] by a
//! duration that came from outside: a provider's `Retry-After`, a TTL, a breaker
//! pause or a batch wait from the config.
//!
//! Contract: nothing here panics. `Instant + Duration` panics when the sum cannot
//! be represented (a `Retry-After: 9223372036854775808` does it), so every such sum
//! in the lookup engine and the reporter goes through [`after`], which turns an
//! unrepresentable instant into "a century from now": for a pause, a TTL or an
//! open breaker that means "for as long as this process runs". Pauses that a
//! provider dictates are also clamped to [`MAX_PROVIDER_PAUSE`] where they are read,
//! so a hostile or broken header cannot silence a key for longer than a billing
//! month.

use std::time::Duration;

use tokio::time::Instant;

/// Longest pause a provider may impose with one header: a monthly quota resets
/// within 31 days, so nothing honest asks for more.
pub const MAX_PROVIDER_PAUSE: Duration = Duration::from_secs(31 * 24 * 3600);

/// What an unrepresentable instant becomes: far beyond any process's lifetime, and
/// small enough that adding it to any monotonic clock reading fits.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `start + d`, or a century after `start` when that sum cannot be represented
/// (or `start` itself in the impossible case that even that overflows).
pub fn after(start: Instant, d: Duration) -> Instant {
    start
        .checked_add(d)
        .or_else(|| start.checked_add(FAR))
        .unwrap_or(start)
}

/// `d` from now, saturating as [`after`].
pub fn from_now(d: Duration) -> Instant {
    after(Instant::now(), d)
}

/// A pause asked for by a provider, clamped to [`MAX_PROVIDER_PAUSE`].
pub fn provider_pause(d: Duration) -> Duration {
    d.min(MAX_PROVIDER_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn absurd_durations_saturate_instead_of_panicking() {
        let now = Instant::now();
        // Regression (issue 8 item 6): `Instant + 2^63 s` panicked.
        let far = after(now, Duration::from_secs(1 << 63));
        assert!(far > now + Duration::from_secs(50 * 365 * 24 * 3600));
        assert_eq!(after(now, Duration::MAX), far);
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(from_now(Duration::MAX) > now);
        assert_eq!(provider_pause(Duration::MAX), MAX_PROVIDER_PAUSE);
        assert_eq!(
            provider_pause(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }
}
