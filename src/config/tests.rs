//! Config validation tests: the seed routes, variable expansion, and every
//! problem reported at once with its route and key.

use std::collections::HashMap;
use std::path::Path;

use super::*;

const SEED: &str = include_str!("../../config/examples/seed-routes.toml");

fn seed_env() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("COPILOT_CLIENT_ID", "ABABABABQQIRZ"),
        ("COPILOT_CLIENT_SECRET", "k9H2Nd3T5j5EW2Fu160l11Hal3x3oa"),
        (
            "KOUPON_API_KEY",
            "6348256714038520009a57d1d2-5188-457b-854b-86aafea65fc5",
        ),
        ("KOUPON_SECRET_KEY", "4623B7B8-18A6-4B2C-B2C1-18157F5C4AFE"),
        ("COPERNICA_CLIENT_KEY", "client-key"),
        ("COPERNICA_CLIENT_SECRET", "client-secret"),
        ("INVOCA_NETWORK_ID", "42"),
        ("INVOCA_ADVERTISER_ID", "354"),
        ("INVOCA_EMAIL_URLENCODED", "sy%40young.com"),
        ("INVOCA_USERNAME", "user"),
        ("INVOCA_PASSWORD", "pass"),
        ("ALGONOMY_API_HOST", "b2b.algonomy.example"),
        ("ALGONOMY_TENANT_HASH", "abcd1234efgh5678ijkl9012mnop3456"),
        ("ALGONOMY_OAUTH_KEY_SECRET", "4faeaf752ee40a0f"),
    ])
}

fn parse_with(text: &str, env: &HashMap<&str, &str>) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/nonexistent"), &|name| {
        env.get(name).map(|v| v.to_string())
    })
}

#[test]
fn the_seed_routes_mean_what_their_comments_say() {
    let config = parse_with(SEED, &seed_env()).expect("seed routes are valid");
    assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        config.proxy.admin.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9901")
    );
    assert!(
        config.proxy.extra_roots.is_empty(),
        "ca_file = \"\" means none"
    );
    assert_eq!(config.proxy.unmatched, Unmatched::Reject);
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["copilot", "koupon", "copernica", "invoca", "algonomy"]
    );

    let copilot = config.route("copilot").unwrap();
    assert_eq!(
        copilot.listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:8101")
    );
    assert_eq!(
        copilot.upstream.as_ref().unwrap().to_string(),
        "https://api.copilot.cx"
    );
    assert!(matches!(copilot.auth, AuthConfig::Basic { .. }));

    let koupon = config.route("koupon").unwrap();
    assert_eq!(
        koupon.upstream.as_ref().unwrap().to_string(),
        "http://consumer.kouponmedia.com"
    );
    let AuthConfig::SignedUrl(s) = &koupon.auth else {
        panic!("koupon is signed_url")
    };
    assert_eq!(
        (
            s.key_param.as_str(),
            s.timestamp_param.as_str(),
            s.signature_param.as_str(),
            s.algorithm
        ),
        (
            "identifier",
            "timestamp",
            "authSignature",
            SignAlgorithm::HmacSha1
        )
    );

    let copernica = config.route("copernica").unwrap();
    assert_eq!(
        copernica.upstream.as_ref().unwrap().to_string(),
        "https://api.copernica.com"
    );
    let Some(TokenConfig::OAuth2Code(code)) = copernica.auth.token() else {
        panic!("oauth2_code")
    };
    assert_eq!(code.token_request, TokenRequestStyle::GetQuery);
    assert_eq!(
        code.redirect_uri.to_string(),
        "http://127.0.0.1:8765/callback"
    );
    assert!(code.store.ends_with("copernica.token"));
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.scope == "route \"copernica\"" && w.key == "auth.token.store"),
        "a store authorize has not written yet is a warning: {:?}",
        config.warnings
    );

    let invoca = config.route("invoca").unwrap();
    let Some(TokenConfig::Endpoint(e)) = invoca.auth.token() else {
        panic!("endpoint")
    };
    assert!(e.one_time);
    assert_eq!(e.method, http::Method::POST);
    assert_eq!(
        e.url.to_string(),
        "https://invoca.net/api/2014-01-01/42/advertisers/354/sy%40young.com/create_access_token.json"
    );
    assert_eq!(e.token_pointer, "/token");

    let algonomy = config.route("algonomy").unwrap();
    assert_eq!(
        algonomy.host,
        HostPattern::Exact("b2b.algonomy.example".into())
    );
    let Some(TokenConfig::Endpoint(e)) = algonomy.auth.token() else {
        panic!("endpoint")
    };
    assert_eq!(e.ttl, Some(std::time::Duration::from_secs(15 * 60)));
    assert_eq!(e.refresh_before, std::time::Duration::from_secs(60));
    let Some(TokenBody::Json(json)) = &e.body else {
        panic!("json body")
    };
    assert_eq!(
        json.0,
        serde_json::json!({"resource": ["basic", "segments"], "validity": 15})
    );
    let headers: Vec<&str> = e.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(headers, ["oauth_key_secret", "tenant_hash"]);
}

