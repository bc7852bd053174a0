//! A generic recording HTTP server (HTTP/1.1 + HTTP/2, TLS or plain) on 127.0.0.1:0.
//!
//! Every request is recorded (method, target, version, headers, body up to
//! [`BODY_KEEP_LIMIT`], full body length counted while streaming) *before* the
//! handler runs, so a test can wait for a request that the handler is still holding.
//! Dropping a [`StandIn`] aborts its accept loop and connections (the listener
//! closes as soon as the runtime drops the aborted task) and answers any handler
//! still running with 503.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, CONTENT_TYPE, HOST};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// Bodies up to this size are kept in [`Recorded::body`]; larger ones are only counted.
pub const BODY_KEEP_LIMIT: usize = 1 << 20;

/// How long the `wait_for_*` helpers wait before panicking.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a handler returns.
pub type Reply = Response<Full<Bytes>>;

type BoxReply = Pin<Box<dyn Future<Output = Reply> + Send>>;
type Handler = Arc<dyn Fn(Recorded) -> BoxReply + Send + Sync>;

/// TLS facts of the connection a request came in on.
#[derive(Clone, Debug)]
pub struct TlsInfo {
    /// The SNI the client sent, if any.
    pub sni: Option<String>,
    /// The negotiated ALPN protocol, if any (`b"h2"`, `b"http/1.1"`).
    pub alpn: Option<Vec<u8>>,
    /// The client certificate's common name, when the client presented
    /// one (mutual TLS).
    pub client_cn: Option<String>,
}

/// One request as the stand-in received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// The URI exactly as hyper parsed it: origin-form (`/path?query`) for HTTP/1.1
    /// unless the client sent absolute-form; for HTTP/2 it carries scheme and authority.
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// The body when it was at most [`BODY_KEEP_LIMIT`] bytes, else `None`.
    pub body: Option<Bytes>,
    /// The body length, always counted (streamed, never buffered whole).
    pub body_len: u64,
    /// Set when reading the body failed (e.g. the client aborted mid-upload).
    pub body_error: Option<String>,
    /// 1-based id of the TCP connection the request came on (same id = same connection).
    pub connection_id: usize,
    /// `Some` when the request came over TLS.
    pub tls: Option<TlsInfo>,
    /// The status the handler answered with; `None` while the handler is still running
    /// (and always `None` in the copy the handler itself receives).
    pub status: Option<StatusCode>,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// Path and query as received (`/v2/consumer?identifier=...`).
    pub fn target(&self) -> String {
        self.uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".to_string())
    }

    /// The authority the request was addressed to: the URI's (absolute-form / HTTP/2),
    /// else the `Host` header when exactly one was sent.
    pub fn authority(&self) -> Option<String> {
        if let Some(a) = self.uri.authority() {
            return Some(a.as_str().to_string());
        }
        let hosts: Vec<_> = self.headers.get_all(HOST).iter().collect();
        match hosts.as_slice() {
            [one] => one.to_str().ok().map(str::to_string),
            _ => None,
        }
    }

    /// The first value of header `name` (None if absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name`, lossily decoded.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// How many times header `name` was sent.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers.get_all(name).iter().count()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers.contains_key(name)
    }

    /// The query split on `&` and the first `=`, raw (not percent-decoded), in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        split_query(self.query().unwrap_or(""))
    }

    /// Every raw value of query parameter `name`, in order.
    pub fn query_values(&self, name: &str) -> Vec<String> {
        self.query_pairs()
            .into_iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .collect()
    }

    /// The kept body; panics when it was larger than [`BODY_KEEP_LIMIT`].
    pub fn body_bytes(&self) -> Bytes {
        self.body.clone().unwrap_or_else(|| {
            panic!(
                "request body of {} bytes was over the {} byte keep limit",
                self.body_len, BODY_KEEP_LIMIT
            )
        })
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body_bytes()).into_owned()
    }

    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body_bytes())
            .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {}", self.body_text()))
    }
}

