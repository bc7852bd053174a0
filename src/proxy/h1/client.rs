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
//! The connection pool ([`crate::proxy::pool`]) decides which connection a request
//! takes, and gets it back from [`Body`] once the response was read to its
//! end.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::Method;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

use super::chunked;
use super::chunked::{ChunkError, Decoder, Step};
use super::framed::{self, Framed};
use super::request::{self, RequestFraming};
use super::response::{self, HeadError, ResponseFraming, ResponseHead};
use crate::proxy::deadline::{Bounded, Deadline};
use crate::proxy::pool::Outgoing;
use crate::proxy::upstream::Io;
use crate::proxy::{BoxError, ProxyBody};

/// A response head larger than this is refused.
const MAX_HEAD_BYTES: usize = 256 * 1024;

/// Read in pieces of at least this size.
const READ_SIZE: usize = 16 * 1024;

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
    #[error("the upstream answered 101 Switching Protocols, which sidekey does not proxy")]
    SwitchingProtocols,
    #[error("the request body could not be read: {0}")]
    RequestBody(BoxError),
    #[error("the request body does not match its Content-Length")]
    RequestBodyLength,
    #[error("no response head before the request timeout")]
    Timeout,
}

/// Why [`Connection::send`] failed.
pub enum SendFailure {
    /// Nothing of the request was written: it may go on another connection.
    Unsent,
    Failed(H1Error),
}

/// One HTTP/1.1 upstream connection and its read buffer.
pub struct Connection {
    io: Io,
    /// Read but not yet consumed: the next head, or body bytes.
    buf: BytesMut,
    /// The request head being written (kept to reuse its allocation).
    out: Vec<u8>,
    /// Bounds each request's exchange (see [`Before`]); made on first use.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Connection {
    pub fn new(io: Io) -> Box<Connection> {
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
        if self.io.tcp().poll_read_ready(&mut cx).is_pending() {
            return false;
        }
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_ready()
    }

    /// Writes `req` and reads the response head, by `deadline`. `host` is
    /// sent as `Host` when the request has none.
    pub async fn send(
        &mut self,
        req: &mut Outgoing,
        host: &str,
        deadline: &Deadline,
    ) -> Result<ResponseHead, SendFailure> {
        let framing = if req.body.is_end_stream() {
            // A body-carrying method says "empty" explicitly.
            match req.method {
                Method::POST | Method::PUT | Method::PATCH => RequestFraming::Length(0),
                _ => RequestFraming::Empty,
            }
        } else {
            match req.body.size_hint().exact() {
                Some(n) => RequestFraming::Length(n),
                None => RequestFraming::Chunked,
            }
        };
        let Connection {
            io,
            buf,
            out,
            timer,
        } = self;
        out.clear();
        request::encode_request(out, &req.method, &req.target, &req.headers, host, framing);
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
        let exchange = std::pin::pin!(async {
            io.write_all(&out[written..]).await?;
            write_body(io, &mut req.body, framing, out).await?;
            io.flush().await?;
            read_head(io, buf, &req.method).await
        });
        let bounded = Bounded {
            deadline,
            timer: timer.as_mut(),
            work: exchange,
        };
        bounded
            .await
            .unwrap_or(Err(H1Error::Timeout))
            .map_err(SendFailure::Failed)
    }

    /// Reads more into the buffer; `Ok(0)` at the end of the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        framed::poll_fill(&mut self.io, &mut self.buf, READ_SIZE, cx)
    }
}

/// Writes a request body in `framing`; `out` is scratch space for chunk
/// heads.
async fn write_body(
    io: &mut Io,
    body: &mut ProxyBody,
    framing: RequestFraming,
    out: &mut Vec<u8>,
) -> Result<(), H1Error> {
    let mut sent: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(H1Error::RequestBody)?;
        // Request trailers are not forwarded.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        match framing {
            RequestFraming::Chunked => {
                out.clear();
                chunked::encode_chunk(out, &data);
                io.write_all(out).await?;
            }
            RequestFraming::Length(n) if sent <= n => io.write_all(&data).await?,
            _ => return Err(H1Error::RequestBodyLength),
        }
    }
    match framing {
        RequestFraming::Chunked => io.write_all(chunked::LAST_CHUNK).await?,
        RequestFraming::Length(n) if sent != n => return Err(H1Error::RequestBodyLength),
        _ => {}
    }
    Ok(())
}

/// Reads until a final (non-1xx) response head is complete.
async fn read_head(
    io: &mut Io,
    buf: &mut BytesMut,
    method: &Method,
) -> Result<ResponseHead, H1Error> {
    loop {
        match response::parse_response(buf, method, MAX_HEAD_BYTES)? {
            Some(head) if head.status == http::StatusCode::SWITCHING_PROTOCOLS => {
                return Err(H1Error::SwitchingProtocols)
            }
            // 100 Continue, 103 Early Hints: the final answer follows.
            Some(head) if head.status.is_informational() => continue,
            Some(head) => return Ok(head),
            None => {
                let filled =
                    std::future::poll_fn(|cx| framed::poll_fill(io, buf, READ_SIZE, cx)).await?;
                if filled == 0 {
                    return Err(H1Error::ClosedBeforeHead);
                }
            }
        }
    }
}

/// A response body read from its connection as the client side asks for
/// it. Once it has ended, [`Body::reusable`] gives the connection back.
pub struct Body {
    conn: Option<Box<Connection>>,
    state: Framed,
    keep_alive: bool,
}

impl Body {
    pub fn new(head: &ResponseHead, conn: Box<Connection>) -> Body {
        let state = match head.framing {
            ResponseFraming::Empty => Framed::Done,
            ResponseFraming::Length(n) => Framed::Length(n),
            ResponseFraming::Chunked => Framed::Chunked(Decoder::new()),
            ResponseFraming::Close => Framed::UntilClose,
        };
        Body {
            conn: Some(conn),
            state,
            keep_alive: head.keep_alive,
        }
    }

    /// The connection, once the body was read to its end and the upstream
    /// allows another request on it (and sent nothing more).
    pub fn reusable(&mut self) -> Option<Box<Connection>> {
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

impl HttpBody for Body {
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
