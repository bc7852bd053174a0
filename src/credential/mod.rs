//! Credential injectors: what a route does to each forwarded request
//! (`basic`, `header`, `query`, `signed_url`, `aws_sigv4`).
//!
//! A route's [`Credential`] is built once from its validated config (keys
//! decoded, header values precomputed) and then applied per request to the
//! upstream [`Target`] and headers. Applying first removes any copy of the
//! injected header or parameters that the client sent, so a client value is
//! replaced, never duplicated or forwarded.

mod basic;
mod header;
mod hex;
mod query;
mod signed_url;
mod sigv4;

use crate::wire::headers::ForwardHeaders;
use thiserror::Error;

pub use basic::Basic;
pub use header::HeaderInjector;
pub(crate) use query::QueryInjector;
pub use signed_url::{sign, sign_url, SignError, SignedUrl};
pub use sigv4::SigV4;

use crate::config::AuthConfig;
use crate::target::Target;
use crate::token::{BuildError, Token, TokenContext, TokenError, TokenSource};

/// Why a credential could not be applied to a request.
#[derive(Debug, Error)]
pub enum CredentialError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the token source returned a value that cannot be sent in a header")]
    InvalidToken,
    /// A SigV4 header could not be formed (e.g. a host that is not a
    /// header value).
    #[error("the request cannot be signed")]
    Unsignable,
}

/// What applying a credential used, for 401 handling.
#[derive(Debug, Default)]
pub struct Applied {
    /// The token injected, when it came from a token source.
    pub(crate) token: Option<Token>,
}

/// A route's ready-to-apply credential.
#[derive(Debug)]
pub enum Credential {
    None,
    Basic(Basic),
    Header(HeaderInjector),
    Query(QueryInjector),
    SignedUrl(SignedUrl),
    AwsSigV4(SigV4),
}

impl Credential {
    /// Builds the credential of a route from its config. A route with a
    /// token source takes `kept` when given (a reload keeping an unchanged
    /// route's tokens) and builds a new source otherwise.
    pub(crate) fn build(
        auth: &AuthConfig,
        ctx: &TokenContext,
        kept: Option<TokenSource>,
    ) -> Result<Credential, BuildError> {
        let source = |token| kept.map_or_else(|| TokenSource::build(token, ctx), Ok);
        Ok(match auth {
            AuthConfig::None => Credential::None,
            AuthConfig::Basic { username, password } => {
                Credential::Basic(Basic::new(username, password)?)
            }
            AuthConfig::Header {
                name,
                template,
                token,
            } => Credential::Header(HeaderInjector::new(
                name.clone(),
                template.as_deref(),
                source(token)?,
            )?),
            AuthConfig::Query { param, token } => {
                Credential::Query(QueryInjector::new(param.clone(), source(token)?))
            }
            AuthConfig::SignedUrl(config) => Credential::SignedUrl(SignedUrl::new(config)),
            AuthConfig::AwsSigV4(config) => Credential::AwsSigV4(SigV4::new(config)?),
        })
    }

    /// Injects the credential into the request about to be forwarded.
    /// `body` is the whole request body when [`Credential::signed_body_limit`]
    /// asked for it to be read first.
    pub(crate) async fn apply(
        &self,
        method: &http::Method,
        target: &mut Target,
        headers: &mut ForwardHeaders,
        body: Option<&[u8]>,
    ) -> Result<Applied, CredentialError> {
        match self {
            Credential::None => Ok(Applied::default()),
            Credential::Basic(b) => {
                b.apply(headers);
                Ok(Applied::default())
            }
            Credential::Header(h) => h.apply(headers).await,
            Credential::Query(q) => q.apply(target).await,
            Credential::SignedUrl(s) => {
                s.apply(target, signed_url::unix_now());
                Ok(Applied::default())
            }
            Credential::AwsSigV4(s) => {
                s.apply(method, target, headers, body, signed_url::unix_now())?;
                Ok(Applied::default())
            }
        }
    }

    /// The most request body bytes to read before applying the credential,
    /// which signs them; `None` when the body streams.
    pub(crate) fn signed_body_limit(&self) -> Option<usize> {
        match self {
            Credential::AwsSigV4(s) => s.signed_body_limit(),
            _ => None,
        }
    }

    /// The query parameters this credential injects: they are removed from
    /// `Location`, `Content-Location` and `Link` response headers.
    pub(crate) fn injected_params(&self) -> &[String] {
        match self {
            Credential::Query(q) => std::slice::from_ref(q.param()),
            Credential::SignedUrl(s) => s.params(),
            _ => &[],
        }
    }

    /// The header fields this credential sets: a client field whose name
    /// folds to one (`X_Api_Key` for `X-Api-Key`) is never forwarded.
    pub(crate) fn header_names(&self) -> Vec<&str> {
        match self {
            Credential::Basic(_) => vec!["authorization"],
            Credential::Header(h) => vec![h.name().as_str()],
            Credential::AwsSigV4(_) => vec![
                "authorization",
                "x-amz-date",
                "x-amz-content-sha256",
                "x-amz-security-token",
            ],
            Credential::None | Credential::Query(_) | Credential::SignedUrl(_) => Vec::new(),
        }
    }

    /// The query parameters whose values are secrets (a token, a
    /// signature): their values are scrubbed wherever they appear in
    /// `Location`-like response headers, encoded or not.
    pub(crate) fn secret_params(&self) -> &[String] {
        match self {
            Credential::Query(q) => std::slice::from_ref(q.param()),
            Credential::SignedUrl(s) => s.signature_param(),
            _ => &[],
        }
    }

    /// Whether responses are checked for this credential echoed in a URL
    /// (see `proxy::scrub`): the kinds that put a secret in the URL, and
    /// `header` tokens.
    pub(crate) fn scrubs_responses(&self) -> bool {
        matches!(
            self,
            Credential::Query(_) | Credential::SignedUrl(_) | Credential::Header(_)
        )
    }

    /// The token a `header` credential put in `headers` (see
    /// [`HeaderInjector::token_in`]); `None` for other kinds, whose
    /// secrets are in the URL ([`Credential::secret_params`]) or not a
    /// token (Basic, SigV4's signature).
    pub(crate) fn header_token<'a>(&self, headers: &'a ForwardHeaders) -> Option<&'a str> {
        match self {
            Credential::Header(h) => h.token_in(headers),
            _ => None,
        }
    }

    /// The token source, for kinds that have one.
    pub(crate) fn token_source(&self) -> Option<&TokenSource> {
        match self {
            Credential::Header(h) => Some(h.source()),
            Credential::Query(q) => Some(q.source()),
            _ => None,
        }
    }

    /// Whether a 401 answer may be retried once with a fresh token, so the
    /// request body is worth keeping.
    pub(crate) fn retries_on_401(&self) -> bool {
        self.token_source().is_some_and(TokenSource::retries)
    }

    /// Tells the token source that the upstream rejected `applied`'s token;
    /// returns whether to retry.
    pub(crate) fn reject(&self, applied: &Applied) -> bool {
        match (self.token_source(), &applied.token) {
            (Some(source), Some(token)) => source.reject(token),
            _ => false,
        }
    }
}
