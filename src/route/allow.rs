//! The `[[route.allow]]` check: whether a route forwards a request.
//!
//! Matched on the request's path as sent (the path the upstream gets,
//! under the route's base path), segment by segment, each segment
//! percent-decoded as the upstream would decode it. A path with a `.` or
//! `..` segment, plain or percent-encoded (`%2e%2e`, `..%2f`), matches no
//! rule: most upstreams resolve those, so `/v1/orders/../admin` is not
//! under `/v1/orders` whatever its spelling (the same handling as
//! `path_prefix`). `*` does not match a segment holding an encoded `/` or
//! a `\`, which some upstreams split on.
//!
//! Nothing here allocates: rules are compiled at load
//! ([`crate::config::AllowRule`]) and the path is walked in place.

use http::Method;
use percent_encoding::percent_decode;

use crate::config::{AllowRule, PathPattern, Segment};

/// Paths with more segments than this are matched by walking the path
/// once per pattern instead of splitting it once (still no allocation).
const MAX_SEGMENTS: usize = 32;

/// Whether `rules` let `method` and `path` through (no rules: yes).
pub(crate) fn allows(rules: &[AllowRule], method: &Method, path: &str) -> bool {
    if rules.is_empty() {
        return true;
    }
    if has_dot_segment(path) {
        return false;
    }
    // Split once for all the rules, on the stack.
    let mut buf = [""; MAX_SEGMENTS];
    let split = split_segments(path, &mut buf);
    rules.iter().any(|rule| {
        rule.methods.as_ref().is_none_or(|m| m.contains(method))
            && rule.paths.as_ref().is_none_or(|paths| {
                paths.iter().any(|p| match split {
                    Some(segments) => matches_segments(p, segments),
                    None => matches(p, path),
                })
            })
    })
}

/// `path`'s segments (after the leading `/`) in `buf`, or `None` when it
/// has no leading `/` or more than [`MAX_SEGMENTS`] segments.
fn split_segments<'p, 'b>(
    path: &'p str,
    buf: &'b mut [&'p str; MAX_SEGMENTS],
) -> Option<&'b [&'p str]> {
    let rest = path.strip_prefix('/')?;
    let mut n = 0;
    for segment in rest.split('/') {
        *buf.get_mut(n)? = segment;
        n += 1;
    }
    buf.get(..n)
}

/// Whether the split path `segments` matches `pattern`.
fn matches_segments(pattern: &PathPattern, segments: &[&str]) -> bool {
    // The segment count first: most patterns of a list differ there.
    let count_fits = match pattern.segments.last() {
        Some(Segment::Rest) => segments.len() + 1 >= pattern.segments.len(),
        _ => segments.len() == pattern.segments.len(),
    };
    count_fits && walk(pattern, segments.iter().copied())
}

/// Whether `path` matches `pattern` (paths too long for
/// [`split_segments`]).
fn matches(pattern: &PathPattern, path: &str) -> bool {
    path.strip_prefix('/')
        .is_some_and(|rest| walk(pattern, rest.split('/')))
}

/// Whether the path's `segments` (after its leading `/`) match
/// `pattern`, segment by segment.
fn walk<'p>(pattern: &PathPattern, mut segments: impl Iterator<Item = &'p str>) -> bool {
    for expected in &pattern.segments {
        match expected {
            Segment::Rest => return true,
            Segment::One => match segments.next() {
                Some(s) if !s.is_empty() && !has_separator(s) => {}
                _ => return false,
            },
            Segment::Literal(literal) => match segments.next() {
                Some(s) if segment_is(s, literal) => {}
                _ => return false,
            },
        }
    }
    segments.next().is_none()
}

/// Whether the request segment `s` decodes to `literal`: compared as it
/// is when it has the same length (the usual, unencoded case), decoded
/// only when it is longer and holds a `%`.
fn segment_is(s: &str, literal: &[u8]) -> bool {
    if s.len() == literal.len() {
        // Byte by byte: segments are short, and this is cheaper than a
        // call to memcmp for each rule.
        return s.bytes().zip(literal).all(|(a, b)| a == *b);
    }
    // Decoding only shortens: a valid escape is 3 bytes for 1.
    s.len() > literal.len()
        && s.contains('%')
        && percent_decode(s.as_bytes()).eq(literal.iter().copied())
}

