//! A cached token: single flight, refresh-ahead, backoff.
//!
//! [`TokenCache`] holds at most one token. A request takes the cached token
//! when it is valid; it waits only when there is none, and then every
//! waiting request shares the one fetch in flight (single flight). Once a
//! token reaches its refresh time ([`timing::refresh_at`]) a background
//! fetch replaces it, started by a timer and, should the timer be late, by
//! the first request that notices; requests keep using the old token
//! meanwhile. A failed fetch is retried after an exponential backoff with
//! jitter; while the old token is valid it keeps being used, and a token
//! past its expiry is never handed out. With no valid token a request fails
//! at once with [`TokenError::Unavailable`] (never a flood of fetches).
//!
//! A valid token that is not yet due for refresh is also published in an
//! [`ArcSwapOption`], so the common request takes it without the lock
//! (which two worker threads would otherwise contend for on every
//! request); the lock is taken only when there is something to decide.
//!
//! Fetches and timers run in spawned tasks (so a client that goes away
//! does not cancel a fetch others wait for); timers hold only a weak
//! reference, so a cache dropped by a config reload stops by itself. The
//! clock is [`tokio::time::Instant`] (monotonic, and pausable in tests).

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio::time::Instant;

use super::endpoint::{FetchError, Fetched, TokenFetcher};
use super::snapshot::{Failure, TokenSnapshot, TokenState};
use super::timing;
use super::{Background, Token, TokenError, TokenStats};

/// A request gives up after this many fetches that did not leave it a
/// token (each one rejected by a concurrent 401 before it could be used).
const MAX_ROUNDS: usize = 4;

pub struct TokenCache {
    inner: Arc<Inner>,
}

struct Inner {
    fetcher: Box<dyn TokenFetcher>,
    refresh_before: Duration,
    stats: TokenStats,
    background: Background,
    state: Mutex<State>,
    /// `state.current`, published for lock-free reads; changed only with
    /// the lock held, right after `state.current`.
    ready: ArcSwapOption<Cached>,
    /// Bumped after every fetch, successful or not.
    fetched: watch::Sender<u64>,
}

#[derive(Clone)]
struct Cached {
    token: Token,
    /// When the fetch that got it ended.
    fetched: Instant,
    /// `None`: valid until the upstream rejects it.
    expires: Option<Instant>,
    refresh: Option<Instant>,
}

impl Cached {
    fn is_valid(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| now < e)
    }

    fn refresh_due(&self, now: Instant) -> bool {
        self.refresh.is_some_and(|r| now >= r)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Fetching,
    /// The last fetch failed; the next one starts at `until`.
    Backoff {
        until: Instant,
    },
}

struct State {
    current: Option<Cached>,
    generation: u64,
    phase: Phase,
    failures: u32,
    last_error: Option<FetchError>,
    /// Kept after a success, for the status views.
    last_failure: Option<Failure>,
}

impl State {
    fn may_fetch(&self, now: Instant) -> bool {
        match self.phase {
            Phase::Idle => true,
            Phase::Fetching => false,
            Phase::Backoff { until } => now >= until,
        }
    }
}

enum Lookup {
    Ready(Token),
    Wait,
    Fail(TokenError),
}

impl TokenCache {
    /// A cold cache; nothing is fetched (and no task spawned) until
    /// [`TokenCache::warm_up`] or the first [`TokenCache::token`].
    pub fn new(
        fetcher: Box<dyn TokenFetcher>,
        refresh_before: Duration,
        stats: TokenStats,
    ) -> TokenCache {
        TokenCache {
            inner: Arc::new(Inner {
                fetcher,
                refresh_before,
                stats,
                background: Background::here(),
                state: Mutex::new(State {
                    current: None,
                    generation: 0,
                    phase: Phase::Idle,
                    failures: 0,
                    last_error: None,
                    last_failure: None,
                }),
                ready: ArcSwapOption::empty(),
                fetched: watch::channel(0).0,
            }),
        }
    }

