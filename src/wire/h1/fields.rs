//! What request and response heads share: header fields kept where they
//! came in ([`RawFields`]: the head's bytes and where each field is),
//! header maps built from them without copying, and the few header values
//! framing depends on.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// How a message body is delimited (RFC 9112 6): as a head declares it
/// (parsed by [`super::request`] and [`super::response`]) and as sidekey
/// writes it. [`super::framed::Framed`] is the reader's state built from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (and, written, no framing header).
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// Where a header field's name and value are in a head's bytes: start
/// and end of each.
pub(crate) type Span = [usize; 4];

/// Appends the spans of `headers`, parsed from the buffer at `base`.
pub(crate) fn record(spans: &mut Vec<Span>, base: usize, headers: &[httparse::Header<'_>]) {
    spans.extend(headers.iter().map(|h| {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        [name, name + h.name.len(), value, value + h.value.len()]
    }));
}

/// Header fields as they came on the wire: the head's bytes and where
/// each field's name and value are in them. Looked up by name without
/// building a map; cheap to clone (the bytes are shared).
#[derive(Clone, Debug, Default)]
pub struct RawFields {
    bytes: Bytes,
    spans: Vec<Span>,
    /// Whether a `Connection` field may name other fields (hop-by-hop
    /// for this message). True until a parser that read every
    /// `Connection` value says otherwise, so that writing a head does not
    /// scan them again.
    may_name_fields: bool,
    /// Whether a field's name may hold `_`: true until a parser that
    /// read every name says otherwise (see [`RawFields::underscored`]).
    may_have_underscores: bool,
}

impl RawFields {
    pub(crate) fn new(bytes: Bytes, spans: Vec<Span>) -> RawFields {
        RawFields {
            bytes,
            spans,
            may_name_fields: true,
            may_have_underscores: true,
        }
    }

    /// Whether `byte` is anywhere in the header lines, names or values:
    /// one SIMD search over them (`memchr`), much cheaper per request than
    /// a look at each of the short names (values hold `_` far less often
    /// than not).
    pub(crate) fn lines_contain(&self, byte: u8) -> bool {
        let (Some(first), Some(last)) = (self.spans.first(), self.spans.last()) else {
            return false;
        };
        memchr::memchr(byte, &self.bytes[first[0]..last[3]]).is_some()
    }

    /// Whether a name may hold `_` (false only when the parser found no
    /// `_` in the header lines).
    pub(crate) fn may_have_underscores(&self) -> bool {
        self.may_have_underscores
    }

    /// What the parser found: whether a field's name holds `_`.
    pub(crate) fn set_has_underscores(&mut self, underscores: bool) {
        self.may_have_underscores = underscores;
    }

    /// The names that hold `_` (many backends fold `_` into `-`, so
    /// `X_Api_Key` can read as `X-Api-Key` there). Empty without a look at
    /// the names when the parser found none.
    pub(crate) fn underscored(&self) -> impl Iterator<Item = &[u8]> {
        let spans = if self.may_have_underscores {
            &self.spans[..]
        } else {
            &[]
        };
        spans
            .iter()
            .map(|&[ns, ne, _, _]| &self.bytes[ns..ne])
            .filter(|name| name.contains(&b'_'))
    }

    /// What the parser found: whether a `Connection` field names fields.
    pub(crate) fn set_names_fields(&mut self, names: bool) {
        self.may_name_fields = names;
    }

    /// False when no `Connection` field names another field.
    pub(crate) fn may_name_fields(&self) -> bool {
        self.may_name_fields
    }

    /// Parses `Name: value` lines (each ending in CRLF, then an empty
    /// line), e.g. for tests and benchmarks.
    pub fn parse(text: &[u8]) -> Option<RawFields> {
        let bytes = Bytes::copy_from_slice(text);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut spans = Vec::new();
        match httparse::parse_headers(&bytes, &mut headers) {
            Ok(httparse::Status::Complete((_, parsed))) => {
                record(&mut spans, bytes.as_ptr() as usize, parsed);
                Some(RawFields::new(bytes, spans))
            }
            _ => None,
        }
    }

    /// The fields of an HTTP/2 request as if they had come on the wire:
    /// `host` (its `:authority`) first as a `Host` field when given (in
    /// place of the map's own), then the map's fields in order, its
    /// `cookie` fields joined into one with `; ` (RFC 9113 8.2.3: as an
    /// HTTP/1.1 upstream expects them).
    ///
    /// Refused, with the reason, in the same pass: more than one `Host`
    /// field, or one that disagrees with `host` (RFC 9113 8.3.1).
    pub(crate) fn from_h2(
        host: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<RawFields, &'static str> {
        let mut bytes = Vec::with_capacity(256);
        let mut spans = Vec::with_capacity(headers.len() + 1);
        let mut push = |bytes: &mut Vec<u8>, name: &[u8], value: &[u8]| {
            let ns = bytes.len();
            bytes.extend_from_slice(name);
            let ne = bytes.len();
            bytes.extend_from_slice(b": ");
            let vs = bytes.len();
            bytes.extend_from_slice(value);
            spans.push([ns, ne, vs, bytes.len()]);
            bytes.extend_from_slice(b"\r\n");
        };
        if let Some(host) = host {
            push(&mut bytes, b"host", host.as_bytes());
        }
        let mut cookie = false;
        let mut underscores = false;
        let mut hosts = 0;
        for (name, value) in headers {
            underscores |= name.as_str().contains('_');
            if name == http::header::HOST {
                hosts += 1;
                if hosts > 1 {
                    return Err("more than one Host header");
                }
                match host {
                    Some(host) if !value.as_bytes().eq_ignore_ascii_case(host.as_bytes()) => {
                        return Err("the Host header and :authority disagree");
                    }
                    Some(_) => continue,
                    None => {}
                }
            }
            if name == http::header::COOKIE {
                if cookie {
                    continue;
                }
                cookie = true;
                let mut joined = Vec::new();
                for (i, v) in headers.get_all(http::header::COOKIE).iter().enumerate() {
                    if i > 0 {
                        joined.extend_from_slice(b"; ");
                    }
                    joined.extend_from_slice(v.as_bytes());
                }
                push(&mut bytes, name.as_str().as_bytes(), &joined);
                continue;
            }
            push(&mut bytes, name.as_str().as_bytes(), value.as_bytes());
        }
        let mut fields = RawFields::new(Bytes::from(bytes), spans);
        fields.set_has_underscores(underscores);
        Ok(fields)
    }

    /// Each field's name and value, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.spans
            .iter()
            .map(|&[ns, ne, vs, ve]| (&self.bytes[ns..ne], &self.bytes[vs..ve]))
    }

    /// The values of the fields named `name` (any case).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + Clone + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of `name`, sharing the head's memory.
    pub(crate) fn get_shared(&self, name: &str) -> Option<Bytes> {
        self.spans
            .iter()
            .find(|&&[ns, ne, _, _]| self.bytes[ns..ne].eq_ignore_ascii_case(name.as_bytes()))
            .map(|&[_, _, vs, ve]| self.bytes.slice(vs..ve))
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Writes the fields `keep` says yes to as header lines. A run of kept
    /// fields that came one after the other, each line ending in CRLF, is
    /// copied in one piece, as it came (`name:value`, whitespace included).
    pub(crate) fn write_lines(
        &self,
        buf: &mut Vec<u8>,
        mut keep: impl FnMut(&[u8], &[u8]) -> bool,
    ) {
        let bytes = &self.bytes[..];
        // The pending run: from a name's start to a value's end.
        let mut run: Option<(usize, usize)> = None;
        for &[ns, ne, vs, ve] in &self.spans {
            if !keep(&bytes[ns..ne], &bytes[vs..ve]) {
                flush_run(buf, bytes, run.take());
                continue;
            }
            run = match run {
                Some((start, end)) if bytes.get(end..ns) == Some(b"\r\n") => Some((start, ve)),
                pending => {
                    flush_run(buf, bytes, pending);
                    Some((ns, ve))
                }
            };
        }
        flush_run(buf, bytes, run);
    }

    /// How many fields there are.
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// The fields as a header map with room for `extra` more entries.
    pub(crate) fn to_header_map(&self, extra: usize) -> Option<HeaderMap> {
        header_map(&self.bytes, &self.spans, extra, |_| true)
    }

    /// The fields whose name `keep` says yes to as a header map, values
    /// sharing the head's memory: what [`RawFields::to_header_map`] and
    /// removing the others would give, without the removals. `None` when a
    /// kept name or value is not valid in a header map.
    pub(crate) fn to_header_map_where(&self, keep: impl FnMut(&[u8]) -> bool) -> Option<HeaderMap> {
        header_map(&self.bytes, &self.spans, 0, keep)
    }
}

/// Writes the lines `bytes[start..end]` and the CRLF that ends the last.
fn flush_run(buf: &mut Vec<u8>, bytes: &[u8], run: Option<(usize, usize)>) {
    if let Some((start, end)) = run {
        buf.extend_from_slice(&bytes[start..end]);
        buf.extend_from_slice(b"\r\n");
    }
}

/// The header map of the fields of `head` at `spans` whose names `keep`
/// says yes to, with room for `extra` more entries; values share
/// `head`'s memory. `None` when a kept name or value is not valid in a
/// header map.
pub(crate) fn header_map(
    head: &Bytes,
    spans: &[Span],
    extra: usize,
    mut keep: impl FnMut(&[u8]) -> bool,
) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(spans.len() + extra);
    for &[ns, ne, vs, ve] in spans {
        let name = &head[ns..ne];
        if keep(name) {
            let name = HeaderName::from_bytes(name).ok()?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs..ve)).ok()?;
            headers.append(name, value);
        }
    }
    Some(headers)
}

