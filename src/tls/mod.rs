//! TLS interception: the local CA, the leaf certificates it signs on
//! demand, and the rustls server side that presents them.
//!
//! A leaf module: it uses nothing else of this crate.
//!
//! - [`LocalCa`]: the CA written by `sidekey ca init`, loaded and checked
//!   (key file mode, key matches certificate, basicConstraints CA, validity).
//! - [`LeafCache`]: leaf certificates per host (ECDSA P-256, short-lived,
//!   minted on first use, re-minted when a quarter of their lifetime is
//!   left, at most `capacity` kept).
//! - [`SniResolver`] (the TLS listener: leaf by SNI among allowed hosts) and
//!   [`FixedHostResolver`] (a CONNECT tunnel: the CONNECT host only).
//! - [`ClientIdentity`]: a client certificate and key for mutual TLS to an
//!   upstream, checked like the CA's files.
//! - [`server_config`]: a rustls server config around either resolver.
//!
//! Nothing here logs or formats a private key; errors name files, never
//! their contents.

mod ca;
mod identity;
mod leaf;

use std::sync::Arc;

use rustls::server::ResolvesServerCert;

pub use ca::{CaError, LocalCa, CA_CERT_FILE, CA_KEY_FILE, CA_VALIDITY_DAYS};
pub use identity::ClientIdentity;
pub use leaf::{Clock, FixedHostResolver, LeafCache, SniResolver};

/// A rustls server config presenting the certificates of `resolver`: the
/// ring provider, TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, no client
/// certificates.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> rustls::ServerConfig {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .expect("the ring provider supports TLS 1.2 and 1.3")
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

#[cfg(test)]
mod tests;
