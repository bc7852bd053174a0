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
//! Nothing here allocates per request: rules are compiled at load
//! ([`crate::config::AllowRule`]) and indexed by the route
//! ([`AllowIndex`]): each path pattern is filed under its first segment
//! when that is a literal, so a request is checked only against the
//! patterns that can match its first segment (and those starting with
//! `*` or `**`), each method test is one bit test, and the path is
//! walked in place.

use http::Method;
use percent_encoding::percent_decode;

use crate::config::{AllowRule, PathPattern, Segment};

/// The methods a rule names, as a bit per standard method (and a list
/// for extension methods).
#[derive(Debug, Clone)]
enum Methods {
    Any,
    Some {
        bits: u16,
        extensions: Box<[Method]>,
    },
}

/// The standard methods, in the order of their bits.
const STANDARD: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
    Method::CONNECT,
    Method::PATCH,
    Method::TRACE,
];

/// `method`'s bit (`0`: an extension method).
fn method_bit(method: &Method) -> u16 {
    STANDARD
        .iter()
        .position(|m| m == method)
        .map_or(0, |i| 1 << i)
}

impl Methods {
    fn new(list: Option<&[Method]>) -> Methods {
        match list {
            None => Methods::Any,
            Some(list) => Methods::Some {
                bits: list.iter().fold(0, |bits, m| bits | method_bit(m)),
                extensions: list
                    .iter()
                    .filter(|m| method_bit(m) == 0)
                    .cloned()
                    .collect(),
            },
        }
    }

    /// Whether the method whose bit is `bit` is one of these.
    fn contain(&self, bit: u16, method: &Method) -> bool {
        match self {
            Methods::Any => true,
            Methods::Some { bits, extensions } => {
                bits & bit != 0 || (bit == 0 && extensions.contains(method))
            }
        }
    }
}

/// One (rule, path pattern) pair: a request matching both is allowed.
#[derive(Debug, Clone)]
struct Candidate {
    methods: Methods,
    /// `None`: the rule names no paths (any path).
    pattern: Option<PathPattern>,
}

impl Candidate {
    fn allows(&self, bit: u16, method: &Method, path: &str, escaped: bool) -> bool {
        self.methods.contain(bit, method)
            && self
                .pattern
                .as_ref()
                .is_none_or(|p| matches(p, path, escaped))
    }

    /// [`Candidate::allows`] for a candidate filed under the path's first
    /// segment (already compared): the rest of its pattern against the
    /// path's segments after the first.
    fn allows_after_first(
        &self,
        bit: u16,
        method: &Method,
        after: &Segments<'_>,
        escaped: bool,
    ) -> bool {
        self.methods.contain(bit, method)
            && self.pattern.as_ref().is_none_or(|p| {
                walk(
                    p.segments.get(1..).unwrap_or_default(),
                    after.clone(),
                    escaped,
                )
            })
    }
}

/// A route's `[[route.allow]]` rules, indexed for the per-request check.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowIndex {
    /// Patterns whose first segment is a literal, by that literal and
    /// its hash.
    by_first: Vec<(u64, Box<[u8]>, Vec<Candidate>)>,
    /// A hash table over `by_first` (open addressing, a power of two
    /// long, at most half full): an index into it plus one, `0` empty.
    slots: Box<[u32]>,
    /// Patterns starting with `*` or `**`, and rules without paths.
    others: Vec<Candidate>,
}

impl AllowIndex {
    pub(crate) fn new(rules: &[AllowRule]) -> AllowIndex {
        let mut index = AllowIndex::default();
        for rule in rules {
            let methods = Methods::new(rule.methods.as_deref());
            let patterns: Vec<Option<&PathPattern>> = match &rule.paths {
                None => vec![None],
                Some(paths) => paths.iter().map(Some).collect(),
            };
            for pattern in patterns {
                let candidate = Candidate {
                    methods: methods.clone(),
                    pattern: pattern.cloned(),
                };
                match pattern.and_then(|p| p.segments.first()) {
                    Some(Segment::Literal(first)) => {
                        let hash = fnv1a(first);
                        let at = index
                            .by_first
                            .iter()
                            .position(|(h, k, _)| *h == hash && k == first);
                        match at {
                            Some(i) => index.by_first[i].2.push(candidate),
                            None => index.by_first.push((hash, first.clone(), vec![candidate])),
                        }
                    }
                    _ => index.others.push(candidate),
                }
            }
        }
        if !index.by_first.is_empty() {
            let len = (index.by_first.len() * 2).next_power_of_two();
            let mut slots = vec![0u32; len];
            for (i, (hash, _, _)) in index.by_first.iter().enumerate() {
                let mut at = slot_of(*hash, len);
                while slots[at] != 0 {
                    at = (at + 1) & (len - 1);
                }
                // Rules come from the config: far fewer than 2^32.
                slots[at] = u32::try_from(i + 1).unwrap_or(u32::MAX);
            }
            index.slots = slots.into_boxed_slice();
        }
        index
    }

