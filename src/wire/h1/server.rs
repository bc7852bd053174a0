//! The server side: one client connection, its requests read one after
//! the other (pipelined ones too), each answered before the next is read.
//!
//! [`serve`] reads a request head ([`RequestParser`]), gives the
//! request to the service with a [`RequestBody`] that reads the body from
//! the socket as it is forwarded, and writes the service's response. A
//! request whose body was not read to its end (the service answered
//! without it) ends the connection after its response, as does any head
//! that cannot be framed unambiguously.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::deadline::{IdleTimer, Progress, Stalled};
pub use crate::wire::io::ReadHalf;
use crate::wire::io::{Upgraded, WriteHalf};
use http::{HeaderValue, Method, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::chunked;
use super::chunked::{Step, TrailerLimits};
use super::fields::{Framing, RawFields};
use super::framed::{self, Framed};
use super::request::{RequestError, RequestHead, RequestParser};
use super::response::{self, Fields};
use crate::wire::headers::ConnectionOptions;
use crate::wire::reply::{Reply, ReplyHead};
use crate::wire::spare;
use crate::wire::BoxError;

/// Read a request head in pieces of this size: most heads fit in one, and
/// a buffer this small comes from the allocator's per-thread cache (a
/// connection allocates one for each request it reads after waiting).
const HEAD_READ_SIZE: usize = 1024;
/// The response head buffer's first size: most heads (and small bodies
/// coalesced behind them) fit without growing it.
const OUT_SIZE: usize = 1024;
/// Read a request body in pieces of this size.
const BODY_READ_SIZE: usize = 16 * 1024;
/// Response body chunks up to this size are copied behind the head (one
/// write for a small response); larger ones are written as they are.
const COALESCE_MAX: usize = 8 * 1024;
/// After an error that closes the connection, unread request bytes are
/// read and dropped for at most this long before the socket is closed
/// (closing with unread bytes would reset the connection, and the client
/// could lose the response).
const LINGER: Duration = Duration::from_secs(1);

/// The limits of one connection.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A whole request head must arrive within this of the connection's
    /// start or the previous response; an idle connection is closed after
    /// it.
    pub header_read_timeout: Duration,
    /// The longest silence while a body streams: the client's request
    /// body, the response body sidekey is sending (its source, e.g. an
    /// upstream, stays silent) or a client that stops reading it.
    pub body_idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Counts the connections that [`Limits::body_idle_timeout`] ended.
    pub stalls: Stalls,
}

/// Counters of body phases ended by `body_idle_timeout`, by who was
/// silent.
#[derive(Clone, Debug, Default)]
pub struct Stalls {
    /// The source of a response body (the upstream) sent nothing.
    pub upstream: Counter,
    /// The client sent nothing of its request body, or read nothing of
    /// its response.
    pub client: Counter,
}

/// Builds the response to a request head that cannot be served.
pub(crate) type OnBadRequest<B> = fn(&RequestError) -> Reply<B>;

/// The read side of a connection: the socket and what was read from it
/// but not consumed yet.
struct Reader {
    read: ReadHalf,
    buf: BytesMut,
}

/// Where a request body gives the read side back: at its end, or when it
/// is dropped before (`finished` false: the connection cannot carry
/// another request). One per connection, reused by every request.
#[derive(Default)]
struct Slot(Mutex<Option<(Reader, bool)>>);

impl Slot {
    fn put(&self, reader: Reader, finished: bool) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((reader, finished));
        }
    }

    fn take(&self) -> Option<(Reader, bool)> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// [`serve`], once the client has sent its first byte. Until then the
