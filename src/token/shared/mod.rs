//! `[proxy.shared_cache]`: replicas share their cached tokens through Redis.
//!
//! | module | holds |
//! | --- | --- |
//! | [`crypto`] | AES-256-GCM sealing (the Redis key as associated data) |
//! | [`redis`](mod@redis) | the connection, the commands, timeouts and outage bookkeeping |
//!
//! Sharing is a [`TokenFetcher`] wrapped around the route's own
//! ([`SharedFetcher`]), so the local [`super::cache::TokenCache`] stays the
//! hot path: a request with a valid local token never reaches Redis. The
//! cache calls `fetch()` on a miss, at refresh time and after a 401; the
//! shared fetcher then
//!
//! 1. drops the token Redis holds if it is the one the upstream rejected
//!    (compare-and-delete, so N replicas seeing one 401 cause one refetch);
//! 2. takes the token in Redis when it is not yet due for refresh;
//! 3. otherwise claims the route's lease (`SET NX PX`), looks once more,
//!    fetches, stores the sealed token with a TTL at its expiry and
//!    releases the lease (compare-and-delete);
//! 4. or, when another replica holds the lease, polls (bounded) until its
//!    token is there or the lease is free.
//!
//! Whenever Redis fails or is slow, it fetches by itself, as without
//! Redis. Keys are `key_prefix:route:<hash>`, the hash an HMAC of the
//! route's token settings under the encryption key: no secret in any key,
//! and another config (another token) gets another key.

pub(crate) mod crypto;
pub mod redis;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use rustls_pki_types::CertificateDer;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use tokio::time::Instant;

use self::crypto::Sealer;
pub use self::redis::SetupError;
use self::redis::{Redis, RedisError};
use super::endpoint::{FetchError, FetchFuture, Fetched, TokenFetcher};
use crate::config::{SharedCacheSettings, TokenBody, TokenConfig};
use crate::metrics::Metrics;

/// A token in Redis this close to its refresh time counts as due (timers
/// of several replicas fire within a few milliseconds of each other).
const DUE_SLACK: Duration = Duration::from_millis(50);
/// Waiting for another replica's fetch: first and longest poll interval.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(200);
/// A lease outlives the fetch's own timeout by this much.
const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// The shared cache of one config: Redis, the sealing key and the prefix.
pub(crate) struct SharedCache {
    pub(crate) redis: Redis,
    sealer: Sealer,
    prefix: String,
    mac_key: SecretString,
    settings: Arc<SharedCacheSettings>,
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl SharedCache {
    /// Does no I/O.
    pub(crate) fn new(
        settings: &Arc<SharedCacheSettings>,
        extra_roots: &[CertificateDer<'static>],
        metrics: &Metrics,
    ) -> Result<SharedCache, SetupError> {
        let key = settings.encryption_key.expose_secret();
        Ok(SharedCache {
            redis: Redis::new(settings, extra_roots, metrics.shared_cache_errors.clone())?,
            sealer: Sealer::new(&settings.encryption_key),
            prefix: settings.key_prefix.clone(),
            mac_key: SecretString::from(hex::encode(key)),
            settings: settings.clone(),
        })
    }

    /// What `/status` shows of the shared cache: where Redis is (never its
    /// password), the outcome of the last command and the failures so far.
    pub(crate) fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "redis": self.settings.address(),
            "state": self.redis.state().as_str(),
            "errors_total": self.redis.errors(),
        })
    }

    /// Whether a reload with `settings` may keep this cache.
    pub(crate) fn serves(&self, settings: &SharedCacheSettings) -> bool {
        self.settings.same_as(settings)
    }

    /// `key_prefix:route:<hash>` for a route's token settings; `None` for
    /// sources that are not cached (static, file, one-time).
    pub(crate) fn key(&self, route: &str, config: &TokenConfig) -> Option<String> {
        let text = settings_text(config)?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.mac_key.expose_secret().as_bytes()).ok()?;
        mac.update(text.expose_secret().as_bytes());
        let digest = mac.finalize().into_bytes();
        Some(format!(
            "{}:{route}:{}",
            self.prefix,
            hex::encode(&digest[..16])
        ))
    }

    pub(crate) fn seal(&self, key: &str, plaintext: &[u8]) -> Vec<u8> {
        self.sealer.seal(key, plaintext)
    }

    pub(crate) fn open(&self, key: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        match self.sealer.open(key, sealed) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(key, cause = %e, "ignoring a value in the shared token cache");
                None
            }
        }
    }
}

