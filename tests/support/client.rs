//! A small test client for the proxy's plain-HTTP app side, a raw-bytes client for
//! malformed/smuggling tests, and a direct TLS client for talking to stand-ins.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Overall limit for one [`send`] (connect + request + whole response).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit for [`raw`].
pub const RAW_TIMEOUT: Duration = Duration::from_secs(10);

pub type BoxError = Box<dyn StdError + Send + Sync>;
type AnyBody = UnsyncBoxBody<Bytes, BoxError>;

fn boxed<B>(body: B) -> AnyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

pub fn empty_body() -> Empty<Bytes> {
    Empty::new()
}

pub fn full_body(data: impl Into<Bytes>) -> Full<Bytes> {
    Full::new(data.into())
}

/// Adds `Host` from the URI's authority when the request has none.
fn ensure_host<B>(req: &mut Request<B>) {
    if req.headers().contains_key(HOST) {
        return;
    }
    if let Some(authority) = req.uri().authority() {
        let value = HeaderValue::from_str(authority.as_str()).expect("authority is a valid header");
        req.headers_mut().insert(HOST, value);
    }
}

/// One HTTP/1.1 keep-alive connection to the proxy; requests go out exactly as given
/// (absolute-form `http://host/path` stays absolute-form, `/path` stays origin-form).
pub struct ProxyConn {
    sender: http1::SendRequest<AnyBody>,
    driver: JoinHandle<()>,
}

impl ProxyConn {
    pub async fn connect(proxy: SocketAddr) -> Result<ProxyConn, String> {
        let tcp = timeout(CLIENT_TIMEOUT, TcpStream::connect(proxy))
            .await
            .map_err(|_| format!("connect to {proxy} timed out"))?
            .map_err(|e| format!("connect to {proxy}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP/1.1 handshake with {proxy}: {e}"))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(ProxyConn { sender, driver })
    }

    /// Sends one request and reads the whole response. Adds `Host` from an
    /// absolute-form URI when the request has none (use [`raw`] to send without).
    pub async fn send<B>(&mut self, req: Request<B>) -> Result<Response<Bytes>, String>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut req = req.map(boxed);
        ensure_host(&mut req);
        timeout(CLIENT_TIMEOUT, async {
            self.sender
                .ready()
                .await
                .map_err(|e| format!("connection not ready: {e}"))?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            collect(resp).await
        })
        .await
        .map_err(|_| format!("no complete response within {CLIENT_TIMEOUT:?}"))?
    }

    /// Whether the proxy closed this connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

impl Drop for ProxyConn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn collect(resp: Response<hyper::body::Incoming>) -> Result<Response<Bytes>, String> {
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| format!("reading response body: {e}"))?
        .to_bytes();
    Ok(Response::from_parts(parts, bytes))
}

/// Sends one request on a new connection to the proxy; `Err` describes what failed.
pub async fn try_send<B>(proxy: SocketAddr, req: Request<B>) -> Result<Response<Bytes>, String>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut conn = ProxyConn::connect(proxy).await?;
    conn.send(req).await
}

/// Sends one request on a new connection to the proxy; panics with the cause on failure.
pub async fn send<B>(proxy: SocketAddr, req: Request<B>) -> Response<Bytes>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let target = req.uri().clone();
    try_send(proxy, req)
        .await
        .unwrap_or_else(|e| panic!("send {target} via {proxy}: {e}"))
}

/// `GET url` through the proxy (`url` absolute `http://host/path` or origin-form `/path`).
pub async fn get(proxy: SocketAddr, url: &str) -> Response<Bytes> {
    let req = Request::get(url)
        .body(empty_body())
        .unwrap_or_else(|e| panic!("build GET {url}: {e}"));
    send(proxy, req).await
}

/// The response body as UTF-8 text (lossy).
pub fn body_text(resp: &Response<Bytes>) -> String {
    String::from_utf8_lossy(resp.body()).into_owned()
}

/// The response body as JSON; panics with the body when it is not.
pub fn body_json(resp: &Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(resp.body()).unwrap_or_else(|e| {
        panic!(
            "response body is not JSON ({e}); status {}, body {:?}",
            resp.status(),
            body_text(resp)
        )
    })
}

// ---------------------------------------------------------------------------
// Direct TLS client (to check stand-ins without the proxy).

/// Sends one request over TLS to `addr` with SNI `server_name`, HTTP/2 when the
/// server picks `h2` by ALPN, else HTTP/1.1. An origin-form URI is completed to
/// `https://{server_name}{path}` for HTTP/2 and given a `Host` for HTTP/1.1.
pub async fn send_tls<B>(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
    req: Request<B>,
) -> Result<Response<Bytes>, String>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("bad server name {server_name:?}: {e}"))?;
    timeout(CLIENT_TIMEOUT, async move {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {addr} as {server_name}: {e}"))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let mut req = req.map(boxed);
        if h2 {
            if req.uri().authority().is_none() {
                let pq = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "/".to_string());
                *req.uri_mut() = format!("https://{server_name}{pq}")
                    .parse::<Uri>()
                    .map_err(|e| format!("bad URI: {e}"))?;
            }
            let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = sender.send_request(req).await;
            let out = match resp {
                Ok(resp) => collect(resp).await,
                Err(e) => Err(format!("HTTP/2 request failed: {e}")),
            };
            driver.abort();
            out
        } else {
            if !req.headers().contains_key(HOST) && req.uri().authority().is_none() {
                let value = HeaderValue::from_str(server_name).map_err(|e| e.to_string())?;
                req.headers_mut().insert(HOST, value);
            }
            ensure_host(&mut req);
            let (mut sender, conn) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = sender.send_request(req).await;
            let out = match resp {
                Ok(resp) => collect(resp).await,
                Err(e) => Err(format!("HTTP/1.1 request failed: {e}")),
            };
            driver.abort();
            out
        }
    })
    .await
    .map_err(|_| format!("no complete response from {addr} within {CLIENT_TIMEOUT:?}"))?
}