/// connection is a socket and this small future: a client may open many
/// connections it does not use yet (pools do), and each costs little.
/// One that stays silent past `header_read_timeout`, or until `stop`, is
/// closed.
pub(crate) async fn serve_once_spoken<S, F, B>(
    mut stream: TcpStream,
    limits: Limits,
    stop: watch::Receiver<bool>,
    on_bad_request: OnBadRequest<B>,
    service: S,
) where
    S: Fn(ClientRequest) -> F,
    F: Future<Output = Reply<B>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    // The connection's one timer and one wait for the stop signal, here
    // first, then lent to `serve_with` (not made again per connection).
    let mut timer = pin!(tokio::time::sleep(limits.header_read_timeout));
    let mut stopped = pin!(stop_wait(&stop));
    // The socket first: a client that has spoken already (the usual case)
    // is served without the timer or the stop wait ever being registered.
    // Read, not peeked: tokio takes an accepted socket to be readable
    // before any event, so a read (into one of the worker's spare
    // buffers, given back while nothing has arrived) finds the request
    // that came with the connection without a `recv` that only looks.
    let mut first = BytesMut::new();
    let room = limits.max_header_bytes.max(1);
    let read = std::future::poll_fn(|cx| poll_read_spare(&mut stream, &mut first, room, cx));
    let spoke = tokio::select! {
        biased;
        read = read => matches!(read, Ok(n) if n > 0),
        () = stopped.as_mut() => false,
        () = timer.as_mut() => false,
    };
    if !spoke {
        spare::give_read(first, HEAD_READ_SIZE);
        return;
    }
    // Boxed: allocated only now, not for every silent connection.
    let (read, write) = stream.into_split();
    // Built in its box, in a statement of its own: a temporary of the
    // `.await` statement would be kept in this future too.
    let serving = Box::pin(serve_with(
        Reader {
            read: ReadHalf::Tcp(read),
            buf: first,
        },
        WriteHalf::new(write),
        limits,
        stop,
        on_bad_request,
        service,
        timer,
        stopped,
    ));
    serving.await;
}

/// Serves one client connection until it closes, errs, stays silent past
/// `header_read_timeout`, or `stop` turns true (a request in flight is
/// answered first, with `Connection: close`).
///
/// The future is what every open connection holds for its whole life, so
/// it is kept small: the connection's state is made here and captured
/// once (an `async fn` would hold each argument twice), values are scoped
/// so that they are dead across the awaits that do not need them, and the
/// rare paths (a bad head, an upgrade, lingering) are boxed.
pub async fn serve<W, S, F, B>(
    read: ReadHalf,
    write: W,
    limits: Limits,
    stop: watch::Receiver<bool>,
    on_bad_request: OnBadRequest<B>,
    service: S,
) where
    W: AsyncWrite + Send + Unpin + 'static,
    S: Fn(ClientRequest) -> F,
    F: Future<Output = Reply<B>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    // One timer for the connection's life: it is moved only when it fires
    // before the current deadline, not re-armed for every request.
    let timer = pin!(tokio::time::sleep(limits.header_read_timeout));
    // Likewise one wait for the stop signal, not one per request.
    let stopped = pin!(stop_wait(&stop));
    serve_with(
        Reader {
            read,
            buf: BytesMut::new(),
        },
        write,
        limits,
        stop,
        on_bad_request,
        service,
        timer,
        stopped,
    )
    .await;
}

/// The connection's one wait for `stop` to turn true (or for its sender
/// to be gone: stopping as well).
fn stop_wait(stop: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut stopping = stop.clone();
    async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    }
}

