//! What an upstream's response must not carry back to the client: the
//! credential a route put in the URL (`kind = "query"` tokens, the
//! `signed_url` parameters), or a `kind = "header"` token copied into one.
//!
//! An upstream that redirects may echo the URL it was called with, in
//! `Location`, `Content-Location`, `Link` or `Refresh`: at the top level
//! of a URL's query, where the injected parameters are removed by name,
//! or nested in another URL's parameter (`return_to=https%3A%2F%2F...`),
//! percent-encoded once, twice or form-encoded, where only the value can
//! be recognised. So the secret values themselves (the token, the
//! signature) are removed wherever they appear in those fields, in any of
//! these encodings.

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use percent_encoding::percent_decode_str;
use smallvec::SmallVec;

use crate::target::{scrub_link_header, scrub_url};

/// The response fields that may hold URLs pointing back at the upstream.
pub(crate) const FIELDS: [HeaderName; 4] = [
    header::LOCATION,
    header::CONTENT_LOCATION,
    header::LINK,
    header::REFRESH,
];

/// Whether a field named `name` (any case) is one of the [`FIELDS`]: one
/// pass over a response's fields, not one per name.
pub(crate) fn is_url_field(name: &[u8]) -> bool {
    let is = |field: &HeaderName| name.eq_ignore_ascii_case(field.as_str().as_bytes());
    match name.len() {
        4 => is(&header::LINK),
        7 => is(&header::REFRESH),
        8 => is(&header::LOCATION),
        16 => is(&header::CONTENT_LOCATION),
        _ => false,
    }
}

/// Removes, in the [`FIELDS`] of `headers`, the query parameters named in
/// `injected` and every value of a `secret` parameter found in `sent`
/// (the origin form sent upstream), and `header_token`, in any encoding.
/// A value that is not text cannot be checked, and is dropped.
pub(crate) fn scrub(
    headers: &mut HeaderMap,
    injected: &[String],
    secret: &[String],
    sent: &str,
    header_token: Option<&str>,
) {
    let mut secrets = secret_values(sent, secret);
    secrets.extend(header_token.map(str::to_owned));
    for name in FIELDS {
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        if values.is_empty() {
            continue;
        }
        headers.remove(&name);
        for value in values {
            let Ok(text) = value.to_str() else {
                continue;
            };
            let mut scrubbed = match name {
                header::LINK => scrub_link_header(text, injected),
                header::REFRESH => scrub_refresh(text, injected),
                _ => scrub_url(text, injected),
            };
            for secret in &secrets {
                if let Cow::Owned(s) = strip_secret(&scrubbed, secret) {
                    scrubbed = s;
                }
            }
            if let Ok(v) = HeaderValue::try_from(scrubbed) {
                headers.append(&name, v);
            }
        }
    }
}

/// The decoded values of the parameters named in `names` in the query of
/// `origin_form`, empty ones left out.
fn secret_values(origin_form: &str, names: &[String]) -> Vec<String> {
    let Some((_, query)) = origin_form.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| names.iter().any(|n| n == &decode(name)))
        .map(|(_, value)| decode(value))
        .filter(|value| !value.is_empty())
        .collect()
}

/// A query component decoded (`+` is a space).
fn decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// A `Refresh` value (`5; url=...`) with [`scrub_url`] applied to its URL.
fn scrub_refresh(value: &str, injected: &[String]) -> String {
    let lower = value.to_ascii_lowercase();
    match lower.find("url=") {
        Some(at) => {
            let (head, url) = value.split_at(at + 4);
            format!("{head}{}", scrub_url(url, injected))
        }
        None => value.to_string(),
    }
}

