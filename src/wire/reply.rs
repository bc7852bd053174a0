//! [`Reply`]: what a client gets back for a request.
//!
//! Most replies carry an HTTP/1.1 upstream's header fields as they came
//! ([`ReplyHead::Upstream`]); the connection writes them without their
//! hop-by-hop fields and without building a header map. sidekey's own
//! answers (errors, the admin listener) and HTTP/2 upstreams' have a map.

use http::header::HeaderMap;
use http::{Response, StatusCode};

use super::h1::fields::RawFields;
use super::io::Takeover;

/// A response to a client: its status, its header fields and its body
/// (any `http_body::Body`; the proxy's is `client::pool::ReplyBody`).
pub struct Reply<B> {
    pub(crate) status: StatusCode,
    pub(crate) head: ReplyHead,
    pub(crate) body: B,
    /// sidekey ends the connection after this reply (set by the error
    /// mapping for a request that could not be framed or trusted).
    pub(crate) close: bool,
    /// The connection switches protocols after this reply (a `CONNECT`
    /// tunnel's `200`, an `Upgrade`'s `101`): what runs on it then.
    pub(crate) upgrade: Option<Takeover>,
}

pub(crate) enum ReplyHead {
    /// Cleaned of hop-by-hop headers already.
    Map(HeaderMap),
    /// An HTTP/1.1 upstream's fields, hop-by-hop ones still in.
    Upstream(RawFields),
}

impl<B> Reply<B> {
    /// Whether sidekey ends the connection after this reply.
    pub(crate) fn closes(&self) -> bool {
        self.close
    }
}

impl<B> From<Response<B>> for Reply<B> {
    fn from(response: Response<B>) -> Reply<B> {
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            head: ReplyHead::Map(parts.headers),
            body,
            close: false,
            upgrade: None,
        }
    }
}