/// [`serve`] with the connection's timer and stop wait made by the caller.
#[allow(clippy::too_many_arguments)]
fn serve_with<'a, W, S, F, B>(
    reader: Reader,
    write: W,
    limits: Limits,
    stop: watch::Receiver<bool>,
    on_bad_request: OnBadRequest<B>,
    service: S,
    mut timer: Pin<&'a mut Sleep>,
    mut stopped: Pin<&'a mut (dyn Future<Output = ()> + Send)>,
) -> impl Future<Output = ()> + 'a
where
    W: AsyncWrite + Send + Unpin + 'static,
    S: Fn(ClientRequest) -> F + 'a,
    F: Future<Output = Reply<B>> + 'a,
    B: Body<Data = Bytes> + Unpin + 'a,
    B::Error: std::fmt::Display,
{
    let reader = Some(reader);
    let parser = RequestParser::new(limits.max_headers, limits.max_header_bytes);
    let idle = IdleTimer::new(limits.body_idle_timeout);
    let state = State {
        write,
        out: Vec::new(),
        idle,
        parser,
        slot: None,
        progress: None,
    };
    async move {
        let mut reader = reader;
        let mut state = state;
        // The first head is due `header_read_timeout` after the
        // connection's start: the deadline the timer was made with (no
        // clock read for it).
        let mut first = true;
        while let Some(mut r) = reader.take() {
            let deadline = if std::mem::take(&mut first) {
                timer.deadline()
            } else {
                Instant::now() + limits.header_read_timeout
            };
            let waits = Waits {
                timer: timer.as_mut(),
                deadline,
                stopped: stopped.as_mut(),
            };
            let read = read_head(&mut r, &mut state.out, &mut state.parser, waits).await;
            let head = match read {
                Ok(Some(head)) => head,
                Ok(None) => {
                    give_back(&mut r, &mut state.out);
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "bad request head");
                    let response = on_bad_request(&e);
                    Box::pin(async move {
                        let State {
                            mut write,
                            mut out,
                            mut idle,
                            ..
                        } = state;
                        let _ = write_response(
                            &mut write,
                            &mut out,
                            &mut idle,
                            response,
                            &Method::GET,
                            false,
                            false,
                        )
                        .await;
                        linger(r, write).await;
                    })
                    .await;
                    return;
                }
            };
            // Taken apart by value: a head borrowed here would be held
            // (200 bytes) across every await below.
            let RequestHead {
                method,
                uri,
                version,
                fields,
                framing,
                keep_alive: asked_keep_alive,
                expect_continue,
            } = head;
            let http10 = version == Version::HTTP_10;
            let body = match framing {
                Framing::Empty => {
                    reader = Some(r);
                    RequestBody(Inner::Empty)
                }
                framing => {
                    if expect_continue
                        && state
                            .write
                            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                            .await
                            .is_err()
                    {
                        return;
                    }
                    let trailers = TrailerLimits {
                        max_bytes: limits.max_header_bytes,
                        max_lines: limits.max_headers,
                    };
                    let state_of_body = Framed::new(framing, trailers);
                    RequestBody(Inner::Stream {
                        reader: Some(r),
                        state: state_of_body,
                        slot: state.slot.get_or_insert_with(Default::default).clone(),
                        progress: state.progress.get_or_insert_with(Default::default).clone(),
                        idle: IdleTimer::new(limits.body_idle_timeout),
                        stalls: limits.stalls.client.clone(),
                    })
                }
            };
            let request = ClientRequest {
                method: method.clone(),
                uri,
                version,
                fields,
                body,
            };
            // The body gives the read side back when it ends or is dropped;
            // still out (an HTTP/2 upstream is still sending it), it is not
            // waited for.
            let mut finished = true;
            // In a block: the response (its head written at once) is not
            // held while its body is written.
            let writing = {
                // Only moved, never borrowed here: a borrowed response
                // would be held across the awaits below.
                let (takeover, closes, response) = take_upgrade(service(request).await);
                if reader.is_none() {
                    match state.slot.as_ref().and_then(|slot| slot.take()) {
                        Some((r, done)) => {
                            finished = done;
                            reader = Some(r);
                        }
                        None => finished = false,
                    }
                }
                if let Some(takeover) = takeover {
                    // Only a request read to its end hands its connection
                    // over.
                    if let (Some(r), true) = (reader.take(), finished) {
                        Box::pin(upgrade(state, r, response, &method, takeover)).await;
                        return;
                    }
                }
                let keep_alive = asked_keep_alive && finished && !closes && !*stop.borrow();
                write_response(
                    &mut state.write,
                    &mut state.out,
                    &mut state.idle,
                    response,
                    &method,
                    http10,
                    keep_alive,
                )
            };
            let kept = writing.await;
            match &kept {
                Err(Failure::Stalled(side)) => {
                    tracing::debug!(?side, timeout = ?limits.body_idle_timeout, "response body stalled; closing the connection");
                    match side {
                        Side::Upstream => limits.stalls.upstream.inc(),
                        Side::Client => limits.stalls.client.inc(),
                    };
                }
                Err(Failure::Io(e)) => tracing::debug!(error = %e, "writing the response failed"),
                Ok(_) => {}
            }
            if !matches!(kept, Ok(true)) {
                match (reader.take(), finished) {
                    (Some(r), false) => Box::pin(linger(r, state.write)).await,
                    (Some(mut r), true) => give_back(&mut r, &mut state.out),
                    // The request body is still out (an HTTP/2 upstream
                    // is reading it) and holds the read side, so the
                    // socket stays open: the FIN that ends the response
                    // is sent now.
                    (None, _) => {
                        let _ = state.idle.bound(state.write.shutdown()).await;
                    }
                }
                return;
            }
        }
    }
}

