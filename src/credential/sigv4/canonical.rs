//! The canonical request of Signature Version 4: URI, query and headers
//! in the one spelling both sides compute, and the string to sign.
//!
//! Pure functions of their inputs, so that AWS's published test vectors
//! can check each step on its own (`tests.rs`).

/// `AWS4-HMAC-SHA256`, the only algorithm sidekey signs with.
pub(crate) const ALGORITHM: &str = ALGORITHM_LINE.trim_ascii_end();
/// [`ALGORITHM`] as the string to sign's first line.
const ALGORITHM_LINE: &str = "AWS4-HMAC-SHA256\n";

/// `X-Amz-Content-Sha256` for a body that is not hashed (S3).
pub(crate) const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Which bytes are unreserved (RFC 3986: `A-Z a-z 0-9 - _ . ~`): one
/// table look per byte of a path or query.
const UNRESERVED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        // b < 256: the cast cannot truncate.
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~');
        b += 1;
    }
    table
};

/// Whether `byte` is written as it is: unreserved, or `/` when
/// `keep_slash`.
fn is_kept(byte: u8, keep_slash: bool) -> bool {
    UNRESERVED[usize::from(byte)] || (keep_slash && byte == b'/')
}

/// Appends `byte`, percent-encoded unless [`is_kept`]; hex digits upper
/// case.
fn push_encoded(out: &mut Vec<u8>, byte: u8, keep_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if is_kept(byte, keep_slash) {
        out.push(byte);
    } else {
        out.extend_from_slice(&[
            b'%',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 15)],
        ]);
    }
}

/// Whether `raw` is its own encoding: only unreserved bytes (and `/`
/// when `keep_slash`), so nothing to decode or encode.
fn is_plain(raw: &[u8], keep_slash: bool) -> bool {
    raw.iter().all(|&b| is_kept(b, keep_slash))
}

/// Appends `raw` encoded as it is (a `%` becomes `%25`).
fn push_component(out: &mut Vec<u8>, raw: &[u8]) {
    if is_plain(raw, false) {
        out.extend_from_slice(raw);
    } else {
        raw.iter().for_each(|&b| push_encoded(out, b, false));
    }
}

/// Appends `raw` decoded, then encoded once.
fn push_reencoded(out: &mut Vec<u8>, raw: &[u8], keep_slash: bool) {
    if is_plain(raw, keep_slash) {
        out.extend_from_slice(raw);
    } else {
        decoded(raw).for_each(|b| push_encoded(out, b, keep_slash));
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
        push_reencoded(out, path.as_bytes(), true);
        return;
    }
    // Normalised: a stack of the segments kept.
    let mut kept: smallvec::SmallVec<[&[u8]; 16]> = smallvec::SmallVec::new();
    for segment in path.as_bytes().split(|b| *b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
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
        push_component(out, segment);
    }
    if trailing {
        out.push(b'/');
    }
}

/// Appends the canonical query of the raw query `query` (without `?`):
/// each parameter decoded and encoded again, sorted by name then value,
/// `name=` for a parameter without a value. The parameters are written
/// to `out` as they come, and rewritten in order only when they were not
/// sorted already.
pub(crate) fn push_query(out: &mut Vec<u8>, query: &str) {
    if query.is_empty() {
        return;
    }
    let base = out.len();
    // (start, end of the name, end of the value) in `out`.
    let mut pairs: smallvec::SmallVec<[(usize, usize, usize); 8]> = smallvec::SmallVec::new();
    for p in query
        .as_bytes()
        .split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = match p.iter().position(|b| *b == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &[][..]),
        };
        if !pairs.is_empty() {
            out.push(b'&');
        }
        let start = out.len();
        if name.len() < p.len() && is_plain(name, false) && is_plain(value, false) {
            // `name=value` is its own encoding: copied in one piece.
            out.extend_from_slice(p);
            pairs.push((start, start + name.len(), out.len()));
            continue;
        }
        push_reencoded(out, name, false);
        let mid = out.len();
        out.push(b'=');
        push_reencoded(out, value, false);
        pairs.push((start, mid, out.len()));
    }
    let sorted = pairs.windows(2).all(|w| {
        let (a, b) = (w[0], w[1]);
        (&out[a.0..a.1], &out[a.1 + 1..a.2]) <= (&out[b.0..b.1], &out[b.1 + 1..b.2])
    });
    if sorted {
        return;
    }
    let written = out.split_off(base);
    let at = |(start, mid, end): (usize, usize, usize)| {
        (
            &written[start - base..mid - base],
            &written[mid - base + 1..end - base],
        )
    };
    pairs.sort_unstable_by(|a, b| at(*a).cmp(&at(*b)));
    for (i, pair) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        let (name, value) = at(*pair);
        out.extend_from_slice(name);
        out.push(b'=');
        out.extend_from_slice(value);
    }
}

