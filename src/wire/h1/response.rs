//! Response heads: those sidekey reads from upstreams ([`parse_response`])
//! and those it writes to clients ([`encode_response`]), and the body
//! framing a response head implies (RFC 9112 6.3).
//!
//! An upstream's header fields are not turned into a `HeaderMap`: they
//! stay where they are in the head's bytes ([`RawFields`]), and a response
//! passed on to the client is written from there, hop-by-hop fields left
//! out (profiled, building and dropping the map was the largest single
//! cost of a proxied request).

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::HeaderMap;
use http::{Method, StatusCode, Version};
use thiserror::Error;

pub use super::fields::Framing;
use super::fields::{self, parse_length, RawFields};
use crate::wire::headers::{end_to_end_names, ConnectionOptions};

/// At most this many header fields in a response head.
pub(crate) const MAX_HEADERS: usize = 100;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
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

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub fields: RawFields,
    pub(crate) framing: Framing,
    /// Whether the connection may carry another request after this
    /// response's body.
    pub keep_alive: bool,
}

/// Parses a response head from the front of `buf`, splitting it off.
/// `Ok(None)`: the head is not complete yet.
pub(crate) fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
    max_len: usize,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut spans = Vec::new();
    let (len, code, minor) = {
        // Left uninitialised: httparse writes those it fills.
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
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
        fields::record(&mut spans, buf.as_ptr() as usize, response.headers);
        (
            len,
            response.code.unwrap_or(0),
            response.version.unwrap_or(1),
        )
    };
    let mut fields = RawFields::new(buf.split_to(len).freeze(), spans);
    let status = StatusCode::from_u16(code).map_err(|_| HeadError::Header)?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let scan = FramingFields::scan(&fields);
    let framing = framing(method, status, &scan)?;
    let keep_alive =
        version == Version::HTTP_11 && framing != Framing::UntilClose && !scan.connection.close;
    let names_fields = scan.connection.names_fields;
    fields.set_names_fields(names_fields);
    Ok(Some(ResponseHead {
        status,
        fields,
        framing,
        keep_alive,
    }))
}

/// What the framing of a response depends on, read in one pass.
struct FramingFields<'a> {
    /// The last `Transfer-Encoding` value.
    transfer_encoding: Option<&'a [u8]>,
    /// `Err` for an invalid or conflicting length (which matters only
    /// when the length frames the body).
    content_length: Result<Option<u64>, HeadError>,
    connection: ConnectionOptions,
}

impl<'a> FramingFields<'a> {
    fn scan(fields: &'a RawFields) -> FramingFields<'a> {
        let mut scan = FramingFields {
            transfer_encoding: None,
            content_length: Ok(None),
            connection: ConnectionOptions::default(),
        };
        for (name, value) in fields.iter() {
            match name.len() {
                17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                    scan.transfer_encoding = Some(value);
                }
                14 if name.eq_ignore_ascii_case(b"content-length") => {
                    scan.content_length = match (scan.content_length, parse_length(value)) {
                        (Ok(None), Some(n)) => Ok(Some(n)),
                        (Ok(Some(l)), Some(n)) if l == n => Ok(Some(n)),
                        _ => Err(HeadError::ContentLength),
                    };
                }
                10 if name.eq_ignore_ascii_case(b"connection") => scan.connection.add(value),
                _ => {}
            }
        }
        scan
    }
}

