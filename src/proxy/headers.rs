//! Header hygiene between the app and the upstream: hop-by-hop headers
//! (RFC 9110 7.6.1) and proxy credentials are never forwarded.

use http::header::{self, HeaderMap, HeaderName};

/// Headers that describe one connection, not the message.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

/// True for headers that must not cross the proxy.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str() == "proxy-connection"
}

/// [`is_hop_by_hop`] for a name as it came on the wire (any case). Runs
/// for every field of every response, so it tells most names apart by
/// their length alone.
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    let candidates: &[&[u8]] = match name.len() {
        2 => &[b"te"],
        7 => &[b"trailer", b"upgrade"],
        10 => &[b"connection", b"keep-alive"],
        16 => &[b"proxy-connection"],
        17 => &[b"transfer-encoding"],
        18 => &[b"proxy-authenticate"],
        19 => &[b"proxy-authorization"],
        _ => return false,
    };
    candidates.iter().any(|c| name.eq_ignore_ascii_case(c))
}

/// The header names listed by `Connection` header values (as they came
/// on the wire), which are hop-by-hop too.
pub fn connection_lists<'a, I>(values: I) -> ConnectionList<I>
where
    I: Iterator<Item = &'a [u8]> + Clone,
{
    ConnectionList { values }
}

/// See [`connection_lists`].
pub struct ConnectionList<I> {
    values: I,
}

impl<'a, I> ConnectionList<I>
where
    I: Iterator<Item = &'a [u8]> + Clone,
{
    /// Whether the `Connection` values name any field (other than the
    /// `close` and `keep-alive` options).
    pub fn any_name(&self) -> bool {
        self.values
            .clone()
            .flat_map(|v| v.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .any(|t| !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"close"))
    }

    /// Whether the `Connection` values name `name` (its `close` and
    /// `keep-alive` options count as names too: no end-to-end field has
    /// those names).
    pub fn names(&self, name: &[u8]) -> bool {
        self.values
            .clone()
            .flat_map(|v| v.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .any(|listed| listed.eq_ignore_ascii_case(name))
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header
/// names, and `Proxy-Authorization`.
///
/// Runs twice per proxied request (request and response), so it first
/// looks at the few names present and removes only what is there, instead
/// of a hash lookup for each of the nine hop-by-hop names every time.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut connection = false;
    let mut other_hop = false;
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if is_hop_by_hop(name) {
            other_hop = true;
        }
    }
    if connection {
        // Usually just `keep-alive` or `close`: options, not header names
        // (and `Keep-Alive` goes anyway), so nothing to collect.
        let names_headers = |name: &str| {
            !(name.eq_ignore_ascii_case("keep-alive") || name.eq_ignore_ascii_case("close"))
        };
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| names_headers(name))
            .filter_map(|name| HeaderName::try_from(name).ok())
            .collect();
        for name in listed {
            headers.remove(&name);
        }
        headers.remove(header::CONNECTION);
    }
    if other_hop {
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
        headers.remove("proxy-connection");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_hop_by_hop_and_connection_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic eA=="),
        );
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn wire_names_are_hop_by_hop_in_any_case() {
        for name in HOP_BY_HOP
            .iter()
            .map(HeaderName::as_str)
            .chain(["proxy-connection"])
        {
            assert!(is_hop_by_hop_name(name.as_bytes()), "{name}");
            assert!(
                is_hop_by_hop_name(name.to_ascii_uppercase().as_bytes()),
                "{name}"
            );
        }
        for name in ["date", "content-length", "x-te", "trailers", "connections"] {
            assert!(!is_hop_by_hop_name(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn leaves_end_to_end_headers_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        h.append(header::VIA, HeaderValue::from_static("1.1 a"));
        h.append(header::VIA, HeaderValue::from_static("1.1 b"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);

        // A hop-by-hop header with no `Connection` header, and the reverse.
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        // The usual `Connection: keep-alive` with its `Keep-Alive` header.
        h.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }
}
