//! `source = "oauth2_code"`: the token `sidekey authorize` stored, renewed
//! with its refresh token.
//!
//! The route's token is cached like any fetched token
//! ([`super::cache::TokenCache`]); its "fetch" ([`CodeFetcher`]) reads the
//! newest copy of the stored [`Tokens`] (the store file, this process's
//! memory, and Redis with `[proxy.shared_cache]`) and
//!
//! - hands out the stored access token while it is valid (not past
//!   `expires_at`, and not the one the upstream just rejected);
//! - otherwise refreshes it (RFC 6749 6: `grant_type=refresh_token`, the
//!   client in the form) and writes the answer, with a rotated refresh
//!   token when the provider sends one, to the store file (atomic, 0600)
//!   and to Redis **before** returning, so the next refresh anywhere uses
//!   the new refresh token. With Redis only the lease holder gets here
//!   ([`super::shared`]), so a provider that accepts each refresh token
//!   once never sees one twice.
//!
//! A refresh refused with `invalid_grant` (or no stored token, or an
//! expired one with no refresh token) needs a new `sidekey authorize`:
//! requests get 503 saying so, `sidekey_token_needs_authorize{route}` is 1,
//! and the dead refresh token is not sent again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use prometheus_client::metrics::gauge::Gauge;
use secrecy::{ExposeSecret, SecretString};

use super::endpoint::{
    self, FetchError, FetchFuture, Fetched, PreparedRequest, ResponseSpec, TokenFetcher,
};
use super::shared::SharedCache;
use super::store::{self, Tokens};
use crate::client::pool::Upstreams;
use crate::config::OAuth2CodeConfig;

/// How long a refresh request may take.
pub(crate) const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);
/// Refresh this long before the access token expires (at most half its
/// lifetime, see [`super::timing::refresh_at`]).
pub(crate) const REFRESH_BEFORE: Duration = Duration::from_secs(60);

/// Where the route's [`Tokens`] are kept in Redis.
pub(crate) struct SharedRecord {
    pub(crate) cache: Arc<SharedCache>,
    /// `key_prefix:route:<hash>:refresh`.
    pub(crate) key: String,
}

impl SharedRecord {
    /// The sealed record in Redis, if any (and readable).
    async fn load(&self) -> Option<Tokens> {
        let (sealed, _) = self.cache.redis.get(&self.key).await.ok()??;
        let plain = self.cache.open(&self.key, &sealed)?;
        Tokens::parse(std::str::from_utf8(&plain).ok()?)
    }

    /// Stores `tokens`, sealed, with no expiry (a refresh token outlives
    /// its access tokens). A failure is counted by the shared cache.
    pub(crate) async fn save(&self, tokens: &Tokens) -> bool {
        let sealed = self
            .cache
            .seal(&self.key, tokens.to_json().expose_secret().as_bytes());
        self.cache.redis.put(&self.key, &sealed, None).await.is_ok()
    }
}

pub(crate) struct CodeFetcher {
    route: String,
    config: OAuth2CodeConfig,
    upstreams: Arc<Upstreams>,
    shared: Option<SharedRecord>,
    needs_authorize: Gauge,
    /// The latest tokens this process got (in case neither the file nor
    /// Redis could be written).
    latest: Mutex<Option<Tokens>>,
    /// The access token the upstream rejected (401).
    rejected: Mutex<Option<SecretString>>,
    /// A refresh token refused with `invalid_grant`: never sent again.
    dead: Mutex<Option<SecretString>>,
}

impl CodeFetcher {
    pub(crate) fn new(
        route: &str,
        config: &OAuth2CodeConfig,
        upstreams: Arc<Upstreams>,
        shared: Option<SharedRecord>,
        needs_authorize: Gauge,
    ) -> CodeFetcher {
        CodeFetcher {
            route: route.to_string(),
            config: config.clone(),
            upstreams,
            shared,
            needs_authorize,
            latest: Mutex::new(None),
            rejected: Mutex::new(None),
            dead: Mutex::new(None),
        }
    }

    /// "run `sidekey authorize ROUTE` `when`" (first, again).
    fn authorize(&self, why: &str, when: &str) -> FetchError {
        FetchError::NeedsAuthorize(format!(
            "route \"{}\" {why}: run `sidekey authorize {}` {when}",
            self.route, self.route
        ))
    }

    fn authorize_again(&self, why: &str) -> FetchError {
        self.authorize(why, "again")
    }