/// The body length rules of RFC 9112 6.3 for a response.
fn framing(
    method: &Method,
    status: StatusCode,
    fields: &FramingFields<'_>,
) -> Result<Framing, HeadError> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if let Some(te) = fields.transfer_encoding {
        // Chunked only when it is the final coding; otherwise the body
        // runs to the end of the connection.
        let last = te.rsplit(|b| *b == b',').next().map(<[u8]>::trim_ascii);
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
    }
    Ok(match fields.content_length.clone()? {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// The header fields of a response to a client.
pub(crate) enum Fields<'a> {
    /// Built by sidekey, or cleaned of hop-by-hop headers already.
    Map(&'a HeaderMap),
    /// An upstream's, hop-by-hop fields still in.
    Raw(&'a RawFields),
}

/// Writes a response head to a client: status line, header fields
/// (without hop-by-hop ones and without the framing and connection
/// headers, which follow from `framing` and `connection`), and `Date`
/// when the response has none.
pub(crate) fn encode_response(
    buf: &mut Vec<u8>,
    status: StatusCode,
    fields: Fields<'_>,
    framing: Framing,
    connection: Option<&'static str>,
) {
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\n");
    // Bodyless responses keep the upstream's Content-Length (a HEAD
    // answer's describes the GET's body).
    let keep_length = framing == Framing::Empty;
    let has_date = match fields {
        Fields::Map(headers) => {
            for (name, value) in headers {
                let name = name.as_str().as_bytes();
                if !is_framing(name, keep_length) {
                    buf.extend_from_slice(name);
                    buf.extend_from_slice(b": ");
                    buf.extend_from_slice(value.as_bytes());
                    buf.extend_from_slice(b"\r\n");
                }
            }
            headers.contains_key(http::header::DATE)
        }
        Fields::Raw(head) => {
            let mut has_date = false;
            let end_to_end = end_to_end_names(head);
            head.write_lines(buf, |name, _| {
                has_date |= name.len() == 4 && name.eq_ignore_ascii_case(b"date");
                end_to_end(name) && !is_framing(name, keep_length)
            });
            has_date
        }
    };
    if !has_date {
        buf.extend_from_slice(b"date: ");
        date::append(buf);
        buf.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            buf.extend_from_slice(b"content-length: ");
            buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => buf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {}
    }
    if let Some(connection) = connection {
        buf.extend_from_slice(b"connection: ");
        buf.extend_from_slice(connection.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
}

/// Headers sidekey writes itself from the framing it chose.
fn is_framing(name: &[u8], keep_length: bool) -> bool {
    name.eq_ignore_ascii_case(b"transfer-encoding")
        || name.eq_ignore_ascii_case(b"connection")
        || (!keep_length && name.eq_ignore_ascii_case(b"content-length"))
}

/// The `Date` header value, formatted once per second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    pub(crate) fn append(buf: &mut Vec<u8>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{self, HeaderValue};

    fn parse(text: &str, method: Method) -> Result<Option<ResponseHead>, HeadError> {
        let mut buf = BytesMut::from(text.as_bytes());
        parse_response(&mut buf, &method, 1024)
    }

    fn framing_of(text: &str, method: Method) -> Framing {
        parse(text, method).unwrap().unwrap().framing
    }

    #[test]
    fn response_head_is_split_off_and_shares_its_values() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\nokHTTP"[..],
        );
        let head = parse_response(&mut buf, &Method::GET, 1024)
            .unwrap()
            .unwrap();
        assert_eq!(head.status, StatusCode::CREATED);
        assert_eq!(head.framing, Framing::Length(2));
        assert!(head.keep_alive);
        let xa: Vec<_> = head.fields.get_all("x-a").collect();
        assert_eq!(xa, [b"1", b"2"]);
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
        use Framing::{Chunked, Empty, Length, UntilClose as Close};
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
            Fields::Map(&headers),
            Framing::Chunked,
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
            Fields::Map(&headers),
            Framing::Empty,
            None,
        );
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("\r\ncontent-length: 99\r\n"), "{text}");
        assert!(text.contains("\r\ndate: "), "{text}");
        assert!(!text.contains("connection"), "{text}");
    }

    #[test]
    fn an_upstream_head_is_passed_on_without_its_hop_by_hop_fields() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nServer: up\r\nConnection: keep-alive, X-Hop\r\n\
               Keep-Alive: timeout=5\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\n\
               Proxy-Authenticate: Basic\r\nDate: Mon, 30 Nov 2026 12:00:00 GMT\r\n\
               Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n"[..],
        );
        let head = parse_response(&mut buf, &Method::GET, 4096)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        encode_response(
            &mut out,
            head.status,
            Fields::Raw(&head.fields),
            head.framing,
            None,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: up\r\nDate: Mon, 30 Nov 2026 12:00:00 GMT\r\n\
             Set-Cookie: a=1\r\nSet-Cookie: b=2\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}
