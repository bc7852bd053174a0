//! One-time tokens (`one_time = true`): a fresh token for every forwarded
//! request, never reused.
//!
//! Each request takes a token out of the pool (or, when the pool is empty,
//! mints one itself); a token leaves the pool under its lock, so no two
//! requests can ever get the same one. With `pool_size > 0` the pool is
//! filled ahead in the background (at warm-up, then a quarter of the pool
//! at a time), so minting is off the request path. Pooled tokens older than
//! `pool_max_age` (or past their own lifetime) are discarded when a request
//! looks for one; an idle route does not mint.
//!
//! Failures back off like the cache does: while the endpoint is failing,
//! requests get [`TokenError::Unavailable`] at once instead of each
//! trying to mint.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::endpoint::{FetchError, Fetched, TokenFetcher};
use super::snapshot::{Failure, PoolFill, TokenSnapshot, TokenState};
use super::timing;
use super::{Background, Token, TokenError, TokenStats};

pub(crate) struct OneTimeSource {
    inner: Arc<Inner>,
}

struct Inner {
    fetcher: Box<dyn TokenFetcher>,
    pool_size: usize,
    pool_max_age: Duration,
    stats: TokenStats,
    background: Background,
    state: Mutex<State>,
}

struct Pooled {
    token: Token,
    /// When it stops being handed out: minted + `pool_max_age`, or its own
    /// expiry if sooner.
    stale_at: Instant,
}

struct State {
    pool: VecDeque<Pooled>,
    /// Background mints in flight.
    minting: usize,
    generation: u64,
    failures: u32,
    /// No minting before this, after a failure.
    backoff_until: Option<Instant>,
    last_error: Option<FetchError>,
    /// For the status views: the last successful mint, the last failure
    /// (kept after a success).
    minted_at: Option<Instant>,
    last_failure: Option<Failure>,
}

impl OneTimeSource {
    pub(crate) fn new(
        fetcher: Box<dyn TokenFetcher>,
        pool_size: usize,
        pool_max_age: Duration,
        stats: TokenStats,
    ) -> OneTimeSource {
        OneTimeSource {
            inner: Arc::new(Inner {
                fetcher,
                pool_size,
                pool_max_age,
                stats,
                background: Background::here(),
                state: Mutex::new(State {
                    pool: VecDeque::new(),
                    minting: 0,
                    generation: 0,
                    failures: 0,
                    backoff_until: None,
                    last_error: None,
                    minted_at: None,
                    last_failure: None,
                }),
            }),
        }
    }

    /// A token no other request has had or will have.
    pub(crate) async fn token(&self) -> Result<Token, TokenError> {
        let inner = &self.inner;
        let now = Instant::now();
        {
            let mut st = inner.lock();
            while let Some(pooled) = st.pool.pop_front() {
                if now < pooled.stale_at {
                    inner.top_up(&mut st, now);
                    drop(st);
                    inner.stats.hit();
                    return Ok(pooled.token);
                }
            }
            if let Some(until) = st.backoff_until.filter(|u| now < *u) {
                return Err(inner.unavailable(&st, now, until));
            }
        }
        // Nothing pooled: mint on the request path.
        let result = inner.fetcher.fetch().await;
        inner.stats.waited(now.elapsed());
        let now = Instant::now();
        let mut st = inner.lock();
        let outcome = match result {
            Ok(fetched) => Ok(inner.accept(&mut st, fetched, now).token),
            Err(err) => {
                let until = inner.failed(&mut st, err, now);
                Err(inner.unavailable(&st, now, until))
            }
        };
        inner.top_up(&mut st, now);
        outcome
    }

    /// The upstream rejected a one-time token (401). It is spent anyway;
    /// the pooled tokens were minted before the rejection and are likely
    /// as stale (the upstream may have revoked them together), so the pool
    /// is emptied and refilled, and the retry mints a fresh token.
    pub(crate) fn reject(&self, _token: &Token) {
        let now = Instant::now();
        let mut st = self.inner.lock();
        let dropped = st.pool.len();
        st.pool.clear();
        self.inner.top_up(&mut st, now);
        tracing::info!(
            route = self.inner.stats.route(),
            dropped_pooled = dropped,
            "the upstream rejected a one-time token"
        );
    }

