//! The client side: one request at a time on an upstream connection,
//! driven inline by the request that uses it.
//!
//! hyper's client runs each connection as a task of its own and hands it
//! requests and responses over channels; for a proxy whose request future
//! already waits on that one connection, the hand-over (a task wake each
//! way, a second head parse into a request object) cost more than the rest
//! of the request. Here the request's own future writes the head and body,
//! and the response body reads straight from the socket when the client
//! side asks for the next piece. Heads are parsed by `httparse` (the parser
//! hyper uses) in [`super::response`], chunked bodies decoded by
//! [`super::chunked`].
//!
//! The exchange is full duplex: the response head is read while the
//! request body is still being written, so an upstream that answers early
//! (a `401` or `413` in the middle of an upload) is heard. sidekey then
//! stops sending, passes that answer on, and never reuses the connection
//! (its request was cut short).
//!
//! The connection pool (in the client layer) decides which connection a
//! request takes, and gets it back from [`Body`] once the response was
//! read to its end. Generic over the stream ([`Transport`]) and the
//! request body, so that it can be driven by a scripted stream in tests.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::Method;
use http_body::{Body as HttpBody, Frame, SizeHint};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

use super::chunked;
use super::chunked::{ChunkError, Step};
use super::fields::Framing;
use super::framed::{self, Framed};
use super::request;
use super::response::{self, HeadError, ResponseHead};
use crate::wire::deadline::{Bounded, Deadline};
use crate::wire::headers::ForwardHeaders;
use crate::wire::BoxError;

/// A response head larger than this is refused.
const MAX_HEAD_BYTES: usize = 256 * 1024;

/// Read a response body in pieces of at least this size.
const READ_SIZE: usize = 16 * 1024;
/// Read a response head in pieces of this size: most heads (and small
/// bodies after them) fit, and a burst of thousands of upstream
/// connections waiting for their heads holds 4 KiB each, not 16.
const HEAD_READ_SIZE: usize = 4 * 1024;

#[derive(Debug, Error)]
pub enum H1Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error("invalid chunked response body: {0}")]
    Chunk(#[from] ChunkError),
    #[error("the upstream closed the connection before the response head")]
    ClosedBeforeHead,
    #[error("the upstream closed the connection in the middle of the response body")]
    ClosedInBody,
    #[error(
        "the upstream answered 101 Switching Protocols to a request that did not ask to upgrade"
    )]
    SwitchingProtocols,
    /// The client's side failed: its body could not be read (it went
    /// away, stalled or was malformed).
    #[error("the request body could not be read: {0}")]
    RequestBody(#[source] BoxError),
    #[error("the request body does not match its Content-Length")]
    RequestBodyLength,
    #[error("no response head before the request timeout")]
    Timeout,
}

/// Why [`Connection::send`] failed.
#[derive(Debug)]
pub enum SendFailure {
    /// Nothing of the request was written: it may go on another connection.
    Unsent,
    Failed(H1Error),
}

/// A stream an upstream connection runs on.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// Whether the stream may have something to read (`Ready`: data, the
    /// end, or an error) or surely has not (`Pending`), without reading.
    /// Streams that cannot tell answer `Ready`.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// A request to write on a connection: its head's parts, borrowed.
pub struct RequestParts<'a> {
    pub method: &'a Method,
    /// Origin form: `/path?query`.
    pub target: &'a str,
    pub headers: &'a ForwardHeaders,
    /// Sent as `Host` when `headers` has none.
    pub host: &'a str,
}

/// One HTTP/1.1 upstream connection and its read buffer.
pub struct Connection<T> {
    io: T,
    /// Read but not yet consumed: the next head, or body bytes.
    buf: BytesMut,
    /// The request head being written (kept to reuse its allocation).
    out: Vec<u8>,
    /// Bounds each request's exchange (see [`Bounded`]); made on first use.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T: Transport> Connection<T> {
    pub fn new(io: T) -> Box<Connection<T>> {
        Box::new(Connection {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            timer: None,
        })
    }

