//! The `[proxy.shared_cache]` table: the Redis that replicas share their
//! tokens through, the prefix of its keys and the key that encrypts them.
//!
//! `url` is `redis://` or `rediss://` (TLS, verified with the upstreams'
//! roots), its password in the URL or in `password`; `encryption_key` is
//! the base64 of exactly 32 bytes (AES-256). Problems name the key, never
//! the value (a URL may hold a password).

use std::time::Duration;

use base64::Engine as _;
use redis::IntoConnectionInfo;
use secrecy::{ExposeSecret, SecretBox, SecretString};

use super::file::FileSharedCache;
use super::Ctx;

/// How long one Redis command may take before the replica goes on alone.
const TIMEOUT_DEFAULT: Duration = Duration::from_millis(500);
const DEFAULT_PREFIX: &str = "sidekey";

/// Validated `[proxy.shared_cache]` settings.
pub struct SharedCacheSettings {
    /// Where Redis is, with the password (from the URL or `password`).
    pub(crate) connection: redis::ConnectionInfo,
    /// `rediss://`: TLS.
    pub(crate) tls: bool,
    /// `url` and `password` as written (expanded), to tell a reload
    /// whether they changed.
    url: SecretString,
    password: Option<SecretString>,
    /// Every key starts with `key_prefix:`.
    pub(crate) key_prefix: String,
    /// The AES-256-GCM key.
    pub(crate) encryption_key: SecretBox<[u8; 32]>,
    /// The longest a Redis command may take (default 500ms).
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for SharedCacheSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCacheSettings")
            .field("tls", &self.tls)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SharedCacheSettings {
    /// `redis[s]://host:port/db`: where Redis is, never its user or
    /// password (for `check` and `/status`).
    pub(crate) fn address(&self) -> String {
        format!(
            "{}://{}/{}",
            if self.tls { "rediss" } else { "redis" },
            self.connection.addr,
            self.connection.redis.db
        )
    }

    pub(super) fn from_file(raw: &FileSharedCache, ctx: &mut Ctx) -> Option<SharedCacheSettings> {
        let url = ctx.expand_nonempty("shared_cache.url", &raw.url);
        let password = ctx.expand_opt("shared_cache.password", raw.password.as_deref());
        let key_prefix = match raw.key_prefix.as_deref() {
            None => Some(DEFAULT_PREFIX.to_string()),
            Some(p) => ctx.expand_nonempty("shared_cache.key_prefix", p),
        }
        .and_then(|p| {
            if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                ctx.problem(
                    "shared_cache.key_prefix",
                    "must not hold spaces or control characters",
                );
                None
            } else {
                Some(p)
            }
        });
        let encryption_key = ctx
            .expand_nonempty("shared_cache.encryption_key", &raw.encryption_key)
            .and_then(|k| match decode_key(&k) {
                Some(key) => Some(key),
                None => {
                    ctx.problem(
                        "shared_cache.encryption_key",
                        "must be the base64 of exactly 32 bytes (make one with `openssl rand -base64 32`)",
                    );
                    None
                }
            });
        let timeout = ctx
            .duration(
                "shared_cache.timeout",
                raw.timeout.as_deref(),
                TIMEOUT_DEFAULT,
            )
            .and_then(|t| {
                if t.is_zero() || t > Duration::from_secs(10) {
                    ctx.problem("shared_cache.timeout", "must be between 1ms and 10s");
                    None
                } else {
                    Some(t)
                }
            });
        let url = url?;
        let password = password?.filter(|p| !p.is_empty());
        let tls = if url.starts_with("rediss://") {
            true
        } else if url.starts_with("redis://") {
            false
        } else {
            ctx.problem("shared_cache.url", "must start with redis:// or rediss://");
            return None;
        };
        let mut connection = match url.as_str().into_connection_info() {
            Ok(c) => c,
            Err(_) => {
                ctx.problem(
                    "shared_cache.url",
                    "not a Redis URL; write e.g. \"redis://redis:6379/0\"",
                );
                return None;
            }
        };
        if let Some(password) = &password {
            connection.redis.password = Some(password.clone());
        }
        Some(SharedCacheSettings {
            connection,
            tls,
            url: SecretString::from(url),
            password: password.map(SecretString::from),
            key_prefix: key_prefix?,
            encryption_key: encryption_key?,
            timeout: timeout?,
        })
    }