#[test]
fn every_unset_variable_is_reported_with_its_route() {
    let mut env = seed_env();
    env.remove("COPILOT_CLIENT_SECRET");
    env.remove("ALGONOMY_API_HOST");
    let err = parse_with(SEED, &env).unwrap_err();
    let problems = err.problems();
    assert!(problems.contains(
        &"route \"copilot\": auth.password: environment variable COPILOT_CLIENT_SECRET is not set".to_string()
    ), "{problems:?}");
    assert!(problems
        .iter()
        .any(|p| p.starts_with("route \"algonomy\": host:") && p.contains("ALGONOMY_API_HOST")));
    assert!(problems
        .iter()
        .any(|p| p.starts_with("route \"algonomy\": auth.token.url:")));
}

#[test]
fn problems_never_print_values() {
    let text = r#"
[[route]]
name = "a"
host = "api.example.com"
upstream = "https://user:hunter2@api.example.com"
[route.auth]
kind = "basic"
username = "me"
password = ""
"#;
    let err = parse_with(text, &HashMap::new()).unwrap_err().to_string();
    assert!(err.contains("route \"a\": upstream:"), "{err}");
    assert!(
        err.contains("route \"a\": auth.password: must not be empty"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn duplicates_are_errors() {
    let text = r#"
[proxy]
listen = "127.0.0.1:8080"
admin = "127.0.0.1:8080"
[[route]]
name = "a"
host = "api.example.com"
listen = "127.0.0.1:9000"
[[route]]
name = "a"
host = "API.example.com"
listen = "127.0.0.1:9000"
[[route]]
name = "c"
host = "api.example.com"
path_prefix = "/v2"
"#;
    let problems = parse_with(text, &HashMap::new()).unwrap_err().problems();
    let expect = [
        "proxy: admin: address 127.0.0.1:8080 is also proxy.listen",
        "route \"a\": name: another route has the same name",
        "route \"a\": host: route \"a\" already matches host api.example.com with the same path_prefix",
        "route \"a\": listen: address 127.0.0.1:9000 is also route \"a\" listen",
    ];
    for e in expect {
        assert!(
            problems.iter().any(|p| p == e),
            "missing {e:?} in {problems:?}"
        );
    }
    assert_eq!(problems.len(), expect.len(), "{problems:?}");
}

#[test]
fn bad_values_name_their_keys() {
    let text = r#"
[proxy]
listen = "localhost"
connect_timeout = "5 parsecs"
unmatched = "allow"
workers = 0
underscores_in_headers = "fold"
max_request_body = "lots"
[[route]]
name = "bad name"
host = "https://api.example.com"
path_prefix = "v1"
[route.headers]
"Connection" = "close"
[route.auth]
kind = "signed_url"
key = "k"
secret = "s"
algorithm = "md5"
"#;
    let problems = parse_with(text, &HashMap::new()).unwrap_err().problems();
    for key in [
        "proxy: listen:",
        "proxy: connect_timeout:",
        "proxy: unmatched:",
        "proxy: workers:",
        "proxy: underscores_in_headers:",
        "proxy: max_request_body:",
        "route \"bad name\": name:",
        "route \"bad name\": host:",
        "route \"bad name\": path_prefix:",
        "route \"bad name\": headers.\"Connection\":",
        "route \"bad name\": auth.algorithm:",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(key)),
            "missing {key} in {problems:?}"
        );
    }
}

#[test]
fn a_token_url_cannot_carry_credentials() {
    let text = r#"
[[route]]
name = "cdp"
host = "api.example.com"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {token}"
[route.auth.token]
source = "endpoint"
url = "https://svc:pa55@auth.example.com/token"
"#;
    let problems = parse_with(text, &HashMap::new()).unwrap_err().problems();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("route \"cdp\": auth.token.url:") && p.contains("basic")),
        "{problems:?}"
    );
    assert!(problems.iter().all(|p| !p.contains("pa55")), "{problems:?}");
}

