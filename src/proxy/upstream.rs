//! How sidekey reaches upstreams: verified TLS (built-in roots plus
//! `proxy.ca_file`), HTTP/1.1 or HTTP/2 by ALPN, and `proxy.connect_to`
//! overrides of where a `host:port` is dialled.
//!
//! [`connector`] is shared by the request path (per-thread pools,
//! [`super::pool`]) and by [`client`], the shared pooled client of token
//! fetches, which run off the request path on any thread.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thiserror::Error;

use super::ProxyBody;
use crate::config::ProxySettings;

#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// The client token fetches go through.
pub type UpstreamClient = Client<HttpsConnector<Dialer>, ProxyBody>;

/// Builds the token fetches' client from the `[proxy]` settings.
pub fn client(connector: HttpsConnector<Dialer>, settings: &ProxySettings) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(settings.pool_idle_timeout)
        .build(connector)
}

/// Builds the TLS connector from the `[proxy]` settings.
pub fn connector(settings: &ProxySettings) -> Result<HttpsConnector<Dialer>, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in settings.extra_roots.iter() {
        roots.add(cert.clone())?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(settings.connect_timeout));
    let dialer = Dialer {
        http,
        connect_to: Arc::new(settings.connect_to.clone()),
    };
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(dialer))
}

/// Dials `connect_to[host:port]` instead of resolving `host`, when set.
/// The TLS layer above still uses the original host for SNI and
/// certificate verification.
#[derive(Clone, Debug)]
pub struct Dialer {
    http: HttpConnector,
    connect_to: Arc<HashMap<String, String>>,
}

impl Dialer {
    fn redirect(&self, uri: &Uri) -> Option<Uri> {
        if self.connect_to.is_empty() {
            return None;
        }
        let host = uri.host()?;
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let key = format!("{}:{port}", host.to_ascii_lowercase());
        let addr = self.connect_to.get(&key)?;
        format!("http://{addr}").parse().ok()
    }
}

impl tower::Service<Uri> for Dialer {
    type Response = <HttpConnector as tower::Service<Uri>>::Response;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dial = self.redirect(&uri).unwrap_or(uri);
        Box::pin(self.http.call(dial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_to_keeps_the_url_but_changes_the_dial_address() {
        let dialer = Dialer {
            http: HttpConnector::new(),
            connect_to: Arc::new(HashMap::from([(
                "api.copilot.cx:443".to_string(),
                "127.0.0.1:8443".to_string(),
            )])),
        };
        let to = dialer.redirect(&"https://API.copilot.cx/v1".parse().unwrap());
        assert_eq!(to.unwrap().authority().unwrap().as_str(), "127.0.0.1:8443");
        assert!(dialer
            .redirect(&"http://api.copilot.cx/v1".parse().unwrap())
            .is_none());
    }
}