    /// The patterns filed under the first segment `first` (unencoded).
    fn under(&self, first: &[u8]) -> &[Candidate] {
        let len = self.slots.len();
        if len == 0 {
            return &[];
        }
        let hash = fnv1a(first);
        let mut at = slot_of(hash, len);
        loop {
            let entry = match self.slots[at] {
                0 => return &[],
                i => self.by_first.get(i as usize - 1),
            };
            if let Some((h, key, list)) = entry {
                // Byte by byte: a first segment is short (see segment_is).
                if *h == hash
                    && key.len() == first.len()
                    && key.iter().zip(first).all(|(a, b)| a == b)
                {
                    return list;
                }
            }
            at = (at + 1) & (len - 1);
        }
    }

    /// Whether the rules let `method` and `path` through (no rules: yes).
    pub(crate) fn allows(&self, method: &Method, path: &str) -> bool {
        // No rules: everything is allowed.
        if self.by_first.is_empty() && self.others.is_empty() {
            return true;
        }
        // One look at the path for what needs a closer one: dots and
        // escapes (`%`, `\`). A path without escapes, the usual one, has
        // no segment to decode or split further.
        let seen = path
            .bytes()
            .fold(0u8, |seen, b| seen | NOTABLE[usize::from(b)]);
        let special = seen & (DOT | PERCENT) != 0;
        let escaped = seen & (PERCENT | BACKSLASH) != 0;
        if special && has_dot_segment(path) {
            return false;
        }
        let bit = method_bit(method);
        let mut segments = path.strip_prefix('/').map(Segments::new);
        let first = segments.as_mut().and_then(Iterator::next);
        match (first, segments) {
            (Some(first), Some(after)) if !special || !first.contains('%') => {
                self.under(first.as_bytes())
                    .iter()
                    .any(|c| c.allows_after_first(bit, method, &after, escaped))
                    || self
                        .others
                        .iter()
                        .any(|c| c.allows(bit, method, path, escaped))
            }
            // A percent-encoded first segment (compared decoded): every
            // pattern, one by one.
            _ => self
                .by_first
                .iter()
                .flat_map(|(_, _, list)| list)
                .chain(&self.others)
                .any(|c| c.allows(bit, method, path, escaped)),
        }
    }
}

/// Whether `path` matches `pattern` (`escaped`: the path holds a `%` or
/// a `\`).
fn matches(pattern: &PathPattern, path: &str, escaped: bool) -> bool {
    path.strip_prefix('/')
        .is_some_and(|rest| walk(&pattern.segments, Segments::new(rest), escaped))
}

/// What [`AllowIndex::allows`] looks for in a path, a bit per byte value.
const DOT: u8 = 1;
const PERCENT: u8 = 2;
const BACKSLASH: u8 = 4;
const NOTABLE: [u8; 256] = {
    let mut table = [0u8; 256];
    table[b'.' as usize] = DOT;
    table[b'%' as usize] = PERCENT;
    table[b'\\' as usize] = BACKSLASH;
    table
};

/// Where a hash starts its probe in a table of `len` slots (a power of
/// two).
fn slot_of(hash: u64, len: usize) -> usize {
    // Only the low bits are kept: the cast may truncate.
    (hash as usize) & (len - 1)
}

/// The `/`-separated segments of a path (after its leading `/`): what
/// `str::split('/')` yields, with a byte loop that is cheaper for the
/// short segments of a path.
#[derive(Clone)]
struct Segments<'p> {
    rest: Option<&'p str>,
}

impl<'p> Segments<'p> {
    fn new(rest: &'p str) -> Segments<'p> {
        Segments { rest: Some(rest) }
    }
}

impl<'p> Iterator for Segments<'p> {
    type Item = &'p str;