/// A connection that ends gives its buffers back to its worker's spare
/// lists, for the next connection (not freed and allocated again).
fn give_back(r: &mut Reader, out: &mut Vec<u8>) {
    spare::give_read(std::mem::take(&mut r.buf), HEAD_READ_SIZE);
    spare::give_out(std::mem::take(out), OUT_SIZE);
}

/// A reply's upgrade (taken out of it) and whether it closes the
/// connection.
fn take_upgrade<B>(mut reply: Reply<B>) -> (Option<crate::wire::io::Takeover>, bool, Reply<B>) {
    let takeover = reply.upgrade.take();
    let closes = reply.closes();
    (takeover, closes, reply)
}

/// What a connection keeps between its requests, besides its read side.
struct State<W> {
    write: W,
    /// The response head (and small bodies behind it) being written.
    out: Vec<u8>,
    /// Bounds the client's silence while a response is written.
    idle: IdleTimer,
    parser: RequestParser,
    /// Where a request body gives the read side back; made for the
    /// first request that has a body.
    slot: Option<Arc<Slot>>,
    /// When the connection's request body last moved (see `deadline`);
    /// made for the first request that has a body.
    progress: Option<Arc<Progress>>,
}

/// Writes the response that switches protocols, then hands the connection
/// to `takeover`.
async fn upgrade<W, B>(
    mut state: State<W>,
    r: Reader,
    response: Reply<B>,
    method: &Method,
    takeover: crate::wire::io::Takeover,
) where
    W: AsyncWrite + Send + Unpin + 'static,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let written = write_response(
        &mut state.write,
        &mut state.out,
        &mut state.idle,
        response,
        method,
        false,
        true,
    )
    .await;
    if matches!(written, Ok(true)) {
        let upgraded = Upgraded {
            buffered: r.buf.freeze(),
            read: r.read,
            write: Box::new(state.write),
        };
        takeover(upgraded).await;
    }
}

/// What a connection waits for besides its client's bytes.
struct Waits<'a> {
    timer: Pin<&'a mut Sleep>,
    deadline: Instant,
    stopped: Pin<&'a mut (dyn Future<Output = ()> + Send)>,
}

/// Reads until a request head is complete. `Ok(None)`: the client closed
/// the connection or stayed silent past the deadline, or sidekey is
/// stopping and no request has begun. While nothing has arrived, the
/// connection holds neither its read buffer nor `out` (its response
/// buffer): an idle keep-alive connection costs little.
async fn read_head(
    r: &mut Reader,
    out: &mut Vec<u8>,
    parser: &mut RequestParser,
    mut waits: Waits<'_>,
) -> Result<Option<RequestHead>, RequestError> {
    loop {
        if !r.buf.is_empty() {
            if let Some(head) = parser.parse(&mut r.buf)? {
                return Ok(Some(head));
            }
        }
        // Never hold more than a head may be: what the client sent beyond
        // it stays unread, and the 431 reaches it.
        let room = parser.max_bytes().saturating_sub(r.buf.len()).max(1);
        // Stopping ends only a connection between requests.
        let idle = r.buf.is_empty();
        let read = std::future::poll_fn(|cx| {
            let read = poll_read_spare(&mut r.read, &mut r.buf, room, cx);
            if read.is_pending() && r.buf.is_empty() {
                // Nothing arrived and nothing is held: the response
                // buffer goes back to the spares too.
                spare::give_out(std::mem::take(out), OUT_SIZE);
            }
            read
        });
        tokio::select! {
            biased;
            read = read => match read {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            },
            () = waits.timer.as_mut() => {
                if Instant::now() >= waits.deadline {
                    return Ok(None);
                }
                waits.timer.as_mut().reset(waits.deadline);
            }
            // Done once and for all: the connection ends here.
            () = waits.stopped.as_mut(), if idle => return Ok(None),
        }
    }
}