/// The canonical request, and where its `SignedHeaders` list is in it
/// (the `Authorization` header repeats that list). For tests: the
/// signer writes it to a buffer it reuses ([`write_request`]).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct CanonicalRequest {
    pub(crate) bytes: Vec<u8>,
    signed: std::ops::Range<usize>,
}

#[cfg(test)]
impl CanonicalRequest {
    /// A canonical request written by [`write_request`].
    pub(crate) fn new(bytes: Vec<u8>, signed: std::ops::Range<usize>) -> CanonicalRequest {
        CanonicalRequest { bytes, signed }
    }

    /// The `SignedHeaders` list: names in lower case, `;`-separated.
    pub(crate) fn signed_headers(&self) -> &[u8] {
        &self.bytes[self.signed.clone()]
    }
}

/// Compares two header names as their lower-case spellings.
fn cmp_lower(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.to_ascii_lowercase(), y.to_ascii_lowercase());
        if x != y {
            return x.cmp(&y);
        }
    }
    a.len().cmp(&b.len())
}

/// Appends `name` in lower case (copied, then lowered in place: cheaper
/// than a push per byte).
fn push_lower(out: &mut Vec<u8>, name: &[u8]) {
    let at = out.len();
    out.extend_from_slice(name);
    out[at..].make_ascii_lowercase();
}

/// A signed field: name, value, whether the name is lower case.
type Field<'a> = (&'a [u8], &'a [u8], bool);

