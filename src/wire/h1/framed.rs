//! Body bytes out of a connection's read buffer, by the framing its head
//! declared: a length, chunked, or until the connection closes. Request
//! bodies ([`super::server`]) and response bodies ([`super::client`]) both
//! read this way; only what they do at the end differs.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http_body::SizeHint;
use tokio::io::AsyncRead;

use super::chunked::{ChunkError, Decoder, Step, TrailerLimits};
use super::fields::Framing;

/// Where a body is.
#[derive(Debug)]
pub(crate) enum Framed {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Decoder),
    /// Everything until the peer closes the connection.
    UntilClose,
    Done,
}

impl From<Framing> for Framed {
    /// A body's reader, a chunked one with the default [`TrailerLimits`].
    fn from(framing: Framing) -> Framed {
        Framed::new(framing, TrailerLimits::default())
    }
}

impl Framed {
    pub(crate) fn new(framing: Framing, trailers: TrailerLimits) -> Framed {
        match framing {
            Framing::Empty => Framed::Done,
            Framing::Length(n) => Framed::Length(n),
            Framing::Chunked => Framed::Chunked(Decoder::with_limits(trailers)),
            Framing::UntilClose => Framed::UntilClose,
        }
    }

    /// The next piece of body in `buf`, split off without copying, or what
    /// is needed next ([`Step::NeedMore`]: read more into `buf`).
    pub(crate) fn take(&mut self, buf: &mut BytesMut) -> Result<Step, ChunkError> {
        match self {
            Framed::Done => Ok(Step::End),
            _ if buf.is_empty() && !matches!(self, Framed::Chunked(_)) => Ok(Step::NeedMore),
            Framed::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= n as u64;
                if *left == 0 {
                    *self = Framed::Done;
                }
                Ok(Step::Data(buf.split_to(n).freeze()))
            }
            Framed::Chunked(decoder) => {
                let step = decoder.decode(buf)?;
                if step == Step::End {
                    *self = Framed::Done;
                }
                Ok(step)
            }
            Framed::UntilClose => Ok(Step::Data(buf.split().freeze())),
        }
    }

    /// The connection ended: whether that ends the body (rather than
    /// cutting it short).
    pub(crate) fn ends_at_close(&mut self) -> bool {
        if matches!(self, Framed::UntilClose) {
            *self = Framed::Done;
        }
        self.is_done()
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Framed::Done)
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self {
            Framed::Done => SizeHint::with_exact(0),
            Framed::Length(n) => SizeHint::with_exact(*n),
            Framed::Chunked(_) | Framed::UntilClose => SizeHint::default(),
        }
    }
}

/// Reads more from `io` into `buf`, making room for at least a quarter of
/// `size` first; `Ok(0)` at the end of the connection.
pub(crate) fn poll_fill<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    size: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < size / 4 {
        buf.reserve(size);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn data(step: Result<Step, ChunkError>) -> Bytes {
        match step {
            Ok(Step::Data(d)) => d,
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn a_length_takes_no_more_than_its_bytes() {
        let mut framed = Framed::Length(5);
        let mut buf = BytesMut::from(&b"hel"[..]);
        assert_eq!(data(framed.take(&mut buf)), "hel");
        assert_eq!(framed.take(&mut buf), Ok(Step::NeedMore));
        buf.extend_from_slice(b"loGET /next");
        assert_eq!(data(framed.take(&mut buf)), "lo");
        assert!(framed.is_done());
        assert_eq!(framed.take(&mut buf), Ok(Step::End));
        assert_eq!(&buf[..], b"GET /next", "the next message stays");
        assert!(!Framed::Length(1).ends_at_close(), "cut short");
    }

    #[test]
    fn until_close_ends_only_at_close() {
        let mut framed = Framed::UntilClose;
        let mut buf = BytesMut::from(&b"all"[..]);
        assert_eq!(data(framed.take(&mut buf)), "all");
        assert_eq!(framed.take(&mut buf), Ok(Step::NeedMore));
        assert!(framed.ends_at_close());
        assert_eq!(framed.take(&mut buf), Ok(Step::End));
    }

    #[test]
    fn chunked_ends_with_its_last_chunk() {
        let mut framed = Framed::Chunked(Decoder::new());
        let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\n\r\n"[..]);
        assert_eq!(data(framed.take(&mut buf)), "ok");
        assert_eq!(framed.take(&mut buf), Ok(Step::End));
        assert!(framed.is_done());
        assert_eq!(framed.size_hint().exact(), Some(0));
    }
}
