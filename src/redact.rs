//! Redacted views of a config for `sidekey check` and for logs: names,
//! hosts, URLs without their query, parameter and header names, never a
//! secret value.

use std::fmt::Write;

use http::Uri;

use crate::config::{AuthConfig, InterceptSettings, RouteConfig, TokenBody, TokenConfig};

/// A URL without userinfo, query or fragment.
pub(crate) fn url_without_query(uri: &Uri) -> String {
    let mut out = String::new();
    if let Some(scheme) = uri.scheme_str() {
        let _ = write!(out, "{scheme}://");
    }
    if let Some(host) = uri.host() {
        out.push_str(host);
    }
    if let Some(port) = uri.port_u16() {
        let _ = write!(out, ":{port}");
    }
    out.push_str(uri.path());
    if uri.query().is_some() {
        out.push_str("?…");
    }
    out
}

/// `[proxy.intercept]`, as `check` prints it: the certificate's path and
/// subject, the listener, the leaf lifetime. Never the key or its path.
pub fn describe_intercept(intercept: &InterceptSettings) -> String {
    let mut out = format!(
        "intercept: CA {} ({}, expires {})",
        intercept.ca_cert.display(),
        intercept.ca.subject(),
        humantime::format_rfc3339_seconds(intercept.ca.not_after())
    );
    match intercept.listen {
        Some(listen) => {
            let _ = write!(out, ", TLS listener {listen}");
        }
        None => out.push_str(", CONNECT only"),
    }
    let _ = write!(
        out,
        ", leaf lifetime {}",
        humantime::format_duration(intercept.leaf_lifetime)
    );
    out
}

/// One route, as `check` prints it.
pub fn describe_route(route: &RouteConfig) -> String {
    let mut out = String::new();
    let upstream = route
        .upstream
        .as_ref()
        .map_or("https://{request host}".to_string(), |u| u.to_string());
    let _ = write!(
        out,
        "route \"{}\": host {} -> {}",
        route.name, route.host, upstream
    );
    if let Some(prefix) = &route.path_prefix {
        let _ = write!(out, ", path_prefix {prefix}");
    }
    if let Some(listen) = route.listen {
        let _ = write!(out, ", listen {listen}");
    }
    if !route.headers.is_empty() {
        let names: Vec<&str> = route.headers.iter().map(|(n, _)| n.as_str()).collect();
        let _ = write!(out, ", adds headers [{}]", names.join(", "));
    }
    let _ = write!(out, "\n    auth: {}", describe_auth(&route.auth));
    out
}

fn describe_auth(auth: &AuthConfig) -> String {
    match auth {
        AuthConfig::None => "none".to_string(),
        AuthConfig::Basic { .. } => "basic (Authorization: Basic [REDACTED])".to_string(),
        AuthConfig::Header {
            name,
            template,
            token,
        } => format!(
            // The template may hold secrets of its own (`${VAR}` expanded
            // beside `{token}`): only whether there is one is shown.
            "header {name}: {} (token: {})",
            if template.is_some() {
                "[REDACTED template]"
            } else {
                "[REDACTED]"
            },
            describe_token(token)
        ),
        AuthConfig::Query { param, token } => {
            format!(
                "query {param}=[REDACTED] (token: {})",
                describe_token(token)
            )
        }
        AuthConfig::SignedUrl(s) => format!(
            "signed_url {}=[REDACTED] {}=<epoch seconds> {}=<{:?}> ",
            s.key_param, s.timestamp_param, s.signature_param, s.algorithm
        )
        .trim_end()
        .to_string(),
    }
}

fn describe_token(token: &TokenConfig) -> String {
    match token {
        TokenConfig::Static(_) => "static [REDACTED]".to_string(),
        TokenConfig::File(path) => format!("file {}", path.display()),
        TokenConfig::Endpoint(e) => {
            let body = match &e.body {
                Some(TokenBody::Json(_)) => ", json body",
                Some(TokenBody::Form(_)) => ", form body",
                None => "",
            };
            let lifetime = match (&e.expires_in_pointer, e.ttl) {
                (Some(p), _) => format!("lifetime at {p}"),
                (None, Some(ttl)) => format!("ttl {}", humantime::format_duration(ttl)),
                (None, None) => "kept until rejected".to_string(),
            };
            format!(
                "endpoint {} {}{}{}, token at {}, {}, {}",
                e.method,
                url_without_query(&e.url),
                if e.basic.is_some() {
                    ", basic auth"
                } else {
                    ""
                },
                body,
                e.token_pointer,
                lifetime,
                if e.one_time {
                    "one-time".to_string()
                } else {
                    format!(
                        "refreshed {} before expiry",
                        humantime::format_duration(e.refresh_before)
                    )
                }
            )
        }
        TokenConfig::OAuth2Code(c) => format!(
            "oauth2_code via {}, store {}",
            url_without_query(&c.token_url),
            c.store.display()
        ),
        TokenConfig::OAuth2ClientCredentials(c) => format!(
            "oauth2_client_credentials via {}",
            url_without_query(&c.token_url)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_query() {
        let uri: Uri = "https://invoca.net/api/x/create_access_token.json?secret=abc"
            .parse()
            .unwrap();
        let shown = url_without_query(&uri);
        assert_eq!(shown, "https://invoca.net/api/x/create_access_token.json?…");
        assert!(!shown.contains("abc"));
    }

    #[test]
    fn a_header_template_is_not_shown() {
        let auth = AuthConfig::Header {
            name: http::header::AUTHORIZATION,
            template: Some("Token token={token}, signature=TEMPLATESECRET9".into()),
            token: TokenConfig::Static("tok".to_string().into()),
        };
        let shown = describe_auth(&auth);
        assert!(shown.starts_with("header authorization: "), "{shown}");
        assert!(!shown.contains("TEMPLATESECRET9"), "{shown}");
        assert!(!shown.contains("tok,"), "{shown}");
    }
}
