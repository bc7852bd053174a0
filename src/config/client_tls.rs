//! `[route.tls]` (and the same two keys in `[route.auth.token]`): the
//! client certificate sidekey presents to an upstream that asks for one
//! (mutual TLS), loaded and checked at load time like the intercept CA:
//! the key file private (0600), the key matching the certificate.

use std::path::PathBuf;
use std::sync::Arc;

use crate::tls::ClientIdentity;

use super::Ctx;

/// A validated client certificate and key.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The certificate file (resolved against the config's folder).
    pub cert: PathBuf,
    /// The key file (mode 0600). Its path is printed, never its contents.
    pub key: PathBuf,
    /// What was loaded from them.
    pub identity: Arc<ClientIdentity>,
}

impl PartialEq for ClientTls {
    /// The same files with the same contents.
    fn eq(&self, other: &ClientTls) -> bool {
        self.cert == other.cert && self.key == other.key && self.identity == other.identity
    }
}

/// Reads `{prefix}client_cert` / `{prefix}client_key`: both or neither.
/// `Some(None)`: neither given; `None`: a problem was recorded.
pub(super) fn client_tls(
    ctx: &mut Ctx,
    prefix: &str,
    cert: Option<&str>,
    key: Option<&str>,
) -> Option<Option<ClientTls>> {
    let cert_key = format!("{prefix}client_cert");
    let key_key = format!("{prefix}client_key");
    let (cert, key) = match (cert, key) {
        (None, None) => return Some(None),
        (Some(cert), Some(key)) => (ctx.path(&cert_key, cert), ctx.path(&key_key, key)),
        (Some(_), None) => {
            ctx.problem(&key_key, "missing: client_cert needs its client_key");
            return None;
        }
        (None, Some(_)) => {
            ctx.problem(&cert_key, "missing: client_key needs its client_cert");
            return None;
        }
    };
    let (cert, key) = (cert?, key?);
    match ClientIdentity::load_checked(&cert, &key) {
        Ok(identity) => Some(Some(ClientTls {
            cert,
            key,
            identity: Arc::new(identity),
        })),
        Err(problems) => {
            for p in problems {
                let which = if p.is_about_key() {
                    &key_key
                } else {
                    &cert_key
                };
                ctx.problem(which, p.to_string());
            }
            None
        }
    }
}