/// Appends the canonical header lines of `headers` (every one is signed)
/// and returns the `SignedHeaders` list's place, written after the blank
/// line that ends them: names in lower case and sorted, values trimmed
/// with inner runs of spaces made one, the values of a repeated name
/// joined by `,` in the order sent. Nothing is allocated but `out`.
fn push_headers<'a>(
    out: &mut Vec<u8>,
    headers: impl Iterator<Item = (&'a [u8], &'a [u8], bool)>,
) -> std::ops::Range<usize> {
    // Each name with whether it is lower case already (sidekey's own
    // names are, and most clients'): one look that needs no early exit
    // unless known, then a plain copy for those.
    let mut list: smallvec::SmallVec<[Field<'_>; 12]> = headers
        .map(|(name, value, known)| {
            let lower = known
                || !name
                    .iter()
                    .fold(false, |upper, b| upper | b.is_ascii_uppercase());
            (name, value, lower)
        })
        .collect();
    // Stable: the values of one name keep their order. An insertion
    // sort: a request signs a handful of headers, and the standard
    // library's stable sort costs more to set up than this costs in all.
    for i in 1..list.len() {
        let mut j = i;
        while j > 0 && cmp_lower(list[j - 1].0, list[j].0).is_gt() {
            list.swap(j - 1, j);
            j -= 1;
        }
    }
    let push_name = |out: &mut Vec<u8>, name: &[u8], lower: bool| {
        if lower {
            out.extend_from_slice(name);
        } else {
            push_lower(out, name);
        }
    };
    let mut previous: Option<&[u8]> = None;
    for &(name, value, lower) in &list {
        if previous.is_some_and(|p| p.eq_ignore_ascii_case(name)) {
            out.pop(); // the '\n'
            out.push(b',');
        } else {
            push_name(out, name, lower);
            out.push(b':');
        }
        push_trimmed(out, value);
        out.push(b'\n');
        previous = Some(name);
    }
    out.push(b'\n');
    let start = out.len();
    let mut previous: Option<&[u8]> = None;
    for &(name, _, lower) in &list {
        if previous.is_some_and(|p| p.eq_ignore_ascii_case(name)) {
            continue;
        }
        if previous.is_some() {
            out.push(b';');
        }
        push_name(out, name, lower);
        previous = Some(name);
    }
    start..out.len()
}

/// `value` without leading and trailing whitespace, each inner run of
/// spaces and tabs made one space.
fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    // The usual value has no space or tab at all (a date, a hash, a
    // host): one look that needs no early exit, then one copy.
    if value.iter().fold(true, |plain, &b| plain & (b > b' ')) {
        out.extend_from_slice(value);
        return;
    }
    // Otherwise it is often still its trimmed form: no tab, no space at
    // either end or after another.
    let mut after_space = true;
    let as_is = value.iter().all(|&b| {
        let ok = b != b'\t' && !(b == b' ' && after_space);
        after_space = b == b' ';
        ok
    }) && !after_space;
    if as_is || value.is_empty() {
        out.extend_from_slice(value);
        return;
    }
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

/// The canonical request: method, URI, query, the lines of `headers`
/// (every one is signed), a blank line, the signed header list and the
/// payload hash, one per line.
#[cfg(test)]
pub(crate) fn request<'a>(
    method: &str,
    path: &str,
    query: &str,
    s3: bool,
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    payload_hash: &str,
) -> CanonicalRequest {
    let mut bytes = Vec::new();
    let signed = write_request(
        &mut bytes,
        method,
        path,
        query,
        s3,
        headers.map(|(name, value)| (name, value, false)),
        payload_hash.as_bytes(),
    );
    CanonicalRequest { bytes, signed }
}

/// [`request`], written to `out` (cleared first; the signer reuses one
/// buffer per thread): returns where the `SignedHeaders` list is in it.
/// Each header comes with whether its name is known to be lower case.
pub(crate) fn write_request<'a>(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    query: &str,
    s3: bool,
    headers: impl Iterator<Item = (&'a [u8], &'a [u8], bool)>,
    payload_hash: &[u8],
) -> std::ops::Range<usize> {
    out.clear();
    out.reserve(method.len() + path.len() + query.len() + 640);
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    push_uri(out, path, s3);
    out.push(b'\n');
    push_query(out, query);
    out.push(b'\n');
    let signed = push_headers(out, headers);
    out.push(b'\n');
    out.extend_from_slice(payload_hash);
    signed
}

/// `date/region/service/aws4_request`: the credential scope.
pub(crate) fn scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/aws4_request")
}

/// The SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The string to sign, as the parts it is made of: algorithm, time,
/// scope and the canonical request's SHA-256 in hex, one per line
/// (`scope_line` ends with its newline). The signer joins them after
/// the canonical request, in its buffer.
pub(crate) fn string_to_sign_parts<'a>(
    amz_date: &'a [u8; 16],
    scope_line: &'a [u8],
    request_hash: &'a [u8; 64],
) -> [&'a [u8]; 5] {
    [
        ALGORITHM_LINE.as_bytes(),
        amz_date,
        b"\n",
        scope_line,
        request_hash,
    ]
}

/// The string to sign of `canonical_request`, joined (for tests).
#[cfg(test)]
pub(crate) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &[u8]) -> String {
    let hash = crate::credential::hex::hex32(&sha256(canonical_request));
    let amz_date: [u8; 16] = amz_date.as_bytes().try_into().unwrap();
    let scope_line = format!("{scope}\n");
    string_to_sign_parts(&amz_date, scope_line.as_bytes(), &hash)
        .iter()
        .map(|part| String::from_utf8_lossy(part))
        .collect()
}
