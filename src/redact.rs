//! Redacted views of a config for `sidekey check` and for logs: names,
//! hosts, URLs without their query, parameter and header names, never a
//! secret value.

use std::fmt::Write;

use http::Uri;

use crate::config::{
    AllowRule, AuthConfig, ClientTls, InterceptSettings, PayloadSigning, RouteConfig, TokenBody,
    TokenConfig, UpstreamProxy,
};

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

/// `[proxy.shared_cache]`, as `check` prints it: where Redis is, TLS or
/// not, the key prefix and the timeout. Never the password or the key.
pub fn describe_shared_cache(shared: &crate::config::SharedCacheSettings) -> String {
    format!(
        "shared cache: {}, key_prefix {}, timeout {}, tokens sealed with AES-256-GCM",
        shared.address(),
        shared.key_prefix,
        humantime::format_duration(shared.timeout)
    )
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

/// `upstream_proxy`, as `check` prints it: where it is, whether it has a
/// credential (never the user or password), and what bypasses it.
pub fn describe_upstream_proxy(proxy: &UpstreamProxy) -> String {
    let mut out = format!(
        "upstream proxy: http://{}{}",
        if proxy.authorization.is_some() {
            "[REDACTED]@"
        } else {
            ""
        },
        proxy.address()
    );
    if !proxy.bypass.is_empty() {
        let names: Vec<String> = proxy.bypass.iter().map(|b| b.to_string()).collect();
        let _ = write!(out, ", direct to {}", names.join(", "));
    }
    out
}

/// A client certificate: its file, subject and expiry (never the key).
fn describe_client_tls(tls: &ClientTls) -> String {
    format!(
        "client certificate {} ({}, expires {})",
        tls.cert.display(),
        tls.identity.subject(),
        humantime::format_rfc3339_seconds(tls.identity.not_after())
    )
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
    if let Some(tls) = &route.tls {
        let _ = write!(out, "\n    mutual TLS: {}", describe_client_tls(tls));
    }
    let _ = write!(out, "\n    auth: {}", describe_auth(&route.auth));
    for rule in &route.allow {
        let _ = write!(out, "\n    allow: {}", describe_allow(rule));
    }
    if let Some(tls) = route.auth.token_client_tls() {
        let _ = write!(
            out,
            "\n    token endpoint mutual TLS: {}",
            describe_client_tls(tls)
        );
    }
    out
}

/// One `[[route.allow]]` rule: `GET, HEAD /v1/orders/*, /v1/catalog/**`.
fn describe_allow(rule: &AllowRule) -> String {
    let methods = match &rule.methods {
        Some(list) => list
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        None => "any method".to_string(),
    };
    let paths = match &rule.paths {
        Some(list) => list
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        None => "any path".to_string(),
    };
    format!("{methods} {paths}")
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
        // The access key ID is not secret (AWS shows it in logs and
        // errors), but it names an account: kept out like the rest.
        AuthConfig::AwsSigV4(a) => format!(
            "aws_sigv4 region {} service {}, payload {}, access key [REDACTED], secret key [REDACTED]{}",
            a.region,
            a.service,
            match a.payload {
                PayloadSigning::Signed =>
                    format!("signed (bodies up to {} bytes)", a.max_signed_body),
                PayloadSigning::Unsigned => "unsigned (bodies stream)".to_string(),
            },
            if a.session_token.is_some() {
                ", session token [REDACTED]"
            } else {
                ""
            }
        ),
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
        // The program, never its arguments or environment values (a
        // `${VAR}` may have put a secret there).
        TokenConfig::Exec(e) => {
            let output = match (&e.token_pointer, &e.expires_in_pointer, e.ttl) {
                (Some(t), Some(x), _) => format!("JSON, token at {t}, lifetime at {x}"),
                (Some(t), None, Some(ttl)) => {
                    format!(
                        "JSON, token at {t}, ttl {}",
                        humantime::format_duration(ttl)
                    )
                }
                (Some(t), None, None) => format!("JSON, token at {t}, kept until rejected"),
                (None, _, Some(ttl)) => {
                    format!("one line, ttl {}", humantime::format_duration(ttl))
                }
                (None, _, None) => "one line, kept until rejected".to_string(),
            };
            format!(
                "exec {} ({} argument{}{}), {output}, timeout {}, refreshed {} before expiry",
                e.program.display(),
                e.args.len(),
                if e.args.len() == 1 { "" } else { "s" },
                if e.env.is_empty() {
                    String::new()
                } else {
                    let names: Vec<&str> = e.env.iter().map(|(n, _)| n.as_str()).collect();
                    format!(", env {}", names.join(", "))
                },
                humantime::format_duration(e.timeout),
                humantime::format_duration(e.refresh_before),
            )
        }
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
    fn sigv4_secrets_are_not_shown() {
        let auth = AuthConfig::AwsSigV4(crate::config::AwsSigV4Config {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".to_string().into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
                .to_string()
                .into(),
            session_token: Some("SESSIONTOKEN77".to_string().into()),
            region: "eu-west-1".into(),
            service: "s3".into(),
            payload: PayloadSigning::Unsigned,
            max_signed_body: 1024,
        });
        let shown = describe_auth(&auth);
        assert!(
            shown.contains("eu-west-1") && shown.contains("s3"),
            "{shown}"
        );
        for secret in ["AKIAIOSFODNN7EXAMPLE", "EXAMPLEKEY", "SESSIONTOKEN77"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let debug = format!("{auth:?}");
        for secret in ["EXAMPLEKEY", "SESSIONTOKEN77"] {
            assert!(!debug.contains(secret), "{debug}");
        }
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
