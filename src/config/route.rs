//! One `[[route]]`: which requests it matches and where they go.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::uri::{Scheme, Uri};

use super::allow::{self, AllowRule};
use super::auth::AuthConfig;
use super::client_tls::{client_tls, ClientTls};
use super::file::FileRoute;
use super::Ctx;
use crate::target::Target;
use crate::wire::headers::is_hop_by_hop;

/// The `host` a route matches: exact (case-insensitive) or `*.suffix`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: matches any name ending in
    /// it (one or more labels), not `example.com` itself.
    Wildcard(String),
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

/// Where a route's requests go: scheme, authority and base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub(crate) scheme: Scheme,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `host` or `host:port` as sent in `Host` (default ports omitted).
    pub(crate) authority: Arc<str>,
    /// Prefix joined before the request path: "" or "/base" (no trailing /).
    pub(crate) base_path: String,
}

impl UpstreamUrl {
    /// `https://{host}`: the default upstream of a route.
    pub fn https(host: &str) -> UpstreamUrl {
        UpstreamUrl {
            scheme: Scheme::HTTPS,
            host: host.to_string(),
            port: 443,
            authority: Arc::from(host),
            base_path: String::new(),
        }
    }

    fn parse(value: &str) -> Result<UpstreamUrl, &'static str> {
        let uri: Uri = value.parse().map_err(|_| "not a URL")?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or("must start with https:// or http://")?;
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return Err("scheme must be https or http"),
        };
        let authority = uri.authority().ok_or("has no host")?;
        if authority.as_str().contains('@') {
            return Err("must not carry user:password (use [route.auth])");
        }
        if uri.query().is_some() || value.contains('#') {
            return Err("must not have a query or fragment");
        }
        let host = authority.host().to_ascii_lowercase();
        let port = authority.port_u16().unwrap_or(default_port);
        let authority = if port == default_port {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(UpstreamUrl {
            scheme,
            host,
            port,
            authority: authority.into(),
            base_path,
        })
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub host: HostPattern,
    /// `None`: `https://{the request's host}` (the default for `upstream`).
    pub upstream: Option<UpstreamUrl>,
    pub listen: Option<SocketAddr>,
    pub path_prefix: Option<String>,
    /// Added when the client did not send them.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub auth: AuthConfig,
    /// `[[route.allow]]`: empty = every request is forwarded.
    pub allow: Vec<AllowRule>,
    /// `[route.tls]`: the client certificate for mutual TLS upstream.
    pub tls: Option<ClientTls>,
}

impl RouteConfig {
    /// How problems name this route.
    pub(crate) fn scope(&self) -> String {
        format!("route \"{}\"", self.name)
    }

    /// Where a request for `host` (empty when unknown) with `path` and
    /// raw `query` goes: the route's upstream with its base path joined, or
    /// `https://{host}` when the route has none. `None` when neither says.
    pub(crate) fn target(&self, host: &str, path: &str, query: Option<&str>) -> Option<Target> {
        let (scheme, authority, base_path) = match &self.upstream {
            Some(u) => (u.scheme.clone(), u.authority.clone(), u.base_path.as_str()),
            // Lowercased: one pool entry (and `Host`, SNI) per host, however
            // clients spell it.
            None if !host.is_empty() => (Scheme::HTTPS, lowercase(host), ""),
            None => return None,
        };
        Some(Target::joined(
            scheme,
            authority,
            &[base_path, path],
            query.unwrap_or(""),
        ))
    }

