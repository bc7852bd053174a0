//! The `[proxy.intercept]` table: the local CA that signs leaf certificates
//! for intercepted hosts, the optional TLS listener and the leaves' lifetime.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::tls::LocalCa;

use super::file::FileIntercept;
use super::Ctx;

/// The shortest `leaf_lifetime` accepted.
pub(crate) const LEAF_LIFETIME_MIN: Duration = Duration::from_secs(3600);
/// The longest `leaf_lifetime` accepted (30 days).
pub(crate) const LEAF_LIFETIME_MAX: Duration = Duration::from_secs(30 * 24 * 3600);
const LEAF_LIFETIME_DEFAULT: Duration = Duration::from_secs(24 * 3600);

/// Validated `[proxy.intercept]` settings.
#[derive(Debug, Clone)]
pub struct InterceptSettings {
    /// The CA certificate file (resolved against the config's folder).
    pub ca_cert: PathBuf,
    /// The CA key file (mode 0600).
    pub ca_key: PathBuf,
    /// The TLS listener that picks the leaf by SNI, if any.
    pub listen: Option<SocketAddr>,
    /// How long a leaf certificate is valid (1h to 30 days, default 24h).
    pub leaf_lifetime: Duration,
    /// The CA, loaded and checked at validation time.
    pub ca: Arc<LocalCa>,
}

impl InterceptSettings {
    pub(super) fn from_file(raw: &FileIntercept, ctx: &mut Ctx) -> Option<InterceptSettings> {
        let ca_cert = ctx.path("intercept.ca_cert", &raw.ca_cert);
        let ca_key = ctx.path("intercept.ca_key", &raw.ca_key);
        let listen = match raw.listen.as_deref() {
            None => Some(None),
            Some(l) => ctx.socket_addr("intercept.listen", l).map(Some),
        };
        let leaf_lifetime = ctx
            .duration(
                "intercept.leaf_lifetime",
                raw.leaf_lifetime.as_deref(),
                LEAF_LIFETIME_DEFAULT,
            )
            .and_then(|d| {
                if (LEAF_LIFETIME_MIN..=LEAF_LIFETIME_MAX).contains(&d) {
                    Some(d)
                } else {
                    ctx.problem("intercept.leaf_lifetime", "must be between 1h and 30days");
                    None
                }
            });
        let (ca_cert, ca_key) = (ca_cert?, ca_key?);
        let ca = match LocalCa::load_checked(&ca_cert, &ca_key) {
            Ok(ca) => Some(Arc::new(ca)),
            Err(problems) => {
                for p in problems {
                    let key = if p.is_about_key() {
                        "intercept.ca_key"
                    } else {
                        "intercept.ca_cert"
                    };
                    ctx.problem(key, p.to_string());
                }
                None
            }
        };
        Some(InterceptSettings {
            ca_cert,
            ca_key,
            listen: listen?,
            leaf_lifetime: leaf_lifetime?,
            ca: ca?,
        })
    }

    /// Whether a reload may keep what was built from `self` (the CA, the
    /// leaf cache, the listener): the same files, CA, listener and lifetime.
    pub fn same_as(&self, other: &InterceptSettings) -> bool {
        let InterceptSettings {
            ca_cert,
            ca_key,
            listen,
            leaf_lifetime,
            ca,
        } = self;
        *ca_cert == other.ca_cert
            && *ca_key == other.ca_key
            && *listen == other.listen
            && *leaf_lifetime == other.leaf_lifetime
            && ca.fingerprint_sha256() == other.ca.fingerprint_sha256()
    }
}
