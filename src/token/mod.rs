//! Token sources: where `header` and `query` credentials get their token.
//!
//! A route holds a [`TokenSource`]. A static token is just a value; every
//! other source is a [`TokenProvider`] behind an `Arc`, which may fetch,
//! cache and refresh tokens:
//!
//! | module | holds |
//! | --- | --- |
//! | [`endpoint`] | [`endpoint::TokenFetcher`], the one trait at the I/O edge, and the HTTP fetcher of `endpoint` sources |
//! | [`cache`] | a cached token: single flight, refresh-ahead, backoff |
//! | [`timing`] | when to refresh and how long to back off (pure functions) |
//! | [`one_time`] | `one_time = true`: a fresh token per request, optionally minted ahead into a pool |
//! | [`file`](mod@file) | `source = "file"`, re-read when the file changes |
//! | [`exec`] | `source = "exec"`: a token printed by a command, cached like an endpoint's |
//! | [`code`] | `oauth2_code`: the token `sidekey authorize` stored, renewed with its refresh token |
//! | [`oauth2`] | the OAuth2 requests: `oauth2_client_credentials`, the code exchange of `authorize` |
//! | [`store`] | the token store file: atomic 0600 writes, reads |
//! | [`shared`] | `[proxy.shared_cache]`: cached tokens shared by replicas through Redis, sealed with AES-256-GCM |
//! | [`snapshot`] | what a source tells the status views about itself (never the token) |
//!
//! Building a source does no I/O and spawns nothing (`sidekey check` builds
//! them outside any runtime); [`TokenSource::warm_up`], called once the
//! proxy runs, starts the first fetches.

pub mod cache;
pub(crate) mod code;
pub mod endpoint;
pub(crate) mod exec;
pub(crate) mod file;
pub(crate) mod oauth2;
pub(crate) mod one_time;
pub mod shared;
pub mod snapshot;
pub(crate) mod store;
#[cfg(test)]
mod testing;
pub(crate) mod timing;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use thiserror::Error;

use crate::client::pool::Upstreams;
use crate::config::TokenConfig;
use crate::metrics::{Metrics, OutcomeLabels, RouteLabels, RouteName};
use snapshot::{TokenSnapshot, TokenState};

/// What a token source needs from the rest of sidekey.
#[derive(Clone)]
pub(crate) struct TokenContext {
    /// The route the source belongs to (for metrics, logs and errors).
    pub(crate) route: String,
    /// Where token requests go: the same connector (TLS roots,
    /// `connect_to`) and per-thread connection pools as proxied requests.
    pub(crate) upstreams: std::sync::Arc<Upstreams>,
    pub(crate) metrics: std::sync::Arc<Metrics>,
    /// `[proxy.shared_cache]`, when configured.
    pub(crate) shared: Option<Arc<shared::SharedCache>>,
}

impl TokenContext {
    /// `fetcher`, shared through Redis when `[proxy.shared_cache]` is set
    /// (see [`shared`]).
    fn share(
        &self,
        fetcher: Box<dyn endpoint::TokenFetcher>,
        config: &TokenConfig,
        refresh_before: Duration,
        timeout: Duration,
    ) -> Box<dyn endpoint::TokenFetcher> {
        let Some(cache) = &self.shared else {
            return fetcher;
        };
        match cache.key(&self.route, config) {
            Some(key) => Box::new(shared::SharedFetcher::new(
                fetcher,
                cache.clone(),
                key,
                &self.route,
                refresh_before,
                timeout,
            )),
            None => fetcher,
        }
    }
}

/// Where a token source's background work (fetches, refresh timers,
/// mints ahead) runs: the Tokio runtime that built the source. In the
/// proxy that is the control runtime, so the worker threads serving
/// requests are neither woken nor held up by it; a request that has to
/// wait for a token still does its own waiting.
#[derive(Clone, Debug)]
pub(crate) struct Background(Option<tokio::runtime::Handle>);

impl Background {
    /// The current runtime, if any.
    pub(crate) fn here() -> Background {
        Background(tokio::runtime::Handle::try_current().ok())
    }

    /// Spawns `task` there; outside any runtime (no handle was captured),
    /// on the current one, which must then exist.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match &self.0 {
            Some(runtime) => drop(runtime.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }
}

/// A token to inject. Cloning is cheap. `generation` identifies which fetch
/// produced it, so that a 401 invalidates that token and not a newer one.
#[derive(Clone, Debug)]
pub struct Token {
    pub(crate) value: Arc<SecretString>,
    pub(crate) generation: u64,
}

/// Why no token could be had for a request.
#[derive(Debug, Error, Clone)]
pub enum TokenError {
    /// The source cannot give a token now; the client may retry later.
    #[error("no valid token: {cause}")]
    Unavailable {
        cause: String,
        /// Suggested `Retry-After`, in seconds.
        retry_after: u64,
    },
    /// The route is not usable until the operator acts (e.g. `authorize`).
    #[error("{0}")]
    NotConfigured(String),
}

/// Why a token source could not be built from its config.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("{0}")]
    Invalid(String),
}