/// `text` with every occurrence of `secret` removed, whether written as
/// it is, percent-encoded (once or more: `%41`, `%2541`), form-encoded
/// (`+` for a space) or any mix of these, byte by byte.
pub(crate) fn strip_secret<'a>(text: &'a str, secret: &str) -> Cow<'a, str> {
    let (hay, needle) = (text.as_bytes(), secret.as_bytes());
    if needle.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out: Option<String> = None;
    let (mut i, mut kept) = (0, 0);
    while i < hay.len() {
        match matches_at(hay, i, needle) {
            Some(end) => {
                let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                out.push_str(&text[kept..i]);
                kept = end;
                i = end;
            }
            None => i += 1,
        }
    }
    match out {
        Some(mut out) => {
            out.push_str(&text[kept..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(text),
    }
}

/// Where a match of `needle` starting at `hay[at]` ends, trying each
/// byte's encoded forms before the byte itself (and backtracking).
fn matches_at(hay: &[u8], at: usize, needle: &[u8]) -> Option<usize> {
    let Some((&b, rest)) = needle.split_first() else {
        return Some(at);
    };
    let forms = encoded_ends(hay, at, b)
        .into_iter()
        .chain((hay.get(at) == Some(&b)).then_some(at + 1));
    for end in forms {
        if let Some(done) = matches_at(hay, end, rest) {
            return Some(done);
        }
    }
    None
}

/// Where each encoded form of byte `b` starting at `hay[at]` ends: `%HH`,
/// `%25HH`, `%2525HH`... (a `%` encoded again), and for a space `+`,
/// `%2B`, `%252B`...
fn encoded_ends(hay: &[u8], at: usize, b: u8) -> SmallVec<[usize; 2]> {
    let encodes = |hex: &[u8]| is_hex_of(hex, b) || (b == b' ' && is_hex_of(hex, b'+'));
    let mut ends = SmallVec::new();
    if b == b' ' && hay.get(at) == Some(&b'+') {
        ends.push(at + 1);
    }
    if hay.get(at) == Some(&b'%') {
        let mut i = at + 1;
        while let Some(hex) = hay.get(i..i + 2) {
            if encodes(hex) {
                ends.push(i + 2);
            }
            if hex != b"25" {
                break;
            }
            i += 2;
        }
    }
    ends
}

/// Whether two hex digits (either case) encode `b`.
fn is_hex_of(hex: &[u8], b: u8) -> bool {
    let digit = |d: u8| (d as char).to_digit(16);
    match (digit(hex[0]), digit(hex[1])) {
        (Some(h), Some(l)) => h * 16 + l == u32::from(b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "tok/en+1 x";

    #[test]
    fn url_fields_are_recognised_in_any_case_and_nothing_else() {
        for name in FIELDS {
            assert!(is_url_field(name.as_str().as_bytes()));
            assert!(is_url_field(name.as_str().to_ascii_uppercase().as_bytes()));
        }
        for other in ["lint", "location2", "content-type", "etag", "", "refreshx"] {
            assert!(!is_url_field(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn a_secret_is_stripped_in_every_encoding() {
        for (text, want) in [
            ("https://a/?t=tok/en+1 x&y=1", "https://a/?t=&y=1"),
            // Once, as encodeURIComponent and Python's quote do.
            (
                "/login?r=%2Fp%3Ft%3Dtok%2Fen%2B1%20x",
                "/login?r=%2Fp%3Ft%3D",
            ),
            // Lower-case hex, a form-encoded space.
            ("/login?r=tok%2fen%2b1+x&z", "/login?r=&z"),
            // Twice.
            (
                "/login?r=%252Fp%253Ft%253Dtok%252Fen%252B1%2520x",
                "/login?r=%252Fp%253Ft%253D",
            ),
            // Form-encoded, then encoded again.
            ("/login?r=tok%252Fen%252B1%2Bx", "/login?r="),
            // Twice, and more than once.
            ("a tok/en+1 x b tok%2Fen%2B1%20x", "a  b "),
        ] {
            assert_eq!(strip_secret(text, TOKEN), want, "{text}");
        }
        let clean = "https://a/?t=tok/en+2";
        assert!(matches!(strip_secret(clean, TOKEN), Cow::Borrowed(_)));
        assert_eq!(strip_secret("x", ""), "x");
    }

    #[test]
    fn a_literal_percent_in_a_secret_is_matched_raw_or_encoded() {
        assert_eq!(strip_secret("a=ab%25cd", "ab%25cd"), "a=");
        assert_eq!(strip_secret("a=ab%2525cd", "ab%25cd"), "a=");
        assert_eq!(strip_secret("a=ab%cd", "ab%cd"), "a=");
    }

    #[test]
    fn secrets_are_read_from_the_query_sent() {
        let sent = "/p?x=1&access_token=tok%2Fen%2B1+x&sig=ab&access_token=";
        assert_eq!(
            secret_values(sent, &["access_token".to_string()]),
            ["tok/en+1 x"]
        );
        assert!(secret_values("/p", &["sig".to_string()]).is_empty());
    }

    #[test]
    fn refresh_urls_lose_injected_parameters_and_secrets() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::REFRESH,
            HeaderValue::from_static("0; URL=https://a/next?access_token=s3cr3t&k=1"),
        );
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static("/login?return_to=%2Fnext%3Faccess_token%3Ds3cr3t"),
        );
        headers.insert(header::ETAG, HeaderValue::from_static("s3cr3t"));
        let names = ["access_token".to_string()];
        scrub(
            &mut headers,
            &names,
            &names,
            "/next?access_token=s3cr3t",
            None,
        );
        assert_eq!(headers[header::REFRESH], "0; URL=https://a/next?k=1");
        assert_eq!(
            headers[header::LOCATION],
            "/login?return_to=%2Fnext%3Faccess_token%3D"
        );
        assert_eq!(
            headers[header::ETAG],
            "s3cr3t",
            "other fields are left alone"
        );
    }
}