/// What identifies a route's token: every setting that changes which
/// token the source gets, secrets included (only ever hashed).
fn settings_text(config: &TokenConfig) -> Option<SecretString> {
    let text = match config {
        // An exec command runs on each replica with that replica's own
        // credentials (a CLI's login, a vault agent): not shared.
        TokenConfig::Static(_) | TokenConfig::File(_) | TokenConfig::Exec(_) => return None,
        TokenConfig::Endpoint(e) if e.one_time => return None,
        TokenConfig::Endpoint(e) => {
            let mut text = format!(
                "endpoint\n{}\n{}\n{}\n{:?}\n{:?}\n",
                e.method, e.url, e.token_pointer, e.expires_in_pointer, e.ttl
            );
            if let Some((user, password)) = &e.basic {
                text.push_str(&format!(
                    "basic {} {}\n",
                    user.expose_secret(),
                    password.expose_secret()
                ));
            }
            for (name, value) in &e.headers {
                text.push_str(&format!("header {name} {}\n", value.expose_secret()));
            }
            match &e.body {
                None => {}
                Some(TokenBody::Json(json)) => text.push_str(&format!("json {}\n", json.0)),
                Some(TokenBody::Form(pairs)) => {
                    for (name, value) in pairs {
                        text.push_str(&format!("form {name} {}\n", value.expose_secret()));
                    }
                }
            }
            text
        }
        TokenConfig::OAuth2ClientCredentials(c) => format!(
            "oauth2_client_credentials\n{}\n{}\n{}\n{:?}\n{:?}\n",
            c.token_url,
            c.client_id,
            c.client_secret.expose_secret(),
            c.scope,
            c.client_auth
        ),
        TokenConfig::OAuth2Code(c) => format!(
            "oauth2_code\n{}\n{}\n{}\n{}\n{}\n{:?}\n",
            c.authorize_url,
            c.token_url,
            c.client_id,
            c.client_secret.expose_secret(),
            c.redirect_uri,
            c.scope
        ),
    };
    Some(SecretString::from(text))
}

/// A token as sealed in Redis.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    token: String,
    /// The lifetime it was issued with, in milliseconds (`None`: until
    /// rejected).
    lifetime_ms: Option<u64>,
}

/// The token last handed to the local cache, and how it is sealed in Redis.
struct Handed {
    value: SecretString,
    sealed: Vec<u8>,
}

/// A route's fetcher, shared through Redis (see the module doc).
pub(crate) struct SharedFetcher {
    inner: Box<dyn TokenFetcher>,
    cache: Arc<SharedCache>,
    key: String,
    lease_key: String,
    refresh_before: Duration,
    lease_ttl: Duration,
    route: String,
    handed: Mutex<Option<Handed>>,
    /// The sealed token the upstream rejected, to drop from Redis on the
    /// next fetch.
    rejected: Mutex<Option<Vec<u8>>>,
}

/// How a shared fetch ended without a token from Redis or a fetch.
enum Shared {
    /// Redis failed (counted and warned about by [`Redis`]).
    Redis,
    Fetch(FetchError),
}

impl From<RedisError> for Shared {
    fn from(_: RedisError) -> Shared {
        Shared::Redis
    }
}

impl SharedFetcher {
    /// `fetch_timeout` bounds one fetch of `inner`; the lease lasts a
    /// little longer.
    pub(crate) fn new(
        inner: Box<dyn TokenFetcher>,
        cache: Arc<SharedCache>,
        key: String,
        route: &str,
        refresh_before: Duration,
        fetch_timeout: Duration,
    ) -> SharedFetcher {
        SharedFetcher {
            inner,
            lease_key: format!("{key}:lease"),
            key,
            cache,
            refresh_before,
            lease_ttl: fetch_timeout + LEASE_MARGIN,
            route: route.to_string(),
            handed: Mutex::new(None),
            rejected: Mutex::new(None),
        }
    }

