//! `CONNECT`: what an `https://` client behind `HTTPS_PROXY` sends. A
//! host some route names is intercepted (with `[proxy.intercept]`): the
//! client gets `200`, then a TLS handshake with a leaf for that host from
//! sidekey's local CA, and each request inside is served like a plain
//! one. A host no route names gets `403` (nothing is dialled), or, only
//! with `unmatched = "passthrough"`, a blind TCP tunnel that carries no
//! credential. Without `[proxy.intercept]`, a routed host gets `501`
//! saying how to fix it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{Method, StatusCode};
use rustls::server::{Acceptor, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use super::error::ProxyError;
use super::{Reply, Runtime, Shared};
use crate::client::pool::ReplyBody;
use crate::config::Unmatched;
use crate::metrics::{HandshakeLabels, Metrics};
use crate::tls::{FixedHostResolver, LeafCache};
use crate::wire::h1::server::ClientRequest;
use crate::wire::io::{splice, Spliced, Takeover, Upgraded};
use crate::wire::reply::ReplyHead;

/// A `CONNECT` that sidekey accepts.
pub(crate) enum Tunnel {
    /// TLS terminated with a leaf for `host`, and the requests inside
    /// served like plain ones.
    Intercept { host: String },
    /// Bytes both ways to `host:port`, untouched (`unmatched =
    /// "passthrough"` only).
    Blind { host: String, port: u16 },
}

/// Decides what a `CONNECT` gets: a tunnel, or the error that refuses it.
pub(crate) fn open(runtime: &Runtime, req: &ClientRequest) -> Result<Tunnel, ProxyError> {
    debug_assert_eq!(req.method, Method::CONNECT);
    let authority = req
        .uri
        .authority()
        .ok_or(ProxyError::BadRequest("CONNECT needs host:port"))?;
    let host = authority.host().to_ascii_lowercase();
    let port = authority
        .port_u16()
        .ok_or(ProxyError::BadRequest("CONNECT needs host:port"))?;
    if runtime.table.serves_host(&host) {
        return match runtime.leaves {
            Some(_) => Ok(Tunnel::Intercept { host }),
            None => Err(ProxyError::Connect),
        };
    }
    match runtime.settings.unmatched {
        Unmatched::Reject => Err(ProxyError::NoRoute { host }),
        Unmatched::Passthrough => Ok(Tunnel::Blind { host, port }),
    }
}

impl Tunnel {
    /// The `200` that opens the tunnel, and what runs on the connection
    /// after it.
    pub(crate) fn into_reply(
        self,
        runtime: Arc<Runtime>,
        shared: Arc<Shared>,
        serve: impl FnOnce(TlsStream<Upgraded>, Arc<str>) -> Pin<Box<dyn Future<Output = ()> + Send>>
            + Send
            + 'static,
    ) -> Reply {
        let takeover: Takeover = match self {
            Tunnel::Intercept { host } => Box::new(move |client: Upgraded| {
                Box::pin(async move {
                    let Some(leaves) = runtime.leaves.clone() else {
                        return;
                    };
                    let timeout = runtime.settings.header_read_timeout;
                    drop(runtime);
                    let resolver = Arc::new(FixedHostResolver::new(leaves.clone(), host.clone()));
                    let config = server_config(resolver);
                    let metrics = shared.metrics.clone();
                    drop(shared);
                    // The leaf is always the CONNECT host's, whatever the SNI.
                    let leaf_for = |_: Option<&str>| Some(host.clone());
                    let Some(tls) = handshake(
                        config, client, timeout, &leaves, &metrics, "connect", leaf_for,
                    )
                    .await
                    else {
                        return;
                    };
                    let _open = OpenTunnel::new(&metrics);
                    serve(tls, Arc::from(host.as_str())).await;
                })
            }),
            Tunnel::Blind { host, port } => Box::new(move |mut client: Upgraded| {
                Box::pin(async move {
                    let idle = runtime.settings.body_idle_timeout;
                    let connector = runtime.upstreams.connector().clone();
                    drop(runtime);
                    match connector.dial(&host, port).await {
                        Ok(mut upstream) => {
                            if splice(&mut client, &mut upstream, idle).await == Spliced::Idle {
                                tracing::debug!(%host, "blind tunnel idle past body_idle_timeout; closed");
                            }
                        }
                        Err(e) => tracing::info!(%host, error = %e, "blind tunnel: cannot connect"),
                    }
                })
            }),
        };
        Reply {
            status: StatusCode::OK,
            head: ReplyHead::Map(http::HeaderMap::new()),
            body: ReplyBody::empty(),
            close: false,
            upgrade: Some(takeover),
        }
    }
}

/// The server config for connections whose certificate `resolver` picks.
/// HTTP/2 or HTTP/1.1 by ALPN, `h2` preferred (a client without ALPN gets
/// HTTP/1.1).
pub(crate) fn server_config(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Arc<ServerConfig> {
    let mut config = crate::tls::server_config(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Runs the TLS handshake on `io` within `timeout`, counting it in
/// `sidekey_tls_handshakes_total{listener, outcome}` and the leaves it
/// minted in `sidekey_leaf_certificates_minted_total`.
///
/// Once the ClientHello is in, `leaf_for` (given its SNI) names the host
/// whose leaf the handshake will present, if it may have one; a leaf not
/// cached yet is minted on a blocking thread first, so that a new host's
/// key pair and signature never stall the other connections of this
/// worker thread. The resolver in `config` then finds it cached.
pub(crate) async fn handshake<IO>(
    config: Arc<ServerConfig>,
    io: IO,
    timeout: std::time::Duration,
    leaves: &Arc<LeafCache>,
    metrics: &Metrics,
    listener: &'static str,
    leaf_for: impl FnOnce(Option<&str>) -> Option<String>,
) -> Option<TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let minted = leaves.minted();
    let accepted = tokio::time::timeout(timeout, async {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io).await?;
        if let Some(host) = leaf_for(start.client_hello().server_name()) {
            mint_off_thread(leaves, host).await;
        }
        start.into_stream(config).await
    })
    .await;
    metrics
        .leaves_minted
        .inc_by(leaves.minted().saturating_sub(minted));
    let (outcome, tls) = match accepted {
        Ok(Ok(tls)) => ("ok", Some(tls)),
        Ok(Err(e)) => {
            tracing::debug!(listener, error = %e, "TLS handshake refused");
            ("refused", None)
        }
        Err(_) => ("timeout", None),
    };
    metrics
        .tls_handshakes
        .get_or_create(&HandshakeLabels { listener, outcome })
        .inc();
    tls
}

/// Mints `host`'s leaf on a blocking thread unless a fresh one is cached.
async fn mint_off_thread(leaves: &Arc<LeafCache>, host: String) {
    if leaves.is_fresh(&host) {
        return;
    }
    let leaves = leaves.clone();
    // A failure is logged by the resolver, which tries again and refuses
    // the handshake.
    let _ = tokio::task::spawn_blocking(move || leaves.certified_key(&host)).await;
}

/// Counts an open intercepted tunnel in `sidekey_tunnels_open`.
struct OpenTunnel(prometheus_client::metrics::gauge::Gauge);

impl OpenTunnel {
    fn new(metrics: &Metrics) -> OpenTunnel {
        metrics.tunnels_open.inc();
        OpenTunnel(metrics.tunnels_open.clone())
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.0.dec();
    }
}