    /// Whether an idle connection can no longer be used: the upstream
    /// closed it, reset it or sent something unasked. Looks without
    /// waiting, and without a system call while the runtime has seen
    /// nothing arrive on the socket since the last response was read.
    pub fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(Waker::noop());
        if self.io.poll_read_ready(&mut cx).is_pending() {
            return false;
        }
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_ready()
    }

    /// Writes the request and its `body` and reads the response head, by
    /// `deadline`. The head is read while the body is written: an early
    /// answer ends the upload (the rest is not sent) and the connection is
    /// not reused after it. A `101 Switching Protocols` is an answer only
    /// to a request that asks to upgrade ([`ForwardHeaders::asks_upgrade`]);
    /// the connection then carries the new protocol
    /// ([`Connection::into_switched`]).
    pub async fn send<B>(
        &mut self,
        req: RequestParts<'_>,
        body: &mut B,
        deadline: &Deadline,
    ) -> Result<ResponseHead, SendFailure>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let framing = if body.is_end_stream() {
            // A body-carrying method says "empty" explicitly.
            match *req.method {
                Method::POST | Method::PUT | Method::PATCH => Framing::Length(0),
                _ => Framing::Empty,
            }
        } else {
            match body.size_hint().exact() {
                Some(n) => Framing::Length(n),
                None => Framing::Chunked,
            }
        };
        let Connection {
            io,
            buf,
            out,
            timer,
        } = self;
        out.clear();
        request::encode_request(out, req.method, req.target, req.headers, req.host, framing);
        // A pooled connection the upstream closed just now fails here, with
        // nothing written: the request can go on another connection.
        let written = match io.write(out).await {
            Ok(n) if n > 0 => n,
            _ => return Err(SendFailure::Unsent),
        };
        let at = deadline.at();
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        // Reused from the previous exchange: never later than this one's.
        if timer.deadline() > at {
            timer.as_mut().reset(at);
        }
        let mut upload = Upload {
            head: std::mem::take(out),
            head_at: written,
            data: Bytes::new(),
            tail: &[],
            framing,
            sent: 0,
            body_done: matches!(framing, Framing::Empty | Framing::Length(0)),
            flushed: false,
            stopped: false,
        };
        let method = req.method;
        let upgrade = req.headers.asks_upgrade();
        let exchange = std::pin::pin!(std::future::poll_fn(|cx| {
            exchange(io, buf, &mut upload, body, method, upgrade, cx)
        }));
        let bounded = Bounded {
            deadline,
            timer: timer.as_mut(),
            work: exchange,
        };
        let result = bounded.await.unwrap_or(Err(H1Error::Timeout));
        // Keep the head buffer's allocation for the next request.
        *out = std::mem::take(&mut upload.head);
        result.map_err(SendFailure::Failed)
    }

    /// The stream of a connection whose upstream answered `101` to an
    /// upgrade, and what it sent after the `101` head.
    pub fn into_switched(self) -> (T, Bytes) {
        let Connection { io, buf, .. } = self;
        (io, buf.freeze())
    }

    /// Reads more into the buffer; `Ok(0)` at the end of the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        framed::poll_fill(&mut self.io, &mut self.buf, READ_SIZE, cx)
    }
}

/// The write side of one exchange: the rest of the head, then the body
/// piece by piece (a chunk's framing around its data), then a flush.
struct Upload {
    head: Vec<u8>,
    /// How much of `head` is written.
    head_at: usize,
    /// The body piece being written.
    data: Bytes,
    /// What follows it (a chunk's CRLF, the last chunk).
    tail: &'static [u8],
    framing: Framing,
    sent: u64,
    body_done: bool,
    /// All of it written and flushed.
    flushed: bool,
    /// The upstream stopped taking it: nothing more is written.
    stopped: bool,
}

/// How the write side ended, short of success.
enum UploadError {
    /// The upstream stopped taking bytes (it may have answered already).
    Io(io::Error),
    /// The client's body failed: that ends the exchange.
    Body(H1Error),
}