#[test]
fn syntax_errors_have_a_position() {
    let err = parse_with("[proxy\nlisten = 1", &HashMap::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn wildcard_hosts_default_to_the_request_host() {
    let text = "[[route]]\nname = \"w\"\nhost = \"*.Example.com\"\n";
    let config = parse_with(text, &HashMap::new()).unwrap();
    assert_eq!(
        config.routes[0].host,
        HostPattern::Wildcard(".example.com".into())
    );
    assert!(config.routes[0].upstream.is_none());
    assert_eq!(
        config.routes[0]
            .target("a.example.com", "/v1", Some("q=1"))
            .map(|t| t.url())
            .as_deref(),
        Some("https://a.example.com/v1?q=1")
    );
    assert!(
        config.routes[0].target("", "/v1", None).is_none(),
        "no upstream and no host: nowhere to go"
    );
}

#[test]
fn a_wildcard_route_on_its_own_listener_must_name_its_upstream() {
    let route = |upstream: &str| {
        format!(
            "[[route]]\nname = \"w\"\nhost = \"*.w.test\"\nlisten = \"127.0.0.1:0\"\n{upstream}[route.auth]\nkind = \"header\"\nname = \"X-Key\"\ntoken = \"k\"\n"
        )
    };
    let err = parse_with(&route(""), &HashMap::new())
        .expect_err("the listener takes any Host: the credential would follow it");
    let problems = err.problems().join("\n");
    assert!(problems.contains("needs an `upstream`"), "{problems}");
    parse_with(
        &route("upstream = \"https://api.w.test\"\n"),
        &HashMap::new(),
    )
    .expect("with an upstream it is fine");
}

#[test]
fn a_secret_written_as_a_number_is_not_echoed() {
    for value in ["987654321012", "3.14159"] {
        let text = format!(
            "[[route]]\nname = \"a\"\nhost = \"api.example.com\"\n[route.auth]\nkind = \"basic\"\nusername = \"me\"\npassword = {value}\n"
        );
        let err = parse_with(&text, &HashMap::new()).unwrap_err().to_string();
        assert!(err.contains("TOML parse error"), "{err}");
        assert!(err.contains("[REDACTED]"), "{err}");
        assert!(!err.contains(value), "{err}");
    }
}

const BEYOND: &str = include_str!("../../config/examples/beyond-routes.toml");

/// The variables `beyond-routes.toml` names, with the partner route's
/// client certificate and token command written into `dir`.
fn beyond_env(dir: &Path) -> HashMap<&'static str, String> {
    write_partner_cert(dir);
    let command = dir.join("partner-token");
    std::fs::write(
        &command,
        "#!/bin/sh\necho '{\"token\":\"t\",\"expires_in\":60}'\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&command, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    HashMap::from([
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE".to_string()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string(),
        ),
        ("PARTNER_CERT_DIR", dir.display().to_string()),
        ("PARTNER_TOKEN_CMD", command.display().to_string()),
    ])
}

/// `beyond-routes.toml` parsed with `env`.
fn parse_beyond(env: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
    let env: HashMap<&str, &str> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    parse_with(BEYOND, &env)
}

