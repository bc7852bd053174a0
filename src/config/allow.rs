//! `[[route.allow]]`: the requests a route forwards, validated.
//!
//! A rule names `methods` and `paths`; a request is forwarded when some
//! rule matches both (an absent key matches anything; a route without
//! rules forwards everything). Paths are patterns of segments: a literal,
//! `*` (exactly one non-empty segment) or `**` (the rest of the path,
//! zero or more segments; last only). Matching lives with the routes
//! (`route::allow`); this module only checks and compiles what is written.

use std::fmt;

use http::Method;
use percent_encoding::percent_decode_str;

use super::file::FileAllow;
use super::Ctx;

/// One validated `[[route.allow]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    /// `None`: any method.
    pub(crate) methods: Option<Vec<Method>>,
    /// `None`: any path.
    pub(crate) paths: Option<Vec<PathPattern>>,
}

/// A `paths` entry, split into segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// As written, for `check` and messages.
    pub(crate) text: String,
    pub(crate) segments: Vec<Segment>,
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Matches a request segment that decodes (`%XX`) to these bytes.
    Literal(Box<[u8]>),
    /// `*`: one non-empty segment.
    One,
    /// `**`: whatever remains, possibly nothing.
    Rest,
}

impl AllowRule {
    /// A rule from method names and path patterns as they are written in
    /// the config; an empty list means any (as an absent key does).
    pub fn new(methods: &[&str], paths: &[&str]) -> Result<AllowRule, String> {
        let methods = match methods {
            [] => None,
            list => Some(
                list.iter()
                    .map(|m| Method::from_bytes(m.as_bytes()).map_err(|e| format!("{m:?}: {e}")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let paths = match paths {
            [] => None,
            list => Some(
                list.iter()
                    .map(|p| pattern(p).map_err(|why| format!("{p:?}: {why}")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(AllowRule { methods, paths })
    }

    pub(super) fn from_file(index: usize, raw: FileAllow, ctx: &mut Ctx) -> Option<AllowRule> {
        let key = format!("allow[{}]", index + 1);
        if raw.methods.is_none() && raw.paths.is_none() {
            ctx.problem(&key, "give `methods`, `paths` or both");
            return None;
        }
        let methods = match raw.methods {
            None => Some(None),
            Some(list) => methods(ctx, &format!("{key}.methods"), &list).map(Some),
        };
        let paths = match raw.paths {
            None => Some(None),
            Some(list) => paths(ctx, &format!("{key}.paths"), &list).map(Some),
        };
        Some(AllowRule {
            methods: methods?,
            paths: paths?,
        })
    }
}

fn methods(ctx: &mut Ctx, key: &str, list: &[String]) -> Option<Vec<Method>> {
    if list.is_empty() {
        ctx.problem(
            key,
            "is empty: it would allow nothing (leave it out to allow any method)",
        );
        return None;
    }
    let mut out = Vec::with_capacity(list.len());
    let mut ok = true;
    for (i, raw) in list.iter().enumerate() {
        let key = format!("{key}[{}]", i + 1);
        let Some(value) = ctx.expand_nonempty(&key, raw) else {
            ok = false;
            continue;
        };
        match Method::from_bytes(value.to_ascii_uppercase().as_bytes()) {
            Ok(m) if m == Method::CONNECT => {
                ctx.problem(&key, "CONNECT opens tunnels, it is not a request to allow");
                ok = false;
            }
            Ok(m) => out.push(m),
            Err(_) => {
                ctx.problem(&key, "not an HTTP method");
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn paths(ctx: &mut Ctx, key: &str, list: &[String]) -> Option<Vec<PathPattern>> {
    if list.is_empty() {
        ctx.problem(
            key,
            "is empty: it would allow nothing (leave it out to allow any path)",
        );
        return None;
    }
    let mut out = Vec::with_capacity(list.len());
    let mut ok = true;
    for (i, raw) in list.iter().enumerate() {
        let key = format!("{key}[{}]", i + 1);
        let Some(value) = ctx.expand_nonempty(&key, raw) else {
            ok = false;
            continue;
        };
        match pattern(&value) {
            Ok(p) => out.push(p),
            Err(why) => {
                ctx.problem(&key, why);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// Parses one path pattern.
pub(crate) fn pattern(text: &str) -> Result<PathPattern, &'static str> {
    let Some(rest) = text.strip_prefix('/') else {
        return Err("a path pattern starts with '/'");
    };
    if text.contains(['?', '#']) {
        return Err("a path pattern has no query or fragment");
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let mut segments = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let segment = match *part {
            "*" => Segment::One,
            "**" if i + 1 == parts.len() => Segment::Rest,
            "**" => return Err("`**` (the rest of the path) can only be the last segment"),
            p if p.contains('*') => {
                return Err("`*` and `**` stand for whole segments (write /a/*/b, not /a*/b)")
            }
            p => {
                let decoded: Vec<u8> = percent_decode_str(p).collect();
                if decoded == b"." || decoded == b".." || decoded.contains(&b'/') {
                    return Err("no '.' or '..' segments or encoded '/' (requests with them are refused anyway)");
                }
                Segment::Literal(decoded.into_boxed_slice())
            }
        };
        segments.push(segment);
    }
    Ok(PathPattern {
        text: text.to_string(),
        segments,
    })
}

/// Validates every `[[route.allow]]` of a route.
pub(super) fn rules(raw: Vec<FileAllow>, ctx: &mut Ctx) -> Option<Vec<AllowRule>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut ok = true;
    for (i, rule) in raw.into_iter().enumerate() {
        match AllowRule::from_file(i, rule, ctx) {
            Some(r) => out.push(r),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile_to_segments() {
        let p = pattern("/v1/orders/*").unwrap();
        assert_eq!(
            p.segments,
            vec![
                Segment::Literal(b"v1".to_vec().into()),
                Segment::Literal(b"orders".to_vec().into()),
                Segment::One
            ]
        );
        let p = pattern("/v1/catalog/**").unwrap();
        assert_eq!(p.segments.last(), Some(&Segment::Rest));
        let p = pattern("/a%20b").unwrap();
        assert_eq!(p.segments, vec![Segment::Literal(b"a b".to_vec().into())]);
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "v1/x",
            "/v1/**/x",
            "/v1/a*",
            "/v1/../admin",
            "/v1/%2e%2e/admin",
            "/v1/a%2fb",
            "/v1?x=1",
        ] {
            assert!(pattern(bad).is_err(), "{bad}");
        }
    }
}