// ---------------------------------------------------------------------------
// Raw bytes.

/// Writes `bytes` to the proxy and reads until the first complete final response
/// (by Content-Length / chunked framing, skipping 1xx), EOF, or [`RAW_TIMEOUT`];
/// returns what was read (possibly empty). Panics only when it cannot connect or write.
/// For a response to HEAD, use [`raw_until_eof`] (its Content-Length has no body).
pub async fn raw(proxy: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    raw_inner(proxy, bytes, RAW_TIMEOUT, true).await
}

/// Writes `bytes` and reads everything until the proxy closes or `limit` passes
/// (then returns what was read). For counting how many responses came back.
pub async fn raw_until_eof(proxy: SocketAddr, bytes: &[u8], limit: Duration) -> Vec<u8> {
    raw_inner(proxy, bytes, limit, false).await
}

async fn raw_inner(
    proxy: SocketAddr,
    bytes: &[u8],
    limit: Duration,
    stop_at_response: bool,
) -> Vec<u8> {
    let mut tcp = timeout(limit, TcpStream::connect(proxy))
        .await
        .unwrap_or_else(|_| panic!("raw: connect to {proxy} timed out"))
        .unwrap_or_else(|e| panic!("raw: connect to {proxy}: {e}"));
    let _ = tcp.set_nodelay(true);
    tcp.write_all(bytes)
        .await
        .unwrap_or_else(|e| panic!("raw: write to {proxy}: {e}"));
    let mut out = Vec::new();
    let _ = timeout(limit, async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if stop_at_response && complete_response_len(&out).is_some() {
                return;
            }
        }
    })
    .await;
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// If `buf` starts with a complete final HTTP/1.x response (1xx responses before it
/// included), the number of bytes it spans. `None` if incomplete or framed by EOF.
pub fn complete_response_len(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    loop {
        let head_end = start + find(&buf[start..], b"\r\n\r\n")? + 4;
        let head = RawHead::parse(&buf[start..head_end])?;
        if (100..200).contains(&head.status) && head.status != 101 {
            start = head_end;
            continue;
        }
        if head.status == 101 || head.status == 204 || head.status == 304 {
            return Some(head_end);
        }
        if head.is_chunked() {
            return chunked_end(buf, head_end);
        }
        let len = head.content_length()?;
        return (buf.len() >= head_end + len).then_some(head_end + len);
    }
}

fn chunked_end(buf: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let line_end = pos + find(&buf[pos..], b"\r\n")?;
        let line = std::str::from_utf8(&buf[pos..line_end]).ok()?;
        let size_hex = line.split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        if size == 0 {
            let trailers = line_end + 2;
            if buf.get(trailers..trailers + 2)? == b"\r\n" {
                return Some(trailers + 2);
            }
            return Some(trailers + find(&buf[trailers..], b"\r\n\r\n")? + 4);
        }
        pos = line_end + 2 + size + 2;
        if buf.len() < pos {
            return None;
        }
    }
}

struct RawHead {
    status: u16,
    headers: Vec<(String, String)>,
}

impl RawHead {
    fn parse(head: &[u8]) -> Option<RawHead> {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let status_line = lines.next()?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next()?;
        if !version.starts_with("HTTP/") {
            return None;
        }
        let status = parts.next()?.parse().ok()?;
        let headers = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Some(RawHead { status, headers })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn is_chunked(&self) -> bool {
        self.headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    }

    fn content_length(&self) -> Option<usize> {
        self.get("content-length")?.parse().ok()
    }
}

/// One response parsed from raw bytes. `body` is as on the wire (still chunked if it was).
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name`, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses the first response in `bytes` (an unframed one takes everything after its
/// head as body). Panics, showing the bytes, when there is no status line and head.
pub fn parse_response(bytes: &[u8]) -> RawResponse {
    split_responses(bytes)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no HTTP response in {:?}", String::from_utf8_lossy(bytes)))
}

/// Splits raw bytes into the consecutive responses in them (1xx interim responses
/// included as their own entries). A trailing response without framing takes the rest.
pub fn split_responses(bytes: &[u8]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(head_len) = find(rest, b"\r\n\r\n").map(|p| p + 4) {
        let Some(head) = RawHead::parse(&rest[..head_len]) else {
            break;
        };
        let end = if (100..200).contains(&head.status) {
            head_len
        } else {
            complete_response_len(rest).unwrap_or(rest.len())
        };
        out.push(RawResponse {
            status: head.status,
            headers: head.headers,
            body: rest[head_len..end].to_vec(),
        });
        rest = &rest[end..];
    }
    out
}

// ---------------------------------------------------------------------------
// Large bodies without allocating them.

/// A request body of `len` bytes, produced in 64 KiB chunks (with an exact size hint,
/// so hyper sends `Content-Length`).
pub struct PatternBody {
    remaining: u64,
    chunk: Bytes,
}

/// A body of `len` bytes of a repeating pattern, streamed, never held whole.
pub fn streaming_body(len: u64) -> PatternBody {
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    PatternBody {
        remaining: len,
        chunk: Bytes::from(chunk),
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