#[test]
fn the_beyond_routes_mean_what_their_comments_say() {
    let dir = tempfile::tempdir().unwrap();
    let config = parse_beyond(&beyond_env(dir.path())).expect("beyond routes are valid");
    let s3 = config.route("s3").unwrap();
    let AuthConfig::AwsSigV4(aws) = &s3.auth else {
        panic!("s3 is not aws_sigv4: {:?}", s3.auth);
    };
    assert_eq!(
        (aws.region.as_str(), aws.service.as_str()),
        ("eu-west-1", "s3")
    );
    assert_eq!(aws.payload, PayloadSigning::Unsigned);
    assert_eq!(aws.max_signed_body, 8 << 20);
    assert!(aws.session_token.is_none(), "\"\" means none");

    let mut with_token = beyond_env(dir.path());
    with_token.insert("AWS_SESSION_TOKEN", "tok".to_string());
    let config_tok = parse_beyond(&with_token).unwrap();
    let AuthConfig::AwsSigV4(aws) = &config_tok.route("s3").unwrap().auth else {
        unreachable!()
    };
    assert!(aws.session_token.is_some());

    let partner = config.route("partner").unwrap();
    assert_eq!(partner.allow.len(), 2);
    assert_eq!(
        partner.allow[0],
        AllowRule::new(&["GET"], &["/v1/orders/*", "/v1/catalog/**"]).unwrap()
    );
    assert_eq!(
        partner.allow[1],
        AllowRule::new(&["POST"], &["/v1/orders"]).unwrap()
    );
}

#[test]
fn sigv4_and_allow_problems_name_route_and_key_not_value() {
    let text = r#"
[[route]]
name = "aws"
host = "x.amazonaws.com"
[[route.allow]]
methods = []
[[route.allow]]
paths = ["v1/no-slash"]
[[route.allow]]
[route.auth]
kind = "aws_sigv4"
access_key_id = "AKIA-NOT/VALID"
secret_access_key = "SECRETVALUE123"
region = "EU West"
service = "s3"
payload = "maybe"
max_signed_body = "lots"
"#;
    let problems = parse_with(text, &HashMap::new())
        .expect_err("invalid")
        .problems()
        .join("\n");
    for key in [
        "allow[1].methods",
        "allow[2].paths",
        "allow[3]",
        "auth.access_key_id",
        "auth.region",
        "auth.payload",
        "auth.max_signed_body",
    ] {
        assert!(problems.contains(key), "{key} in:\n{problems}");
    }
    assert!(problems.contains("route \"aws\""), "{problems}");
    assert!(!problems.contains("SECRETVALUE123"), "{problems}");
}

#[test]
fn the_beyond_routes_load_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let config = parse_beyond(&beyond_env(dir.path())).expect("beyond routes are valid");
    let warnings: Vec<String> = config.warnings.iter().map(|w| w.to_string()).collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// Writes a client certificate and its key (mode 0600) as the partner
/// route names them, into `dir`.
fn write_partner_cert(dir: &Path) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("partner-client.pem"), cert.pem()).unwrap();
    let key_path = dir.join("partner-client.key");
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[test]
fn the_contract_partner_route_and_upstream_proxy_mean_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = beyond_env(dir.path());
    env.insert(
        "CORP_PROXY",
        "http://svc%40corp:s3cret@proxy.corp.example:3128".to_string(),
    );
    let config = parse_beyond(&env).unwrap_or_else(|e| panic!("{e}"));
    let proxy = config.proxy.upstream_proxy.as_ref().expect("a proxy");
    assert_eq!(
        (proxy.host.as_str(), proxy.port),
        ("proxy.corp.example", 3128)
    );
    assert!(!proxy.applies_to("internal.example"));
    assert!(!proxy.applies_to("git.corp.example"));
    assert!(proxy.applies_to("api.partner.example"));
    let partner = config.route("partner").expect("the partner route");
    let tls = partner.tls.as_ref().expect("[route.tls]");
    assert_eq!(tls.key, dir.path().join("partner-client.key"));
    match partner.auth.token() {
        Some(TokenConfig::Exec(e)) => {
            assert_eq!(e.program, dir.path().join("partner-token"));
            assert_eq!(e.args.len(), 2);
            assert_eq!(e.token_pointer.as_deref(), Some("/token"));
            assert_eq!(e.expires_in_pointer.as_deref(), Some("/expires_in"));
            assert_eq!(e.timeout, std::time::Duration::from_secs(10));
            assert_eq!(e.refresh_before, std::time::Duration::from_secs(60));
        }
        other => panic!("not an exec source: {other:?}"),
    }
    // `check` names the proxy, never its user or password.
    let shown = crate::redact::describe_upstream_proxy(proxy);
    assert!(shown.contains("proxy.corp.example:3128"), "{shown}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("svc"),
        "{shown}"
    );

    // CORP_PROXY unset: "" means no proxy.
    env.remove("CORP_PROXY");
    let config = parse_beyond(&env).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.proxy.upstream_proxy.is_none());

    // PARTNER_TOKEN_CMD unset: `partner-token` is not installed here, a
    // warning and not an error.
    env.remove("PARTNER_TOKEN_CMD");
    let config = parse_beyond(&env).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        config.warnings.iter().any(|w| {
            let w = w.to_string();
            w.contains("route \"partner\"")
                && w.contains("auth.token.command")
                && w.contains("partner-token")
        }),
        "{:?}",
        config.warnings
    );
}

