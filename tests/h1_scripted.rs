//! The HTTP/1.1 server and client state machines (`wire::h1::server`,
//! `wire::h1::client`) driven on scripted streams, as hyper and Pingora
//! test theirs: `tokio_test::io::Builder` scripts the exact reads a peer
//! sends and the exact bytes it expects back (a mismatch, an unexpected
//! write or a script not played to its end panics); `tokio::io::duplex`
//! stands in where the peer must close its side and still read the answer.
//! Time is paused: timeouts fire as soon as nothing else can run, and the
//! tests check when they fired.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use sidekey::wire::deadline::{Deadline, Stalled};
use sidekey::wire::h1::client::{Body, Connection, H1Error, RequestParts, SendFailure, Transport};
use sidekey::wire::h1::request::RequestError;
use sidekey::wire::h1::response::ResponseHead;
use sidekey::wire::h1::server::{serve, ClientRequest, IncompleteBody, Limits, ReadHalf, Stalls};
use sidekey::wire::headers::ForwardHeaders;
use sidekey::wire::reply::Reply;
use sidekey::wire::BoxError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_test::io::{Builder, Mock};

/// Every reply of the test services carries this `Date`, so that the
/// server adds none and its bytes are known exactly.
const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longer than any timeout here: a script that waits this long stands
/// for a peer that stays silent.
const SILENCE: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------
// Shared pieces

/// A body played from a script: its pieces, then the end or a wait that
/// never ends, with the size hint it claims.
struct Scripted {
    pieces: VecDeque<Bytes>,
    hangs: bool,
    exact: Option<u64>,
}