    /// Whether the endpoint is minting (no failure since the last success).
    pub(crate) fn has_valid_token(&self) -> bool {
        self.inner.lock().failures == 0
    }

    /// The source's state for the status views (takes the lock: never
    /// called per request). Minting works until it fails: no failure since
    /// the last success is `valid`; an empty pool being filled is
    /// `refreshing`.
    pub(crate) fn snapshot(&self) -> TokenSnapshot {
        let inner = &self.inner;
        let st = inner.lock();
        let state = if st.failures > 0 {
            TokenState::Failing
        } else if inner.pool_size > 0 && st.pool.is_empty() && st.minting > 0 {
            TokenState::Refreshing
        } else {
            TokenState::Valid
        };
        TokenSnapshot {
            state,
            usable: st.failures == 0,
            fetched_at: st.minted_at,
            expires_at: None,
            next_refresh_at: st.backoff_until,
            last_failure: st.last_failure.clone(),
            consecutive_failures: st.failures,
            pool: (inner.pool_size > 0).then(|| PoolFill {
                ready: st.pool.len(),
                minting: st.minting,
                size: inner.pool_size,
            }),
        }
    }

    /// Fills the pool (when there is one). Does nothing outside a Tokio
    /// runtime.
    pub(crate) fn warm_up(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let mut st = self.inner.lock();
        self.inner.top_up(&mut st, Instant::now());
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unavailable(&self, st: &State, now: Instant, until: Instant) -> TokenError {
        TokenError::Unavailable {
            cause: st
                .last_error
                .as_ref()
                .map_or_else(|| "minting a token failed".to_string(), |e| e.to_string()),
            retry_after: timing::retry_after(now, until),
        }
    }

    /// Records a minted token as a success and numbers it.
    fn accept(&self, st: &mut State, fetched: Fetched, now: Instant) -> Pooled {
        st.failures = 0;
        st.backoff_until = None;
        st.last_error = None;
        st.minted_at = Some(now);
        st.generation += 1;
        self.stats.fetched(true);
        let max_age = timing::clamp_lifetime(
            fetched
                .lifetime
                .map_or(self.pool_max_age, |l| l.min(self.pool_max_age)),
        );
        Pooled {
            token: Token {
                value: Arc::new(fetched.value),
                generation: st.generation,
            },
            stale_at: now + max_age,
        }
    }

    /// Records a failure; returns the end of the backoff.
    fn failed(&self, st: &mut State, err: FetchError, now: Instant) -> Instant {
        st.failures += 1;
        let delay = timing::backoff(st.failures, timing::jitter());
        let until = now + delay;
        st.backoff_until = Some(until);
        self.stats.fetched(false);
        tracing::warn!(
            route = self.stats.route(),
            cause = %err,
            failures = st.failures,
            retry_in_ms = delay.as_millis() as u64,
            "minting a one-time token failed"
        );
        st.last_failure = Some(Failure {
            at: now,
            cause: err.to_string(),
        });
        st.last_error = Some(err);
        until
    }

    /// Starts background mints until the pool (with mints in flight) is
    /// full, unless backing off. A pool refills in batches (a quarter of
    /// it at a time, see [`refill_batch`]): one wake-up of the background
    /// runtime starts several mints, instead of one per request.
    fn top_up(self: &Arc<Self>, st: &mut State, now: Instant) {
        if st.backoff_until.is_some_and(|u| now < u) {
            return;
        }
        let have = st.pool.len() + st.minting;
        let missing = self.pool_size.saturating_sub(have);
        if missing == 0 || (missing < refill_batch(self.pool_size) && !st.pool.is_empty()) {
            return;
        }
        st.minting += missing;
        let inner = self.clone();
        self.background.spawn(async move {
            for _ in 1..missing {
                tokio::spawn(inner.clone().mint_into_pool());
            }
            inner.mint_into_pool().await;
        });
    }

    /// Mints one token in the background and pools it (a mint counted in
    /// `minting` by the caller).
    async fn mint_into_pool(self: Arc<Self>) {
        let result = self.fetcher.fetch().await;
        let now = Instant::now();
        let mut st = self.lock();
        st.minting -= 1;
        match result {
            Ok(fetched) => {
                let pooled = self.accept(&mut st, fetched, now);
                st.pool.push_back(pooled);
            }
            Err(err) => {
                let until = self.failed(&mut st, err, now);
                if st.minting == 0 {
                    self.retry_at(until);
                }
            }
        }
    }

    /// Refills the pool at `until` (after a failed background mint).
    fn retry_at(self: &Arc<Self>, until: Instant) {
        let weak: Weak<Inner> = Arc::downgrade(self);
        self.background.spawn(async move {
            tokio::time::sleep_until(until).await;
            if let Some(inner) = weak.upgrade() {
                let now = Instant::now();
                let mut st = inner.lock();
                inner.top_up(&mut st, now);
            }
        });
    }
}

/// How many tokens a pool of `pool_size` must be missing before it
/// refills: a quarter of it (at least one).
fn refill_batch(pool_size: usize) -> usize {
    (pool_size / 4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::testing::{settle, value, FakeFetcher, Step};
    use std::collections::HashSet;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn source(fetcher: &FakeFetcher, pool: usize, max_age: Duration) -> Arc<OneTimeSource> {
        Arc::new(OneTimeSource::new(
            Box::new(fetcher.clone()),
            pool,
            max_age,
            TokenStats::test(),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn every_request_gets_its_own_token_even_concurrently() {
        let fetcher = FakeFetcher::new();
        let source = source(&fetcher, 0, S(60));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let s = source.clone();
            tasks.push(tokio::spawn(async move { s.token().await }));
        }
        let mut seen = HashSet::new();
        for t in tasks {
            assert!(seen.insert(value(&t.await.unwrap().unwrap())));
        }
        assert_eq!(seen.len(), 50);
        assert_eq!(fetcher.calls(), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pool_is_minted_ahead_and_never_hands_a_token_out_twice() {
        let fetcher = FakeFetcher::new();
        let source = source(&fetcher, 4, S(60));
        source.warm_up();
        settle().await;
        assert_eq!(fetcher.calls(), 4);
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let s = source.clone();
            tasks.push(tokio::spawn(async move { s.token().await }));
        }
        let mut seen = HashSet::new();
        for t in tasks {
            assert!(seen.insert(value(&t.await.unwrap().unwrap())), "reused");
        }
        settle().await;
        // 40 handed out, and the pool is full again.
        assert_eq!(fetcher.calls(), 44);
        assert_eq!(source.inner.lock().pool.len(), 4);
        for p in source.inner.lock().pool.iter() {
            assert!(!seen.contains(&value(&p.token)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_refills_a_quarter_at_a_time() {
        let fetcher = FakeFetcher::new();
        let source = source(&fetcher, 8, S(60));
        source.warm_up();
        settle().await;
        assert_eq!(fetcher.calls(), 8);
        // One missing of 8: below the batch of 2, no mint yet.
        source.token().await.unwrap();
        settle().await;
        assert_eq!(fetcher.calls(), 8);
        assert_eq!(source.inner.lock().pool.len(), 7);
        // Two missing: both minted, the pool full again.
        source.token().await.unwrap();
        settle().await;
        assert_eq!(fetcher.calls(), 10);
        assert_eq!(source.inner.lock().pool.len(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn pooled_tokens_older_than_max_age_are_discarded() {
        let fetcher = FakeFetcher::new();
        let source = source(&fetcher, 2, S(30));
        source.warm_up();
        settle().await;
        let pooled: Vec<String> = source
            .inner
            .lock()
            .pool
            .iter()
            .map(|p| value(&p.token))
            .collect();
        assert_eq!(pooled.len(), 2);
        tokio::time::advance(S(31)).await;
        let t = source.token().await.unwrap();
        assert!(
            !pooled.contains(&value(&t)),
            "a stale pooled token was used"
        );
        assert_eq!(fetcher.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_token_lifetime_shortens_its_time_in_the_pool() {
        let fetcher = FakeFetcher::new();
        fetcher.push(Step::ok("short", Some(S(5))));
        let source = source(&fetcher, 1, S(60));
        source.warm_up();
        settle().await;
        tokio::time::advance(S(6)).await;
        let t = source.token().await.unwrap();
        assert_ne!(value(&t), "short");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_instead_of_minting_per_request() {
        let fetcher = FakeFetcher::new();
        for _ in 0..3 {
            fetcher.push(Step::err(FetchError::Status {
                host: "invoca.net".into(),
                status: 503,
                oauth_error: None,
            }));
        }
        let source = source(&fetcher, 0, S(60));
        let err = source.token().await.unwrap_err();
        assert!(err.to_string().contains("HTTP 503"), "{err}");
        assert!(!source.has_valid_token());
        for _ in 0..20 {
            match source.token().await.unwrap_err() {
                TokenError::Unavailable { retry_after, .. } => assert!(retry_after >= 1),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(fetcher.calls(), 1);
        tokio::time::advance(S(1)).await;
        assert!(source.token().await.is_err());
        assert_eq!(fetcher.calls(), 2);
        tokio::time::advance(S(2)).await;
        assert!(source.token().await.is_err());
        tokio::time::advance(S(4)).await;
        assert!(source.token().await.is_ok());
        assert!(source.has_valid_token());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_pool_refills_after_the_backoff() {
        let fetcher = FakeFetcher::new();
        fetcher.push(Step::err(FetchError::Connect {
            host: "h".into(),
            cause: "connection refused".into(),
        }));
        let source = source(&fetcher, 1, S(60));
        source.warm_up();
        settle().await;
        assert_eq!(source.inner.lock().pool.len(), 0);
        tokio::time::advance(S(1)).await;
        settle().await;
        assert_eq!(source.inner.lock().pool.len(), 1);
        assert_eq!(fetcher.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejection_empties_the_pool_and_refills_it() {
        let fetcher = FakeFetcher::new();
        let source = source(&fetcher, 3, S(60));
        source.warm_up();
        settle().await;
        let t = source.token().await.unwrap();
        settle().await;
        let stale: Vec<String> = source
            .inner
            .lock()
            .pool
            .iter()
            .map(|p| value(&p.token))
            .collect();
        assert_eq!(stale.len(), 3);
        source.reject(&t);
        // The retry does not get one of the tokens pooled before the 401.
        let retry = source.token().await.unwrap();
        assert!(!stale.contains(&value(&retry)));
        settle().await;
        assert_eq!(source.inner.lock().pool.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_snapshot_shows_the_pool_filling_and_minting_failures() {
        use crate::token::snapshot::{PoolFill, TokenState};
        let fetcher = FakeFetcher::new();
        let gate = fetcher.gate();
        let source = source(&fetcher, 4, S(60));
        source.warm_up();
        settle().await;
        let snap = source.snapshot();
        assert_eq!(snap.state, TokenState::Refreshing, "an empty pool filling");
        assert_eq!(
            snap.pool,
            Some(PoolFill {
                ready: 0,
                minting: 4,
                size: 4
            })
        );
        gate.open();
        settle().await;
        let snap = source.snapshot();
        assert_eq!(snap.state, TokenState::Valid);
        assert!(snap.usable);
        assert_eq!(snap.pool.map(|p| (p.ready, p.minting)), Some((4, 0)));
        assert_eq!(snap.fetched_at, Some(Instant::now()));
        // The endpoint fails: the pool runs dry, then minting fails.
        for _ in 0..4 {
            source.token().await.unwrap();
        }
        settle().await;
        fetcher.clear();
        for _ in 0..20 {
            fetcher.push(Step::err(FetchError::Connect {
                host: "mint.example".into(),
                cause: "connection refused".into(),
            }));
        }
        while source.token().await.is_ok() {}
        let snap = source.snapshot();
        assert_eq!(snap.state, TokenState::Failing);
        assert!(!snap.usable);
        assert!(snap.consecutive_failures >= 1);
        assert_eq!(
            snap.last_failure.map(|f| f.cause),
            Some("cannot connect to the token endpoint mint.example: connection refused".into())
        );
        assert!(snap.next_refresh_at.is_some());
    }
}
