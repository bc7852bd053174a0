//! The wire layer: HTTP/1.1 as sidekey speaks it on both sides ([`h1`]:
//! heads, framing, bodies, the client-connection and upstream-connection
//! state machines), hop-by-hop header rules ([`headers`]), deadlines for
//! each phase of an exchange ([`deadline`]), what a client gets back
//! ([`reply`]) and the per-thread spare buffers idle connections give
//! back ([`spare`]). It depends on nothing else in sidekey, and it is generic
//! over the streams and bodies it carries, so it can be tested on
//! scripted streams.

pub mod deadline;
pub mod h1;
pub mod headers;
pub mod io;
pub mod reply;
pub(crate) mod spare;

/// The error of a body: hyper's, or sidekey's own HTTP/1.1 code's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