pub(crate) type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Token, TokenError>> + Send + 'a>>;

/// A source of tokens that are fetched, minted or read at run time.
pub trait TokenProvider: Send + Sync + 'static {
    /// A valid token; waits only when none is cached.
    fn token(&self) -> TokenFuture<'_>;
    /// A token at hand without waiting or locking, when the source has one
    /// that needs no decision; `None` means: call [`TokenProvider::token`].
    /// Spares the common request the boxed future.
    fn cached(&self) -> Option<Token> {
        None
    }
    /// The upstream answered 401 to a request that carried `token`.
    fn reject(&self, token: &Token);
    /// Whether a 401 may be retried once with a fresh token from this source.
    fn retry_on_reject(&self) -> bool;
    /// Whether a valid token is at hand (for `/readyz`).
    fn has_valid_token(&self) -> bool;
    /// Called once the proxy runs (inside the Tokio runtime): start the
    /// first fetch, fill a pool, read a file, so the first request does
    /// not wait.
    fn warm_up(&self) {}
    /// The source's state for the status views. Read from what the source
    /// keeps anyway; may take its lock (never called per request).
    fn snapshot(&self) -> TokenSnapshot {
        let usable = self.has_valid_token();
        let state = if usable {
            TokenState::Valid
        } else {
            TokenState::Missing
        };
        TokenSnapshot::bare(state, usable)
    }
}

/// The token source of one route.
#[derive(Clone)]
pub enum TokenSource {
    Static(Token),
    Provider(Arc<dyn TokenProvider>),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Static(_) => f.write_str("TokenSource::Static(..)"),
            TokenSource::Provider(_) => f.write_str("TokenSource::Provider(..)"),
        }
    }
}

impl TokenSource {
    /// A static token.
    pub(crate) fn fixed(value: SecretString) -> TokenSource {
        TokenSource::Static(Token {
            value: Arc::new(value),
            generation: 0,
        })
    }

    /// Builds the source for `config`. Does no I/O and spawns nothing.
    pub(crate) fn build(
        config: &TokenConfig,
        ctx: &TokenContext,
    ) -> Result<TokenSource, BuildError> {
        let stats = TokenStats::new(&ctx.route, ctx.metrics.clone());
        let provider: Arc<dyn TokenProvider> = match config {
            TokenConfig::Static(value) => return Ok(TokenSource::fixed(value.clone())),
            TokenConfig::File(path) => Arc::new(file::FileSource::new(path.clone())),
            TokenConfig::Endpoint(endpoint) => {
                let fetcher = Box::new(endpoint::HttpFetcher::endpoint(
                    ctx.upstreams.clone(),
                    endpoint,
                )?);
                if endpoint.one_time {
                    Arc::new(one_time::OneTimeSource::new(
                        fetcher,
                        endpoint.pool_size,
                        endpoint.pool_max_age,
                        stats,
                    ))
                } else {
                    let fetcher =
                        ctx.share(fetcher, config, endpoint.refresh_before, endpoint.timeout);
                    Arc::new(cache::TokenCache::new(
                        fetcher,
                        endpoint.refresh_before,
                        stats,
                    ))
                }
            }
            TokenConfig::OAuth2Code(code) => {
                let shared = ctx.shared.as_ref().and_then(|cache| {
                    Some(code::SharedRecord {
                        key: format!("{}:refresh", cache.key(&ctx.route, config)?),
                        cache: cache.clone(),
                    })
                });
                let needs_authorize = ctx
                    .metrics
                    .token_needs_authorize
                    .get_or_create(&RouteLabels {
                        route: RouteName::new(&ctx.route),
                    })
                    .clone();
                let fetcher = Box::new(code::CodeFetcher::new(
                    &ctx.route,
                    code,
                    ctx.upstreams.clone(),
                    shared,
                    needs_authorize,
                ));
                let fetcher =
                    ctx.share(fetcher, config, code::REFRESH_BEFORE, code::REFRESH_TIMEOUT);
                Arc::new(cache::TokenCache::new(fetcher, code::REFRESH_BEFORE, stats))
            }
            TokenConfig::OAuth2ClientCredentials(cc) => {
                let fetcher = oauth2::client_credentials_fetcher(ctx.upstreams.clone(), cc)?;
                let fetcher = ctx.share(Box::new(fetcher), config, cc.refresh_before, cc.timeout);
                Arc::new(cache::TokenCache::new(fetcher, cc.refresh_before, stats))
            }
            TokenConfig::Exec(exec) => Arc::new(cache::TokenCache::new(
                Box::new(exec::ExecFetcher::new(exec)),
                exec.refresh_before,
                stats,
            )),
        };
        Ok(TokenSource::Provider(provider))
    }

    /// See [`TokenProvider::warm_up`].
    pub(crate) fn warm_up(&self) {
        if let TokenSource::Provider(p) = self {
            p.warm_up();
        }
    }

    /// A token for one request.
    pub(crate) async fn token(&self) -> Result<Token, TokenError> {
        match self {
            TokenSource::Static(token) => Ok(token.clone()),
            TokenSource::Provider(p) => match p.cached() {
                Some(token) => Ok(token),
                None => p.token().await,
            },
        }
    }