impl Scripted {
    fn new(pieces: &[&'static str]) -> Scripted {
        Scripted {
            pieces: pieces
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
            hangs: false,
            exact: None,
        }
    }

    /// After its pieces, stays pending for good.
    fn then_hang(mut self) -> Scripted {
        self.hangs = true;
        self
    }

    fn claiming(mut self, length: u64) -> Scripted {
        self.exact = Some(length);
        self
    }
}

impl HttpBody for Scripted {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.pieces.pop_front() {
            Some(piece) => Poll::Ready(Some(Ok(Frame::data(piece)))),
            // Nothing will ever wake it: only a timeout ends the wait.
            None if self.hangs => Poll::Pending,
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty() && !self.hangs
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// Fails the test instead of hanging it if `work` deadlocks (with paused
/// time, this fires as soon as nothing else can run).
async fn within<F: std::future::Future>(work: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(24 * 3600), work)
        .await
        .expect("the exchange deadlocked")
}

// ---------------------------------------------------------------------
// Server

fn limits() -> Limits {
    Limits {
        header_read_timeout: HEADER_READ_TIMEOUT,
        body_idle_timeout: BODY_IDLE_TIMEOUT,
        max_header_bytes: 8 * 1024,
        max_headers: 64,
        stalls: Stalls::default(),
    }
}

fn reply<B>(status: u16, body: B) -> Reply<B> {
    http::Response::builder()
        .status(status)
        .header("date", DATE)
        .body(body)
        .unwrap()
        .into()
}

fn full(text: &'static str) -> Full<Bytes> {
    Full::new(Bytes::from_static(text.as_bytes()))
}

fn bad_request(_: &RequestError) -> Reply<Full<Bytes>> {
    reply(400, full("bad"))
}

/// The bytes of a response the server writes for a `Full` body.
fn response(status: &str, body: &str, connection: Option<&str>) -> String {
    let connection = connection
        .map(|c| format!("connection: {c}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {status}\r\ndate: {DATE}\r\ncontent-length: {}\r\n{connection}\r\n{body}",
        body.len()
    )
}

fn ok(body: &str) -> String {
    response("200 OK", body, None)
}

/// What the service saw of one request.
#[derive(Debug)]
struct Seen {
    method: Method,
    target: String,
    body: Result<Bytes, BoxError>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A service that reads each request's body whole and answers `200` with
/// it (or `400 incomplete` when the body failed), logging what it saw.
fn echo(
    log: &Log,
) -> impl Fn(ClientRequest) -> Pin<Box<dyn std::future::Future<Output = Reply<Full<Bytes>>> + Send>>
{
    let log = log.clone();
    move |req: ClientRequest| {
        let log = log.clone();
        Box::pin(async move {
            let body = req.body.collect().await.map(|c| c.to_bytes());
            let answer = match &body {
                Ok(bytes) => reply(200, Full::new(bytes.clone())),
                Err(_) => reply(400, full("incomplete")),
            };
            log.lock().unwrap().push(Seen {
                method: req.method,
                target: req.uri.to_string(),
                body,
            });
            answer
        })
    }
}

/// Serves the scripted client connection `mock` to its end.
async fn serve_mock<S, F, B>(mock: Mock, limits: Limits, service: S)
where
    S: Fn(ClientRequest) -> F,
    F: std::future::Future<Output = Reply<B>>,
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    serve_mock_with(mock, limits, bad_request_for::<B>(), service).await
}

/// `on_bad_request` for any body type: the tests that need it use `Full`.
fn bad_request_for<B>() -> fn(&RequestError) -> Reply<B> {
    |_| panic!("unexpected bad request")
}

async fn serve_mock_with<S, F, B>(
    mock: Mock,
    limits: Limits,
    on_bad_request: fn(&RequestError) -> Reply<B>,
    service: S,
) where
    S: Fn(ClientRequest) -> F,
    F: std::future::Future<Output = Reply<B>>,
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (read, write) = tokio::io::split(mock);
    // Held until the connection ends: a dropped sender means "stop".
    let (_stop_tx, stop) = watch::channel(false);
    within(serve(
        ReadHalf::Other(Box::new(read)),
        write,
        limits,
        stop,
        on_bad_request,
        service,
    ))
    .await;
}

/// Serves one end of a duplex pipe while `client` plays the other.
async fn serve_duplex<S, F, B, C, CF>(limits: Limits, service: S, client: C) -> CF::Output
where
    S: Fn(ClientRequest) -> F,
    F: std::future::Future<Output = Reply<B>>,
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
    C: FnOnce(tokio::io::DuplexStream) -> CF,
    CF: std::future::Future,
{
    let (peer, ours) = tokio::io::duplex(64 * 1024);
    let (read, write) = tokio::io::split(ours);
    let (_stop_tx, stop) = watch::channel(false);
    let server = serve(
        ReadHalf::Other(Box::new(read)),
        write,
        limits,
        stop,
        bad_request_for::<B>(),
        service,
    );
    let ((), out) = within(async { tokio::join!(server, client(peer)) }).await;
    out
}

fn bodies(log: &Log) -> Vec<(String, String, String)> {
    log.lock()
        .unwrap()
        .iter()
        .map(|s| {
            let body = match &s.body {
                Ok(b) => String::from_utf8_lossy(b).into_owned(),
                Err(e) => format!("error: {e}"),
            };
            (s.method.to_string(), s.target.clone(), body)
        })
        .collect()
}

fn seen(method: &str, target: &str, body: &str) -> (String, String, String) {
    (method.into(), target.into(), body.into())
}

#[tokio::test(start_paused = true)]
async fn server_reads_a_head_split_over_reads() {
    let log = Log::default();
    let mock = Builder::new()
        .read(b"GET /spl")
        .read(b"it HTTP/1.1\r\nHost: a")
        .read(b"\r\n")
        .read(b"\r")
        .read(b"\n")
        .write(ok("").as_bytes())
        .build();
    serve_mock(mock, limits(), echo(&log)).await;
    assert_eq!(bodies(&log), [seen("GET", "/split", "")]);
}

#[tokio::test(start_paused = true)]
async fn server_reads_a_head_byte_by_byte() {
    let log = Log::default();
    let head = b"POST /bytes HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi";
    let mut script = Builder::new();
    for byte in head {
        script.read(std::slice::from_ref(byte));
    }
    let mock = script.write(ok("hi").as_bytes()).build();
    serve_mock(mock, limits(), echo(&log)).await;
    assert_eq!(bodies(&log), [seen("POST", "/bytes", "hi")]);
}

#[tokio::test(start_paused = true)]
async fn server_answers_pipelined_requests_in_order() {
    let log = Log::default();
    let mock = Builder::new()
        .read(
            b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\none\
              GET /2 HTTP/1.1\r\nHost: a\r\n\r\n\
              POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nthree\r\n0\r\n\r\n",
        )
        .write(ok("one").as_bytes())
        .write(ok("").as_bytes())
        .write(ok("three").as_bytes())
        .build();
    serve_mock(mock, limits(), echo(&log)).await;
    assert_eq!(
        bodies(&log),
        [
            seen("POST", "/1", "one"),
            seen("GET", "/2", ""),
            seen("POST", "/3", "three")
        ]
    );
}

/// An idle keep-alive connection waits without a read buffer (it is
/// released when a read finds nothing): what arrives after the wait, in
/// pieces, pipelined, or a body split across the wait, is read as if the
/// buffer had been there all along.
#[tokio::test(start_paused = true)]
async fn server_serves_what_arrives_after_an_idle_wait() {
    let log = Log::default();
    let mock = Builder::new()
        .read(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        .write(ok("").as_bytes())
        // Idle between requests.
        .wait(Duration::from_secs(2))
        // The next head in pieces, each after a wait.
        .read(b"POST /2 HT")
        .wait(Duration::from_secs(1))
        .read(b"TP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nfi")
        .wait(Duration::from_secs(1))
        .read(b"ve")
        .wait(Duration::from_secs(1))
        .read(b"!")
        .write(ok("five!").as_bytes())
        .wait(Duration::from_secs(2))
        // Two pipelined requests in one read, the second's head cut short.
        .read(b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\nGET /4 HTTP/1.1\r\nHo")
        .write(ok("").as_bytes())
        .wait(Duration::from_secs(1))
        .read(b"st: a\r\n\r\n")
        .write(ok("").as_bytes())
        .build();
    serve_mock(mock, limits(), echo(&log)).await;
    assert_eq!(
        bodies(&log),
        [
            seen("GET", "/1", ""),
            seen("POST", "/2", "five!"),
            seen("GET", "/3", ""),
            seen("GET", "/4", ""),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn server_reads_a_content_length_body_in_pieces() {
    let log = Log::default();
    let mock = Builder::new()
        .read(b"PUT /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
        .read(b"hel")
        .read(b"lo wor")
        .read(b"ld")
        .write(ok("hello world").as_bytes())
        // The connection stays open for the next request.
        .read(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        .write(ok("").as_bytes())
        .build();
    serve_mock(mock, limits(), echo(&log)).await;
    assert_eq!(
        bodies(&log),
        [seen("PUT", "/cl", "hello world"), seen("GET", "/next", "")]
    );
}

#[tokio::test(start_paused = true)]
async fn server_reads_a_chunked_body_with_split_size_lines() {
    let log = Log::default();
    let mock = Builder::new()
        .read(b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .read(b"5")
        .read(b"\r")
        .read(b"\nhel")
        // 0x0a: ten bytes, the size split in the middle.
        .read(b"lo\r\n0")
        .read(b"a\r\n0123456789")
        .read(b"\r\n0\r")
        .read(b"\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        .write(ok("hello0123456789").as_bytes())
        .write(ok("").as_bytes())
        .build();
    serve_mock(mock, limits(), echo(&log)).await;
    assert_eq!(
        bodies(&log),
        [
            seen("POST", "/chunked", "hello0123456789"),
            seen("GET", "/next", "")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn server_client_closing_mid_body_fails_the_body_and_ends_the_connection() {
    let log = Log::default();
    let received = serve_duplex(limits(), echo(&log), |mut peer| async move {
        peer.write_all(b"POST /cut HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
            .await
            .unwrap();
        peer.shutdown().await.unwrap();
        let mut received = Vec::new();
        peer.read_to_end(&mut received).await.unwrap();
        received
    })
    .await;
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1);
    let error = log[0].body.as_ref().unwrap_err();
    assert!(error.downcast_ref::<IncompleteBody>().is_some(), "{error}");
    // Answered, and closed: nothing more is read from the connection.
    assert_eq!(
        String::from_utf8(received).unwrap(),
        response("400 Bad Request", "incomplete", Some("close"))
    );
}

#[tokio::test(start_paused = true)]
async fn server_client_closing_mid_head_gets_no_response() {
    let log = Log::default();
    // No write is scripted: any response would panic.
    let mock = Builder::new().read(b"GET /half HTTP/1.1\r\nHo").build();
    serve_mock(mock, limits(), echo(&log)).await;
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn server_head_204_and_304_responses_have_no_body() {
    let service = |req: ClientRequest| async move {
        let status = match req.uri.path() {
            "/204" => 204,
            "/304" => 304,
            _ => 200,
        };
        // A body the framing rules say must not be sent.
        reply(status, full("must not be sent"))
    };
    let mock = Builder::new()
        .read(
            b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /204 HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /304 HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /200 HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .write(format!("HTTP/1.1 200 OK\r\ndate: {DATE}\r\n\r\n").as_bytes())
        .write(format!("HTTP/1.1 204 No Content\r\ndate: {DATE}\r\n\r\n").as_bytes())
        .write(format!("HTTP/1.1 304 Not Modified\r\ndate: {DATE}\r\n\r\n").as_bytes())
        .write(ok("must not be sent").as_bytes())
        .build();
    serve_mock(mock, limits(), service).await;
}

#[tokio::test(start_paused = true)]
async fn server_http10_request_gets_connection_close() {
    let log = Log::default();
    // A second request in the same read is left unanswered: the
    // connection ends after the first.
    let mock = Builder::new()
        .read(b"GET /old HTTP/1.0\r\n\r\nGET /never HTTP/1.0\r\n\r\n")
        .write(response("200 OK", "", Some("close")).as_bytes())
        .build();
    serve_mock(mock, limits(), echo(&log)).await;
    assert_eq!(bodies(&log), [seen("GET", "/old", "")]);
}

#[tokio::test(start_paused = true)]
async fn server_http10_keep_alive_is_kept_and_unknown_length_is_close_delimited() {
    let service = |req: ClientRequest| async move {
        match req.uri.path() {
            "/known" => reply(200, Scripted::new(&["abc"]).claiming(3)),
            _ => reply(200, Scripted::new(&["un", "known"])),
        }
    };
    let mock = Builder::new()
        .read(
            b"GET /known HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
              GET /unknown HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        )
        .write(
            format!(
                "HTTP/1.1 200 OK\r\ndate: {DATE}\r\ncontent-length: 3\r\nconnection: keep-alive\r\n\r\nabc"
            )
            .as_bytes(),
        )
        // HTTP/1.0 has no chunked coding: the body ends with the connection.
        .write(format!("HTTP/1.1 200 OK\r\ndate: {DATE}\r\nconnection: close\r\n\r\nunknown").as_bytes())
        .build();
    serve_mock(mock, limits(), service).await;
}

#[tokio::test(start_paused = true)]
async fn server_bad_head_gets_the_bad_request_reply_then_close() {
    let log = Log::default();
    let mock = Builder::new()
        .read(b"GET / HTTP/1.1\r\nbad header line\r\n\r\nGET /never HTTP/1.1\r\n\r\n")
        .write(response("400 Bad Request", "bad", Some("close")).as_bytes())
        .build();
    serve_mock_with(mock, limits(), bad_request, echo(&log)).await;
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn server_sends_100_continue_before_reading_the_body() {
    let log = Log::default();
    // The mock gives the body only once `100 Continue` was written.
    let mock = Builder::new()
        .read(b"PUT /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .write(b"HTTP/1.1 100 Continue\r\n\r\n")
        .read(b"hello")
        .write(ok("hello").as_bytes())
        .build();
    let start = Instant::now();
    serve_mock(mock, limits(), echo(&log)).await;
    assert_eq!(bodies(&log), [seen("PUT", "/up", "hello")]);
    // No timeout stood in for the ordering.
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn server_closes_a_silent_connection_after_header_read_timeout() {
    let log = Log::default();
    let mock = Builder::new().wait(SILENCE).build();
    let start = Instant::now();
    serve_mock(mock, limits(), echo(&log)).await;
    assert_eq!(start.elapsed(), HEADER_READ_TIMEOUT);
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn server_header_read_timeout_bounds_a_slow_head() {
    let log = Log::default();
    let mock = Builder::new()
        .read(b"GET / HTTP/1.1\r\n")
        .wait(Duration::from_secs(6))
        .read(b"Host: a\r\n")
        .wait(SILENCE)
        .build();
    let start = Instant::now();
    serve_mock(mock, limits(), echo(&log)).await;
    // From the start of the head, not from its last piece.
    assert_eq!(start.elapsed(), HEADER_READ_TIMEOUT);
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn server_header_read_timeout_restarts_after_each_response() {
    let log = Log::default();
    let mock = Builder::new()
        .wait(Duration::from_secs(8))
        .read(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        .write(ok("").as_bytes())
        .wait(Duration::from_secs(8))
        .read(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        .write(ok("").as_bytes())
        .wait(SILENCE)
        .build();
    let start = Instant::now();
    serve_mock(mock, limits(), echo(&log)).await;
    assert_eq!(bodies(&log), [seen("GET", "/1", ""), seen("GET", "/2", "")]);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(16) + HEADER_READ_TIMEOUT
    );
}

#[tokio::test(start_paused = true)]
async fn server_stalled_response_body_closes_and_counts_an_upstream_stall() {
    let limits = limits();
    let stalls = limits.stalls.clone();
    let service = |_req: ClientRequest| async { reply(200, Scripted::new(&["hello"]).then_hang()) };
    // The head and the first chunk, then nothing: no last chunk.
    let mock = Builder::new()
        .read(b"GET /stall HTTP/1.1\r\nHost: a\r\n\r\n")
        .write(
            format!("HTTP/1.1 200 OK\r\ndate: {DATE}\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
                .as_bytes(),
        )
        .build();
    let start = Instant::now();
    serve_mock(mock, limits, service).await;
    assert_eq!(start.elapsed(), BODY_IDLE_TIMEOUT);
    assert_eq!(stalls.upstream.get(), 1);
    assert_eq!(stalls.client.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn server_stalled_request_body_errs_and_counts_a_client_stall() {
    let limits = limits();
    let stalls = limits.stalls.clone();
    let log = Log::default();
    let start = Instant::now();
    let received = serve_duplex(limits, echo(&log), |mut peer| async move {
        peer.write_all(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
            .await
            .unwrap();
        // Stays open, silent, and reads the answer.
        let mut received = Vec::new();
        peer.read_to_end(&mut received).await.unwrap();
        (received, start.elapsed())
    })
    .await;
    let (received, answered_after) = received;
    assert_eq!(answered_after, BODY_IDLE_TIMEOUT);
    let log = log.lock().unwrap();
    let error = log[0].body.as_ref().unwrap_err();
    assert!(error.downcast_ref::<Stalled>().is_some(), "{error}");
    assert_eq!(
        String::from_utf8(received).unwrap(),
        response("400 Bad Request", "incomplete", Some("close"))
    );
    assert_eq!(stalls.client.get(), 1);
    assert_eq!(stalls.upstream.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn server_answer_without_reading_the_body_closes_the_connection() {
    let log = Log::default();
    let service = |_req: ClientRequest| async { reply(401, full("no")) };
    // The unread rest of the body and a next request are drained, not
    // answered.
    let mock = Builder::new()
        .read(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhel")
        .write(response("401 Unauthorized", "no", Some("close")).as_bytes())
        .read(b"lo worldGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        .build();
    serve_mock(mock, limits(), service).await;
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn server_client_not_reading_the_response_counts_a_client_stall() {
    let limits = limits();
    let stalls = limits.stalls.clone();
    let big = Bytes::from(vec![b'x'; 256 * 1024]);
    let service = move |_req: ClientRequest| {
        let big = big.clone();
        async move { reply(200, Full::new(big)) }
    };
    let start = Instant::now();
    // A pipe far smaller than the response, whose client never reads.
    let (peer, ours) = tokio::io::duplex(1024);
    let (read, write) = tokio::io::split(ours);
    let (_stop_tx, stop) = watch::channel(false);
    let mut peer = peer;
    peer.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    within(serve(
        ReadHalf::Other(Box::new(read)),
        write,
        limits,
        stop,
        bad_request,
        service,
    ))
    .await;
    assert_eq!(start.elapsed(), BODY_IDLE_TIMEOUT);
    assert_eq!(stalls.client.get(), 1);
    assert_eq!(stalls.upstream.get(), 0);
    drop(peer);
}

// ---------------------------------------------------------------------
// Client

/// The upstream side: a scripted stream that cannot tell whether it is
/// readable without reading.
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

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nhost: upstream.test\r\n\r\n")
}

async fn send<B>(
    conn: &mut Connection<Upstream>,
    method: &Method,
    target: &str,
    body: &mut B,
) -> Result<ResponseHead, SendFailure>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let headers = ForwardHeaders::default();
    let deadline = Deadline::new(Instant::now(), REQUEST_TIMEOUT, None);
    let parts = RequestParts {
        method,
        target,
        headers: &headers,
        host: "upstream.test",
    };
    within(conn.send(parts, body, &deadline)).await
}

async fn send_get(
    conn: &mut Connection<Upstream>,
    target: &str,
) -> Result<ResponseHead, SendFailure> {
    send(conn, &Method::GET, target, &mut Empty::<Bytes>::new()).await
}

/// Reads a response body to its end.
async fn read_all(body: &mut Body<Upstream>) -> Result<Bytes, BoxError> {
    let mut all = Vec::new();
    while let Some(frame) = within(body.frame()).await {
        if let Ok(data) = frame?.into_data() {
            all.extend_from_slice(&data);
        }
    }
    Ok(all.into())
}

fn failed(result: Result<ResponseHead, SendFailure>) -> H1Error {
    match result {
        Err(SendFailure::Failed(e)) => e,
        Err(SendFailure::Unsent) => panic!("unsent"),
        Ok(head) => panic!("a response: {head:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn client_reads_a_head_split_over_reads() {
    let head = b"HTTP/1.1 200 OK\r\nx-split: yes\r\ncontent-length: 2\r\n\r\nok";
    let mut script = Builder::new();
    script.write(get("/").as_bytes());
    for byte in head {
        script.read(std::slice::from_ref(byte));
    }
    let mut conn = Connection::new(Upstream(script.build()));
    let head = send_get(&mut conn, "/").await.unwrap();
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.fields.get("x-split"), Some(&b"yes"[..]));
    let mut body = Body::new(&head, conn);
    assert_eq!(read_all(&mut body).await.unwrap(), "ok");
    assert!(body.reusable().is_some());
}

#[tokio::test(start_paused = true)]
async fn client_skips_100_continue_and_early_hints_to_the_final_response() {
    let mock = Builder::new()
        .write(get("/").as_bytes())
        .read(b"HTTP/1.1 100 Continue\r\n\r\n")
        .read(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 201 Cre")
        .read(b"ated\r\ncontent-length: 4\r\n\r\ndone")
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let head = send_get(&mut conn, "/").await.unwrap();
    assert_eq!(head.status, StatusCode::CREATED);
    let mut body = Body::new(&head, conn);
    assert_eq!(read_all(&mut body).await.unwrap(), "done");
    assert!(body.reusable().is_some());
}

#[tokio::test(start_paused = true)]
async fn client_reads_a_content_length_body_and_reuses_the_connection() {
    let mock = Builder::new()
        .write(get("/1").as_bytes())
        .read(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhel")
        .read(b"lo wo")
        .read(b"rld")
        // The same connection carries the next exchange.
        .write(get("/2").as_bytes())
        .read(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond")
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let head = send_get(&mut conn, "/1").await.unwrap();
    let mut body = Body::new(&head, conn);
    // Not before the body was read to its end.
    assert!(body.reusable().is_none());
    assert_eq!(read_all(&mut body).await.unwrap(), "hello world");
    let mut conn = body.reusable().expect("a complete keep-alive response");
    let head = send_get(&mut conn, "/2").await.unwrap();
    let mut body = Body::new(&head, conn);
    assert_eq!(read_all(&mut body).await.unwrap(), "second");
    assert!(body.reusable().is_some());
}

#[tokio::test(start_paused = true)]
async fn client_reads_a_chunked_body_with_trailers() {
    let mock = Builder::new()
        .write(get("/").as_bytes())
        .read(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r")
        .read(b"\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r")
        .read(b"\n\r\n")
        .write(get("/next").as_bytes())
        .read(b"HTTP/1.1 204 No Content\r\n\r\n")
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let head = send_get(&mut conn, "/").await.unwrap();
    let mut body = Body::new(&head, conn);
    assert_eq!(read_all(&mut body).await.unwrap(), "hello world");
    // The trailer section was read whole: the next response follows.
    let mut conn = body.reusable().expect("a complete keep-alive response");
    let head = send_get(&mut conn, "/next").await.unwrap();
    assert_eq!(head.status, StatusCode::NO_CONTENT);
    let mut body = Body::new(&head, conn);
    assert_eq!(read_all(&mut body).await.unwrap(), "");
    assert!(body.reusable().is_some());
}

#[tokio::test(start_paused = true)]
async fn client_reads_a_body_until_close_and_does_not_reuse() {
    let mock = Builder::new()
        .write(get("/").as_bytes())
        .read(b"HTTP/1.1 200 OK\r\n\r\nuntil ")
        .read(b"the end")
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let head = send_get(&mut conn, "/").await.unwrap();
    let mut body = Body::new(&head, conn);
    assert_eq!(read_all(&mut body).await.unwrap(), "until the end");
    assert!(body.reusable().is_none());
}

#[tokio::test(start_paused = true)]
async fn client_connection_close_response_is_not_reusable() {
    let mock = Builder::new()
        .write(get("/").as_bytes())
        .read(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let head = send_get(&mut conn, "/").await.unwrap();
    assert!(!head.keep_alive);
    let mut body = Body::new(&head, conn);
    assert_eq!(read_all(&mut body).await.unwrap(), "ok");
    assert!(body.reusable().is_none());
}

#[tokio::test(start_paused = true)]
async fn client_bytes_after_the_response_make_it_not_reusable() {
    let mock = Builder::new()
        .write(get("/").as_bytes())
        .read(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokUNASKED")
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let head = send_get(&mut conn, "/").await.unwrap();
    let mut body = Body::new(&head, conn);
    assert_eq!(read_all(&mut body).await.unwrap(), "ok");
    assert!(body.reusable().is_none());
}

#[tokio::test(start_paused = true)]
async fn client_upstream_closing_before_the_head_fails() {
    let mock = Builder::new().write(get("/").as_bytes()).build();
    let mut conn = Connection::new(Upstream(mock));
    let error = failed(send_get(&mut conn, "/").await);
    assert!(matches!(error, H1Error::ClosedBeforeHead), "{error:?}");

    // Likewise in the middle of the head.
    let mock = Builder::new()
        .write(get("/").as_bytes())
        .read(b"HTTP/1.1 200 OK\r\ncontent-")
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let error = failed(send_get(&mut conn, "/").await);
    assert!(matches!(error, H1Error::ClosedBeforeHead), "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn client_upstream_closing_mid_body_fails_the_body() {
    for response in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"[..],
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"[..],
    ] {
        let mock = Builder::new()
            .write(get("/").as_bytes())
            .read(response)
            .build();
        let mut conn = Connection::new(Upstream(mock));
        let head = send_get(&mut conn, "/").await.unwrap();
        let mut body = Body::new(&head, conn);
        let first = within(body.frame()).await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "hello");
        let error = within(body.frame()).await.unwrap().unwrap_err();
        assert!(
            matches!(error.downcast_ref::<H1Error>(), Some(H1Error::ClosedInBody)),
            "{error}"
        );
        assert!(body.reusable().is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn client_sends_a_length_body_and_a_chunked_body() {
    let mock = Builder::new()
        .write(b"POST /len HTTP/1.1\r\nhost: upstream.test\r\ncontent-length: 5\r\n\r\n")
        .write(b"hel")
        .write(b"lo")
        .read(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        .write(
            b"POST /chunked HTTP/1.1\r\nhost: upstream.test\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .write(b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n")
        .read(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let mut length = Scripted::new(&["hel", "lo"]).claiming(5);
    let head = send(&mut conn, &Method::POST, "/len", &mut length)
        .await
        .unwrap();
    let mut body = Body::new(&head, conn);
    assert_eq!(read_all(&mut body).await.unwrap(), "");
    let mut conn = body.reusable().expect("reusable");
    let mut chunked = Scripted::new(&["hel", "lo"]);
    let head = send(&mut conn, &Method::POST, "/chunked", &mut chunked)
        .await
        .unwrap();
    let mut body = Body::new(&head, conn);
    assert_eq!(read_all(&mut body).await.unwrap(), "");
    assert!(body.reusable().is_some());
}

#[tokio::test(start_paused = true)]
async fn client_early_response_returns_while_the_request_body_is_pending() {
    // The upstream answers 401 after the first piece of the upload; the
    // rest of the body never comes.
    let mock = Builder::new()
        .write(b"PUT /upload HTTP/1.1\r\nhost: upstream.test\r\ncontent-length: 100\r\n\r\n")
        .write(b"first")
        .read(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 6\r\n\r\ndenied")
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let mut upload = Scripted::new(&["first"]).claiming(100).then_hang();
    let start = Instant::now();
    let head = send(&mut conn, &Method::PUT, "/upload", &mut upload)
        .await
        .unwrap();
    assert_eq!(head.status, StatusCode::UNAUTHORIZED);
    // Returned at once, not at the request timeout.
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(!head.keep_alive);
    let mut body = Body::new(&head, conn);
    assert_eq!(read_all(&mut body).await.unwrap(), "denied");
    // A request cut short: the connection is not reused.
    assert!(body.reusable().is_none());
}

#[tokio::test(start_paused = true)]
async fn client_early_response_to_a_chunked_upload_is_not_reusable() {
    let mock = Builder::new()
        .write(
            b"POST /stream HTTP/1.1\r\nhost: upstream.test\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .write(b"5\r\nfirst\r\n")
        .read(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let mut upload = Scripted::new(&["first"]).then_hang();
    let head = send(&mut conn, &Method::POST, "/stream", &mut upload)
        .await
        .unwrap();
    assert_eq!(head.status, StatusCode::PAYLOAD_TOO_LARGE);
    let mut body = Body::new(&head, conn);
    assert_eq!(read_all(&mut body).await.unwrap(), "");
    assert!(body.reusable().is_none());
}

#[tokio::test(start_paused = true)]
async fn client_request_body_shorter_or_longer_than_its_length_fails() {
    let mock = Builder::new()
        .write(b"POST /short HTTP/1.1\r\nhost: upstream.test\r\ncontent-length: 5\r\n\r\nabc")
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let mut short = Scripted::new(&["abc"]).claiming(5);
    let error = failed(send(&mut conn, &Method::POST, "/short", &mut short).await);
    assert!(matches!(error, H1Error::RequestBodyLength), "{error:?}");

    // The piece that overruns the length is not written.
    let mock = Builder::new()
        .write(b"POST /long HTTP/1.1\r\nhost: upstream.test\r\ncontent-length: 5\r\n\r\nabc")
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let mut long = Scripted::new(&["abc", "def"]).claiming(5);
    let error = failed(send(&mut conn, &Method::POST, "/long", &mut long).await);
    assert!(matches!(error, H1Error::RequestBodyLength), "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn client_deadline_before_the_head_times_out() {
    let mock = Builder::new()
        .write(get("/").as_bytes())
        .read(b"HTTP/1.1 200 OK\r\n")
        .wait(SILENCE)
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let start = Instant::now();
    let error = failed(send_get(&mut conn, "/").await);
    assert!(matches!(error, H1Error::Timeout), "{error:?}");
    assert_eq!(start.elapsed(), REQUEST_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn client_head_write_failing_is_unsent() {
    let mock = Builder::new()
        .write_error(io::ErrorKind::BrokenPipe.into())
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let result = send_get(&mut conn, "/").await;
    assert!(matches!(result, Err(SendFailure::Unsent)), "{result:?}");
}

#[tokio::test(start_paused = true)]
async fn client_upstream_that_stops_reading_is_still_heard() {
    let mock = Builder::new()
        .write(b"PUT /up HTTP/1.1\r\nhost: upstream.test\r\ncontent-length: 10\r\n\r\n")
        .write_error(io::ErrorKind::ConnectionReset.into())
        .read(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig")
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let mut upload = Scripted::new(&["0123456789"]).claiming(10);
    let head = send(&mut conn, &Method::PUT, "/up", &mut upload)
        .await
        .unwrap();
    assert_eq!(head.status, StatusCode::PAYLOAD_TOO_LARGE);
    let mut body = Body::new(&head, conn);
    assert_eq!(read_all(&mut body).await.unwrap(), "big");
    assert!(body.reusable().is_none());
}

#[tokio::test(start_paused = true)]
async fn client_switching_protocols_is_refused() {
    let mock = Builder::new()
        .write(get("/").as_bytes())
        .read(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n")
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let error = failed(send_get(&mut conn, "/").await);
    assert!(matches!(error, H1Error::SwitchingProtocols), "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn client_idle_connection_closed_by_the_upstream_is_closed() {
    let mock = Builder::new()
        .write(get("/").as_bytes())
        .read(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        .wait(Duration::from_secs(1))
        .build();
    let mut conn = Connection::new(Upstream(mock));
    let head = send_get(&mut conn, "/").await.unwrap();
    let mut body = Body::new(&head, conn);
    assert_eq!(read_all(&mut body).await.unwrap(), "");
    let mut conn = body.reusable().expect("reusable");
    // Still open (the upstream is silent) ...
    assert!(!conn.is_closed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    // ... then closed.
    assert!(conn.is_closed());
}
