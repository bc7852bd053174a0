//! The proxy layer: a client connection's requests ([`conn`], HTTP/2 in
//! [`h2_server`]), one request from a client to its upstream and back
//! ([`handler`], routed by its [`host`]; client fields with `_` in their
//! names dealt with by [`underscores`], credentials kept out of the
//! response by [`scrub`]), and the one mapping from a failed request to
//! its status and JSON body ([`error`]). What a request
//! needs is a [`Runtime`], built from a config by `app`; a connection's
//! shared state is [`Shared`].

pub(crate) mod conn;
pub(crate) mod error;
pub(crate) mod h2_server;
pub(crate) mod handler;
pub mod host;
pub(crate) mod scrub;
pub(crate) mod tunnel;
pub(crate) mod underscores;
pub(crate) mod upgrade;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::client::pool::{ReplyBody, Upstreams};
use crate::config::ProxySettings;
use crate::metrics::Metrics;
use crate::route::RouteTable;

/// What a client gets back: a response head and a body (the upstream's,
/// streaming, or sidekey's own).
pub type Reply = crate::wire::reply::Reply<ReplyBody>;

/// Everything a request needs, built from one config. Swapped as a whole on
/// reload; requests in flight keep the one they started with.
pub struct Runtime {
    pub(crate) settings: ProxySettings,
    pub(crate) table: RouteTable,
    /// Where forwarded requests and token requests go (per-thread
    /// connection pools).
    pub(crate) upstreams: Arc<Upstreams>,
    /// The leaf certificates of TLS interception (`[proxy.intercept]`).
    pub(crate) leaves: Option<Arc<crate::tls::LeafCache>>,
    /// `[proxy.shared_cache]`: the Redis that token sources share through.
    pub(crate) shared_cache: Option<Arc<crate::token::shared::SharedCache>>,
}

/// State shared by every connection.
pub(crate) struct Shared {
    /// `sidekey_requests_total` of requests that matched no route
    /// (labelled `route="-"`).
    pub(crate) unmatched_requests: crate::metrics::RequestCounter,
    pub(crate) runtime: ArcSwap<Runtime>,
    pub(crate) metrics: Arc<Metrics>,
    /// Set once every listener is bound.
    pub(crate) listening: AtomicBool,
    /// How the connection inside an intercepted tunnel is served
    /// ([`conn::serve_tunnel`]): the request that opened the tunnel hands
    /// it back up to the connection layer.
    pub(crate) serve_tunnel: ServeTunnel,
}

/// Serves a TLS connection sidekey terminated inside a `CONNECT` tunnel,
/// for the tunnel's host, as a connection of the client connection
/// (`&ConnInfo`) that sent the `CONNECT`.
pub(crate) type ServeTunnel = fn(
    Arc<Shared>,
    tokio_rustls::server::TlsStream<crate::wire::io::Upgraded>,
    Arc<str>,
    &handler::ConnInfo,
) -> Pin<Box<dyn Future<Output = ()> + Send>>;