    fn next(&mut self) -> Option<&'p str> {
        let rest = self.rest?;
        match rest.bytes().position(|b| b == b'/') {
            Some(i) => {
                self.rest = rest.get(i + 1..);
                rest.get(..i)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// FNV-1a: a hash of a first segment that costs a few instructions a
/// byte (the index is built from the config, not from requests, so it
/// needs no protection against chosen collisions: a collision only
/// means one more comparison).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether the path's `segments` (after its leading `/`) match
/// `pattern`, segment by segment.
/// `escaped`: the path holds a `%` or a `\` (otherwise no segment needs
/// decoding, nor holds a separator).
fn walk<'p>(
    pattern: &[Segment],
    mut segments: impl Iterator<Item = &'p str>,
    escaped: bool,
) -> bool {
    for expected in pattern {
        match expected {
            Segment::Rest => return true,
            Segment::One => match segments.next() {
                Some(s) if !s.is_empty() && (!escaped || !has_separator(s)) => {}
                _ => return false,
            },
            Segment::Literal(literal) => match segments.next() {
                Some(s) if segment_is(s, literal, escaped) => {}
                _ => return false,
            },
        }
    }
    segments.next().is_none()
}

/// Whether the request segment `s` decodes to `literal`: compared as it
/// is when it has the same length (the usual, unencoded case), decoded
/// only when it is longer and holds a `%`.
fn segment_is(s: &str, literal: &[u8], escaped: bool) -> bool {
    if s.len() == literal.len() {
        // Byte by byte: segments are short, and this is cheaper than a
        // call to memcmp for each rule.
        return s.bytes().zip(literal).all(|(a, b)| a == *b);
    }
    // Decoding only shortens: a valid escape is 3 bytes for 1.
    escaped
        && s.len() > literal.len()
        && s.contains('%')
        && percent_decode(s.as_bytes()).eq(literal.iter().copied())
}

/// A segment that some upstream would split: `\`, `%2F`, `%5C`.
fn has_separator(segment: &str) -> bool {
    if !segment.bytes().any(|b| b == b'%' || b == b'\\') {
        return false;
    }
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

    fn allows(rules: &[AllowRule], method: &Method, path: &str) -> bool {
        AllowIndex::new(rules).allows(method, path)
    }

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
        let deep = format!("/v1/catalog{}", "/x".repeat(45));
        assert!(allows(&rules, &Method::GET, &deep));
        let deep = format!("/v1/orders{}", "/x".repeat(45));
        assert!(!allows(&rules, &Method::GET, &deep));
        let exact = format!("/v1/orders/{}", "y".repeat(40));
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

    #[test]
    fn the_index_finds_rules_whatever_their_first_segment() {
        let rules = vec![
            AllowRule::new(&["GET"], &["/v1/orders/*", "/v2/**"]).unwrap(),
            AllowRule::new(&["PROPFIND", "POST"], &["/*/report"]).unwrap(),
            AllowRule::new(&["DELETE"], &["/**"]).unwrap(),
            AllowRule::new(&["PATCH"], &[]).unwrap(),
        ];
        let propfind = Method::from_bytes(b"PROPFIND").unwrap();
        let mkcol = Method::from_bytes(b"MKCOL").unwrap();
        for (method, path, want) in [
            (&Method::GET, "/v1/orders/7", true),
            (&Method::GET, "/%761/orders/7", true),
            (&Method::GET, "/v2", true),
            (&Method::GET, "/v%32/x/y", true),
            (&Method::GET, "/v3/orders/7", false),
            (&Method::GET, "/v1/report", false),
            (&propfind, "/v1/report", true),
            (&propfind, "/%41/report", true),
            (&mkcol, "/v1/report", false),
            (&Method::POST, "/anything/report", true),
            (&Method::POST, "/v1/orders/7", false),
            (&Method::DELETE, "/", true),
            (&Method::DELETE, "/v1/orders/7", true),
            (&Method::PATCH, "/x/y/z", true),
            (&Method::PUT, "/v1/orders/7", false),
        ] {
            assert_eq!(allows(&rules, method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn segments_split_like_str_split() {
        for rest in ["", "a", "a/", "/a", "a//b", "v1/orders/42", "//", "a/b/c/"] {
            assert_eq!(
                Segments::new(rest).collect::<Vec<_>>(),
                rest.split('/').collect::<Vec<_>>(),
                "{rest:?}"
            );
        }
    }
}
