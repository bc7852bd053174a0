//! HTTP/1.1 message heads, parsed with `httparse` and written by hand:
//! the requests sidekey reads from clients and writes to upstreams, the
//! responses it reads from upstreams and writes to clients, and the body
//! framing each implies (RFC 9112 6.3).

use std::io::Write;
use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use thiserror::Error;

/// At most this many header fields in a response head.
pub const MAX_HEADERS: usize = 100;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("invalid response head: {0}")]
    Parse(httparse::Error),
    #[error("invalid header in the response head")]
    Header,
    #[error("invalid Content-Length in the response head")]
    ContentLength,
    #[error("the response head is larger than {0} bytes")]
    TooLarge(usize),
}

/// How the request body is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body, and no framing header.
    Empty,
    Length(u64),
    Chunked,
}

/// Writes a request head: `method target HTTP/1.1`, `Host` unless
/// `headers` has one, the headers except any framing header the client
/// sent, then the framing header sidekey chose.
pub fn encode_request(
    buf: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    host: &str,
    framing: RequestFraming,
) {
    buf.extend_from_slice(method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(target.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(header::HOST) {
        buf.extend_from_slice(b"host: ");
        buf.extend_from_slice(host.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::Empty => {}
        RequestFraming::Length(n) => {
            // Writing into a Vec cannot fail.
            let _ = write!(buf, "content-length: {n}\r\n");
        }
        RequestFraming::Chunked => buf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    buf.extend_from_slice(b"\r\n");
}

/// How the response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (`HEAD`, 1xx, 204, 304, or `Content-Length: 0`).
    Empty,
    Length(u64),
    Chunked,
    /// Read until the upstream closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: ResponseFraming,
    /// Whether the connection may carry another request after this
    /// response's body.
    pub keep_alive: bool,
}

/// Parses response heads; keeps its scratch space between responses.
#[derive(Debug, Default)]
pub struct ResponseParser {
    /// Where each header's name and value are in the buffer: start and end
    /// of each.
    spans: Vec<[usize; 4]>,
}

impl ResponseParser {
    /// Parses a response head from the front of `buf`, splitting it off.
    /// `Ok(None)`: the head is not complete yet. Header values share the
    /// buffer's memory instead of being copied.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        method: &Method,
        max_len: usize,
    ) -> Result<Option<ResponseHead>, HeadError> {
        self.spans.clear();
        let (len, code, minor) = {
            // Left uninitialised: httparse writes those it fills.
            let mut headers =
                [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut response,
                buf,
                &mut headers,
            );
            let len = match parsed {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if buf.len() > max_len => {
                    return Err(HeadError::TooLarge(max_len))
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(HeadError::Parse(e)),
            };
            let base = buf.as_ptr() as usize;
            self.spans.extend(response.headers.iter().map(|h| {
                let name = h.name.as_ptr() as usize - base;
                let value = h.value.as_ptr() as usize - base;
                [name, name + h.name.len(), value, value + h.value.len()]
            }));
            (
                len,
                response.code.unwrap_or(0),
                response.version.unwrap_or(1),
            )
        };
        let head: Bytes = buf.split_to(len).freeze();
        let status = StatusCode::from_u16(code).map_err(|_| HeadError::Header)?;
        let version = if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let mut headers = HeaderMap::with_capacity(self.spans.len());
        for &[ns, ne, vs, ve] in &self.spans {
            let name = HeaderName::from_bytes(&head[ns..ne]).map_err(|_| HeadError::Header)?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
                .map_err(|_| HeadError::Header)?;
            headers.append(name, value);
        }
        let framing = framing(method, status, &headers)?;
        let keep_alive = version == Version::HTTP_11
            && framing != ResponseFraming::Close
            && !has_token(&headers, &header::CONNECTION, "close");
        Ok(Some(ResponseHead {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }))
    }
}

/// Why a client's request head cannot be served. Each closes the
/// connection after its error response.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the request head could not be parsed ({0})")]
    Parse(httparse::Error),
    #[error("the request head is larger than max_header_bytes")]
    TooLarge,
    #[error("the request has more than max_headers header fields")]
    TooManyHeaders,
    #[error("{0}")]
    Invalid(&'static str),
}

/// How a client's request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    pub request: http::Request<()>,
    pub framing: BodyFraming,
    /// Whether the client allows another request on the connection.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
}

/// Parses client request heads within the configured limits; keeps its
/// scratch space between requests.
#[derive(Debug)]
pub struct RequestParser {
    max_headers: usize,
    max_bytes: usize,
    spans: Vec<[usize; 4]>,
}

/// The most header fields `proxy.max_headers` can allow.
pub const MAX_REQUEST_HEADERS: usize = 1024;

impl RequestParser {
    pub fn new(max_headers: usize, max_bytes: usize) -> RequestParser {
        RequestParser {
            max_headers: max_headers.min(MAX_REQUEST_HEADERS),
            max_bytes,
            spans: Vec::new(),
        }
    }

    /// The most head bytes to hold while the head is incomplete.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Parses a request head from the front of `buf`, splitting it off.
    /// `Ok(None)`: not complete yet (read more, at most up to
    /// [`RequestParser::max_bytes`] in all).
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<RequestHead>, RequestError> {
        self.spans.clear();
        let (len, method, target, minor) = {
            let mut headers =
                [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_REQUEST_HEADERS];
            let mut request = httparse::Request::new(&mut []);
            let parsed = request.parse_with_uninit_headers(buf, &mut headers[..self.max_headers]);
            let len = match parsed {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if buf.len() >= self.max_bytes => {
                    return Err(RequestError::TooLarge)
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
                Err(e) => return Err(RequestError::Parse(e)),
            };
            let base = buf.as_ptr() as usize;
            self.spans.extend(request.headers.iter().map(|h| {
                let name = h.name.as_ptr() as usize - base;
                let value = h.value.as_ptr() as usize - base;
                [name, name + h.name.len(), value, value + h.value.len()]
            }));
            let method = Method::from_bytes(request.method.unwrap_or("").as_bytes())
                .map_err(|_| RequestError::Invalid("invalid method"))?;
            let target = request.path.unwrap_or("");
            let start = target.as_ptr() as usize - base;
            (
                len,
                method,
                start..start + target.len(),
                request.version.unwrap_or(1),
            )
        };
        let head: Bytes = buf.split_to(len).freeze();
        let uri = http::Uri::from_maybe_shared(head.slice(target))
            .map_err(|_| RequestError::Invalid("invalid request target"))?;
        let mut headers = HeaderMap::with_capacity(self.spans.len());
        for &[ns, ne, vs, ve] in &self.spans {
            let name = HeaderName::from_bytes(&head[ns..ne])
                .map_err(|_| RequestError::Invalid("invalid header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
                .map_err(|_| RequestError::Invalid("invalid header value"))?;
            headers.append(name, value);
        }
        let version = if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let framing = request_framing(version, &headers)?;
        let keep_alive = if version == Version::HTTP_11 {
            !has_token(&headers, &header::CONNECTION, "close")
        } else {
            has_token(&headers, &header::CONNECTION, "keep-alive")
        };
        let expect_continue = framing != BodyFraming::Empty
            && version == Version::HTTP_11
            && headers
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let mut request = http::Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = version;
        *request.headers_mut() = headers;
        Ok(Some(RequestHead {
            request,
            framing,
            keep_alive,
            expect_continue,
        }))
    }
}

/// The request body rules of RFC 9112 6.3, strictly: anything two parsers
/// could frame differently is refused rather than resolved.
fn request_framing(version: Version, headers: &HeaderMap) -> Result<BodyFraming, RequestError> {
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if te.peek().is_some() {
        if version == Version::HTTP_10 {
            return Err(RequestError::Invalid(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(RequestError::Invalid(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        let only_chunked = te.count() == 1
            && headers
                .get(header::TRANSFER_ENCODING)
                .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"));
        if !only_chunked {
            return Err(RequestError::Invalid(
                "a Transfer-Encoding other than chunked",
            ));
        }
        return Ok(BodyFraming::Chunked);
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let n = parse_length(value.as_bytes())
            .ok_or(RequestError::Invalid("invalid Content-Length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(RequestError::Invalid("conflicting Content-Length headers"));
        }
        length = Some(n);
    }
    Ok(match length {
        None | Some(0) => BodyFraming::Empty,
        Some(n) => BodyFraming::Length(n),
    })
}

/// Writes a response head to a client: status line, headers (without
/// framing and connection headers, which follow from `framing` and
/// `connection`), and `Date` when the response has none.
pub fn encode_response(
    buf: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: ResponseFraming,
    connection: Option<&'static str>,
) {
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\n");
    // Bodyless responses keep the upstream's Content-Length (a HEAD
    // answer's describes the GET's body).
    let keep_length = framing == ResponseFraming::Empty;
    for (name, value) in headers {
        if name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || (name == header::CONTENT_LENGTH && !keep_length)
        {
            continue;
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(header::DATE) {
        buf.extend_from_slice(b"date: ");
        date::append(buf);
        buf.extend_from_slice(b"\r\n");
    }
    match framing {
        ResponseFraming::Length(n) => {
            let _ = write!(buf, "content-length: {n}\r\n");
        }
        ResponseFraming::Chunked => buf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ResponseFraming::Empty | ResponseFraming::Close => {}
    }
    if let Some(connection) = connection {
        buf.extend_from_slice(b"connection: ");
        buf.extend_from_slice(connection.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
}

/// The `Date` header value, formatted once per second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    pub fn append(buf: &mut Vec<u8>) {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            if cached.0 != secs {
                *cached = (secs, httpdate::fmt_http_date(now));
            }
            buf.extend_from_slice(cached.1.as_bytes());
        });
    }
}

/// The body length rules of RFC 9112 6.3 for a response.
fn framing(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<ResponseFraming, HeadError> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(ResponseFraming::Empty);
    }
    if let Some(te) = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        // Chunked only when it is the final coding; otherwise the body
        // runs to the end of the connection.
        let last = te
            .to_str()
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => ResponseFraming::Chunked,
            _ => ResponseFraming::Close,
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let n = parse_length(value.as_bytes()).ok_or(HeadError::ContentLength)?;
        if length.is_some_and(|l| l != n) {
            return Err(HeadError::ContentLength);
        }
        length = Some(n);
    }
    Ok(match length {
        Some(0) => ResponseFraming::Empty,
        Some(n) => ResponseFraming::Length(n),
        None => ResponseFraming::Close,
    })
}

/// A Content-Length value: digits only, no sign, no list.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Whether a comma-separated header lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Writes the size line of a chunk of `len` bytes.
pub fn encode_chunk_header(buf: &mut Vec<u8>, len: usize) {
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "{len:x}\r\n");
}

/// Writes one chunk of a chunked body into `buf`.
pub fn encode_chunk(buf: &mut Vec<u8>, data: &[u8]) {
    encode_chunk_header(buf, data.len());
    buf.extend_from_slice(data);
    buf.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, method: Method) -> Result<Option<ResponseHead>, HeadError> {
        let mut buf = BytesMut::from(text.as_bytes());
        ResponseParser::default().parse(&mut buf, &method, 1024)
    }

    fn framing_of(text: &str, method: Method) -> ResponseFraming {
        parse(text, method).unwrap().unwrap().framing
    }

    #[test]
    fn request_head_replaces_client_framing_and_adds_host() {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static("k"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        let mut buf = Vec::new();
        encode_request(
            &mut buf,
            &Method::POST,
            "/v1?a=1",
            &headers,
            "api.example.test:8443",
            RequestFraming::Length(5),
        );
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "POST /v1?a=1 HTTP/1.1\r\nhost: api.example.test:8443\r\n\
             x-api-key: k\r\ncontent-length: 5\r\n\r\n"
        );

        headers.insert(header::HOST, HeaderValue::from_static("own.example.test"));
        let mut buf = Vec::new();
        encode_request(
            &mut buf,
            &Method::GET,
            "/",
            &headers,
            "x",
            RequestFraming::Chunked,
        );
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("host: own.example.test\r\n"), "{text}");
        assert!(!text.contains("host: x"), "{text}");
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn response_head_is_split_off_and_shares_its_values() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\nokHTTP"[..],
        );
        let head = ResponseParser::default()
            .parse(&mut buf, &Method::GET, 1024)
            .unwrap()
            .unwrap();
        assert_eq!(head.status, StatusCode::CREATED);
        assert_eq!(head.framing, ResponseFraming::Length(2));
        assert!(head.keep_alive);
        let xa: Vec<_> = head.headers.get_all("x-a").iter().collect();
        assert_eq!(xa, ["1", "2"]);
        assert_eq!(&buf[..], b"okHTTP");
    }

    #[test]
    fn an_incomplete_head_waits_and_an_oversized_one_fails() {
        assert!(parse("HTTP/1.1 200 OK\r\nA: b\r\n", Method::GET)
            .unwrap()
            .is_none());
        let long = format!("HTTP/1.1 200 OK\r\nA: {}\r\n", "b".repeat(2000));
        assert_eq!(
            parse(&long, Method::GET).unwrap_err(),
            HeadError::TooLarge(1024)
        );
        assert!(matches!(
            parse("HTTP/1.1 OK\r\n\r\n", Method::GET),
            Err(HeadError::Parse(_))
        ));
    }

    #[test]
    fn body_framing_follows_rfc_9112() {
        use ResponseFraming::*;
        let ok = "HTTP/1.1 200 OK\r\n";
        assert_eq!(
            framing_of(&format!("{ok}Content-Length: 10\r\n\r\n"), Method::HEAD),
            Empty
        );
        for status in ["204 No Content", "304 Not Modified", "103 Early Hints"] {
            let text = format!("HTTP/1.1 {status}\r\nContent-Length: 10\r\n\r\n");
            assert_eq!(framing_of(&text, Method::GET), Empty, "{status}");
        }
        assert_eq!(
            framing_of(&format!("{ok}Content-Length: 0\r\n\r\n"), Method::GET),
            Empty
        );
        assert_eq!(
            framing_of(
                &format!("{ok}Content-Length: 7\r\nContent-Length: 7\r\n\r\n"),
                Method::GET
            ),
            Length(7)
        );
        // Transfer-Encoding wins over Content-Length.
        assert_eq!(
            framing_of(
                &format!("{ok}Transfer-Encoding: gzip, Chunked\r\nContent-Length: 7\r\n\r\n"),
                Method::GET
            ),
            Chunked
        );
        assert_eq!(
            framing_of(&format!("{ok}Transfer-Encoding: gzip\r\n\r\n"), Method::GET),
            Close
        );
        assert_eq!(framing_of(&format!("{ok}\r\n"), Method::GET), Close);
        for bad in ["7, 7", "+7", "", "7\r\nContent-Length: 8"] {
            let text = format!("{ok}Content-Length: {bad}\r\n\r\n");
            assert_eq!(
                parse(&text, Method::GET).unwrap_err(),
                HeadError::ContentLength,
                "{bad}"
            );
        }
    }

    #[test]
    fn keep_alive_needs_http_1_1_without_close() {
        let keep = |text: &str| parse(text, Method::GET).unwrap().unwrap().keep_alive;
        assert!(keep("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep("HTTP/1.1 200 OK\r\n\r\n"), "read to close");
    }

    #[test]
    fn chunks_are_framed_with_hex_sizes() {
        let mut buf = Vec::new();
        encode_chunk(&mut buf, &[b'x'; 26]);
        buf.extend_from_slice(LAST_CHUNK);
        let mut expected = b"1a\r\n".to_vec();
        expected.extend_from_slice(&[b'x'; 26]);
        expected.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(buf, expected);
    }

    fn request(text: &str) -> Result<Option<RequestHead>, RequestError> {
        let mut buf = BytesMut::from(text.as_bytes());
        RequestParser::new(10, 256).parse(&mut buf)
    }

    fn request_framing_of(headers: &str) -> Result<BodyFraming, RequestError> {
        let text = format!("POST /a HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
        request(&text).map(|head| head.expect("complete").framing)
    }

    #[test]
    fn request_head_is_split_off_and_pipelined_bytes_stay() {
        let mut buf = BytesMut::from(
            &b"GET http://h.example/a?b=1 HTTP/1.1\r\nHost: h.example\r\nX-A: 1\r\n\r\nGET /next"[..],
        );
        let head = RequestParser::new(10, 256)
            .parse(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(head.request.method(), Method::GET);
        assert_eq!(head.request.uri().host(), Some("h.example"));
        assert_eq!(head.request.uri().query(), Some("b=1"));
        assert_eq!(head.request.headers()["x-a"], "1");
        assert_eq!(head.framing, BodyFraming::Empty);
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"GET /next");
    }

    #[test]
    fn request_limits_are_enforced() {
        assert!(request("GET / HTTP/1.1\r\nHost: h\r\n").unwrap().is_none());
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(300));
        assert_eq!(request(&long).unwrap_err(), RequestError::TooLarge);
        let many: String = (0..11).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(request(&text).unwrap_err(), RequestError::TooManyHeaders);
        assert!(matches!(
            request("GET / HTTP/2.0\r\n\r\n"),
            Err(RequestError::Parse(_))
        ));
    }

    #[test]
    fn request_framing_refuses_anything_ambiguous() {
        use BodyFraming::*;
        assert_eq!(request_framing_of("").unwrap(), Empty);
        assert_eq!(request_framing_of("Content-Length: 0\r\n").unwrap(), Empty);
        assert_eq!(
            request_framing_of("Content-Length: 5\r\nContent-Length: 5\r\n").unwrap(),
            Length(5)
        );
        assert_eq!(
            request_framing_of("Transfer-Encoding: Chunked\r\n").unwrap(),
            Chunked
        );
        for bad in [
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: -5\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ] {
            assert!(
                matches!(request_framing_of(bad), Err(RequestError::Invalid(_))),
                "{bad:?}"
            );
        }
        let http10 = request("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(http10, Err(RequestError::Invalid(_))));
    }

    #[test]
    fn request_keep_alive_and_expect_follow_the_version() {
        let head = |text: &str| request(text).unwrap().unwrap();
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        let expect = "Expect: 100-continue\r\n";
        assert!(
            head(&format!(
                "PUT / HTTP/1.1\r\n{expect}Content-Length: 1\r\n\r\n"
            ))
            .expect_continue
        );
        assert!(!head(&format!("GET / HTTP/1.1\r\n{expect}\r\n")).expect_continue);
    }

    #[test]
    fn response_head_states_its_own_framing_and_connection() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(
            header::DATE,
            HeaderValue::from_static("Mon, 30 Nov 2026 12:00:00 GMT"),
        );
        headers.insert("x-a", HeaderValue::from_static("1"));
        let mut buf = Vec::new();
        encode_response(
            &mut buf,
            StatusCode::CREATED,
            &headers,
            ResponseFraming::Chunked,
            Some("close"),
        );
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "HTTP/1.1 201 Created\r\ndate: Mon, 30 Nov 2026 12:00:00 GMT\r\nx-a: 1\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );

        // A bodyless answer keeps Content-Length; a missing Date is added.
        headers.remove(header::DATE);
        let mut buf = Vec::new();
        encode_response(
            &mut buf,
            StatusCode::OK,
            &headers,
            ResponseFraming::Empty,
            None,
        );
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("\r\ncontent-length: 99\r\n"), "{text}");
        assert!(text.contains("\r\ndate: "), "{text}");
        assert!(!text.contains("connection"), "{text}");
    }
}