/// A segment that some upstream would split: `\`, `%2F`, `%5C`.
fn has_separator(segment: &str) -> bool {
    percent_decode(segment.as_bytes()).any(|b| b == b'/' || b == b'\\')
}

/// Whether `path` holds a `.` or `..` segment once percent-decoded, with
/// `/` and `\` both ending a segment.
fn has_dot_segment(path: &str) -> bool {
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return false;
    }
    let mut len = 0usize;
    let mut dots = true;
    for b in percent_decode(path.as_bytes()).chain(std::iter::once(b'/')) {
        if b == b'/' || b == b'\\' {
            if dots && (len == 1 || len == 2) {
                return true;
            }
            len = 0;
            dots = true;
        } else {
            len += 1;
            dots &= b == b'.';
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partner() -> Vec<AllowRule> {
        vec![
            AllowRule::new(&["GET"], &["/v1/orders/*", "/v1/catalog/**"]).unwrap(),
            AllowRule::new(&["POST"], &["/v1/orders"]).unwrap(),
        ]
    }

    #[test]
    fn a_request_must_match_one_rule() {
        let rules = partner();
        let get = Method::GET;
        let post = Method::POST;
        for (method, path, want) in [
            (&get, "/v1/orders/42", true),
            (&get, "/v1/orders/%34%32", true),
            (&get, "/v1/%6Frders/42", true),
            (&get, "/v1/orders", false),
            (&get, "/v1/orders/", false),
            (&get, "/v1/orders/42/items", false),
            (&get, "/v1/catalog", true),
            (&get, "/v1/catalog/", true),
            (&get, "/v1/catalog/a/b/c", true),
            (&get, "/v1/catalogue", false),
            (&post, "/v1/orders", true),
            (&post, "/v1/orders/42", false),
            (&Method::DELETE, "/v1/orders/42", false),
            (&Method::PUT, "/v1/catalog/x", false),
            (&get, "/V1/orders/42", false),
            (&get, "/", false),
        ] {
            assert_eq!(allows(&rules, method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn dot_segments_and_encoded_separators_are_refused() {
        let rules = partner();
        for path in [
            "/v1/orders/..",
            "/v1/orders/%2e%2e",
            "/v1/orders/%2E.",
            "/v1/catalog/../../admin",
            "/v1/catalog/..%2f..%2fadmin",
            "/v1/catalog/.",
            "/v1/orders/.%2e",
            "/v1/catalog\\..\\admin",
            "/v1/orders/a%2fb",
            "/v1/orders/a%5Cb",
            "/v1/orders/a\\b",
        ] {
            assert!(!allows(&rules, &Method::GET, path), "{path}");
        }
        // Dots inside a segment are just characters.
        assert!(allows(&rules, &Method::GET, "/v1/orders/a..b"));
        assert!(allows(&rules, &Method::GET, "/v1/catalog/.well/x.json"));
    }

    #[test]
    fn paths_with_many_segments_match_like_short_ones() {
        let rules = partner();
        let deep = format!("/v1/catalog{}", "/x".repeat(MAX_SEGMENTS + 5));
        assert!(allows(&rules, &Method::GET, &deep));
        let deep = format!("/v1/orders{}", "/x".repeat(MAX_SEGMENTS + 5));
        assert!(!allows(&rules, &Method::GET, &deep));
        let exact = format!("/v1/orders/{}", "y".repeat(MAX_SEGMENTS));
        assert!(allows(&rules, &Method::GET, &exact));
    }

    #[test]
    fn absent_keys_match_anything_and_no_rules_allow_all() {
        assert!(allows(&[], &Method::DELETE, "/anything/../x"));
        let any_path = vec![AllowRule::new(&["GET"], &[]).unwrap()];
        assert!(allows(&any_path, &Method::GET, "/x/y"));
        assert!(!allows(&any_path, &Method::HEAD, "/x/y"));
        let any_method = vec![AllowRule::new(&[], &["/health"]).unwrap()];
        assert!(allows(&any_method, &Method::DELETE, "/health"));
        assert!(!allows(&any_method, &Method::GET, "/healthz"));
    }
}