/// Reads at most `room` bytes of a request head into `buf`, which takes
/// one of the worker's spare buffers if it has none. While nothing has
/// arrived (pending, `buf` empty) the buffer goes back to the spares: the
/// connection waits without it (the read registered the wake-up) and
/// gets one again when the client speaks. Through `AsyncRead`, which
/// marks the socket drained after a short read: the next head is waited
/// for without a read that can only say "nothing yet". `Ok(0)`: the
/// client closed.
fn poll_read_spare<R: AsyncRead + Unpin>(
    read: &mut R,
    buf: &mut BytesMut,
    room: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() == 0 {
        *buf = spare::read_buffer(HEAD_READ_SIZE);
    }
    let want = HEAD_READ_SIZE.min(room);
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    let read = tokio_util::io::poll_read_buf(Pin::new(read), cx, &mut buf.limit(room));
    if read.is_pending() && buf.is_empty() {
        spare::give_read(std::mem::take(buf), HEAD_READ_SIZE);
    }
    read
}

/// Who stayed silent past `body_idle_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The response body's source.
    Upstream,
    /// The client, not reading.
    Client,
}

/// Why a response could not be written whole.
#[derive(Debug)]
enum Failure {
    Io(io::Error),
    Stalled(Side),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Io(e)
    }
}

/// Writes all of `bytes`, failing if the client reads nothing of it for
/// the idle timeout.
async fn send<W: AsyncWrite + Unpin>(
    write: &mut W,
    idle: &mut IdleTimer,
    bytes: &[u8],
) -> Result<(), Failure> {
    match idle.bound(write.write_all(bytes)).await {
        Ok(written) => Ok(written?),
        Err(Stalled(_)) => Err(Failure::Stalled(Side::Client)),
    }
}

