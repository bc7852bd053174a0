//! The client layer: how sidekey reaches an upstream. [`connector`] dials
//! ([`dial`], with `connect_to`, or through [`upstream_proxy`]) and handshakes TLS
//! (with a client certificate for mutual TLS), [`pool`] keeps each worker
//! thread's idle connections and sends a request on one (HTTP/1.1 through
//! [`crate::wire::h1::client`], HTTP/2 through hyper), [`body`] is the
//! body a request carries upstream. Token fetches and proxied requests
//! both go through here. Uses only `wire`, `config`, `tls` and `cause`.

pub(crate) mod body;
pub(crate) mod connector;
pub(crate) mod dial;
pub(crate) mod idle;
pub(crate) mod pool;
pub(crate) mod upstream_proxy;

pub(crate) use body::ProxyBody;
