//! Building a [`Runtime`] from a config: credentials, token sources and
//! the upstream connector, keeping on reload what did not change.

use std::sync::Arc;

use thiserror::Error;

use crate::client::connector::{Connector, Identity, UpstreamError};
use crate::client::pool::Upstreams;
use crate::config::{Config, RouteConfig};
use crate::credential::Credential;
use crate::metrics::Metrics;
use crate::proxy::Runtime;
use crate::route::{Route, RouteTable};
use crate::tls::LeafCache;

/// At most this many hosts' leaf certificates are kept (a wildcard route
/// may see many hosts); the least recently used is dropped first.
const LEAF_CACHE_CAPACITY: usize = 1024;
use crate::token::shared::SharedCache;
use crate::token::{BuildError, TokenContext, TokenSource};

/// Why a config could not be turned into a running proxy.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("{}", .0.iter().map(|(route, e)| format!("route \"{route}\": {e}")).collect::<Vec<_>>().join("; "))]
    Credentials(Vec<(String, BuildError)>),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("proxy.shared_cache: {0}")]
    SharedCache(#[from] crate::token::shared::SetupError),
}

impl Runtime {
    /// Builds credentials, token sources and the upstream connector.
    /// With `previous` (a reload), keeps what the new config leaves as it
    /// was: its upstream connections when `[proxy]` connects the same way,
    /// and then the token source (cached token, minted pool) of each route
    /// whose name and token settings are unchanged.
    pub fn build(
        config: &Config,
        metrics: &Arc<Metrics>,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, RuntimeError> {
        let identities = config.client_identities();
        let kept = previous.filter(|p| {
            p.settings.connects_like(&config.proxy)
                && p.upstreams.connector().identities() == identities.as_slice()
        });
        let upstreams = match kept {
            Some(previous) => previous.upstreams.clone(),
            // One for proxied requests and token fetches: they share the
            // per-thread pools (a pool serves one config's `Upstreams` at
            // a time).
            None => Arc::new(Upstreams::new(
                Connector::new(&config.proxy, identities)?,
                config.proxy.pool_idle_timeout,
                config.proxy.pool_max_idle_per_thread(),
            )),
        };
        // The shared cache (its Redis connection) is kept while its
        // settings are the same; token sources only with it.
        let shared_cache = match (&config.proxy.shared_cache, previous) {
            (None, _) => None,
            (Some(s), Some(p)) if p.shared_cache.as_ref().is_some_and(|c| c.serves(s)) => {
                p.shared_cache.clone()
            }
            (Some(s), _) => Some(Arc::new(SharedCache::new(
                s,
                &config.proxy.extra_roots,
                metrics,
            )?)),
        };
        let same_sharing = match (previous.map(|p| &p.shared_cache), &shared_cache) {
            (Some(Some(a)), Some(b)) => Arc::ptr_eq(a, b),
            (Some(None), None) => true,
            _ => false,
        };
        let kept_sources_ok = kept.filter(|_| same_sharing);
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut errors = Vec::new();
        let mut kept_sources = 0;
        for route in &config.routes {
            let ctx = TokenContext {
                route: route.name.clone(),
                upstreams: upstreams.clone(),
                metrics: metrics.clone(),
                shared: shared_cache.clone(),
            };
            // Token sources fetch through `upstreams` (and share through
            // the shared cache): one is kept only with them.
            let source = kept_sources_ok.and_then(|previous| previous.token_source_like(route));
            kept_sources += usize::from(source.is_some());
            // Built from this config's identities: always found.
            let identity = upstreams
                .identity(route.tls.as_ref().map(|t| &*t.identity))
                .unwrap_or(Identity::NONE);
            match Credential::build(&route.auth, &ctx, source) {
                Ok(credential) => routes.push(
                    Route::new(route.clone(), credential)
                        .with_identity(identity)
                        .with_metrics(metrics),
                ),
                Err(e) => errors.push((route.name.clone(), e)),
            }
        }
        if !errors.is_empty() {
            return Err(RuntimeError::Credentials(errors));
        }
        if previous.is_some() {
            tracing::info!(
                upstream_connections = if kept.is_some() { "kept" } else { "new" },
                token_sources_kept = kept_sources,
                "what the reload kept of the running config"
            );
        }
        // The leaves of the running config are kept while it intercepts
        // with the same CA and leaf lifetime.
        let leaves = match (&config.proxy.intercept, previous) {
            (None, _) => None,
            (Some(_), Some(p)) if p.settings.intercepts_like(&config.proxy) => p.leaves.clone(),
            (Some(i), _) => Some(Arc::new(LeafCache::new(
                i.ca.clone(),
                i.leaf_lifetime,
                LEAF_CACHE_CAPACITY,
            ))),
        };
        Ok(Runtime {
            leaves,
            settings: config.proxy.clone(),
            table: RouteTable::new(routes),
            upstreams,
            shared_cache,
        })
    }

    /// The token source of this runtime's route named like `route`, if
    /// its token settings are the same.
    fn token_source_like(&self, route: &RouteConfig) -> Option<TokenSource> {
        let token = route.auth.token()?;
        let old = self.table.by_name(&route.name)?;
        if old.config.auth.token() != Some(token) {
            return None;
        }
        old.credential.token_source().cloned()
    }

    /// Starts fetching tokens (and filling one-time pools, reading token
    /// files) for every route, so the first request does not wait. Call
    /// inside the Tokio runtime, once the runtime is about to serve;
    /// [`Runtime::build`] itself does no I/O.
    pub(crate) fn warm_up(&self) {
        for route in self.table.routes() {
            if let Some(source) = route.credential.token_source() {
                source.warm_up();
            }
        }
    }

    /// True when every route that uses a token source has a valid token.
    pub(crate) fn tokens_ready(&self) -> bool {
        self.table.routes().iter().all(|r| {
            r.credential
                .token_source()
                .is_none_or(|s| s.has_valid_token())
        })
    }
}
