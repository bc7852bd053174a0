//! What a token source can tell about itself, for the status views: a
//! read-only [`TokenSnapshot`] taken from the state the source already
//! keeps (under its own lock, off the request path). Never the token.

use tokio::time::Instant;

/// The state of a route's token, as the status views name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// A valid token is at hand and nothing is wrong.
    Valid,
    /// A fetch is in flight (the first one, or a refresh ahead of expiry)
    /// and none has failed since the last success.
    Refreshing,
    /// The last fetch (or mint, or read) failed; a still-valid older token
    /// may still be in use, see [`TokenSnapshot::usable`].
    Failing,
    /// No token, and nothing has failed: not fetched yet, expired while
    /// idle, or rejected by the upstream and not yet replaced.
    Missing,
    /// Only the operator can help: run `sidekey authorize ROUTE`.
    NeedsAuthorize,
}

impl TokenState {
    /// The name used in `/status`, on the page and by `sidekey status`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Valid => "valid",
            TokenState::Refreshing => "refreshing",
            TokenState::Failing => "failing",
            TokenState::Missing => "missing",
            TokenState::NeedsAuthorize => "needs_authorize",
        }
    }
}

/// The last failure of a source: when, and the cause as a client's 503
/// names it (built from error kinds, hosts and paths; never a secret or a
/// response body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub at: Instant,
    pub cause: String,
}

/// How full a one-time pool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFill {
    /// Tokens minted ahead and not yet handed out (stale ones included
    /// until a request throws them away).
    pub ready: usize,
    /// Background mints in flight.
    pub minting: usize,
    /// `pool_size`.
    pub size: usize,
}

/// A token source's state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSnapshot {
    pub state: TokenState,
    /// Whether a request would get a token now (what `/readyz` asks).
    pub usable: bool,
    /// When the current token was obtained.
    pub fetched_at: Option<Instant>,
    /// When the current token expires (`None`: no known expiry).
    pub expires_at: Option<Instant>,
    /// When the next fetch is due: the refresh ahead of expiry, or the
    /// retry after a failure.
    pub next_refresh_at: Option<Instant>,
    pub last_failure: Option<Failure>,
    pub consecutive_failures: u32,
    /// One-time sources with a pool.
    pub pool: Option<PoolFill>,
}

impl TokenSnapshot {
    /// A snapshot that knows only `state` and `usable`.
    pub fn bare(state: TokenState, usable: bool) -> TokenSnapshot {
        TokenSnapshot {
            state,
            usable,
            fetched_at: None,
            expires_at: None,
            next_refresh_at: None,
            last_failure: None,
            consecutive_failures: 0,
            pool: None,
        }
    }
}