/// Writes `response`; `Ok(true)` when it was sent whole and the
/// connection may carry another request. The head is encoded into `out`
/// at once; the future returned holds the body only.
fn write_response<'a, W: AsyncWrite + Unpin, B>(
    write: &'a mut W,
    out: &'a mut Vec<u8>,
    idle: &'a mut IdleTimer,
    reply: Reply<B>,
    method: &Method,
    http10: bool,
    mut keep_alive: bool,
) -> impl Future<Output = Result<bool, Failure>> + 'a
where
    B: Body<Data = Bytes> + Unpin + 'a,
    B::Error: std::fmt::Display,
{
    let Reply {
        status, head, body, ..
    } = reply;
    let framing = if *method == Method::HEAD
        || status.is_informational()
        // A tunnel's 2xx has no body: the tunnel follows.
        || (*method == Method::CONNECT && status.is_success())
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else {
        match body.size_hint().exact() {
            Some(n) => Framing::Length(n),
            None if http10 => Framing::UntilClose,
            None => Framing::Chunked,
        }
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    let connection = match (keep_alive, http10) {
        // The connection switches to the protocol its `Upgrade` names.
        _ if status == StatusCode::SWITCHING_PROTOCOLS => Some("upgrade"),
        (true, false) => None,
        (true, true) => Some("keep-alive"),
        (false, _) => Some("close"),
    };
    out.clear();
    if out.capacity() == 0 {
        *out = spare::out_buffer(OUT_SIZE);
    }
    let fields = match &head {
        ReplyHead::Map(headers) => Fields::Map(headers),
        ReplyHead::Upstream(raw) => Fields::Raw(raw),
    };
    response::encode_response(out, status, fields, framing, connection);
    drop(head);
    let mut body = (framing != Framing::Empty).then_some(body);
    async move {
        let Some(body) = &mut body else {
            send(write, idle, out).await?;
            return Ok(keep_alive);
        };
        let complete = write_body(write, out, idle, body, framing).await?;
        Ok(keep_alive && complete)
    }
}

/// Writes the body behind the head already in `out`, coalescing what is
/// ready into one write. `Ok(false)`: the body failed or did not match its
/// length, so the response is cut short.
async fn write_body<W: AsyncWrite + Unpin, B>(
    write: &mut W,
    out: &mut Vec<u8>,
    idle: &mut IdleTimer,
    body: &mut B,
    framing: Framing,
) -> Result<bool, Failure>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut body = Pin::new(body);
    let mut left = match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    loop {
        // What is ready now goes behind what is buffered; only when the
        // body has to wait is the buffer written.
        let polled = std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await;
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    send(write, idle, out).await?;
                    out.clear();
                }
                let next = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx));
                match idle.bound(next).await {
                    Ok(frame) => frame,
                    Err(Stalled(_)) => {
                        return Err(Failure::Stalled(Side::Upstream));
                    }
                }
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed; closing the connection");
                send(write, idle, out).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers are not forwarded.
                Err(_) => continue,
            },
        };
        if data.is_empty() {
            continue;
        }
        if let Some(left) = &mut left {
            if data.len() as u64 > *left {
                send(write, idle, out).await?;
                return Ok(false);
            }
            *left -= data.len() as u64;
        }
        if framing == Framing::Chunked {
            chunked::encode_chunk_header(out, data.len());
        }
        if data.len() <= COALESCE_MAX {
            out.extend_from_slice(&data);
        } else {
            send(write, idle, out).await?;
            out.clear();
            send(write, idle, &data).await?;
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= COALESCE_MAX {
            send(write, idle, out).await?;
            out.clear();
        }
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(chunked::LAST_CHUNK);
    }
    if !out.is_empty() {
        send(write, idle, out).await?;
        out.clear();
    }
    Ok(left.is_none_or(|n| n == 0))
}

