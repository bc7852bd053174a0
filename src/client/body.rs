//! [`ProxyBody`]: the body of every request sidekey sends upstream (a
//! client's, streamed, never buffered whole; or one sidekey holds whole:
//! a token request's, a body kept for a retry). Response bodies are
//! [`super::pool::ReplyBody`].
//!
//! An enum of the kinds there are rather than a boxed trait object:
//! bodies are then neither allocated nor called through a vtable.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use thiserror::Error;

use crate::wire::deadline::Progress;
use crate::wire::h1::server::RequestBody;
use crate::wire::BoxError;

pub(crate) enum ProxyBody {
    /// All of it at once (token requests, bodies kept for a retry), or
    /// nothing.
    Full(Option<Bytes>),
    /// A client's request body, read from its connection as it goes.
    Request(RequestBody),
    /// The same, of unknown length (chunked), cut at `max_request_body`:
    /// `left` more bytes may come.
    Capped { body: RequestBody, left: u64 },
}

/// A client's request body is larger than `proxy.max_request_body`.
#[derive(Debug, Error)]
#[error("the request body is larger than max_request_body")]
pub(crate) struct BodyTooLarge;

impl ProxyBody {
    pub(crate) fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }

    pub(crate) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
        let bytes = bytes.into();
        ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// A client's body under `max` bytes (`max_request_body`; 0: no
    /// limit): refused at once when its declared length is over; one of
    /// unknown length fails as it streams, at the byte over. Out of line:
    /// only called with a limit set.
    #[cold]
    #[inline(never)]
    pub(crate) fn limited(body: RequestBody, max: u64) -> Result<ProxyBody, BodyTooLarge> {
        if max == 0 {
            return Ok(ProxyBody::Request(body));
        }
        match body.size_hint().exact() {
            Some(n) if n > max => Err(BodyTooLarge),
            Some(_) => Ok(ProxyBody::Request(body)),
            None => Ok(ProxyBody::Capped { body, left: max }),
        }
    }

    /// When a client's streamed request body last moved (the others do
    /// not wait on anyone).
    pub(crate) fn progress(&self) -> Option<&Arc<Progress>> {
        match self {
            ProxyBody::Request(body) | ProxyBody::Capped { body, .. } => body.progress(),
            ProxyBody::Full(_) => None,
        }
    }
}

impl From<RequestBody> for ProxyBody {
    fn from(body: RequestBody) -> ProxyBody {
        ProxyBody::Request(body)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Request(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Capped { body, left } => {
                let frame = std::task::ready!(Pin::new(body).poll_frame(cx));
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                    let len = data.map_or(0, |d| d.len() as u64);
                    match left.checked_sub(len) {
                        Some(rest) => *left = rest,
                        None => return Poll::Ready(Some(Err(Box::new(BodyTooLarge)))),
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Request(body) | ProxyBody::Capped { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ProxyBody::Request(body) | ProxyBody::Capped { body, .. } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_full_body_is_one_frame_of_known_size() {
        let body = ProxyBody::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");

        let empty = ProxyBody::full(Bytes::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }
}