    /// The newest copy of the stored tokens.
    async fn load(&self) -> Result<Option<Tokens>, FetchError> {
        let mut best = lock(&self.latest).clone();
        let path = self.config.store.clone();
        let file = match tokio::fs::read_to_string(&path).await {
            Ok(text) => Tokens::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(FetchError::NeedsAuthorize(format!(
                    "cannot read the token store {} of route \"{}\": {}",
                    path.display(),
                    self.route,
                    e.kind()
                )))
            }
        };
        for candidate in [file, self.shared_load().await].into_iter().flatten() {
            if best
                .as_ref()
                .is_none_or(|b| candidate.updated_at_ms > b.updated_at_ms)
            {
                best = Some(candidate);
            }
        }
        Ok(best)
    }

    async fn shared_load(&self) -> Option<Tokens> {
        match &self.shared {
            Some(s) => s.load().await,
            None => None,
        }
    }

    async fn fetch_code(&self) -> Result<Fetched, FetchError> {
        let Some(tokens) = self.load().await? else {
            return Err(self.authorize(
                &format!(
                    "has no OAuth2 token yet ({} is missing or empty)",
                    self.config.store.display()
                ),
                "first",
            ));
        };
        let now = store::now_ms() / 1000;
        let rejected = lock(&self.rejected)
            .as_ref()
            .is_some_and(|r| r.expose_secret() == tokens.access_token.expose_secret());
        let left = tokens.expires_at.map(|e| e.saturating_sub(now));
        // Called on a miss, after a 401 and at refresh time: a stored token
        // still far from its expiry is used (a fresh `authorize`, or a
        // restart), one close to it is renewed.
        if !rejected && left.is_none_or(|l| l > REFRESH_BEFORE.as_secs()) {
            self.needs_authorize.set(0);
            return Ok(Fetched {
                value: tokens.access_token,
                lifetime: left.map(Duration::from_secs),
            });
        }
        let Some(refresh) = tokens.refresh_token.clone() else {
            return Err(self.authorize_again(if rejected {
                "has a stored token that the upstream rejected, and no refresh token"
            } else {
                "has a stored token that expired, and no refresh token"
            }));
        };
        let dead = lock(&self.dead)
            .as_ref()
            .is_some_and(|d| d.expose_secret() == refresh.expose_secret());
        if dead {
            return Err(
                self.authorize_again("has a refresh token the provider refused (invalid_grant)")
            );
        }
        let (renewed, lifetime) = match self.refresh(&refresh).await {
            Ok(t) => t,
            Err(FetchError::Status {
                oauth_error: Some(e),
                ..
            }) if e == "invalid_grant" => {
                *lock(&self.dead) = Some(refresh);
                self.needs_authorize.set(1);
                tracing::error!(
                    route = %self.route,
                    "the OAuth2 provider refused the refresh token (invalid_grant): run `sidekey authorize {}` again",
                    self.route
                );
                return Err(self
                    .authorize_again("has a refresh token the provider refused (invalid_grant)"));
            }
            Err(e) => return Err(e),
        };
        self.persist(&renewed).await;
        self.needs_authorize.set(0);
        *lock(&self.rejected) = None;
        Ok(Fetched {
            value: renewed.access_token.clone(),
            lifetime,
        })
    }

    /// One refresh request; the answer as the tokens to store, and the
    /// access token's lifetime.
    async fn refresh(
        &self,
        refresh: &SecretString,
    ) -> Result<(Tokens, Option<Duration>), FetchError> {
        let mut req = PreparedRequest::new(Method::POST, self.config.token_url.clone());
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.expose_secret()),
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.expose_secret()),
        ];
        if let Some(scope) = &self.config.scope {
            form.push(("scope", scope));
        }
        req.form(form);
        let (status, body) = endpoint::send(&self.upstreams, &req, REFRESH_TIMEOUT).await?;
        let spec = ResponseSpec {
            token_pointer: "/access_token".into(),
            expires_in_pointer: Some("/expires_in".into()),
            ttl: None,
        };
        let fetched = endpoint::parse_response(&req.host(), status, &body, &spec)?;
        let rotated = refresh_token_of(&body);
        let tokens = Tokens {
            access_token: fetched.value,
            refresh_token: Some(rotated.unwrap_or_else(|| refresh.clone())),
            expires_at: fetched
                .lifetime
                .map(|l| store::now_ms() / 1000 + l.as_secs()),
            updated_at_ms: store::now_ms(),
        };
        Ok((tokens, fetched.lifetime))
    }

    /// Writes renewed tokens to the store file and to Redis (each failure
    /// logged, never fatal: this process keeps them in memory too).
    async fn persist(&self, tokens: &Tokens) {
        *lock(&self.latest) = Some(tokens.clone());
        let path = self.config.store.clone();
        let t = tokens.clone();
        let written = tokio::task::spawn_blocking(move || store::write_tokens(&path, &t)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(route = %self.route, cause = %e, "cannot write the renewed token")
            }
            Err(_) => tracing::error!(route = %self.route, "cannot write the renewed token"),
        }
        if let Some(shared) = &self.shared {
            shared.save(tokens).await;
        }
    }
}

/// A non-empty `refresh_token` in a token response.
pub(crate) fn refresh_token_of(body: &[u8]) -> Option<SecretString> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let token = json.get("refresh_token")?.as_str()?;
    (!token.is_empty() && !token.chars().any(char::is_control))
        .then(|| SecretString::from(token.to_string()))
}

impl TokenFetcher for CodeFetcher {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(self.fetch_code())
    }

    fn rejected(&self, value: &SecretString) {
        *lock(&self.rejected) = Some(value.clone());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
