//! Token sources: where `header` and `query` credentials get their token.
//!
//! A route holds a [`TokenSource`]. A static token is just a value; every
//! other source is a [`TokenProvider`] behind an `Arc`, which may fetch,
//! cache and refresh tokens (see the submodules).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use secrecy::SecretString;
use thiserror::Error;

use crate::config::TokenConfig;
use crate::metrics::Metrics;
use crate::proxy::upstream::UpstreamClient;

/// What a token source needs from the rest of sidekey.
#[derive(Clone)]
pub struct TokenContext {
    /// The route the source belongs to (for metrics, logs and errors).
    pub route: String,
    /// The upstream client (same TLS roots and `connect_to` as proxied
    /// requests).
    pub client: UpstreamClient,
    pub metrics: std::sync::Arc<Metrics>,
}

/// A token to inject. Cloning is cheap. `generation` identifies which fetch
/// produced it, so that a 401 invalidates that token and not a newer one.
#[derive(Clone, Debug)]
pub struct Token {
    pub value: Arc<SecretString>,
    pub generation: u64,
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
    #[error("token source `{0}` is not supported yet")]
    NotSupported(&'static str),
    #[error("{0}")]
    Invalid(String),
}

pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<Token, TokenError>> + Send + 'a>>;

/// A source of tokens that are fetched, minted or read at run time.
pub trait TokenProvider: Send + Sync + 'static {
    /// A valid token; waits only when none is cached.
    fn token(&self) -> TokenFuture<'_>;
    /// The upstream answered 401 to a request that carried `token`.
    fn reject(&self, token: &Token);
    /// Whether a 401 may be retried once with a fresh token from this source.
    fn retry_on_reject(&self) -> bool;
    /// Whether a valid token is at hand (for `/readyz`).
    fn has_valid_token(&self) -> bool;
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
    pub fn fixed(value: SecretString) -> TokenSource {
        TokenSource::Static(Token {
            value: Arc::new(value),
            generation: 0,
        })
    }

    /// Builds the source for `config`.
    pub fn build(config: &TokenConfig, _ctx: &TokenContext) -> Result<TokenSource, BuildError> {
        match config {
            TokenConfig::Static(value) => Ok(TokenSource::fixed(value.clone())),
            other => Err(BuildError::NotSupported(other.source())),
        }
    }

    /// A token for one request.
    pub async fn token(&self) -> Result<Token, TokenError> {
        match self {
            TokenSource::Static(token) => Ok(token.clone()),
            TokenSource::Provider(p) => p.token().await,
        }
    }

    /// See [`TokenProvider::reject`]; returns whether a retry makes sense.
    pub fn reject(&self, token: &Token) -> bool {
        match self {
            TokenSource::Static(_) => false,
            TokenSource::Provider(p) => {
                p.reject(token);
                p.retry_on_reject()
            }
        }
    }

    /// Whether a retry after a 401 can get a different token.
    pub fn retries(&self) -> bool {
        match self {
            TokenSource::Static(_) => false,
            TokenSource::Provider(p) => p.retry_on_reject(),
        }
    }

    pub fn has_valid_token(&self) -> bool {
        match self {
            TokenSource::Static(_) => true,
            TokenSource::Provider(p) => p.has_valid_token(),
        }
    }
}
