//! `[proxy] upstream_proxy` and `no_upstream_proxy`: a corporate HTTP
//! proxy that upstream connections (proxied requests, token requests,
//! blind tunnels) go through, and the hosts reached directly instead.

use base64::Engine as _;
use http::Uri;
use secrecy::{ExposeSecret, SecretString};

use super::Ctx;

/// A validated `upstream_proxy`: where it is, how to authenticate to it
/// and which hosts bypass it.
#[derive(Debug, Clone)]
pub struct UpstreamProxy {
    /// The proxy's host (lowercase; an IPv6 literal without brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `Basic base64(user:password)` from the URL's userinfo, sent only to
    /// the proxy as `Proxy-Authorization`.
    pub(crate) authorization: Option<SecretString>,
    /// `no_upstream_proxy`: hosts dialled directly.
    pub(crate) bypass: Vec<Bypass>,
}

/// One `no_upstream_proxy` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bypass {
    /// A host name or IP address (lowercase, IPv6 without brackets).
    Exact(String),
    /// `*.corp.example`, stored as `.corp.example`: any name under it,
    /// not `corp.example` itself.
    Suffix(String),
}

impl std::fmt::Display for Bypass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bypass::Exact(h) => f.write_str(h),
            Bypass::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

impl PartialEq for UpstreamProxy {
    fn eq(&self, other: &UpstreamProxy) -> bool {
        let UpstreamProxy {
            host,
            port,
            authorization,
            bypass,
        } = self;
        *host == other.host
            && *port == other.port
            && authorization.as_ref().map(|a| a.expose_secret())
                == other.authorization.as_ref().map(|a| a.expose_secret())
            && *bypass == other.bypass
    }
}

impl UpstreamProxy {
    /// Whether connections to `host` go through the proxy (`host` as in
    /// a URL: an IPv6 literal may be in brackets; any case).
    pub(crate) fn applies_to(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        !self.bypass.iter().any(|b| match b {
            Bypass::Exact(h) => h.eq_ignore_ascii_case(host),
            Bypass::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        })
    }

    /// `host:port` of the proxy, as errors name it.
    pub(crate) fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Reads `upstream_proxy` ("" or absent: none) and `no_upstream_proxy`.
    pub(super) fn from_file(
        ctx: &mut Ctx,
        url: Option<&str>,
        bypass: Option<&[String]>,
    ) -> Option<Option<UpstreamProxy>> {
        let mut entries = Vec::new();
        for (i, raw) in bypass.unwrap_or_default().iter().enumerate() {
            let key = format!("no_upstream_proxy[{i}]");
            if let Some(value) = ctx.expand_nonempty(&key, raw) {
                match bypass_entry(&value) {
                    Some(entry) => entries.push(entry),
                    None => ctx.problem(
                        &key,
                        "must be a host name, an IP address or *.domain (no scheme, port or path)",
                    ),
                }
            }
        }
        let url = match url {
            None => return Some(None),
            Some(raw) => ctx.expand("upstream_proxy", raw)?,
        };
        if url.is_empty() {
            return Some(None);
        }
        // Problems never quote the URL: it may carry a password.
        let parsed: Uri = match url.parse() {
            Ok(uri) => uri,
            Err(_) => {
                ctx.problem(
                    "upstream_proxy",
                    "not a URL; write http://[user:pass@]host:port",
                );
                return None;
            }
        };
        if parsed.scheme_str() != Some("http") {
            ctx.problem(
                "upstream_proxy",
                "must start with http:// (TLS to the proxy itself is not supported; \
                 TLS to upstreams goes inside its CONNECT tunnel)",
            );
            return None;
        }
        let Some(authority) = parsed.authority() else {
            ctx.problem("upstream_proxy", "has no host");
            return None;
        };
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            ctx.problem("upstream_proxy", "must not have a path or query");
            return None;
        }
        let Some(port) = authority.port_u16() else {
            ctx.problem("upstream_proxy", "needs a port: http://host:port");
            return None;
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let authorization = match authority.as_str().rsplit_once('@') {
            None => None,
            Some((userinfo, _)) => {
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .map(|s| s.into_owned())
                };
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                match (decode(user), decode(password)) {
                    (Ok(user), Ok(password)) => {
                        let pair = format!("{user}:{password}");
                        Some(SecretString::from(format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode(pair)
                        )))
                    }
                    _ => {
                        ctx.problem(
                            "upstream_proxy",
                            "the user or password is not valid percent-encoded UTF-8",
                        );
                        return None;
                    }
                }
            }
        };
        Some(Some(UpstreamProxy {
            host,
            port,
            authorization,
            bypass: entries,
        }))
    }
}

fn bypass_entry(value: &str) -> Option<Bypass> {
    let value = value.trim().to_ascii_lowercase();
    if let Some(suffix) = value.strip_prefix("*.") {
        return dns_name(suffix).then(|| Bypass::Suffix(format!(".{suffix}")));
    }
    let bare = value.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() || dns_name(bare) {
        return Some(Bypass::Exact(bare.to_string()));
    }
    None
}

fn dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(url: &str, bypass: &[&str]) -> Result<Option<UpstreamProxy>, Vec<String>> {
        let lookup = |_: &str| None;
        let mut ctx = Ctx::new(&lookup, Path::new("."));
        ctx.set_scope("proxy".into());
        let bypass: Vec<String> = bypass.iter().map(|s| s.to_string()).collect();
        let got = UpstreamProxy::from_file(&mut ctx, Some(url), Some(&bypass));
        let (problems, _) = ctx.finish();
        match got {
            Some(p) if problems.is_empty() => Ok(p),
            _ => Err(problems.iter().map(|p| p.to_string()).collect()),
        }
    }

    #[test]
    fn the_url_gives_host_port_and_a_basic_credential() {
        let p = parse("http://corp%5Cuser:p%40ss@Proxy.Corp.example:3128", &[])
            .unwrap()
            .unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp.example", 3128));
        // base64("corp\user:p@ss")
        assert_eq!(
            p.authorization.unwrap().expose_secret(),
            "Basic Y29ycFx1c2VyOnBAc3M="
        );
        assert_eq!(parse("", &[]).unwrap(), None);
    }

    #[test]
    fn bad_urls_are_refused_without_quoting_them() {
        for url in [
            "https://u:hunter2@proxy:3128",
            "http://u:hunter2@proxy",
            "http://u:hunter2@proxy:3128/path",
            "socks5://u:hunter2@proxy:1080",
        ] {
            let problems = parse(url, &[]).unwrap_err();
            assert!(!problems.is_empty(), "{url}");
            assert!(
                problems.iter().all(|p| !p.contains("hunter2")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn bypass_is_exact_or_any_name_under_a_wildcard() {
        let p = parse(
            "http://proxy:3128",
            &["internal.example", "*.corp.example", "10.0.0.7", "[::1]"],
        )
        .unwrap()
        .unwrap();
        assert!(!p.applies_to("INTERNAL.example"));
        assert!(p.applies_to("api.internal.example"));
        assert!(!p.applies_to("a.b.corp.example"));
        assert!(p.applies_to("corp.example"));
        assert!(!p.applies_to("10.0.0.7"));
        assert!(!p.applies_to("[::1]"));
        assert!(p.applies_to("api.partner.example"));
        assert!(parse("http://proxy:3128", &["http://x"]).is_err());
    }
}
