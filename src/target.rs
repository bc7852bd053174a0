//! The upstream request line being built: scheme, authority, path and raw
//! query, plus the query-string edits that credentials make.
//!
//! The query is kept as the client sent it (bytes unchanged) so that a
//! signature computed over [`Target::url`] is over exactly what is sent.

use std::borrow::Cow;
use std::sync::Arc;

use http::uri::Scheme;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters kept as they are in a query value: RFC 3986 unreserved.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a query parameter name or value.
pub(crate) fn encode_query_component(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// The URL a request is forwarded to.
///
/// Path and query are kept together, as the origin form they are sent in
/// (`/path?query`): one string per request, built once and handed to the
/// upstream connection as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub(crate) scheme: Scheme,
    /// `host` or `host:port`, default port omitted.
    pub(crate) authority: Arc<str>,
    /// `path` or `path?query`; the path starts with '/'.
    origin_form: String,
    /// Where the path ends: the '?' when there is a query.
    path_len: usize,
}

impl Target {
    /// The target `scheme://authority{path}?{query}` (`query` raw, without
    /// '?'; empty for none).
    pub fn new(scheme: Scheme, authority: Arc<str>, path: &str, query: &str) -> Target {
        Target::joined(scheme, authority, &["", path], query)
    }

    /// Like [`Target::new`] with a path made of `path_parts` joined.
    pub fn joined(scheme: Scheme, authority: Arc<str>, path_parts: &[&str], query: &str) -> Target {
        let path_len = path_parts.iter().map(|p| p.len()).sum();
        let query_len = if query.is_empty() { 0 } else { 1 + query.len() };
        let mut origin_form = String::with_capacity(path_len + query_len);
        for part in path_parts {
            origin_form.push_str(part);
        }
        if !query.is_empty() {
            origin_form.push('?');
            origin_form.push_str(query);
        }
        Target {
            scheme,
            authority,
            origin_form,
            path_len,
        }
    }

    /// The path, as it will be sent.
    pub(crate) fn path(&self) -> &str {
        &self.origin_form[..self.path_len]
    }

    /// The raw query without '?'; empty when there is none.
    pub(crate) fn query(&self) -> &str {
        self.origin_form.get(self.path_len + 1..).unwrap_or("")
    }

    /// `scheme://authority/path?query`, exactly as it will be sent.
    pub(crate) fn url(&self) -> String {
        let scheme = self.scheme.as_str();
        let mut url =
            String::with_capacity(scheme.len() + 3 + self.authority.len() + self.origin_form.len());
        url.push_str(scheme);
        url.push_str("://");
        url.push_str(&self.authority);
        url.push_str(&self.origin_form);
        url
    }

    /// `/path?query`: the request target sent to the upstream (HTTP/1.1
    /// origin form; HTTP/2 adds the scheme and authority from the route).
    pub(crate) fn origin_form(&self) -> &str {
        &self.origin_form
    }

    /// Takes the origin form out, leaving the path and query empty: for the
    /// request that is sent, once the credential has been applied.
    pub fn take_origin_form(&mut self) -> String {
        self.path_len = 0;
        std::mem::take(&mut self.origin_form)
    }

    /// Puts back an origin form taken with [`Target::take_origin_form`]
    /// (for a retry: applying a credential again replaces what it added).
    pub(crate) fn restore_origin_form(&mut self, origin_form: String) {
        self.path_len = origin_form.find('?').unwrap_or(origin_form.len());
        self.origin_form = origin_form;
    }

    pub(crate) fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// Appends `name=value` (the value percent-encoded) after the client's
    /// own parameters.
    pub fn append_param(&mut self, name: &str, value: &str) {
        // Room for the pair as it usually is (unreserved characters).
        self.start_param(name.len() + 1 + value.len());
        // Encoded straight into the query: no temporary strings.
        self.origin_form
            .extend(utf8_percent_encode(name, QUERY_VALUE));
        self.origin_form.push('=');
        self.origin_form
            .extend(utf8_percent_encode(value, QUERY_VALUE));
    }

    /// Makes room for `additional` more bytes of query, e.g. for several
    /// parameters appended one after the other.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.origin_form.reserve(additional);
    }

    /// Appends a parameter that is already encoded, given in `parts` (e.g.
    /// `name=` and the value), after the client's own parameters.
    pub(crate) fn append_encoded(&mut self, parts: &[&str]) {
        self.start_param(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            self.origin_form.push_str(part);
        }
    }

    /// Writes the separator before a new parameter ('?' for the first),
    /// with room for `len` more bytes after it.
    fn start_param(&mut self, len: usize) {
        self.origin_form.reserve(1 + len);
        self.origin_form
            .push(if self.query().is_empty() { '?' } else { '&' });
    }

    /// Removes every parameter whose (decoded) name is in `names`, keeping
    /// the others byte for byte.
    pub(crate) fn remove_params<S: AsRef<str>>(&mut self, names: &[S]) {
        let query = self.query();
        if names.is_empty() || query.is_empty() {
            return;
        }
        // Usually the client sent none of them: then the query stays as it
        // is, without building a new one.
        if query
            .split('&')
            .any(|pair| pair.is_empty() || pair_named(pair, names))
        {
            let kept = remove_params(query, names);
            self.origin_form.truncate(self.path_len);
            if !kept.is_empty() {
                self.origin_form.push('?');
                self.origin_form.push_str(&kept);
            }
        }
    }
}