/// Drives both sides of an exchange on `io`: writes what is left of the
/// request while it reads the response head. Ends with the head (the
/// connection reusable only if the request was written whole), or with
/// the error that ended it. `upgrade`: the request asked to switch
/// protocols, so a `101` is its answer.
fn exchange<T: Transport, B>(
    io: &mut T,
    buf: &mut BytesMut,
    upload: &mut Upload,
    body: &mut B,
    method: &Method,
    upgrade: bool,
    cx: &mut Context<'_>,
) -> Poll<Result<ResponseHead, H1Error>>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut write_error = None;
    if !upload.flushed && !upload.stopped {
        match poll_upload(io, upload, body, cx) {
            Poll::Ready(Ok(())) => upload.flushed = true,
            Poll::Ready(Err(UploadError::Body(e))) => return Poll::Ready(Err(e)),
            Poll::Ready(Err(UploadError::Io(e))) => write_error = Some(e),
            Poll::Pending => {}
        }
    }
    loop {
        match response::parse_response(buf, method, MAX_HEAD_BYTES) {
            Err(e) => return Poll::Ready(Err(e.into())),
            Ok(Some(mut head)) if head.status == http::StatusCode::SWITCHING_PROTOCOLS => {
                if !upgrade {
                    return Poll::Ready(Err(H1Error::SwitchingProtocols));
                }
                // The connection now carries another protocol.
                head.keep_alive = false;
                return Poll::Ready(Ok(head));
            }
            // 100 Continue, 103 Early Hints: the final answer follows.
            Ok(Some(head)) if head.status.is_informational() => continue,
            Ok(Some(mut head)) => {
                // An early answer: the upload stops here, and the
                // connection, with a request cut short, is not reused.
                if !upload.flushed {
                    head.keep_alive = false;
                }
                return Poll::Ready(Ok(head));
            }
            Ok(None) => {}
        }
        match framed::poll_fill(io, buf, HEAD_READ_SIZE, cx) {
            Poll::Ready(Ok(0)) => {
                // Closed: what failed first is the better cause.
                return Poll::Ready(Err(
                    write_error.map_or(H1Error::ClosedBeforeHead, H1Error::Io)
                ));
            }
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => {
                return Poll::Ready(Err(H1Error::Io(write_error.unwrap_or(e))));
            }
            // A write error with nothing to read yet: the upstream's
            // answer (or its close) may still come.
            Poll::Pending => {
                if let Some(e) = write_error {
                    // Writing stops; reading goes on until the head or
                    // the close.
                    upload.stopped = true;
                    tracing::debug!(error = %e, "upstream stopped reading the request; waiting for its answer");
                }
                return Poll::Pending;
            }
        }
    }
}