#[test]
fn the_partner_route_needs_its_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = beyond_env(dir.path());
    env.insert("PARTNER_CERT_DIR", "/nonexistent/certs".to_string());
    let problems = parse_beyond(&env).unwrap_err().problems();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("route \"partner\"") && p.contains("tls.client_cert")),
        "{problems:?}"
    );
}

#[test]
fn every_token_endpoint_kind_takes_a_client_certificate_and_identities_are_shared() {
    let dir = tempfile::tempdir().unwrap();
    write_partner_cert(dir.path());
    let tls = "client_cert = \"partner-client.pem\"\nclient_key = \"partner-client.key\"\n";
    let text = format!(
        r#"
[[route]]
name = "endpoint"
host = "a.example"
[route.tls]
{tls}[route.auth]
kind = "query"
param = "t"
[route.auth.token]
source = "endpoint"
url = "https://auth.example/token"
{tls}
[[route]]
name = "cc"
host = "b.example"
[route.auth]
kind = "query"
param = "t"
[route.auth.token]
source = "oauth2_client_credentials"
token_url = "https://auth.example/token"
client_id = "id"
client_secret = "secret"
{tls}
[[route]]
name = "code"
host = "c.example"
[route.auth]
kind = "query"
param = "t"
[route.auth.token]
source = "oauth2_code"
authorize_url = "https://auth.example/authorize"
token_url = "https://auth.example/token"
client_id = "id"
client_secret = "secret"
redirect_uri = "http://127.0.0.1:8765/callback"
store = "code.token"
{tls}"#
    );
    let config = Config::parse(&text, dir.path(), &|_| None).unwrap_or_else(|e| panic!("{e}"));
    for route in &config.routes {
        assert!(route.auth.token_client_tls().is_some(), "{}", route.name);
    }
    // One certificate used four times is one identity (one TLS config,
    // one pool).
    assert_eq!(config.client_identities().len(), 1);
}

#[test]
fn leak_path_limits_have_safe_defaults_and_parse() {
    let defaults = parse_with("", &HashMap::new()).unwrap().proxy;
    assert_eq!(defaults.underscores, crate::config::Underscores::Drop);
    assert_eq!(defaults.max_request_body, 0, "no limit by default");
    assert_eq!(defaults.pool_max_idle_per_host, 64);
    let text = r#"
[proxy]
workers = 3
underscores_in_headers = "reject"
max_request_body = "10MiB"
pool_max_idle_per_host = 8
"#;
    let proxy = parse_with(text, &HashMap::new()).unwrap().proxy;
    assert_eq!(proxy.underscores, crate::config::Underscores::Reject);
    assert_eq!(proxy.max_request_body, 10 << 20);
    assert_eq!(
        proxy.pool_max_idle_per_thread(),
        3,
        "8 over 3 threads, rounded up"
    );
}
