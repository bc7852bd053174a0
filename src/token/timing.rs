//! When to refresh a token and how long to back off after a failure: pure
//! functions of the clock, unit-tested here and used by the cache and the
//! one-time pool.

use std::time::Duration;

use tokio::time::Instant;

/// First retry delay after a failed fetch (before jitter).
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest delay between retries (before jitter).
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Lifetimes are capped at this (ten years), so that adding one to an
/// instant can never overflow.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `lifetime`, at most [`MAX_LIFETIME`].
pub(crate) fn clamp_lifetime(lifetime: Duration) -> Duration {
    lifetime.min(MAX_LIFETIME)
}

/// When to start refreshing a token fetched at `fetched` that is valid for
/// `lifetime`: `refresh_before` ahead of its expiry, but never earlier than
/// half its lifetime, so a short-lived token (an `expires_in` smaller than
/// `refresh_before`) is still used for a while instead of being refreshed
/// on every request.
pub(crate) fn refresh_at(
    fetched: Instant,
    lifetime: Duration,
    refresh_before: Duration,
) -> Instant {
    let lead = refresh_before.min(lifetime / 2);
    fetched + (lifetime - lead)
}

/// The delay before retry number `failures` (1 = after the first failure):
/// exponential from [`BACKOFF_BASE`], capped at [`BACKOFF_MAX`], then scaled
/// by `jitter` in `[0, 1)` to between half and all of it, so that many
/// sidekeys (or routes) that failed together do not retry together.
pub(crate) fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let full = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A random jitter for [`backoff`].
pub(crate) fn jitter() -> f64 {
    rand::random::<f64>()
}

/// `Retry-After` seconds for a client told to come back at `until`: rounded
/// up, at least 1.
pub(crate) fn retry_after(now: Instant, until: Instant) -> u64 {
    let wait = until.saturating_duration_since(now);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn refreshes_refresh_before_the_expiry() {
        let t0 = Instant::now();
        // Algonomy: 15 minutes, refreshed 60 s ahead.
        assert_eq!(refresh_at(t0, S(900), S(60)), t0 + S(840));
        assert_eq!(refresh_at(t0, S(2), S(1)), t0 + S(1));
        assert_eq!(refresh_at(t0, S(3600), Duration::ZERO), t0 + S(3600));
    }

    #[test]
    fn a_short_lifetime_is_used_for_at_least_half_of_it() {
        let t0 = Instant::now();
        assert_eq!(refresh_at(t0, S(30), S(60)), t0 + S(15));
        assert_eq!(refresh_at(t0, S(60), S(60)), t0 + S(30));
    }

    #[test]
    fn huge_lifetimes_are_capped() {
        let t0 = Instant::now();
        let huge = clamp_lifetime(Duration::from_secs(u64::MAX));
        assert_eq!(huge, MAX_LIFETIME);
        assert!(refresh_at(t0, huge, S(60)) > t0);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        // jitter 1.0 is the full delay.
        let full: Vec<Duration> = (1..=10).map(|n| backoff(n, 1.0)).collect();
        assert_eq!(full[0], Duration::from_millis(500));
        assert_eq!(full[1], S(1));
        assert_eq!(full[2], S(2));
        assert_eq!(full[7], S(60));
        assert_eq!(full[9], S(60));
        assert_eq!(backoff(u32::MAX, 1.0), S(60));
    }

    #[test]
    fn jitter_keeps_between_half_and_all_of_the_delay() {
        assert_eq!(backoff(3, 0.0), S(1));
        assert_eq!(backoff(3, 0.5), Duration::from_millis(1500));
        for _ in 0..100 {
            let d = backoff(2, jitter());
            assert!(d >= Duration::from_millis(500) && d <= S(1), "{d:?}");
        }
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        let t0 = Instant::now();
        assert_eq!(retry_after(t0, t0), 1);
        assert_eq!(retry_after(t0 + S(5), t0), 1);
        assert_eq!(retry_after(t0, t0 + Duration::from_millis(1200)), 2);
        assert_eq!(retry_after(t0, t0 + S(3)), 3);
    }
}