    pub(super) fn from_file(index: usize, raw: FileRoute, ctx: &mut Ctx) -> Option<RouteConfig> {
        ctx.set_scope(format!("route #{} (\"{}\")", index + 1, raw.name));
        let name = ctx.expand_nonempty("name", &raw.name);
        if let Some(name) = &name {
            ctx.set_scope(format!("route \"{name}\""));
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                ctx.problem("name", "use letters, digits, '-', '_' and '.' only");
            }
        }
        let host = ctx
            .expand_nonempty("host", &raw.host)
            .and_then(|h| host_pattern(ctx, &h));
        let upstream = match ctx.expand_opt("upstream", raw.upstream.as_deref()) {
            Some(None) => match &host {
                Some(HostPattern::Exact(h)) => Some(Some(UpstreamUrl::https(h))),
                _ => Some(None),
            },
            Some(Some(value)) => match UpstreamUrl::parse(&value) {
                Ok(u) => Some(Some(u)),
                Err(why) => {
                    ctx.problem("upstream", why);
                    None
                }
            },
            None => None,
        };
        let listen = match raw.listen.as_deref() {
            None => Some(None),
            Some(l) => ctx.socket_addr("listen", l).map(Some),
        };
        let path_prefix = match ctx.expand_opt("path_prefix", raw.path_prefix.as_deref()) {
            Some(Some(p)) if !p.starts_with('/') => {
                ctx.problem("path_prefix", "must start with '/'");
                None
            }
            Some(Some(p)) if p == "/" => Some(None),
            other => other,
        };
        let mut headers = Vec::new();
        for (k, v) in &raw.headers {
            let key = format!("headers.\"{k}\"");
            let Some(value) = ctx.expand(&key, v) else {
                continue;
            };
            match (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(value),
            ) {
                (Ok(name), _) if is_hop_by_hop(&name) || name == http::header::HOST => {
                    ctx.problem(&key, "hop-by-hop and Host headers cannot be set")
                }
                (Ok(name), Ok(value)) => headers.push((name, value)),
                (Err(_), _) => ctx.problem(&key, "not a valid header name"),
                (_, Err(_)) => ctx.problem(&key, "not a valid header value"),
            }
        }
        let auth = match raw.auth {
            None => Some(AuthConfig::None),
            Some(a) => AuthConfig::from_file(a, ctx),
        };
        let allow = allow::rules(raw.allow, ctx);
        let tls = match &raw.tls {
            None => Some(None),
            Some(t) => match client_tls(
                ctx,
                "tls.",
                t.client_cert.as_deref(),
                t.client_key.as_deref(),
            ) {
                Some(None) => {
                    ctx.problem("tls", "give client_cert and client_key");
                    None
                }
                other => other,
            },
        };
        if let (Some(Some(_)), Some(Some(u))) = (&tls, &upstream) {
            if u.scheme != Scheme::HTTPS {
                ctx.problem("tls", "a client certificate needs an https:// upstream");
            }
        }
        // On its own listener a route takes any Host; without `upstream`,
        // a wildcard route would send its credential to whatever host the
        // client names.
        if let (Some(HostPattern::Wildcard(_)), Some(None), Some(Some(_))) =
            (&host, &upstream, &listen)
        {
            ctx.problem(
                "listen",
                "a wildcard route with its own listener needs an `upstream`",
            );
            return None;
        }
        Some(RouteConfig {
            name: name?,
            host: host?,
            upstream: upstream?,
            listen: listen?,
            path_prefix: path_prefix?,
            headers,
            auth: auth?,
            allow: allow?,
            tls: tls?,
        })
    }
}

fn host_pattern(ctx: &mut Ctx, host: &str) -> Option<HostPattern> {
    let host = host.to_ascii_lowercase();
    let (wild, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host.as_str()),
    };
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid {
        ctx.problem(
            "host",
            "must be a DNS name (e.g. api.example.com or *.example.com), without scheme, port or path",
        );
        return None;
    }
    Some(if wild {
        HostPattern::Wildcard(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_string())
    })
}

/// `host` in lowercase, allocated once either way.
fn lowercase(host: &str) -> Arc<str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Arc::from(host.to_ascii_lowercase())
    } else {
        Arc::from(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let u = UpstreamUrl::parse("https://API.example.com:8443/base/").unwrap();
        assert_eq!(&*u.authority, "api.example.com:8443");
        assert_eq!(u.base_path, "/base");
        let u = UpstreamUrl::parse("http://consumer.kouponmedia.com").unwrap();
        assert_eq!(
            (u.port, &*u.authority, u.base_path.as_str()),
            (80, "consumer.kouponmedia.com", "")
        );
        assert!(UpstreamUrl::parse("ftp://x").is_err());
        assert!(UpstreamUrl::parse("https://u:p@x").is_err());
        assert!(UpstreamUrl::parse("https://x/?a=b").is_err());
        assert!(UpstreamUrl::parse("x.example.com").is_err());
    }
}