    /// Whether a reload may keep the connection and cache built from
    /// `self`: the same Redis, password, prefix, key and timeout.
    pub(crate) fn same_as(&self, other: &SharedCacheSettings) -> bool {
        self.url.expose_secret() == other.url.expose_secret()
            && self.password.as_ref().map(|p| p.expose_secret())
                == other.password.as_ref().map(|p| p.expose_secret())
            && self.key_prefix == other.key_prefix
            && self.encryption_key.expose_secret() == other.encryption_key.expose_secret()
            && self.timeout == other.timeout
    }
}

/// The 32 bytes of a base64 key (standard alphabet, padding optional).
fn decode_key(text: &str) -> Option<SecretBox<[u8; 32]>> {
    let text = text.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
        .ok()?;
    let key: [u8; 32] = bytes.as_slice().try_into().ok()?;
    Some(SecretBox::new(Box::new(key)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use secrecy::ExposeSecret;

    use crate::config::Config;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

    fn parse(table: &str) -> Result<Config, Vec<String>> {
        let toml = format!("[proxy.shared_cache]\n{table}\n");
        let lookup = |name: &str| (name == "KEY").then(|| KEY.to_string());
        Config::parse(&toml, Path::new("."), &lookup).map_err(|e| e.problems())
    }

    #[test]
    fn the_spec_table_parses_with_its_defaults() {
        let config = parse(
            "url = \"${REDIS_URL:-redis://127.0.0.1:6379/0}\"\nkey_prefix = \"sidekey\"\nencryption_key = \"${KEY}\"",
        )
        .unwrap();
        let shared = config.proxy.shared_cache.unwrap();
        assert_eq!(shared.key_prefix, "sidekey");
        assert!(!shared.tls);
        assert_eq!(shared.timeout, std::time::Duration::from_millis(500));
        assert_eq!(shared.encryption_key.expose_secret()[..4], *b"0123");
        assert_eq!(shared.connection.redis.db, 0);
    }

    #[test]
    fn a_password_key_sets_the_password_and_rediss_means_tls() {
        let config = parse(
            "url = \"rediss://cache.internal:6380/2\"\npassword = \"pw-s3cret\"\nencryption_key = \"${KEY}\"",
        )
        .unwrap();
        let shared = config.proxy.shared_cache.unwrap();
        assert!(shared.tls);
        assert_eq!(
            shared.connection.redis.password.as_deref(),
            Some("pw-s3cret")
        );
        assert_eq!(shared.key_prefix, "sidekey");
        assert!(!format!("{shared:?}").contains("s3cret"));
    }

    #[test]
    fn check_refuses_a_key_that_is_not_32_bytes_without_printing_it() {
        for bad in [
            "c2hvcnQ=",
            "not base64 at all!",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMQ==",
        ] {
            let problems = parse(&format!(
                "url = \"redis://r:6379\"\nencryption_key = \"{bad}\""
            ))
            .unwrap_err();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].contains("shared_cache.encryption_key"),
                "{problems:?}"
            );
            assert!(problems[0].contains("32 bytes"), "{problems:?}");
            assert!(!problems[0].contains(bad), "{problems:?}");
        }
    }

    #[test]
    fn check_refuses_other_schemes_and_unknown_keys_without_printing_the_url() {
        let problems = parse("url = \"http://user:pw-s3cret@r:6379\"\nencryption_key = \"${KEY}\"")
            .unwrap_err();
        assert!(problems[0].contains("shared_cache.url"), "{problems:?}");
        assert!(problems[0].contains("redis://"), "{problems:?}");
        assert!(!problems[0].contains("s3cret"), "{problems:?}");
        assert!(parse("url = \"redis://r\"\nencryption_key = \"${KEY}\"\nttl = \"1s\"").is_err());
    }
}