/// The largest Content-Length accepted: 2^53, the largest integer that
/// every JSON number and JavaScript peer still represents exactly.
pub(crate) const MAX_CONTENT_LENGTH: u64 = 1 << 53;

/// A Content-Length value: digits only, no sign, no list, at most
/// [`MAX_CONTENT_LENGTH`].
pub(crate) fn parse_length(value: &[u8]) -> Option<u64> {
    // At most 19 digits: no u64 overflow. Summed by hand: this runs for
    // every response with a body.
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    (n <= MAX_CONTENT_LENGTH).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(fields: &RawFields, skip: &[&str]) -> String {
        let mut buf = Vec::new();
        fields.write_lines(&mut buf, |name, _| {
            !skip.iter().any(|s| name.eq_ignore_ascii_case(s.as_bytes()))
        });
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn h2_fields_put_the_authority_first_and_join_cookies() {
        let mut map = HeaderMap::new();
        map.append("host", HeaderValue::from_static("a.example"));
        map.append("cookie", HeaderValue::from_static("a=1"));
        map.append("x-one", HeaderValue::from_static("1"));
        map.append("cookie", HeaderValue::from_static("b=2"));
        let fields = RawFields::from_h2(Some("a.example"), &map).unwrap();
        let all: Vec<(&[u8], &[u8])> = fields.iter().collect();
        assert_eq!(
            all,
            [
                (&b"host"[..], &b"a.example"[..]),
                (b"cookie", b"a=1; b=2"),
                (b"x-one", b"1"),
            ]
        );
        let fields = RawFields::from_h2(None, &map).unwrap();
        assert_eq!(fields.get("host"), Some(&b"a.example"[..]));
        assert_eq!(fields.len(), 3);
        // Any case: the same host.
        assert!(RawFields::from_h2(Some("A.Example"), &map).is_ok());
    }

    #[test]
    fn h2_fields_refuse_a_host_that_disagrees_or_comes_twice() {
        let mut map = HeaderMap::new();
        map.append("host", HeaderValue::from_static("b.example"));
        assert_eq!(
            RawFields::from_h2(Some("a.example"), &map).unwrap_err(),
            "the Host header and :authority disagree"
        );
        map.append("host", HeaderValue::from_static("b.example"));
        for authority in [None, Some("b.example")] {
            assert_eq!(
                RawFields::from_h2(authority, &map).unwrap_err(),
                "more than one Host header"
            );
        }
    }

    #[test]
    fn a_length_is_digits_up_to_2_pow_53() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"9007199254740992"), Some(1 << 53));
        assert_eq!(parse_length(b"9007199254740993"), None);
        assert_eq!(parse_length(b"9223372036854775808"), None);
        assert_eq!(parse_length(b"99999999999999999999"), None);
        assert_eq!(parse_length(b"+1"), None);
        assert_eq!(parse_length(b""), None);
    }

    #[test]
    fn writes_kept_lines_as_they_came_with_crlf_endings() {
        let fields = RawFields::parse(b"A: 1\r\nB:2\r\nC: 3\nD:  4\r\n\r\n").unwrap();
        assert_eq!(
            written(&fields, &[]),
            "A: 1\r\nB:2\r\nC: 3\r\nD:  4\r\n",
            "a bare LF ending is written as CRLF"
        );
        assert_eq!(written(&fields, &["b"]), "A: 1\r\nC: 3\r\nD:  4\r\n");
        assert_eq!(written(&fields, &["a", "d"]), "B:2\r\nC: 3\r\n");
        assert_eq!(written(&fields, &["a", "b", "c", "d"]), "");
    }
}
