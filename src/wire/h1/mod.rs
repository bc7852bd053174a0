//! sidekey's own HTTP/1.1, both sides of the proxy: [`server`] reads the
//! clients' requests and writes their responses, [`client`] writes
//! requests to upstream connections and reads the responses. [`request`]
//! and [`response`] parse (with `httparse`, the parser hyper uses) and
//! write message heads, [`fields`] holds what they share, [`framed`]
//! reads bodies by their framing and [`chunked`] decodes chunked ones.
//!
//! Why not hyper, as elsewhere: a proxy request passes through two HTTP/1.1
//! connections, and with hyper each side parsed the head into its own
//! request object and handed it between tasks over channels; profiled,
//! hyper's two halves cost more than nginx's whole request. Here the
//! client connection's task drives the whole exchange: the request is read
//! once, forwarded by the same future that reads the upstream's answer,
//! and response body bytes go from one socket to the other as they come.
//! HTTP/2 upstreams (ALPN `h2`) still use hyper's HTTP/2 client.
//!
//! Both state machines are generic over their streams (the server takes a
//! [`server::ReadHalf`] and any writer, the client any
//! [`client::Transport`]) and bodies, so tests drive them on scripted
//! streams.

pub mod chunked;
pub mod client;
pub mod fields;
pub(crate) mod framed;
pub mod request;
pub mod response;
pub mod server;

pub use client::{Body, Connection, H1Error, SendFailure};
