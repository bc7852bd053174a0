//! [`ClientIdentity`]: a client certificate and its key, presented to
//! upstreams that ask for one (mutual TLS, `[route.tls]`).
//!
//! Loaded with the checks of the local CA's files ([`super::ca`]): the key
//! file private (mode 0600), PKCS#8, matching the certificate, which must
//! be valid now. Its `Debug` prints the subject and expiry, never the key.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use super::ca::{read_key_pair, CaError};

/// A checked client certificate (with any intermediates that followed it
/// in its file) and its private key.
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivatePkcs8KeyDer<'static>>,
    subject: String,
    not_after: SystemTime,
    /// SHA-256 over the chain and the key: two identities are the same
    /// when these are (a renewed certificate at the same path is not).
    digest: [u8; 32],
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("subject", &self.subject)
            .field(
                "not_after",
                &humantime::format_rfc3339_seconds(self.not_after),
            )
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClientIdentity {
    fn eq(&self, other: &ClientIdentity) -> bool {
        self.digest == other.digest
    }
}

impl Eq for ClientIdentity {}

impl ClientIdentity {
    /// Loads `cert_path` (PEM, the client certificate first) and
    /// `key_path` (PEM, PKCS#8, mode 0600) with every check; returns every
    /// problem found.
    pub fn load_checked(cert_path: &Path, key_path: &Path) -> Result<ClientIdentity, Vec<CaError>> {
        let (cert, key) = read_key_pair("client", false, cert_path, key_path)?;
        let key = PrivatePkcs8KeyDer::from(key.serialize_der());
        let mut digest = Sha256::new();
        for c in &cert.chain {
            digest.update((c.len() as u64).to_be_bytes());
            digest.update(c.as_ref());
        }
        digest.update(key.secret_pkcs8_der());
        Ok(ClientIdentity {
            chain: cert.chain,
            key: Arc::new(key),
            subject: cert.subject,
            not_after: cert.not_after,
            digest: digest.finalize().into(),
        })
    }

    /// The certificate chain sent to the upstream.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.chain.clone()
    }

    /// The private key, for a TLS client config.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// The certificate's subject, e.g. `CN=sidekey partner client`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The end of the certificate's validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}