    /// See [`TokenProvider::reject`]; returns whether a retry makes sense.
    pub(crate) fn reject(&self, token: &Token) -> bool {
        match self {
            TokenSource::Static(_) => false,
            TokenSource::Provider(p) => {
                p.reject(token);
                p.retry_on_reject()
            }
        }
    }

    /// Whether a retry after a 401 can get a different token.
    pub(crate) fn retries(&self) -> bool {
        match self {
            TokenSource::Static(_) => false,
            TokenSource::Provider(p) => p.retry_on_reject(),
        }
    }

    pub(crate) fn has_valid_token(&self) -> bool {
        match self {
            TokenSource::Static(_) => true,
            TokenSource::Provider(p) => p.has_valid_token(),
        }
    }

    /// See [`TokenProvider::snapshot`]; a static token is always valid.
    pub fn snapshot(&self) -> TokenSnapshot {
        match self {
            TokenSource::Static(_) => TokenSnapshot::bare(TokenState::Valid, true),
            TokenSource::Provider(p) => p.snapshot(),
        }
    }
}

// === impl TokenProvider ===

impl TokenProvider for cache::TokenCache {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(cache::TokenCache::token(self))
    }
    fn cached(&self) -> Option<Token> {
        cache::TokenCache::cached(self)
    }
    fn reject(&self, token: &Token) {
        cache::TokenCache::reject(self, token)
    }
    fn retry_on_reject(&self) -> bool {
        true
    }
    fn has_valid_token(&self) -> bool {
        cache::TokenCache::has_valid_token(self)
    }
    fn warm_up(&self) {
        cache::TokenCache::warm_up(self)
    }
    fn snapshot(&self) -> TokenSnapshot {
        cache::TokenCache::snapshot(self)
    }
}

impl TokenProvider for one_time::OneTimeSource {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(one_time::OneTimeSource::token(self))
    }
    fn reject(&self, token: &Token) {
        one_time::OneTimeSource::reject(self, token)
    }
    fn retry_on_reject(&self) -> bool {
        true
    }
    fn has_valid_token(&self) -> bool {
        one_time::OneTimeSource::has_valid_token(self)
    }
    fn warm_up(&self) {
        one_time::OneTimeSource::warm_up(self)
    }
    fn snapshot(&self) -> TokenSnapshot {
        one_time::OneTimeSource::snapshot(self)
    }
}

/// A file gives the same token again until it changes: a 401 is not
/// retried, but makes the next request look at the file.
impl TokenProvider for file::FileSource {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(file::FileSource::token(self))
    }
    fn reject(&self, _token: &Token) {
        file::FileSource::reject(self)
    }
    fn retry_on_reject(&self) -> bool {
        false
    }
    fn has_valid_token(&self) -> bool {
        file::FileSource::has_valid_token(self)
    }
    fn warm_up(&self) {
        file::FileSource::warm_up(self)
    }
    fn snapshot(&self) -> TokenSnapshot {
        file::FileSource::snapshot(self)
    }
}

// === impl TokenStats ===

/// The token metrics of one route. The per-request series are looked up
/// once here, so counting a cache hit is one atomic add (no label hashing
/// under the family's lock).
#[derive(Clone)]
pub struct TokenStats {
    route: RouteName,
    metrics: Arc<Metrics>,
    hits: prometheus_client::metrics::counter::Counter,
    wait: prometheus_client::metrics::histogram::Histogram,
    expiry: prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl TokenStats {
    pub fn new(route: &str, metrics: Arc<Metrics>) -> TokenStats {
        let route = RouteName::new(route);
        let labels = RouteLabels {
            route: route.clone(),
        };
        let hits = metrics.token_cache_hits.get_or_create(&labels).clone();
        let wait = metrics.token_wait.get_or_create(&labels).clone();
        let expiry = metrics.token_expiry_seconds.get_or_create(&labels).clone();
        TokenStats {
            route,
            metrics,
            hits,
            wait,
            expiry,
        }
    }

    pub(crate) fn route(&self) -> &str {
        self.route.as_str()
    }

    /// One fetch or mint ended.
    pub(crate) fn fetched(&self, ok: bool) {
        self.metrics
            .token_fetches
            .get_or_create(&OutcomeLabels {
                route: self.route.clone(),
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// A request was served without waiting (a cached or pooled token).
    pub(crate) fn hit(&self) {
        self.hits.inc();
    }

    /// A request waited `d` for a token.
    pub(crate) fn waited(&self, d: Duration) {
        self.wait.observe(d.as_secs_f64());
    }

    /// Seconds until the cached token expires, as of now.
    pub(crate) fn expiry(&self, secs: f64) {
        self.expiry.set(secs);
    }

    #[cfg(test)]
    pub(crate) fn test() -> TokenStats {
        TokenStats::new("test", Arc::new(Metrics::new()))
    }

    #[cfg(test)]
    pub(crate) fn encode(&self) -> String {
        self.metrics.encode()
    }
}
