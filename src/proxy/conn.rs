//! A TLS connection sidekey terminates for a host (on the TLS listener,
//! [`serve_sni`], or inside a `CONNECT` tunnel): its requests are served over HTTP/1.1
//! or HTTP/2 (by ALPN, see [`super::h2_server`]), each by
//! [`handler::handle`]. A `CONNECT` that the handler accepts comes back
//! here through [`serve_tunnel`] (the [`Shared::serve_tunnel`] the app
//! wires), so the request layer never names the connection layer above
//! it. (A plain connection's requests are served by `app`'s accept loop
//! straight through [`crate::wire::h1::server`].)

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

use super::handler::{self, ConnInfo};
use super::{tunnel, Runtime, Shared};
use crate::tls::SniResolver;
use crate::wire::h1::server::{serve, Limits, ReadHalf};
use crate::wire::io::Upgraded;

/// Serves the requests of a TLS connection sidekey terminated for `host`
/// (inside a tunnel, or on the TLS listener): HTTP/2 when the client
/// chose `h2` by ALPN, else HTTP/1.1.
pub(crate) async fn serve_tls<S>(
    shared: Arc<Shared>,
    tls: TlsStream<S>,
    host: Arc<str>,
    peer: SocketAddr,
    limits: Limits,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let conn = ConnInfo {
        peer,
        route: None,
        tls_host: Some(host),
        limits: limits.clone(),
        stop: stop.clone(),
    };
    if h2 {
        // Boxed: HTTP/2's state would otherwise size every TLS
        // connection's future, HTTP/1.1 ones too.
        return Box::pin(super::h2_server::serve(shared, tls, conn, stop)).await;
    }
    let (read, write) = tokio::io::split(tls);
    let service = |req| Box::pin(handler::handle(&shared, &conn, req));
    serve(
        ReadHalf::Other(Box::new(read)),
        write,
        limits,
        stop,
        super::error::bad_request,
        service,
    )
    .await;
}

/// A connection on the TLS listener (an app whose `https://api.example.com`
/// resolves to sidekey): the leaf is picked by SNI among the hosts routes
/// name (an unknown or missing SNI fails the handshake, within
/// `header_read_timeout`), then the requests inside are served like plain
/// ones, for that host only.
pub(crate) async fn serve_sni(
    shared: Arc<Shared>,
    runtime: Arc<Runtime>,
    stream: TcpStream,
    peer: SocketAddr,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    // The handshake's flights and every response after it go out at once
    // (the plain listener's `WriteHalf` sets this on its second write).
    let _ = stream.set_nodelay(true);
    let Some(leaves) = runtime.leaves.clone() else {
        return;
    };
    let timeout = runtime.settings.header_read_timeout;
    drop(runtime);
    let routes = shared.clone();
    let allowed: Arc<dyn Fn(&str) -> bool + Send + Sync> =
        Arc::new(move |sni: &str| routes.runtime.load().table.serves_host(sni));
    let config = tunnel::server_config(Arc::new(SniResolver::new(leaves.clone(), allowed.clone())));
    // Only a name a route serves may have a leaf minted.
    let leaf_for = |sni: Option<&str>| sni.filter(|sni| allowed(sni)).map(str::to_owned);
    // The handshake and the connection are boxed, each for its own time:
    // inline, this task would hold the handshake's state (~9 KB) for the
    // connection's whole life.
    let serving = {
        let metrics = &shared.metrics;
        let handshake = Box::pin(tunnel::handshake(
            config, stream, timeout, &leaves, metrics, "tls", leaf_for,
        ));
        let Some(tls) = handshake.await else {
            return;
        };
        let Some(host) = tls.get_ref().1.server_name().map(Arc::<str>::from) else {
            return;
        };
        Box::pin(serve_tls(shared, tls, host, peer, limits, stop))
    };
    serving.await;
}

/// A connection inside an intercepted `CONNECT` tunnel, once its TLS is
/// up: [`serve_tls`] for the tunnel's host, with the limits and stop
/// signal of the connection that sent the `CONNECT`.
pub(crate) fn serve_tunnel(
    shared: Arc<Shared>,
    tls: TlsStream<Upgraded>,
    host: Arc<str>,
    outer: &ConnInfo,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_tls(
        shared,
        tls,
        host,
        outer.peer,
        outer.limits.clone(),
        outer.stop.clone(),
    ))
}