/// Splits a raw query string on `&` and the first `=` of each part (no decoding).
pub fn split_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

/// A reply with a JSON body.
pub fn json_reply(status: StatusCode, value: &serde_json::Value) -> Reply {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("json_reply: valid response")
}

/// A reply with a `text/plain` body.
pub fn text_reply(status: StatusCode, text: &str) -> Reply {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text.to_string())))
        .expect("text_reply: valid response")
}

/// A reply with no body.
pub fn empty_reply(status: StatusCode) -> Reply {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .expect("empty_reply: valid response")
}

/// A latch a handler can wait on (to hold a request in flight) until the test opens it.
#[derive(Clone)]
pub struct Gate {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Self {
        Gate {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    pub fn open(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_open(&self) -> bool {
        *self.tx.borrow()
    }

    /// Returns once the gate is open (immediately if it already is).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

struct Shared {
    addr: SocketAddr,
    requests: Mutex<Vec<Recorded>>,
    requests_tx: watch::Sender<usize>,
    responses_tx: watch::Sender<usize>,
    connections_tx: watch::Sender<usize>,
    closed_tx: watch::Sender<usize>,
    tls_failures_tx: watch::Sender<usize>,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn record(&self, rec: Recorded) -> usize {
        let mut list = self.requests.lock().expect("stand-in request log poisoned");
        list.push(rec);
        let index = list.len() - 1;
        drop(list);
        self.requests_tx.send_modify(|n| *n += 1);
        index
    }

    fn set_status(&self, index: usize, status: StatusCode) {
        let mut list = self.requests.lock().expect("stand-in request log poisoned");
        list[index].status = Some(status);
        drop(list);
        self.responses_tx.send_modify(|n| *n += 1);
    }

    async fn shutdown_requested(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// A running stand-in server; shuts down when dropped. Must be spawned inside a Tokio runtime.
pub struct StandIn {
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
    tls: bool,
}

impl StandIn {
    /// Spawns a server with an async handler (it may wait, e.g. on a [`Gate`]).
    pub fn spawn<F, Fut>(tls: Option<Arc<ServerConfig>>, handler: F) -> StandIn
    where
        F: Fn(Recorded) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |rec| Box::pin(handler(rec)) as BoxReply);
        Self::spawn_boxed(tls, handler)
    }

    /// Spawns a server with a synchronous handler.
    pub fn spawn_fn<F>(tls: Option<Arc<ServerConfig>>, handler: F) -> StandIn
    where
        F: Fn(&Recorded) -> Reply + Send + Sync + 'static,
    {
        let handler: Handler = Arc::new(move |rec| {
            let reply = handler(&rec);
            Box::pin(async move { reply }) as BoxReply
        });
        Self::spawn_boxed(tls, handler)
    }

    /// A server that answers every request with 200 `{"ok":true}`.
    pub fn ok(tls: Option<Arc<ServerConfig>>) -> StandIn {
        Self::spawn_fn(tls, |_| {
            json_reply(StatusCode::OK, &serde_json::json!({ "ok": true }))
        })
    }

    fn spawn_boxed(tls: Option<Arc<ServerConfig>>, handler: Handler) -> StandIn {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("stand-in: bind 127.0.0.1:0");
        std_listener
            .set_nonblocking(true)
            .expect("stand-in: set listener non-blocking");
        let addr = std_listener
            .local_addr()
            .expect("stand-in: listener local address");
        let listener = TcpListener::from_std(std_listener)
            .expect("stand-in: register listener (call StandIn::spawn inside a Tokio runtime)");
        let is_tls = tls.is_some();
        let shared = Arc::new(Shared {
            addr,
            requests: Mutex::new(Vec::new()),
            requests_tx: watch::channel(0).0,
            responses_tx: watch::channel(0).0,
            connections_tx: watch::channel(0).0,
            closed_tx: watch::channel(0).0,
            tls_failures_tx: watch::channel(0).0,
            shutdown: watch::channel(false).0,
        });
        let acceptor = tls.map(TlsAcceptor::from);
        let accept_task = tokio::spawn(accept_loop(listener, acceptor, shared.clone(), handler));
        StandIn {
            shared,
            accept_task,
            tls: is_tls,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    pub fn port(&self) -> u16 {
        self.shared.addr.port()
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// `https://127.0.0.1:PORT` or `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.shared.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .requests
            .lock()
            .expect("stand-in request log poisoned")
            .clone()
    }

    pub fn last_request(&self) -> Option<Recorded> {
        self.shared
            .requests
            .lock()
            .expect("stand-in request log poisoned")
            .last()
            .cloned()
    }

    pub fn request_count(&self) -> usize {
        *self.shared.requests_tx.borrow()
    }

    /// Requests the handler has answered.
    pub fn response_count(&self) -> usize {
        *self.shared.responses_tx.borrow()
    }

    /// Accepted TCP connections (counted before any TLS handshake).
    pub fn connection_count(&self) -> usize {
        *self.shared.connections_tx.borrow()
    }

    /// Connections that have ended (closed by either side).
    pub fn closed_count(&self) -> usize {
        *self.shared.closed_tx.borrow()
    }

    /// Connections whose TLS handshake failed (e.g. the client did not trust the CA).
    pub fn tls_failures(&self) -> usize {
        *self.shared.tls_failures_tx.borrow()
    }

    /// The statuses answered, in request arrival order (`None` = still in the handler).
    pub fn statuses(&self) -> Vec<Option<StatusCode>> {
        self.requests().iter().map(|r| r.status).collect()
    }

    /// Waits until at least `n` requests have arrived; panics after [`WAIT_TIMEOUT`].
    pub async fn wait_for_requests(&self, n: usize) -> Vec<Recorded> {
        self.wait_for_requests_within(n, WAIT_TIMEOUT).await
    }

    /// [`StandIn::wait_for_requests`] with an explicit limit.
    pub async fn wait_for_requests_within(&self, n: usize, limit: Duration) -> Vec<Recorded> {
        self.wait_count(&self.shared.requests_tx, n, "request(s) to arrive", limit)
            .await;
        self.requests()
    }

    /// Waits until the handler has answered at least `n` requests; panics after [`WAIT_TIMEOUT`].
    pub async fn wait_for_responses(&self, n: usize) -> Vec<Recorded> {
        self.wait_count(
            &self.shared.responses_tx,
            n,
            "response(s) to be sent",
            WAIT_TIMEOUT,
        )
        .await;
        self.requests()
    }

    /// Waits until at least `n` TCP connections were accepted; panics after [`WAIT_TIMEOUT`].
    pub async fn wait_for_connections(&self, n: usize) {
        self.wait_count(
            &self.shared.connections_tx,
            n,
            "connection(s)",
            WAIT_TIMEOUT,
        )
        .await;
    }

    /// Waits until at least `n` TCP connections have ended (closed by either
    /// side); panics after [`WAIT_TIMEOUT`].
    pub async fn wait_for_closed(&self, n: usize) {
        self.wait_count(
            &self.shared.closed_tx,
            n,
            "closed connection(s)",
            WAIT_TIMEOUT,
        )
        .await;
    }

    /// Waits until at least `n` TLS handshakes failed; panics after [`WAIT_TIMEOUT`].
    pub async fn wait_for_tls_failures(&self, n: usize) {
        self.wait_count(
            &self.shared.tls_failures_tx,
            n,
            "failed TLS handshake(s)",
            WAIT_TIMEOUT,
        )
        .await;
    }

    async fn wait_count(&self, tx: &watch::Sender<usize>, n: usize, what: &str, limit: Duration) {
        let mut rx = tx.subscribe();
        let reached = matches!(
            tokio::time::timeout(limit, rx.wait_for(|count| *count >= n)).await,
            Ok(Ok(_))
        );
        if !reached {
            panic!(
                "stand-in {}: timed out after {:?} waiting for {n} {what}; have {} (requests {}, responses {}, connections {}, tls failures {})",
                self.url(),
                limit,
                *tx.borrow(),
                self.request_count(),
                self.response_count(),
                self.connection_count(),
                self.tls_failures()
            );
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    handler: Handler,
) {
    // Connection tasks live in this JoinSet: aborting the accept task drops it,
    // which aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(_) => continue,
        };
        let mut conn_id = 0;
        shared.connections_tx.send_modify(|n| {
            *n += 1;
            conn_id = *n;
        });
        connections.spawn(serve_connection(
            stream,
            acceptor.clone(),
            conn_id,
            shared.clone(),
            handler.clone(),
        ));
        while connections.try_join_next().is_some() {}
    }
}

async fn serve_connection(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    conn_id: usize,
    shared: Arc<Shared>,
    handler: Handler,
) {
    let _ = stream.set_nodelay(true);
    let closed = shared.clone();
    match acceptor {
        None => serve_http(TokioIo::new(stream), None, conn_id, shared, handler).await,
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(tls_stream) => {
                let (_, session) = tls_stream.get_ref();
                let info = TlsInfo {
                    sni: session.server_name().map(str::to_string),
                    alpn: session.alpn_protocol().map(<[u8]>::to_vec),
                    client_cn: session
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|cert| common_name(cert)),
                };
                serve_http(
                    TokioIo::new(tls_stream),
                    Some(info),
                    conn_id,
                    shared,
                    handler,
                )
                .await
            }
            Err(_) => {
                shared.tls_failures_tx.send_modify(|n| *n += 1);
            }
        },
    }
    closed.closed_tx.send_modify(|n| *n += 1);
}

async fn serve_http<I>(
    io: I,
    tls: Option<TlsInfo>,
    conn_id: usize,
    shared: Arc<Shared>,
    handler: Handler,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        let handler = handler.clone();
        let tls = tls.clone();
        async move {
            let (parts, body) = req.into_parts();
            let (body, body_len, body_error) = read_body(body).await;
            let rec = Recorded {
                method: parts.method,
                uri: parts.uri,
                version: parts.version,
                headers: parts.headers,
                body,
                body_len,
                body_error,
                connection_id: conn_id,
                tls,
                status: None,
            };
            let index = shared.record(rec.clone());
            let reply = tokio::select! {
                biased;
                _ = shared.shutdown_requested() => text_reply(StatusCode::SERVICE_UNAVAILABLE, "stand-in shut down"),
                reply = handler(rec) => reply,
            };
            shared.set_status(index, reply.status());
            Ok::<_, Infallible>(reply)
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let _ = builder.serve_connection(io, service).await;
}

/// Streams the body, keeping it only while it fits in [`BODY_KEEP_LIMIT`].
async fn read_body(mut body: Incoming) -> (Option<Bytes>, u64, Option<String>) {
    let mut kept = Some(BytesMut::new());
    let mut len: u64 = 0;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    len += data.len() as u64;
                    if let Some(buf) = kept.as_mut() {
                        if buf.len() + data.len() <= BODY_KEEP_LIMIT {
                            buf.extend_from_slice(&data);
                        } else {
                            kept = None;
                        }
                    }
                }
            }
            Some(Err(e)) => return (kept.map(BytesMut::freeze), len, Some(e.to_string())),
        }
    }
    (kept.map(BytesMut::freeze), len, None)
}

/// Reads one header's single value, failing when it is missing, repeated or not ASCII.
pub fn single_header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a str, String> {
    let values: Vec<_> = headers.get_all(name).iter().collect();
    match values.as_slice() {
        [] => Err(format!("missing {name}")),
        [one] => one
            .to_str()
            .map_err(|_| format!("{name} is not visible ASCII")),
        many => Err(format!("{name} sent {} times", many.len())),
    }
}

/// The media type of a `Content-Type`/`Accept` element, lowercased, without parameters.
pub fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The subject common name of a DER certificate.
fn common_name(cert: &rustls_pki_types::CertificateDer<'_>) -> Option<String> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert).ok()?;
    let cn = x509.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
