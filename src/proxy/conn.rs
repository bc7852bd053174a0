//! A TLS connection sidekey terminated for a host (inside a `CONNECT`
//! tunnel, or on the TLS listener): its requests are served over HTTP/1.1
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
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

use super::handler::{self, ConnInfo};
use super::Shared;
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
