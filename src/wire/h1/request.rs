//! Request heads: those sidekey reads from clients ([`RequestParser`])
//! and those it writes to upstreams ([`encode_request`]).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header;
use http::{Method, Version};
use thiserror::Error;

pub use super::fields::Framing;
use super::fields::{self, parse_length, RawFields};
use crate::wire::headers::{ConnectionOptions, ForwardHeaders};

/// Writes a request head: `method target HTTP/1.1`, `Host` unless
/// `headers` has one, the headers except any framing header the client
/// sent, then the framing header sidekey chose.
pub(crate) fn encode_request(
    buf: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &ForwardHeaders,
    host: &str,
    framing: Framing,
) {
    buf.extend_from_slice(method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(target.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains(&header::HOST) {
        buf.extend_from_slice(b"host: ");
        buf.extend_from_slice(host.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    // Any framing field is replaced by those of the framing chosen here.
    headers.write_lines(buf, |name| {
        name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
    });
    match framing {
        Framing::Empty => {}
        Framing::Length(n) => {
            buf.extend_from_slice(b"content-length: ");
            buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => buf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        // A request body is never delimited by the connection's end.
        Framing::UntilClose => {}
    }
    buf.extend_from_slice(b"\r\n");
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

/// A parsed request head. Its header fields stay in the bytes they came
/// in ([`RawFields`]); no header map is built.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: http::Uri,
    pub version: Version,
    pub fields: RawFields,
    pub framing: Framing,
    /// Whether the client allows another request on the connection.
    pub(crate) keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub(crate) expect_continue: bool,
}

/// Parses client request heads within the configured limits.
#[derive(Debug)]
pub struct RequestParser {
    max_headers: usize,
    max_bytes: usize,
}

/// The most header fields `proxy.max_headers` can allow.
pub(crate) const MAX_REQUEST_HEADERS: usize = 1024;

impl RequestParser {
    pub fn new(max_headers: usize, max_bytes: usize) -> RequestParser {
        RequestParser {
            max_headers: max_headers.min(MAX_REQUEST_HEADERS),
            max_bytes,
        }
    }

    /// The most head bytes to hold while the head is incomplete.
    pub(crate) fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Parses a request head from the front of `buf`, splitting it off.
    /// `Ok(None)`: not complete yet (read more, at most up to
    /// [`RequestParser::max_bytes`] in all).
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<RequestHead>, RequestError> {
        let mut spans = Vec::new();
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
            fields::record(&mut spans, base, request.headers);
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
        let head_target = head.slice(target.clone());
        let uri = http::Uri::from_maybe_shared(head.slice(target))
            .map_err(|_| RequestError::Invalid("invalid request target"))?;
        let mut fields = RawFields::new(head, spans);
        let version = if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let scan = Scan::of(&fields);
        validate(&method, &uri, &head_target, &scan)?;
        let framing = request_framing(version, &scan)?;
        let keep_alive = if version == Version::HTTP_11 {
            !scan.connection.close
        } else {
            scan.connection.keep_alive
        };
        let expect_continue =
            framing != Framing::Empty && version == Version::HTTP_11 && scan.expect_continue;
        let names_fields = scan.connection.names_fields;
        fields.set_names_fields(names_fields);
        // Names with `_` are looked for (by the proxy's
        // `underscores_in_headers` rule) only when a line holds one.
        let underscores = fields.lines_contain(b'_');
        fields.set_has_underscores(underscores);
        Ok(Some(RequestHead {
            method,
            uri,
            version,
            fields,
            framing,
            keep_alive,
            expect_continue,
        }))
    }
}

/// The fields a request's framing and connection handling depend on,
/// read in one pass.
#[derive(Default)]
struct Scan<'a> {
    hosts: usize,
    transfer_encodings: usize,
    transfer_encoding: Option<&'a [u8]>,
    content_lengths: Vec<&'a [u8]>,
    connection: ConnectionOptions,
    expect_continue: bool,
}

impl<'a> Scan<'a> {
    fn of(fields: &'a RawFields) -> Scan<'a> {
        let mut scan = Scan::default();
        for (name, value) in fields.iter() {
            match name.len() {
                17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                    scan.transfer_encodings += 1;
                    scan.transfer_encoding = Some(value);
                }
                14 if name.eq_ignore_ascii_case(b"content-length") => {
                    scan.content_lengths.push(value);
                }
                10 if name.eq_ignore_ascii_case(b"connection") => scan.connection.add(value),
                4 if name.eq_ignore_ascii_case(b"host") => scan.hosts += 1,
                6 if name.eq_ignore_ascii_case(b"expect") => {
                    scan.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
                }
                _ => {}
            }
        }
        scan
    }
}

/// The checks of a request head beyond its syntax, all in one place: what
/// could make sidekey and the upstream see different requests, or is not
/// a request for a resource. (`CONNECT`, in authority form, is left to the
/// proxy, which answers it with its own error.)
fn validate(
    method: &Method,
    uri: &http::Uri,
    target: &[u8],
    scan: &Scan<'_>,
) -> Result<(), RequestError> {
    if scan.hosts > 1 {
        return Err(RequestError::Invalid("more than one Host header"));
    }
    // `http::Uri` drops a fragment silently, and would route
    // `http://user@host/` on `host`: neither belongs in a request.
    if target.contains(&b'#') {
        return Err(RequestError::Invalid("a fragment in the request target"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(RequestError::Invalid("userinfo in the request target"));
    }
    let path = uri.path();
    if method != Method::CONNECT && (path == "*" || !path.starts_with('/')) {
        return Err(RequestError::Invalid("the request target must be a path"));
    }
    Ok(())
}

/// The request body rules of RFC 9112 6.3, strictly: anything two parsers
/// could frame differently is refused rather than resolved.
fn request_framing(version: Version, scan: &Scan<'_>) -> Result<Framing, RequestError> {
    if let Some(te) = scan.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(RequestError::Invalid(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if !scan.content_lengths.is_empty() {
            return Err(RequestError::Invalid(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if scan.transfer_encodings != 1 || !te.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(RequestError::Invalid(
                "a Transfer-Encoding other than chunked",
            ));
        }
        return Ok(Framing::Chunked);
    }
    let mut length = None;
    for value in &scan.content_lengths {
        let n = parse_length(value).ok_or(RequestError::Invalid("invalid Content-Length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(RequestError::Invalid("conflicting Content-Length headers"));
        }
        length = Some(n);
    }
    Ok(match length {
        None | Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderName, HeaderValue};

    #[test]
    fn request_head_replaces_client_framing_and_adds_host() {
        // The client's framing fields and hop-by-hop fields are left out;
        // sidekey's own come after the client's.
        let client = b"X-Api-Key: k\r\nContent-Length: 99\r\nConnection: X-Hop\r\n\
                       X-Hop: 1\r\nTE: trailers\r\n\r\n";
        let mut headers = ForwardHeaders::new(RawFields::parse(client).unwrap());
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(
            HeaderName::from_static("x-own"),
            HeaderValue::from_static("v"),
        );
        let mut buf = Vec::new();
        encode_request(
            &mut buf,
            &Method::POST,
            "/v1?a=1",
            &headers,
            "api.example.test:8443",
            Framing::Length(5),
        );
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "POST /v1?a=1 HTTP/1.1\r\nhost: api.example.test:8443\r\n\
             X-Api-Key: k\r\nx-own: v\r\ncontent-length: 5\r\n\r\n"
        );

        headers.insert(header::HOST, HeaderValue::from_static("own.example.test"));
        let mut buf = Vec::new();
        encode_request(&mut buf, &Method::GET, "/", &headers, "x", Framing::Chunked);
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("host: own.example.test\r\n"), "{text}");
        assert!(!text.contains("host: x"), "{text}");
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n"),
            "{text}"
        );
    }

    fn request(text: &str) -> Result<Option<RequestHead>, RequestError> {
        let mut buf = BytesMut::from(text.as_bytes());
        RequestParser::new(10, 256).parse(&mut buf)
    }

    fn request_framing_of(headers: &str) -> Result<Framing, RequestError> {
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
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.host(), Some("h.example"));
        assert_eq!(head.uri.query(), Some("b=1"));
        assert_eq!(head.fields.get("x-a"), Some(&b"1"[..]));
        assert_eq!(head.framing, Framing::Empty);
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
        use Framing::*;
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
    fn request_targets_are_paths_without_fragment_or_userinfo() {
        for bad in [
            "GET http://evil@api.test/ HTTP/1.1\r\n\r\n",
            "GET http://api.test#@evil/ HTTP/1.1\r\n\r\n",
            "GET /path#frag HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET * HTTP/1.1\r\nHost: h\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET h:80 HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nhost: i\r\n\r\n",
        ] {
            assert!(
                matches!(request(bad), Err(RequestError::Invalid(_))),
                "{bad:?}"
            );
        }
        let connect = request("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n");
        assert!(
            connect.unwrap().is_some(),
            "CONNECT is the proxy's to refuse"
        );
        assert!(request("GET http://h/a?b#x HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn a_content_length_over_2_pow_53_is_refused() {
        assert!(matches!(
            request_framing_of("Content-Length: 9223372036854775808\r\n"),
            Err(RequestError::Invalid(_))
        ));
        assert_eq!(
            request_framing_of("Content-Length: 9007199254740992\r\n").unwrap(),
            Framing::Length(1 << 53)
        );
    }

    #[test]
    fn names_with_underscores_are_found_as_the_head_is_parsed() {
        let names = |text: &str| {
            let head = request(text).unwrap().unwrap();
            let found: Vec<String> = head
                .fields
                .underscored()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect();
            (head.fields.may_have_underscores(), found)
        };
        assert_eq!(
            names("GET /a_b HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n"),
            (false, vec![]),
            "a '_' in the target is not in a field"
        );
        assert_eq!(
            names("GET / HTTP/1.1\r\nHost: h\r\nCookie: a_b=1\r\n\r\n"),
            (true, vec![])
        );
        assert_eq!(
            names("GET / HTTP/1.1\r\nX_A: 1\r\nHost: h\r\nContent_Length: 2\r\n\r\n").1,
            ["X_A", "Content_Length"]
        );
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
}
