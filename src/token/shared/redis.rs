//! The Redis side of the shared cache: one connection opened on first use
//! (redis-rs's [`ConnectionManager`], which reconnects by itself after
//! Redis comes back), the few commands sidekey sends, each bounded by
//! `shared_cache.timeout`, and the outage bookkeeping: every failed
//! command counts in `sidekey_shared_cache_errors_total`, the first of an
//! outage logs one warning, the first success after it one notice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use rustls_pki_types::CertificateDer;
use thiserror::Error;

use crate::config::SharedCacheSettings;

/// Deletes `KEYS[1]` only while it holds `ARGV[1]`: releases a lease that
/// is still ours, drops a token that is still the rejected one.
const DELETE_IF_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Why a Redis command did not give an answer. Safe to log: no key value,
/// no password.
#[derive(Debug, Error, Clone)]
pub(crate) enum RedisError {
    #[error("Redis did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Failed(String),
}

/// Why the Redis client could not be set up from the settings.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("cannot set up the Redis client: {0}")]
    Client(String),
}

pub(crate) struct Redis {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    timeout: Duration,
    down: AtomicBool,
    /// Whether any command has run yet (for `/status`).
    used: AtomicBool,
    errors: Counter,
    delete_if: redis::Script,
}

/// What `/status` says of Redis: the outcome of the last command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedisState {
    /// No command yet (no shared token was needed).
    Unused,
    Ok,
    /// The last command failed or timed out: each replica uses its own
    /// tokens until one succeeds.
    Unreachable,
}

impl RedisState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RedisState::Unused => "unused",
            RedisState::Ok => "ok",
            RedisState::Unreachable => "unreachable",
        }
    }
}

impl Redis {
    /// Does no I/O: the connection opens on the first command.
    /// `rediss://` trusts the upstreams' roots: the built-in ones, or the
    /// certificates of `proxy.ca_file` when it is set (redis-rs takes one
    /// set of roots).
    pub(crate) fn new(
        settings: &SharedCacheSettings,
        extra_roots: &[CertificateDer<'static>],
        errors: Counter,
    ) -> Result<Redis, SetupError> {
        let client = if settings.tls && !extra_roots.is_empty() {
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem(extra_roots).into_bytes()),
            };
            redis::Client::build_with_tls(settings.connection.clone(), certificates)
        } else {
            redis::Client::open(settings.connection.clone())
        }
        .map_err(|e| SetupError::Client(e.kind_name()))?;
        Ok(Redis {
            client,
            conn: tokio::sync::Mutex::new(None),
            timeout: settings.timeout,
            down: AtomicBool::new(false),
            used: AtomicBool::new(false),
            errors,
            delete_if: redis::Script::new(DELETE_IF_SCRIPT),
        })
    }

    /// The value at `key` and its remaining time to live (`None`: no
    /// expiry): `GET` and `PTTL` in one round trip (a key that expires
    /// between the two reads as absent).
    pub(crate) async fn get(
        &self,
        key: &str,
    ) -> Result<Option<(Vec<u8>, Option<Duration>)>, RedisError> {
        let mut pipe = redis::pipe();
        pipe.get(key).cmd("PTTL").arg(key);
        let (value, pttl): (Option<Vec<u8>>, i64) = self
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        if pttl == -2 {
            return Ok(None);
        }
        Ok(value.map(|v| {
            let ttl = u64::try_from(pttl).ok().map(Duration::from_millis);
            (v, ttl)
        }))
    }

    /// Sets `key` to `value`, expiring after `ttl` (never with `None`).
    pub(crate) async fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(millis(ttl));
        }
        self.run(|mut c| async move { cmd.query_async::<()>(&mut c).await })
            .await
    }

    /// `SET key value NX PX ttl`: whether the key was free and is now ours.
    pub(crate) async fn claim(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX").arg("PX").arg(millis(ttl));
        let answer: Option<String> = self
            .run(|mut c| async move { cmd.query_async(&mut c).await })
            .await?;
        Ok(answer.is_some())
    }

    /// Deletes `key` if it still holds `value`; whether it did.
    pub(crate) async fn delete_if(&self, key: &str, value: &[u8]) -> Result<bool, RedisError> {
        let mut invocation = self.delete_if.key(key);
        invocation.arg(value);
        let deleted: i64 = self
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(deleted == 1)
    }

    /// Runs one command on the connection (opened if needed), bounded by
    /// the timeout, and keeps the outage bookkeeping.
    async fn run<T, F, Fut>(&self, command: F) -> Result<T, RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let result = tokio::time::timeout(self.timeout, async {
            let conn = self.connection().await?;
            command(conn).await
        })
        .await;
        let result = match result {
            Err(_) => Err(RedisError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(RedisError::Failed(describe(&e))),
            Ok(Ok(v)) => Ok(v),
        };
        self.used.store(true, Ordering::Relaxed);
        match &result {
            Ok(_) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        "the shared token cache (Redis) answers again: tokens are shared again"
                    );
                }
            }
            Err(e) => {
                self.errors.inc();
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        cause = %e,
                        "the shared token cache (Redis) is unreachable: each replica uses its own token cache until it is back"
                    );
                }
            }
        }
        result
    }

    /// The outcome of the last command.
    pub(crate) fn state(&self) -> RedisState {
        if !self.used.load(Ordering::Relaxed) {
            RedisState::Unused
        } else if self.down.load(Ordering::Relaxed) {
            RedisState::Unreachable
        } else {
            RedisState::Ok
        }
    }

    /// Commands that failed or timed out so far.
    pub(crate) fn errors(&self) -> u64 {
        self.errors.get()
    }

    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1)
            .set_max_delay(1000);
        let conn = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

/// Certificates as PEM text.
fn pem(certs: &[CertificateDer<'static>]) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    for cert in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let text = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        for line in text.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A Redis error as sidekey logs it: its kind and, for I/O, the OS error.
fn describe(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connection_refusal() {
        "connection refused".to_string()
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection lost".to_string()
    } else {
        e.kind_name()
    }
}

/// The name of an error's kind (`AuthenticationFailed`, `ResponseError`).
trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for redis::RedisError {
    fn kind_name(&self) -> String {
        match self.code() {
            Some(code) => format!("{:?} ({code})", self.kind()),
            None => format!("{:?}", self.kind()),
        }
    }
}
