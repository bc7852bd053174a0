//! The host a request is for: the absolute-form URI's (`GET http://host/`),
//! else the `Host` header's, without the port. Read in place (the URI's or
//! the header's bytes are shared, not copied) and checked by hand: routing
//! happens on every request, and parsing the header into a URI authority
//! cost as much as the route lookup several times over.

use bytes::Bytes;
use http::uri::Authority;

/// A request's host name (or IP literal), without the port.
pub struct RequestHost {
    source: Source,
    /// The host part: `source[start..end]`.
    start: usize,
    end: usize,
}

enum Source {
    Uri(Authority),
    Header(Bytes),
}

impl RequestHost {
    /// The host of an absolute-form request URI.
    pub(crate) fn from_uri(authority: &Authority) -> RequestHost {
        let host = authority.host();
        let start = host.as_ptr() as usize - authority.as_str().as_ptr() as usize;
        RequestHost {
            source: Source::Uri(authority.clone()),
            start,
            end: start + host.len(),
        }
    }

    /// The host of a `Host` header value (`host[:port]`), if it is one.
    pub fn from_header(value: Bytes) -> Option<RequestHost> {
        let (start, end) = host_part(&value)?;
        Some(RequestHost {
            source: Source::Header(value),
            start,
            end,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        let host = match &self.source {
            Source::Uri(authority) => authority.as_str().as_bytes().get(self.start..self.end),
            Source::Header(value) => value.get(self.start..self.end),
        };
        // ASCII: checked by `host_part`, or part of a parsed authority.
        host.and_then(|h| std::str::from_utf8(h).ok()).unwrap_or("")
    }
}

/// Where the host is in `host[:port]`: a reg-name or IPv4 address of the
/// characters RFC 3986 allows there, or a bracketed IPv6 literal; the
/// port, if any, is 1 to 5 digits.
fn host_part(value: &[u8]) -> Option<(usize, usize)> {
    let (end, rest) = if value.first() == Some(&b'[') {
        let close = value.iter().position(|b| *b == b']')?;
        let literal = std::str::from_utf8(&value[1..close]).ok()?;
        literal.parse::<std::net::Ipv6Addr>().ok()?;
        (close + 1, &value[close + 1..])
    } else {
        let end = value.iter().position(|b| *b == b':').unwrap_or(value.len());
        let name = &value[..end];
        // One pass over the name; escapes are checked only when there is
        // a `%` (rare in host names).
        let mut percent = false;
        for &b in name {
            if !is_reg_name_char(b) {
                return None;
            }
            percent |= b == b'%';
        }
        if name.is_empty() || (percent && !escapes_ok(name)) {
            return None;
        }
        (end, &value[end..])
    };
    match rest {
        [] => Some((0, end)),
        [b':', port @ ..]
            if !port.is_empty() && port.len() <= 5 && port.iter().all(u8::is_ascii_digit) =>
        {
            Some((0, end))
        }
        _ => None,
    }
}

/// Whether each `%` in `name` starts a percent-encoded octet (`%` and two
/// hex digits).
fn escapes_ok(name: &[u8]) -> bool {
    name.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || name
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

/// RFC 3986 reg-name: unreserved, sub-delims and percent-encoding.
fn is_reg_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b'%'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> Option<String> {
        RequestHost::from_header(Bytes::copy_from_slice(value.as_bytes()))
            .map(|h| h.as_str().to_string())
    }

    #[test]
    fn takes_the_host_without_the_port() {
        assert_eq!(host("api.copilot.cx").as_deref(), Some("api.copilot.cx"));
        assert_eq!(
            host("API.Example.com:8443").as_deref(),
            Some("API.Example.com")
        );
        assert_eq!(host("127.0.0.1:80").as_deref(), Some("127.0.0.1"));
        assert_eq!(host("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(host("[2001:db8::1]").as_deref(), Some("[2001:db8::1]"));
        assert_eq!(host("a%41.test").as_deref(), Some("a%41.test"));
    }

    #[test]
    fn refuses_what_is_not_host_and_port() {
        for bad in [
            "",
            ":80",
            "a b",
            "user@host",
            "host/path",
            "host:",
            "host:123456",
            "host:8x",
            "[::1",
            "[]",
            "[::g]",
            "[1:2]",
            "[:::]",
            "a%zz",
            "a%4",
            "a:1:2",
            "host\t",
        ] {
            assert_eq!(host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_absolute_uri_gives_its_host() {
        let uri: http::Uri = "http://api.example.com:8080/x".parse().unwrap();
        let h = RequestHost::from_uri(uri.authority().unwrap());
        assert_eq!(h.as_str(), "api.example.com");
    }
}
