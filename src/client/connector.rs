//! How sidekey reaches upstreams: verified TLS (built-in roots plus
//! `proxy.ca_file`), HTTP/1.1 or HTTP/2 by ALPN, `proxy.connect_to`
//! overrides of where a `host:port` is dialled, a client certificate when
//! the route has one (`[route.tls]`, an [`Identity`]), and the corporate
//! proxy in between when `proxy.upstream_proxy` says so
//! ([`super::upstream_proxy`]).
//!
//! [`Connector`] dials (with its [`Dialer`]) for [`super::pool::Upstreams`], which proxied
//! requests and token fetches share (per-thread pools), and verifies with
//! [`tls_config`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::dial::{ConnectError, Dialer};
use super::upstream_proxy::Via;
use crate::config::ProxySettings;
use crate::tls::ClientIdentity;

#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// The TLS client settings from the `[proxy]` settings: the built-in
/// roots plus `proxy.ca_file`, ring, TLS 1.2 and 1.3; presenting
/// `identity` to servers that ask for a client certificate.
pub(crate) fn tls_config(
    settings: &ProxySettings,
    identity: Option<&ClientIdentity>,
) -> Result<rustls::ClientConfig, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in settings.extra_roots.iter() {
        roots.add(cert.clone())?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    Ok(match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => builder.with_client_auth_cert(identity.chain(), identity.key())?,
    })
}

/// Which client certificate a connection presents: none, or one of its
/// [`Connector`]'s identities. Connections are pooled per identity, so
/// two routes to one host with different certificates never share one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Identity(usize);

impl Identity {
    /// No client certificate.
    pub(crate) const NONE: Identity = Identity(0);

    /// A small number: 0 for none, then one per identity.
    pub(crate) fn index(self) -> usize {
        self.0
    }
}

/// Opens the request path's upstream connections: TCP (with `connect_to`,
/// or through the upstream proxy), then TLS offering `h2` and `http/1.1`
/// by ALPN, with the identity's client certificate.
#[derive(Clone)]
pub(crate) struct Connector {
    dialer: Dialer,
    /// One per [`Identity`]: the first without a client certificate.
    tls: Arc<Vec<tokio_rustls::TlsConnector>>,
    /// The client certificates, in [`Identity`] order (from 1).
    identities: Arc<Vec<Arc<ClientIdentity>>>,
    proxy: Option<Via>,
}

impl Connector {
    /// A connector for `settings`, able to present each of `identities`.
    pub(crate) fn new(
        settings: &ProxySettings,
        identities: Vec<Arc<ClientIdentity>>,
    ) -> Result<Connector, UpstreamError> {
        let alpn = |mut tls: rustls::ClientConfig| {
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tokio_rustls::TlsConnector::from(Arc::new(tls))
        };
        let mut tls = vec![alpn(tls_config(settings, None)?)];
        for identity in &identities {
            tls.push(alpn(tls_config(settings, Some(identity))?));
        }
        Ok(Connector {
            dialer: Dialer::new(settings.connect_timeout, settings.connect_to.clone()),
            tls: Arc::new(tls),
            identities: Arc::new(identities),
            proxy: settings.upstream_proxy.as_ref().map(Via::new),
        })
    }

    /// The identities this connector presents, in [`Identity`] order.
    pub(crate) fn identities(&self) -> &[Arc<ClientIdentity>] {
        &self.identities
    }

    /// The [`Identity`] that presents `identity` (`None`: no certificate),
    /// if this connector has it.
    pub(crate) fn identity(&self, identity: Option<&ClientIdentity>) -> Option<Identity> {
        match identity {
            None => Some(Identity::NONE),
            Some(wanted) => self
                .identities
                .iter()
                .position(|i| **i == *wanted)
                .map(|i| Identity(i + 1)),
        }
    }

    /// Whether an upstream proxy is configured at all.
    pub(crate) fn has_proxy(&self) -> bool {
        self.proxy.is_some()
    }

    /// The upstream proxy, when requests to `host` over plain HTTP go
    /// through it (in absolute form).
    pub(crate) fn plain_proxy_for(&self, host: &str) -> Option<&Via> {
        self.proxy.as_ref().filter(|p| p.applies_to(host))
    }

    /// Opens a plain TCP connection to `host:port` (with `connect_to`, or
    /// through the upstream proxy's `CONNECT`), e.g. for a blind tunnel.
    pub(crate) async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        match &self.proxy {
            Some(proxy) if proxy.applies_to(host) => proxy.tunnel(&self.dialer, host, port).await,
            _ => self.dialer.dial(host, port).await,
        }
    }

    /// Connects to `authority` (`host[:port]`), over TLS when `https`
    /// (presenting `identity`'s certificate if asked for one).
    pub(crate) async fn connect(
        &self,
        https: bool,
        authority: &str,
        identity: Identity,
    ) -> Result<Io, ConnectError> {
        let scheme = if https { "https" } else { "http" };
        let uri: Uri = format!("{scheme}://{authority}")
            .parse()
            .map_err(|_| ConnectError::BadAuthority)?;
        let host = uri.host().ok_or(ConnectError::BadAuthority)?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !https {
            let tcp = match self.plain_proxy_for(host) {
                Some(proxy) => proxy.dial_proxy(&self.dialer).await?,
                None => self.dialer.dial(host, port).await?,
            };
            return Ok(Io::Plain(tcp));
        }
        let tcp = self.dial(host, port).await?;
        let tls = self
            .tls
            .get(identity.index())
            .ok_or(ConnectError::UnknownIdentity)?;
        // An IPv6 literal is `[::1]` in the authority, `::1` to TLS.
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let name =
            ServerName::try_from(name.to_string()).map_err(|_| ConnectError::BadAuthority)?;
        let tls = tls.connect(name, tcp).await.map_err(ConnectError::Tls)?;
        Ok(Io::Tls(Box::new(tls)))
    }
}

/// An upstream connection: plain TCP or TLS over it.
pub(crate) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    /// The TCP connection underneath.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(tcp) => tcp,
            Io::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Whether the upstream chose HTTP/2 by ALPN.
    pub(crate) fn is_h2(&self) -> bool {
        match self {
            Io::Plain(_) => false,
            Io::Tls(tls) => tls.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl crate::wire::h1::client::Transport for Io {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_read_ready(cx)
    }
}