/// True when the decoded name of the `key[=value]` pair is one of `names`.
fn pair_named<S: AsRef<str>>(pair: &str, names: &[S]) -> bool {
    let key = pair.split_once('=').map_or(pair, |(k, _)| k);
    if !key.bytes().any(|b| b == b'+' || b == b'%') {
        // Nothing to decode (the usual case).
        return names.iter().any(|n| n.as_ref() == key);
    }
    let key = if key.contains('+') {
        Cow::Owned(key.replace('+', " "))
    } else {
        Cow::Borrowed(key)
    };
    let decoded = percent_decode_str(&key).decode_utf8_lossy();
    names.iter().any(|n| n.as_ref() == decoded)
}

/// `query` without the parameters named in `names` (and without empty
/// pairs left by `&&`).
pub(crate) fn remove_params<S: AsRef<str>>(query: &str, names: &[S]) -> String {
    if names.is_empty() || query.is_empty() {
        return query.to_string();
    }
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair_named(pair, names))
        .collect::<Vec<_>>()
        .join("&")
}

/// Removes the parameters named in `names` from the query of a URL
/// (absolute or relative), keeping its fragment. Used on `Location`-like
/// response headers so that injected credentials never reach the client.
pub(crate) fn scrub_url<S: AsRef<str>>(url: &str, names: &[S]) -> String {
    let (without_fragment, fragment) = match url.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (url, None),
    };
    let Some((base, query)) = without_fragment.split_once('?') else {
        return url.to_string();
    };
    let query = remove_params(query, names);
    let mut out = base.to_string();
    if !query.is_empty() {
        out.push('?');
        out.push_str(&query);
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// Applies [`scrub_url`] to every `<...>` reference of a `Link` header.
pub(crate) fn scrub_link_header<S: AsRef<str>>(value: &str, names: &[S]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        out.push_str(&rest[..=open]);
        out.push_str(&scrub_url(&rest[open + 1..open + close], names));
        out.push('>');
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(query: &str) -> Target {
        Target::new(
            Scheme::HTTPS,
            "api.example.com:8443".into(),
            "/base/v1/x",
            query,
        )
    }

    #[test]
    fn appends_after_the_clients_parameters() {
        let mut t = target("a=1&b=%2F");
        t.append_param("access_token", "x y/z&");
        assert_eq!(t.query(), "a=1&b=%2F&access_token=x%20y%2Fz%26");
        assert_eq!(
            t.url(),
            "https://api.example.com:8443/base/v1/x?a=1&b=%2F&access_token=x%20y%2Fz%26"
        );
        let mut t = target("");
        t.append_param("k", "v");
        assert_eq!(t.url(), "https://api.example.com:8443/base/v1/x?k=v");
    }

    #[test]
    fn removes_every_copy_of_a_parameter_even_encoded() {
        let mut t = target("access_token=evil&a=1&access%5Ftoken=x&access_token&b=2&&");
        t.remove_params(&["access_token"]);
        assert_eq!(t.query(), "a=1&b=2");
        let mut t = target("a=1&a=2");
        t.remove_params(&["b"]);
        assert_eq!(t.query(), "a=1&a=2", "repeated parameters are kept as sent");
        let mut t = target("a=1&&b=%2F+x");
        t.remove_params(&["c"]);
        assert_eq!(t.query(), "a=1&b=%2F+x", "empty pairs are dropped");
        let mut t = target("a+b=1&a%20b=2&c=3");
        t.remove_params(&["a b"]);
        assert_eq!(t.query(), "c=3", "'+' and %20 both decode to a space");
    }

    #[test]
    fn scrubs_location_and_link() {
        assert_eq!(
            scrub_url(
                "https://other.example/p?x=1&access_token=SECRET#frag",
                &["access_token"]
            ),
            "https://other.example/p?x=1#frag"
        );
        assert_eq!(
            scrub_url("/next?access_token=SECRET", &["access_token"]),
            "/next"
        );
        assert_eq!(
            scrub_link_header(
                "<https://a/p?page=2&access_token=S>; rel=\"next\", <https://a/p?access_token=S>; rel=\"first\"",
                &["access_token"]
            ),
            "<https://a/p?page=2>; rel=\"next\", <https://a/p>; rel=\"first\""
        );
    }

    #[test]
    fn origin_form_is_path_and_query() {
        assert_eq!(target("a=1").origin_form(), "/base/v1/x?a=1");
        assert_eq!(target("").origin_form(), "/base/v1/x");
        assert_eq!(
            target("a=1&b=%2F&x=[1]").origin_form(),
            "/base/v1/x?a=1&b=%2F&x=[1]"
        );
        let t = target("a=1");
        assert_eq!((t.path(), t.query()), ("/base/v1/x", "a=1"));
        let mut t = target("access_token=x");
        t.remove_params(&["access_token"]);
        assert_eq!(
            t.origin_form(),
            "/base/v1/x",
            "no '?' once the query is empty"
        );
        assert_eq!(t.take_origin_form(), "/base/v1/x");

        let mut t = target("a=1&access_token=old");
        let taken = t.take_origin_form();
        t.restore_origin_form(taken);
        assert_eq!(
            (t.path(), t.query()),
            ("/base/v1/x", "a=1&access_token=old")
        );
        t.remove_params(&["access_token"]);
        t.append_param("access_token", "new");
        assert_eq!(t.origin_form(), "/base/v1/x?a=1&access_token=new");
    }
}