    /// A valid token: the cached one, else the result of the fetch in
    /// flight (started if needed).
    pub async fn token(&self) -> Result<Token, TokenError> {
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        let start = Instant::now();
        let mut waited = false;
        for _ in 0..MAX_ROUNDS {
            // Subscribe before looking, so a fetch that ends in between
            // is not missed.
            let mut fetched = self.inner.fetched.subscribe();
            let lookup = self.inner.lookup(Instant::now());
            match lookup {
                Lookup::Ready(token) => {
                    if waited {
                        self.inner.stats.waited(start.elapsed());
                    } else {
                        self.inner.stats.hit();
                    }
                    return Ok(token);
                }
                Lookup::Fail(err) => {
                    if waited {
                        self.inner.stats.waited(start.elapsed());
                    }
                    return Err(err);
                }
                Lookup::Wait => {}
            }
            waited = true;
            // The sender lives as long as `self`: this returns when the
            // fetch in flight has ended.
            let _ = fetched.changed().await;
        }
        self.inner.stats.waited(start.elapsed());
        Err(TokenError::Unavailable {
            cause: "every new token was rejected before it could be used".into(),
            retry_after: 1,
        })
    }

    /// The cached token when it is valid and not yet due for refresh,
    /// without taking the lock; `None` means: ask [`TokenCache::token`].
    pub fn cached(&self) -> Option<Token> {
        let now = Instant::now();
        let ready = self.inner.ready.load();
        let cached = ready.as_deref()?;
        if cached.is_valid(now) && !cached.refresh_due(now) {
            self.inner.stats.hit();
            Some(cached.token.clone())
        } else {
            None
        }
    }

    /// The upstream answered 401 to `token`: forget it, unless a newer one
    /// has replaced it already.
    pub(crate) fn reject(&self, token: &Token) {
        let mut st = self.inner.lock();
        if st
            .current
            .as_ref()
            .is_some_and(|c| c.token.generation == token.generation)
        {
            st.current = None;
            self.inner.ready.store(None);
            self.inner.stats.expiry(0.0);
            self.inner.fetcher.rejected(&token.value);
            tracing::info!(
                route = self.inner.stats.route(),
                "the upstream rejected the cached token; a new one will be fetched"
            );
        }
    }

    pub(crate) fn has_valid_token(&self) -> bool {
        let now = Instant::now();
        self.inner
            .lock()
            .current
            .as_ref()
            .is_some_and(|c| c.is_valid(now))
    }

    /// The cache's state for the status views (takes the lock: never
    /// called per request).
    pub(crate) fn snapshot(&self) -> TokenSnapshot {
        let now = Instant::now();
        let st = self.inner.lock();
        let current = st.current.as_ref().filter(|c| c.is_valid(now));
        let state = match st.phase {
            // `oauth2_code` without a usable refresh token: only a new
            // `sidekey authorize` helps.
            _ if matches!(st.last_error, Some(FetchError::NeedsAuthorize(_))) => {
                TokenState::NeedsAuthorize
            }
            _ if st.failures > 0 => TokenState::Failing,
            Phase::Fetching => TokenState::Refreshing,
            _ if current.is_some() => TokenState::Valid,
            _ => TokenState::Missing,
        };
        let next_refresh_at = match st.phase {
            Phase::Backoff { until } => Some(until),
            Phase::Fetching => None,
            Phase::Idle => current.and_then(|c| c.refresh),
        };
        TokenSnapshot {
            state,
            usable: current.is_some(),
            fetched_at: current.map(|c| c.fetched),
            expires_at: current.and_then(|c| c.expires),
            next_refresh_at,
            last_failure: st.last_failure.clone(),
            consecutive_failures: st.failures,
            pool: None,
        }
    }