    async fn fetch_shared(&self) -> Result<Fetched, FetchError> {
        match self.through_redis().await {
            Ok(fetched) => Ok(fetched),
            Err(Shared::Fetch(e)) => Err(e),
            Err(Shared::Redis) => {
                // Fetch as without Redis.
                self.inner.fetch().await
            }
        }
    }

    async fn through_redis(&self) -> Result<Fetched, Shared> {
        let rejected = lock(&self.rejected).take();
        if let Some(sealed) = rejected {
            if self.cache.redis.delete_if(&self.key, &sealed).await? {
                tracing::info!(
                    route = %self.route,
                    "dropped the shared token the upstream rejected"
                );
            }
        }
        let deadline = Instant::now() + self.lease_ttl * 2;
        let mut poll = POLL_FIRST;
        loop {
            if let Some(fetched) = self.usable().await? {
                return Ok(fetched);
            }
            let lease = format!("{:016x}", rand::random::<u64>());
            if self
                .cache
                .redis
                .claim(&self.lease_key, &lease, self.lease_ttl)
                .await?
            {
                let result = self.fetch_under_lease().await;
                // Ours until it expires anyway; a failure here is counted.
                let _ = self
                    .cache
                    .redis
                    .delete_if(&self.lease_key, lease.as_bytes())
                    .await;
                return result;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    route = %self.route,
                    "the replica holding the token lease stored no token in time; fetching here"
                );
                return Err(Shared::Redis);
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(POLL_MAX);
        }
    }

    /// Holding the lease: look once more (the holder before us may have
    /// just stored a token), else fetch and store.
    async fn fetch_under_lease(&self) -> Result<Fetched, Shared> {
        if let Some(fetched) = self.usable().await? {
            return Ok(fetched);
        }
        let fetched = self.inner.fetch().await.map_err(Shared::Fetch)?;
        let stored = Stored {
            token: fetched.value.expose_secret().to_string(),
            lifetime_ms: fetched.lifetime.map(|l| l.as_millis() as u64),
        };
        let plaintext = SecretString::from(serde_json::to_string(&stored).unwrap_or_default());
        drop(stored);
        let sealed = self
            .cache
            .seal(&self.key, plaintext.expose_secret().as_bytes());
        // A token stored without an expiry lives until a 401 drops it.
        let put = self
            .cache
            .redis
            .put(&self.key, &sealed, fetched.lifetime)
            .await;
        if put.is_ok() {
            self.hand(&fetched.value, sealed);
        }
        Ok(fetched)
    }

    /// The token in Redis, if there is one not yet due for refresh.
    async fn usable(&self) -> Result<Option<Fetched>, RedisError> {
        let Some((sealed, ttl)) = self.cache.redis.get(&self.key).await? else {
            return Ok(None);
        };
        let Some(plaintext) = self.cache.open(&self.key, &sealed) else {
            return Ok(None);
        };
        let Ok(stored) = serde_json::from_slice::<Stored>(&plaintext) else {
            return Ok(None);
        };
        let lifetime = stored.lifetime_ms.map(Duration::from_millis);
        if let (Some(issued), Some(left)) = (lifetime, ttl) {
            let lead = self.refresh_before.min(issued / 2);
            if left <= lead + DUE_SLACK {
                return Ok(None);
            }
        }
        let value = SecretString::from(stored.token);
        self.hand(&value, sealed);
        Ok(Some(Fetched {
            value,
            lifetime: ttl.filter(|_| lifetime.is_some()),
        }))
    }

    fn hand(&self, value: &SecretString, sealed: Vec<u8>) {
        *lock(&self.handed) = Some(Handed {
            value: value.clone(),
            sealed,
        });
    }
}

impl TokenFetcher for SharedFetcher {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(self.fetch_shared())
    }

    fn rejected(&self, value: &SecretString) {
        let handed = lock(&self.handed);
        if let Some(h) = handed.as_ref() {
            if h.value.expose_secret() == value.expose_secret() {
                *lock(&self.rejected) = Some(h.sealed.clone());
            }
        }
        drop(handed);
        self.inner.rejected(value);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
