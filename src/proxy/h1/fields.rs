//! What request and response heads share: where httparse found each
//! header field, header maps built from those places without copying, and
//! the few header values framing depends on.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Where a header field's name and value are in a head's bytes: start
/// and end of each.
pub type Span = [usize; 4];

/// Appends the spans of `headers`, parsed from the buffer at `base`.
pub fn record(spans: &mut Vec<Span>, base: usize, headers: &[httparse::Header<'_>]) {
    spans.extend(headers.iter().map(|h| {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        [name, name + h.name.len(), value, value + h.value.len()]
    }));
}

/// The header map of `head` at `spans`, with room for `extra` more
/// entries; values share `head`'s memory. `None` when a name or value is
/// not valid in a header map.
pub fn header_map(head: &Bytes, spans: &[Span], extra: usize) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(spans.len() + extra);
    for &[ns, ne, vs, ve] in spans {
        let name = HeaderName::from_bytes(&head[ns..ne]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve)).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

/// A Content-Length value: digits only, no sign, no list.
pub fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Whether a comma-separated header lists `token` (case-insensitive).
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}