/// Closes a connection whose client may still be sending: says so (FIN),
/// then reads and drops what arrives for a moment, so that the response
/// is not lost to a reset.
async fn linger<W: AsyncWrite + Unpin>(mut r: Reader, mut write: W) {
    let _ = write.shutdown().await;
    let drain = async {
        loop {
            r.buf.clear();
            r.buf.reserve(BODY_READ_SIZE);
            match tokio::io::AsyncReadExt::read_buf(&mut r.read, &mut r.buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// A client's request as the service gets it: its header fields as they
/// came ([`RawFields`]), its body streaming from the connection.
pub struct ClientRequest {
    pub method: Method,
    pub uri: Uri,
    pub(crate) version: Version,
    pub(crate) fields: RawFields,
    pub body: RequestBody,
}

impl ClientRequest {
    /// What an upgrade request asks to switch to: its `Upgrade` value,
    /// for an HTTP/1.1 `GET` without a body whose `Connection` names
    /// `upgrade` (RFC 9110 7.8). `None` for any other request.
    pub(crate) fn upgrade(&self) -> Option<HeaderValue> {
        let asks = self.method == Method::GET
            && self.version == Version::HTTP_11
            && matches!(self.body.0, Inner::Empty)
            // `upgrade` is a token that names a field: the parser already
            // knows whether any does, so most requests skip the scan.
            && self.fields.may_name_fields()
            && ConnectionOptions::of(&self.fields).upgrade;
        let value = asks.then(|| self.fields.get_shared("upgrade")).flatten()?;
        let value = HeaderValue::from_maybe_shared(value).ok()?;
        (!value.is_empty()).then_some(value)
    }
}

/// The body of a client's request, read from the connection as it is
/// forwarded: an HTTP/1.1 connection's (read here), or an HTTP/2
/// stream's (hyper's, bounded by the same `body_idle_timeout`).
pub struct RequestBody(Inner);

impl RequestBody {
    /// When this body last moved, while it streams.
    pub(crate) fn progress(&self) -> Option<&Arc<Progress>> {
        match &self.0 {
            Inner::Empty => None,
            Inner::Stream { progress, .. } => Some(progress),
            Inner::H2 { progress, .. } => Some(progress),
        }
    }

    /// The body of an HTTP/2 request (hyper's server), streamed with the
    /// idle limit and the stall counter of `limits`. Trailers are not
    /// forwarded (as on HTTP/1.1).
    pub(crate) fn h2(body: hyper::body::Incoming, limits: &Limits) -> RequestBody {
        RequestBody(Inner::H2 {
            body,
            progress: Arc::new(Progress::new()),
            idle: IdleTimer::new(limits.body_idle_timeout),
            stalls: limits.stalls.client.clone(),
        })
    }
}

enum Inner {
    Empty,
    Stream {
        /// Given back to `slot` at the end of the body, or on drop.
        reader: Option<Reader>,
        state: Framed,
        slot: Arc<Slot>,
        progress: Arc<Progress>,
        /// Bounds the client's silence while its body streams.
        idle: IdleTimer,
        stalls: Counter,
    },
    H2 {
        body: hyper::body::Incoming,
        progress: Arc<Progress>,
        idle: IdleTimer,
        stalls: Counter,
    },
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Inner::Stream { reader, slot, .. } = &mut self.0 {
            if let Some(r) = reader.take() {
                slot.put(r, false);
            }
        }
    }
}

/// The client went away in the middle of its request body.
#[derive(Debug, thiserror::Error)]
#[error("the client closed the connection in the middle of the request body")]
pub struct IncompleteBody;

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (reader, state, slot, progress, idle, stalls) = match &mut self.get_mut().0 {
            Inner::Stream {
                reader,
                state,
                slot,
                progress,
                idle,
                stalls,
            } => (reader, state, slot, progress, idle, stalls),
            Inner::Empty => return Poll::Ready(None),
            Inner::H2 {
                body,
                progress,
                idle,
                stalls,
            } => return poll_h2(body, progress, idle, stalls, cx),
        };
        loop {
            let Some(r) = reader.as_mut() else {
                return Poll::Ready(None);
            };
            let step = state.take(&mut r.buf);
            if state.is_done() {
                // The end: the connection can read its next request.
                if let Some(r) = reader.take() {
                    slot.put(r, true);
                }
            }
            match step {
                Ok(Step::Data(data)) => {
                    progress.touch();
                    idle.disarm();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::NeedMore) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
            let Some(r) = reader.as_mut() else {
                return Poll::Ready(None);
            };
            let filled = match framed::poll_fill(&mut r.read, &mut r.buf, BODY_READ_SIZE, cx) {
                Poll::Ready(filled) => filled,
                Poll::Pending => {
                    let Poll::Ready(stalled) = idle.poll_expired(cx) else {
                        return Poll::Pending;
                    };
                    stalls.inc();
                    return Poll::Ready(Some(Err(stalled.into())));
                }
            };
            match filled {
                Ok(0) => return Poll::Ready(Some(Err(IncompleteBody.into()))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Empty => true,
            Inner::Stream { state, reader, .. } => reader.is_none() || state.is_done(),
            Inner::H2 { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Stream { state, .. } => state.size_hint(),
            Inner::H2 { body, .. } => body.size_hint(),
        }
    }
}

/// The next data frame of an HTTP/2 request body (trailers are dropped),
/// or [`Stalled`] once the client has sent nothing for the idle limit.
fn poll_h2(
    body: &mut hyper::body::Incoming,
    progress: &Progress,
    idle: &mut IdleTimer,
    stalls: &Counter,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    loop {
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                progress.touch();
                idle.disarm();
                match frame.into_data() {
                    Ok(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    // Trailers: not forwarded.
                    Err(_) => continue,
                }
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {
                let Poll::Ready(stalled) = idle.poll_expired(cx) else {
                    return Poll::Pending;
                };
                stalls.inc();
                return Poll::Ready(Some(Err(stalled.into())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, version: Version, fields: &[u8]) -> ClientRequest {
        ClientRequest {
            method,
            uri: Uri::from_static("/socket"),
            version,
            fields: RawFields::parse(fields).unwrap(),
            body: RequestBody(Inner::Empty),
        }
    }

    /// Polls `read_head` once on `r`; `None` while it waits.
    fn poll_head(
        r: &mut Reader,
        out: &mut Vec<u8>,
        parser: &mut RequestParser,
    ) -> Option<Option<RequestHead>> {
        let mut timer = pin!(tokio::time::sleep(Duration::from_secs(3600)));
        let mut stopped = pin!(std::future::pending::<()>());
        let waits = Waits {
            timer: timer.as_mut(),
            deadline: Instant::now() + Duration::from_secs(3600),
            stopped: stopped.as_mut(),
        };
        let mut head = pin!(read_head(r, out, parser, waits));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match head.as_mut().poll(&mut cx) {
            Poll::Ready(head) => Some(head.expect("a valid head")),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn a_connection_waits_for_its_next_head_without_a_read_buffer() {
        let (mut client, ours) = tokio::io::duplex(1024);
        let mut r = Reader {
            read: ReadHalf::Other(Box::new(ours)),
            buf: BytesMut::new(),
        };
        let mut parser = RequestParser::new(64, 8 * 1024);
        // The last response's buffer.
        let mut out = Vec::with_capacity(OUT_SIZE);
        // Nothing sent: the read finds nothing, and no buffer is kept.
        assert!(poll_head(&mut r, &mut out, &mut parser).is_none());
        assert_eq!(r.buf.capacity(), 0, "an idle connection holds no buffer");
        assert_eq!(out.capacity(), 0, "nor a response buffer");
        // Part of a head: kept while the rest is awaited.
        client.write_all(b"GET /a HTTP/1.1\r\nHo").await.unwrap();
        assert!(poll_head(&mut r, &mut out, &mut parser).is_none());
        assert_eq!(&r.buf[..], b"GET /a HTTP/1.1\r\nHo");
        // The rest, and a pipelined head behind it.
        client
            .write_all(b"st: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let first = poll_head(&mut r, &mut out, &mut parser)
            .flatten()
            .expect("head /a");
        assert_eq!(first.uri.path(), "/a");
        let second = poll_head(&mut r, &mut out, &mut parser)
            .flatten()
            .expect("head /b");
        assert_eq!(second.uri.path(), "/b");
        drop((first, second));
        // Both read: waiting again, without a buffer.
        assert!(poll_head(&mut r, &mut out, &mut parser).is_none());
        assert_eq!(r.buf.capacity(), 0);
        // The client closes: the connection ends.
        drop(client);
        assert!(matches!(
            poll_head(&mut r, &mut out, &mut parser),
            Some(None)
        ));
    }

    #[test]
    fn an_upgrade_request_is_a_bodyless_http11_get_naming_upgrade() {
        let asks = b"Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let upgrade = request(Method::GET, Version::HTTP_11, asks).upgrade();
        assert_eq!(upgrade, Some(HeaderValue::from_static("websocket")));
        assert_eq!(
            request(Method::POST, Version::HTTP_11, asks).upgrade(),
            None
        );
        assert_eq!(request(Method::GET, Version::HTTP_10, asks).upgrade(), None);
        let unnamed = b"Connection: keep-alive\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(
            request(Method::GET, Version::HTTP_11, unnamed).upgrade(),
            None
        );
        let no_protocol = b"Connection: upgrade\r\n\r\n";
        assert_eq!(
            request(Method::GET, Version::HTTP_11, no_protocol).upgrade(),
            None
        );
    }
}