    /// Starts fetching when no token is cached, so the first request does
    /// not wait. Does nothing outside a Tokio runtime.
    pub(crate) fn warm_up(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let now = Instant::now();
        let mut st = self.inner.lock();
        if st.current.is_none() && st.may_fetch(now) {
            self.inner.start_fetch(&mut st);
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep
        // serving rather than poisoning every later request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lookup(self: &Arc<Self>, now: Instant) -> Lookup {
        let mut st = self.lock();
        if let Some(cached) = &st.current {
            if cached.is_valid(now) {
                let token = cached.token.clone();
                if cached.refresh_due(now) && st.may_fetch(now) {
                    self.start_fetch(&mut st);
                }
                return Lookup::Ready(token);
            }
            st.current = None;
            self.ready.store(None);
            self.stats.expiry(0.0);
        }
        match st.phase {
            Phase::Fetching => Lookup::Wait,
            Phase::Backoff { until } if now < until => Lookup::Fail(TokenError::Unavailable {
                cause: st
                    .last_error
                    .as_ref()
                    .map_or_else(|| "the token fetch failed".to_string(), |e| e.to_string()),
                retry_after: timing::retry_after(now, until),
            }),
            Phase::Idle | Phase::Backoff { .. } => {
                self.start_fetch(&mut st);
                Lookup::Wait
            }
        }
    }

    /// Spawns the one fetch (see [`Background`]).
    fn start_fetch(self: &Arc<Self>, st: &mut State) {
        st.phase = Phase::Fetching;
        let guard = FetchGuard {
            inner: Some(self.clone()),
            started: Instant::now(),
        };
        self.background.spawn(async move {
            let result = match &guard.inner {
                Some(inner) => inner.fetcher.fetch().await,
                None => return,
            };
            guard.finish(result);
        });
    }

    /// Records the end of a fetch that started at `started`.
    fn finish(
        self: &Arc<Self>,
        result: Result<Fetched, FetchError>,
        started: Instant,
        schedule: bool,
    ) {
        let now = Instant::now();
        let mut st = self.lock();
        let next = match result {
            Ok(fetched) => {
                st.generation += 1;
                let token = Token {
                    value: Arc::new(fetched.value),
                    generation: st.generation,
                };
                // The lifetime counts from when the endpoint issued the
                // token, some time after `started`: counting from
                // `started` errs on the early side.
                let lifetime = fetched.lifetime.map(timing::clamp_lifetime);
                let refresh = lifetime.map(|l| timing::refresh_at(started, l, self.refresh_before));
                let cached = Cached {
                    token,
                    fetched: now,
                    expires: lifetime.map(|l| started + l),
                    refresh,
                };
                self.ready.store(Some(Arc::new(cached.clone())));
                st.current = Some(cached);
                st.phase = Phase::Idle;
                st.failures = 0;
                st.last_error = None;
                self.stats.fetched(true);
                if let Some(expires) = st.current.as_ref().and_then(|c| c.expires) {
                    self.stats
                        .expiry(expires.saturating_duration_since(now).as_secs_f64());
                }
                tracing::debug!(
                    route = self.stats.route(),
                    lifetime_s = lifetime.map(|l| l.as_secs()),
                    "token fetched"
                );
                refresh
            }
            Err(err) => {
                st.failures += 1;
                let delay = timing::backoff(st.failures, timing::jitter());
                let until = now + delay;
                st.phase = Phase::Backoff { until };
                let still_valid = st.current.as_ref().is_some_and(|c| c.is_valid(now));
                self.stats.fetched(false);
                tracing::warn!(
                    route = self.stats.route(),
                    cause = %err,
                    failures = st.failures,
                    retry_in_ms = delay.as_millis() as u64,
                    still_valid,
                    "token fetch failed"
                );
                st.last_failure = Some(Failure {
                    at: now,
                    cause: err.to_string(),
                });
                st.last_error = Some(err);
                Some(until)
            }
        };
        drop(st);
        self.fetched.send_modify(|n| *n = n.wrapping_add(1));
        if let (Some(at), true) = (next, schedule) {
            self.schedule(at);
        }
    }

    /// At `at`, refresh the token (or retry a failed fetch) if nobody has.
    fn schedule(self: &Arc<Self>, at: Instant) {
        let weak: Weak<Inner> = Arc::downgrade(self);
        self.background.spawn(async move {
            tokio::time::sleep_until(at).await;
            let Some(inner) = weak.upgrade() else { return };
            let now = Instant::now();
            let mut st = inner.lock();
            let due = st
                .current
                .as_ref()
                .is_none_or(|c| c.refresh_due(now) || !c.is_valid(now));
            if due && st.may_fetch(now) {
                inner.start_fetch(&mut st);
            }
        });
    }
}

/// Ends a fetch exactly once: with its result, or, if the task was
/// cancelled or panicked, as a failure, so that waiters never hang.
struct FetchGuard {
    inner: Option<Arc<Inner>>,
    started: Instant,
}

impl FetchGuard {
    fn finish(mut self, result: Result<Fetched, FetchError>) {
        if let Some(inner) = self.inner.take() {
            inner.finish(result, self.started, true);
        }
    }
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.finish(
                Err(FetchError::Internal("the token fetch was cancelled")),
                self.started,
                false,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::testing::{settle, value, FakeFetcher, Step};

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn cache(fetcher: &FakeFetcher, refresh_before: Duration) -> TokenCache {
        TokenCache::new(
            Box::new(fetcher.clone()),
            refresh_before,
            TokenStats::test(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn fifty_requests_on_a_cold_cache_share_one_fetch() {
        let fetcher = FakeFetcher::new();
        let gate = fetcher.gate();
        fetcher.push(Step::ok("t1", Some(S(60))));
        let cache = Arc::new(cache(&fetcher, S(10)));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let cache = cache.clone();
            tasks.push(tokio::spawn(async move { cache.token().await }));
        }
        settle().await;
        assert_eq!(fetcher.calls(), 1);
        gate.open();
        for t in tasks {
            assert_eq!(value(&t.await.unwrap().unwrap()), "t1");
        }
        assert_eq!(fetcher.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_valid_token_is_reused_and_refreshed_ahead_in_the_background() {
        let fetcher = FakeFetcher::new();
        fetcher.push(Step::ok("t1", Some(S(100))));
        fetcher.push(Step::ok("t2", Some(S(100))));
        let cache = cache(&fetcher, S(10));
        assert_eq!(value(&cache.token().await.unwrap()), "t1");
        tokio::time::advance(S(89)).await;
        assert_eq!(value(&cache.token().await.unwrap()), "t1");
        assert_eq!(fetcher.calls(), 1);
        // The refresh timer fires at 90 s, without any request.
        tokio::time::advance(S(2)).await;
        settle().await;
        assert_eq!(fetcher.calls(), 2);
        assert_eq!(value(&cache.token().await.unwrap()), "t2");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_do_not_wait_for_a_refresh() {
        let fetcher = FakeFetcher::new();
        fetcher.push(Step::ok("t1", Some(S(100))));
        let cache = cache(&fetcher, S(10));
        assert_eq!(value(&cache.token().await.unwrap()), "t1");
        // The refresh hangs: requests keep getting t1 until it expires.
        let gate = fetcher.gate();
        fetcher.push(Step::ok("t2", Some(S(100))));
        tokio::time::advance(S(95)).await;
        settle().await;
        assert_eq!(fetcher.calls(), 2);
        for _ in 0..10 {
            assert_eq!(value(&cache.token().await.unwrap()), "t1");
        }
        assert_eq!(fetcher.calls(), 2, "one refresh at a time");
        gate.open();
        settle().await;
        assert_eq!(value(&cache.token().await.unwrap()), "t2");
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_is_never_handed_out() {
        let fetcher = FakeFetcher::new();
        fetcher.push(Step::ok("t1", Some(S(10))));
        let cache = cache(&fetcher, S(2));
        assert_eq!(value(&cache.token().await.unwrap()), "t1");
        // Every refresh fails from now on.
        for _ in 0..100 {
            fetcher.push(Step::err(FetchError::Status {
                host: "h".into(),
                status: 500,
                oauth_error: None,
            }));
        }
        tokio::time::advance(S(9)).await;
        settle().await;
        assert_eq!(value(&cache.token().await.unwrap()), "t1", "still valid");
        assert!(cache.has_valid_token());
        tokio::time::advance(S(1)).await;
        settle().await;
        let err = cache.token().await.unwrap_err();
        match err {
            TokenError::Unavailable { cause, retry_after } => {
                assert_eq!(cause, "the token endpoint h answered HTTP 500");
                assert!(retry_after >= 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(!cache.has_valid_token());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_and_recover_by_themselves() {
        let fetcher = FakeFetcher::new();
        for _ in 0..5 {
            fetcher.push(Step::err(FetchError::Connect {
                host: "h".into(),
                cause: "connection refused".into(),
            }));
        }
        fetcher.push(Step::ok("t1", None));
        let cache = cache(&fetcher, S(10));
        // The first request waits for the first fetch and gets its error.
        let err = cache.token().await.unwrap_err();
        assert!(err.to_string().contains("connection refused"), "{err}");
        // A burst of requests during the backoff fetches nothing.
        for _ in 0..50 {
            assert!(cache.token().await.is_err());
        }
        assert_eq!(fetcher.calls(), 1);
        // Retries: 0.25-0.5 s, 0.5-1 s, 1-2 s, 2-4 s, 4-8 s (by jitter).
        let mut times = vec![Instant::now()];
        while fetcher.calls() < 6 {
            tokio::time::advance(Duration::from_millis(50)).await;
            settle().await;
            if fetcher.calls() > times.len() {
                times.push(Instant::now());
            }
        }
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        for (i, gap) in gaps.iter().enumerate() {
            let full = timing::BACKOFF_BASE * (1 << i);
            assert!(*gap >= full / 2, "retry {i} after {gap:?}");
            assert!(
                *gap <= full + Duration::from_millis(100),
                "retry {i} after {gap:?}"
            );
        }
        assert_eq!(value(&cache.token().await.unwrap()), "t1");
    }

    #[tokio::test(start_paused = true)]
    async fn reject_invalidates_only_the_current_generation() {
        let fetcher = FakeFetcher::new();
        fetcher.push(Step::ok("t1", None));
        fetcher.push(Step::ok("t2", None));
        fetcher.push(Step::ok("t3", None));
        let cache = cache(&fetcher, S(10));
        let t1 = cache.token().await.unwrap();
        cache.reject(&t1);
        let t2 = cache.token().await.unwrap();
        assert_eq!(value(&t2), "t2");
        // A late 401 for t1 does not throw t2 away.
        cache.reject(&t1);
        assert_eq!(value(&cache.token().await.unwrap()), "t2");
        assert_eq!(fetcher.calls(), 2);
        cache.reject(&t2);
        assert_eq!(value(&cache.token().await.unwrap()), "t3");
    }

    #[tokio::test(start_paused = true)]
    async fn many_rejections_of_one_token_cause_one_fetch() {
        let fetcher = FakeFetcher::new();
        fetcher.push(Step::ok("t1", None));
        fetcher.push(Step::ok("t2", None));
        let cache = Arc::new(cache(&fetcher, S(10)));
        let t1 = cache.token().await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (cache, t1) = (cache.clone(), t1.clone());
            tasks.push(tokio::spawn(async move {
                cache.reject(&t1);
                cache.token().await
            }));
        }
        for t in tasks {
            assert_eq!(value(&t.await.unwrap().unwrap()), "t2");
        }
        assert_eq!(fetcher.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn warm_up_fetches_before_the_first_request() {
        let fetcher = FakeFetcher::new();
        fetcher.push(Step::ok("t1", Some(S(60))));
        let cache = cache(&fetcher, S(10));
        assert!(!cache.has_valid_token());
        cache.warm_up();
        cache.warm_up();
        settle().await;
        assert_eq!(fetcher.calls(), 1);
        assert!(cache.has_valid_token());
        assert_eq!(value(&cache.token().await.unwrap()), "t1");
        assert_eq!(fetcher.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_cache_stops_its_timers() {
        let fetcher = FakeFetcher::new();
        fetcher.push(Step::ok("t1", Some(S(10))));
        fetcher.push(Step::ok("t2", Some(S(10))));
        let cache = cache(&fetcher, S(5));
        cache.token().await.unwrap();
        drop(cache);
        tokio::time::advance(S(60)).await;
        settle().await;
        assert_eq!(fetcher.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_does_not_cancel_the_fetch() {
        let fetcher = FakeFetcher::new();
        let gate = fetcher.gate();
        fetcher.push(Step::ok("t1", None));
        let cache = Arc::new(cache(&fetcher, S(10)));
        let c = cache.clone();
        let waiter = tokio::spawn(async move { c.token().await });
        settle().await;
        waiter.abort();
        gate.open();
        settle().await;
        assert!(cache.has_valid_token());
        assert_eq!(value(&cache.token().await.unwrap()), "t1");
        assert_eq!(fetcher.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn metrics_count_fetches_hits_and_waits() {
        let fetcher = FakeFetcher::new();
        fetcher.push(Step::ok("t1", Some(S(60))));
        let stats = TokenStats::test();
        let cache = TokenCache::new(Box::new(fetcher.clone()), S(10), stats.clone());
        cache.token().await.unwrap();
        cache.token().await.unwrap();
        cache.token().await.unwrap();
        let text = stats.encode();
        assert!(
            text.contains("sidekey_token_fetches_total{route=\"test\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sidekey_token_cache_hits_total{route=\"test\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sidekey_token_wait_seconds_count{route=\"test\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sidekey_token_expiry_seconds{route=\"test\"} 60"),
            "{text}"
        );
        assert!(!text.contains("t1"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_snapshot_follows_missing_refreshing_valid_failing_and_back() {
        let fetcher = FakeFetcher::new();
        let cache = cache(&fetcher, S(10));
        let snap = cache.snapshot();
        assert_eq!(snap.state, TokenState::Missing);
        assert!(!snap.usable);
        // The first fetch, held: refreshing, not yet usable.
        let gate = fetcher.gate();
        fetcher.push(Step::ok("t1", Some(S(100))));
        cache.warm_up();
        settle().await;
        let snap = cache.snapshot();
        assert_eq!(snap.state, TokenState::Refreshing);
        assert!(!snap.usable);
        gate.open();
        settle().await;
        let fetched = Instant::now();
        let snap = cache.snapshot();
        assert_eq!(snap.state, TokenState::Valid);
        assert!(snap.usable);
        assert_eq!(snap.fetched_at, Some(fetched));
        assert_eq!(snap.expires_at, Some(fetched + S(100)));
        assert_eq!(snap.next_refresh_at, Some(fetched + S(90)));
        assert_eq!(snap.consecutive_failures, 0);
        assert_eq!(snap.last_failure, None);
        // The refresh at 90 s fails: failing, the old token still usable,
        // the cause as a 503 would name it, the retry time next.
        fetcher.push(Step::err(FetchError::Status {
            host: "auth.example".into(),
            status: 500,
            oauth_error: None,
        }));
        tokio::time::advance(S(91)).await;
        settle().await;
        let snap = cache.snapshot();
        assert_eq!(snap.state, TokenState::Failing);
        assert!(snap.usable, "the old token is valid until 100 s");
        assert_eq!(snap.consecutive_failures, 1);
        let failure = snap.last_failure.clone().expect("a failure");
        assert_eq!(
            failure.cause,
            "the token endpoint auth.example answered HTTP 500"
        );
        assert!(snap.next_refresh_at.is_some_and(|at| at > Instant::now()));
        // Past expiry: failing and no longer usable.
        for _ in 0..10 {
            fetcher.push(Step::err(FetchError::Status {
                host: "auth.example".into(),
                status: 500,
                oauth_error: None,
            }));
        }
        tokio::time::advance(S(10)).await;
        settle().await;
        let snap = cache.snapshot();
        assert_eq!(snap.state, TokenState::Failing);
        assert!(!snap.usable);
        assert_eq!(snap.expires_at, None);
        match cache.token().await.unwrap_err() {
            TokenError::Unavailable { cause, .. } => {
                assert_eq!(cause, snap.last_failure.expect("a failure").cause)
            }
            other => panic!("{other:?}"),
        }
        // Recovery: valid again; the last failure is kept, its count reset.
        fetcher.clear();
        fetcher.push(Step::ok("t2", None));
        tokio::time::advance(S(60)).await;
        settle().await;
        let snap = cache.snapshot();
        assert_eq!(snap.state, TokenState::Valid);
        assert_eq!(snap.consecutive_failures, 0);
        assert_eq!(snap.expires_at, None, "no lifetime given");
        assert_eq!(snap.next_refresh_at, None);
        assert!(snap.last_failure.is_some());
        // A 401 throws the token away: missing until the next fetch.
        let t2 = cache.token().await.unwrap();
        cache.reject(&t2);
        assert_eq!(cache.snapshot().state, TokenState::Missing);
    }
}
