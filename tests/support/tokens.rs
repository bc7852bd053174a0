//! Shared by the token stand-ins (Algonomy, Invoca, Copernica, OAuth2):
//! a book of the tokens a stand-in issued, random token values, the
//! controls every token endpoint has (down, held), and a polling wait.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use http::StatusCode;

use super::server::Gate;

/// A random token: `len` characters of `[A-Za-z0-9]`.
pub fn random_token(len: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// Percent-encodes everything but RFC 3986 unreserved characters (what
/// RFC 6749 2.3.1 asks of a client id and secret before Basic encoding).
pub fn form_urlencode(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const SET: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(s, SET).to_string()
}

/// Why the API side refused a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenProblem {
    Unknown,
    Expired,
    Revoked,
    AlreadyUsed,
}

struct Issued {
    expires: Option<Instant>,
    revoked: bool,
    uses: usize,
}

/// Every token a stand-in issued, with its expiry (real time, as a real
/// API would enforce it) and how often it was used.
#[derive(Default)]
pub struct TokenBook {
    issued: HashMap<String, Issued>,
    order: Vec<String>,
}

impl TokenBook {
    /// Issues a new token valid for `lifetime` (`None`: until revoked).
    pub fn issue(&mut self, lifetime: Option<Duration>) -> String {
        let token = random_token(40);
        self.issued.insert(
            token.clone(),
            Issued {
                expires: lifetime.map(|l| Instant::now() + l),
                revoked: false,
                uses: 0,
            },
        );
        self.order.push(token.clone());
        token
    }

    /// Checks a token and counts the use; with `once`, a token works only
    /// the first time.
    pub fn use_token(&mut self, token: &str, once: bool) -> Result<(), TokenProblem> {
        let issued = self.issued.get_mut(token).ok_or(TokenProblem::Unknown)?;
        issued.uses += 1;
        if issued.revoked {
            return Err(TokenProblem::Revoked);
        }
        if issued.expires.is_some_and(|e| Instant::now() >= e) {
            return Err(TokenProblem::Expired);
        }
        if once && issued.uses > 1 {
            return Err(TokenProblem::AlreadyUsed);
        }
        Ok(())
    }

    /// Revokes every token issued so far (server-side invalidation).
    pub fn revoke_all(&mut self) {
        for issued in self.issued.values_mut() {
            issued.revoked = true;
        }
    }

    /// Every token issued, in order.
    pub fn issued(&self) -> Vec<String> {
        self.order.clone()
    }

    /// Tokens presented more than once.
    pub fn reused(&self) -> usize {
        self.issued.values().filter(|i| i.uses > 1).count()
    }
}

/// The controls of a stand-in token endpoint.
#[derive(Default)]
pub struct EndpointControls {
    /// When set, the endpoint answers this status (an outage).
    pub down: Option<StatusCode>,
    /// When set, requests wait at the gate before being answered.
    pub hold: Option<Gate>,
    /// Requests that reached the endpoint (including refused ones).
    pub attempts: usize,
    /// Tokens issued.
    pub mints: usize,
}

/// Polls `check` every 20 ms until it holds; panics with `what` after
/// `limit`. For waiting on a condition, never for a fixed time.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