/// Writes what is left of the request: `Ready(Ok)` once it is all written
/// and flushed.
fn poll_upload<T: Transport, B>(
    io: &mut T,
    upload: &mut Upload,
    body: &mut B,
    cx: &mut Context<'_>,
) -> Poll<Result<(), UploadError>>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    loop {
        if upload.head_at < upload.head.len() {
            let n = std::task::ready!(
                Pin::new(&mut *io).poll_write(cx, &upload.head[upload.head_at..])
            )
            .map_err(UploadError::Io)?;
            if n == 0 {
                return Poll::Ready(Err(UploadError::Io(io::ErrorKind::WriteZero.into())));
            }
            upload.head_at += n;
            continue;
        }
        if !upload.data.is_empty() {
            let n = std::task::ready!(Pin::new(&mut *io).poll_write(cx, &upload.data))
                .map_err(UploadError::Io)?;
            if n == 0 {
                return Poll::Ready(Err(UploadError::Io(io::ErrorKind::WriteZero.into())));
            }
            upload.data.advance(n);
            continue;
        }
        if !upload.tail.is_empty() {
            let n = std::task::ready!(Pin::new(&mut *io).poll_write(cx, upload.tail))
                .map_err(UploadError::Io)?;
            if n == 0 {
                return Poll::Ready(Err(UploadError::Io(io::ErrorKind::WriteZero.into())));
            }
            upload.tail = &upload.tail[n..];
            continue;
        }
        if upload.body_done {
            std::task::ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(UploadError::Io)?;
            return Poll::Ready(Ok(()));
        }
        // The next piece of body.
        match std::task::ready!(Pin::new(&mut *body).poll_frame(cx)) {
            Some(Err(e)) => {
                return Poll::Ready(Err(UploadError::Body(H1Error::RequestBody(e.into()))))
            }
            Some(Ok(frame)) => {
                // Request trailers are not forwarded.
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                upload.sent += data.len() as u64;
                upload.head.clear();
                upload.head_at = 0;
                match upload.framing {
                    Framing::Chunked => {
                        chunked::encode_chunk_header(&mut upload.head, data.len());
                        upload.tail = b"\r\n";
                    }
                    Framing::Length(n) if upload.sent <= n => {}
                    _ => return Poll::Ready(Err(UploadError::Body(H1Error::RequestBodyLength))),
                }
                upload.data = data;
            }
            None => {
                upload.body_done = true;
                match upload.framing {
                    Framing::Chunked => upload.tail = chunked::LAST_CHUNK,
                    Framing::Length(n) if upload.sent != n => {
                        return Poll::Ready(Err(UploadError::Body(H1Error::RequestBodyLength)))
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A response body read from its connection as the client side asks for
/// it. Once it has ended, [`Body::reusable`] gives the connection back.
pub struct Body<T> {
    conn: Option<Box<Connection<T>>>,
    state: Framed,
    keep_alive: bool,
}

impl<T: Transport> Body<T> {
    pub fn new(head: &ResponseHead, conn: Box<Connection<T>>) -> Body<T> {
        let state = Framed::from(head.framing);
        Body {
            conn: Some(conn),
            state,
            keep_alive: head.keep_alive,
        }
    }

    /// The connection, once the body was read to its end and the upstream
    /// allows another request on it (and sent nothing more).
    pub fn reusable(&mut self) -> Option<Box<Connection<T>>> {
        if !(self.state.is_done() && self.keep_alive) {
            return None;
        }
        self.conn.take().filter(|conn| conn.buf.is_empty())
    }

    fn fail(&mut self, e: H1Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.state = Framed::Done;
        self.keep_alive = false;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl<T: Transport> HttpBody for Body<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.state.take(&mut conn.buf) {
                Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::NeedMore) => {}
                Err(e) => return this.fail(e.into()),
            }
            match std::task::ready!(conn.poll_fill(cx)) {
                Ok(0) if this.state.ends_at_close() => {
                    this.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(H1Error::ClosedInBody),
                Ok(_) => {}
                Err(e) => return this.fail(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.state.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::header::HeaderValue;
    use http::StatusCode;
    use http_body_util::Empty;
    use tokio_test::io::{Builder, Mock};

    use super::*;
    use crate::wire::h1::fields::RawFields;

    struct Upstream(Mock);

    impl AsyncRead for Upstream {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Upstream {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    impl Transport for Upstream {
        fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgrade_request_takes_the_101_and_the_bytes_behind_it() {
        // The client's own Connection and Upgrade are hop-by-hop: only
        // those sidekey adds are written.
        let client = RawFields::parse(
            b"Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
        )
        .unwrap();
        let mut headers = ForwardHeaders::new(client);
        headers.ask_upgrade(HeaderValue::from_static("websocket"));
        let mock = Builder::new()
            .write(
                b"GET /socket HTTP/1.1\r\nhost: upstream.test\r\nSec-WebSocket-Key: k\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
            )
            .read(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi")
            .build();
        let mut conn = Connection::new(Upstream(mock));
        let deadline = Deadline::new(tokio::time::Instant::now(), Duration::from_secs(5), None);
        let parts = RequestParts {
            method: &Method::GET,
            target: "/socket",
            headers: &headers,
            host: "upstream.test",
        };
        let head = match conn
            .send(parts, &mut Empty::<Bytes>::new(), &deadline)
            .await
        {
            Ok(head) => head,
            Err(SendFailure::Failed(e)) => panic!("{e}"),
            Err(SendFailure::Unsent) => panic!("unsent"),
        };
        assert_eq!(head.status, StatusCode::SWITCHING_PROTOCOLS);
        assert!(!head.keep_alive);
        let (_io, buffered) = (*conn).into_switched();
        assert_eq!(&buffered[..], b"\x81\x02hi");
    }
}
