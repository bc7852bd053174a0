//! The canonical request of Signature Version 4: URI, query and headers
//! in the one spelling both sides compute, and the string to sign.
//!
//! Pure functions of their inputs, so that AWS's published test vectors
//! can check each step on its own (`tests.rs`).

use sha2::{Digest, Sha256};

/// `AWS4-HMAC-SHA256`, the only algorithm sidekey signs with.
pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// `X-Amz-Content-Sha256` for a body that is not hashed (S3).
pub(crate) const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Appends `byte` percent-encoded unless it is unreserved (RFC 3986:
/// `A-Z a-z 0-9 - _ . ~`), or `/` when `keep_slash`; hex digits upper case.
fn push_encoded(out: &mut Vec<u8>, byte: u8, keep_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if byte.is_ascii_alphanumeric()
        || matches!(byte, b'-' | b'_' | b'.' | b'~')
        || (keep_slash && byte == b'/')
    {
        out.push(byte);
    } else {
        out.extend_from_slice(&[
            b'%',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 15)],
        ]);
    }
}

/// Decodes `%XX` (other bytes, and `%` not followed by two hex digits,
/// as they are). `+` stays `+`: it is not a space in a path, and AWS's
/// signers never send it for one in a query.
fn decoded(raw: &[u8]) -> impl Iterator<Item = u8> + '_ {
    percent_encoding::percent_decode(raw)
}

/// Appends the canonical URI of the request path `path` as it is sent.
///
/// S3 (`s3: true`): the path is decoded and encoded once, as it is, so
/// `/a$b` and `/a%24b` both sign as `/a%24b`, and `//x/./y` keeps its
/// empty and dot segments (they are part of object keys).
///
/// Other services: dot segments are resolved and empty segments removed,
/// then the path as sent is encoded once more (a `%` becomes `%25`: the
/// "encode twice" of the AWS documentation).
pub(crate) fn push_uri(out: &mut Vec<u8>, path: &str, s3: bool) {
    if path.is_empty() {
        out.push(b'/');
        return;
    }
    if s3 {
        for b in decoded(path.as_bytes()) {
            push_encoded(out, b, true);
        }
        return;
    }
    // Normalised: a stack of the segments kept.
    let mut kept: smallvec::SmallVec<[&str; 16]> = smallvec::SmallVec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    // A path ending in "/", "/." or "/.." names a directory.
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    if kept.is_empty() {
        out.push(b'/');
        return;
    }
    for segment in &kept {
        out.push(b'/');
        for &b in segment.as_bytes() {
            push_encoded(out, b, false);
        }
    }
    if trailing {
        out.push(b'/');
    }
}

/// Appends the canonical query of the raw query `query` (without `?`):
/// each parameter decoded and encoded again, sorted by name then value,
/// `name=` for a parameter without a value.
pub(crate) fn push_query(out: &mut Vec<u8>, query: &str) {
    if query.is_empty() {
        return;
    }
    let mut pairs: smallvec::SmallVec<[(Vec<u8>, Vec<u8>); 8]> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            let mut n = Vec::with_capacity(name.len());
            decoded(name.as_bytes()).for_each(|b| push_encoded(&mut n, b, false));
            let mut v = Vec::with_capacity(value.len());
            decoded(value.as_bytes()).for_each(|b| push_encoded(&mut v, b, false));
            (n, v)
        })
        .collect();
    pairs.sort_unstable();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(name);
        out.push(b'=');
        out.extend_from_slice(value);
    }
}

/// The headers a signature covers: `name:value\n` lines and the
/// `SignedHeaders` list.
#[derive(Debug, Default)]
pub(crate) struct CanonicalHeaders {
    pub(crate) lines: Vec<u8>,
    pub(crate) signed: String,
}

/// The canonical form of `headers` (every one is signed): names in lower
/// case and sorted, values trimmed with inner runs of spaces made one,
/// the values of a repeated name joined by `,` in the order sent.
pub(crate) fn headers<'a>(headers: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> CanonicalHeaders {
    let mut list: smallvec::SmallVec<[(String, &[u8]); 8]> = headers
        .map(|(name, value)| (String::from_utf8_lossy(name).to_ascii_lowercase(), value))
        .collect();
    // Stable: the values of one name keep their order.
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = CanonicalHeaders::default();
    let mut previous: Option<&str> = None;
    for (name, value) in &list {
        if previous == Some(name.as_str()) {
            out.lines.pop(); // the '\n'
            out.lines.push(b',');
        } else {
            if previous.is_some() {
                out.signed.push(';');
            }
            out.signed.push_str(name);
            out.lines.extend_from_slice(name.as_bytes());
            out.lines.push(b':');
        }
        push_trimmed(&mut out.lines, value);
        out.lines.push(b'\n');
        previous = Some(name.as_str());
    }
    out
}

/// `value` without leading and trailing whitespace, each inner run of
/// spaces and tabs made one space.
fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    let mut in_space = false;
    for &b in &value[start..end] {
        if is_space(&b) {
            if !in_space {
                out.push(b' ');
            }
            in_space = true;
        } else {
            out.push(b);
            in_space = false;
        }
    }
}

/// The canonical request: method, URI, query, header lines, a blank
/// line, the signed header list and the payload hash, one per line.
pub(crate) fn request(
    method: &str,
    path: &str,
    query: &str,
    s3: bool,
    headers: &CanonicalHeaders,
    payload_hash: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        method.len() + path.len() + query.len() + headers.lines.len() + headers.signed.len() + 80,
    );
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    push_uri(&mut out, path, s3);
    out.push(b'\n');
    push_query(&mut out, query);
    out.push(b'\n');
    out.extend_from_slice(&headers.lines);
    out.push(b'\n');
    out.extend_from_slice(headers.signed.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

/// `date/region/service/aws4_request`.
pub(crate) fn scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/aws4_request")
}

/// The string to sign: algorithm, time, scope and the canonical
/// request's SHA-256, one per line.
/// Lowercase hex of a SHA-256 digest or HMAC, on the stack (the `hex`
/// crate's `encode` collects chars into a `String`: ~20× the cost).
pub(crate) fn hex32(bytes: &[u8]) -> [u8; 64] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 15)];
    }
    out
}

pub(crate) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &[u8]) -> String {
    let digest = hex32(&Sha256::digest(canonical_request));
    let hash = std::str::from_utf8(&digest).unwrap_or_default();
    let mut out = String::with_capacity(ALGORITHM.len() + amz_date.len() + scope.len() + 67);
    out.push_str(ALGORITHM);
    out.push('\n');
    out.push_str(amz_date);
    out.push('\n');
    out.push_str(scope);
    out.push('\n');
    out.push_str(hash);
    out
}
