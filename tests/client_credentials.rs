//! `oauth2_client_credentials` tokens (RFC 6749 4.4) against a stand-in
//! OAuth2 server: `expires_in` honoured (short tokens refreshed in the
//! background), client authentication by Basic (RFC 6749 2.3.1 encoding)
//! or in the form, `scope` sent.

mod support;

use std::time::Duration;

use http::StatusCode;
use sidekey::app::RunningProxy;
use sidekey::Config;
use support::oauth2::{ClientAuth, AUTH_HOST};
use support::*;

// A colon and a space: RFC 6749 2.3.1 form-encodes both before Basic.
const CLIENT_ID: &str = "svc:reports";
const CLIENT_SECRET: &str = "p@ss w0rd/cc";

async fn start(
    env: &TestEnv,
    server: &OAuth2Server,
    auth: &str,
    scope: Option<&str>,
) -> RunningProxy {
    let scope = scope.map_or(String::new(), |s| format!("scope = \"{s}\"\n"));
    let toml = format!(
        r#"[proxy]
listen = "127.0.0.1:0"
ca_file = {ca}
[proxy.connect_to]
{connect_to}

[[route]]
name = "reports"
host = "{AUTH_HOST}"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {{token}}"
[route.auth.token]
source = "oauth2_client_credentials"
token_url = "https://{AUTH_HOST}/oauth/token"
client_id = "${{CC_CLIENT_ID}}"
client_secret = "${{CC_CLIENT_SECRET}}"
client_auth = "{auth}"
{scope}"#,
        ca = toml_str(&env.ca_file().display().to_string()),
        connect_to = server.connect_to_toml(),
    );
    let lookup = |name: &str| -> Option<String> {
        match name {
            "CC_CLIENT_ID" => Some(CLIENT_ID.to_string()),
            "CC_CLIENT_SECRET" => Some(CLIENT_SECRET.to_string()),
            _ => None,
        }
    };
    let config = Config::parse(&toml, env.dir(), &lookup).unwrap_or_else(|e| panic!("config: {e}"));
    RunningProxy::start(config).await.expect("sidekey starts")
}

fn url(path: &str) -> String {
    format!("http://{AUTH_HOST}{path}")
}

#[tokio::test]
async fn expires_in_is_honoured_and_short_tokens_are_refreshed_in_the_background() {
    let env = TestEnv::new();
    // Tokens live 2 s; refresh_before (default 60 s) is longer, so sidekey
    // refreshes at half the lifetime.
    let server = OAuth2Server::spawn(
        &env.ca,
        CLIENT_ID,
        CLIENT_SECRET,
        ClientAuth::Basic,
        None,
        2,
    );
    let proxy = start(&env, &server, "basic", None).await;
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_millis(4500) {
        let resp = get(proxy.proxy_addr(), &url("/v1/reports")).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
        // Pacing, not synchronisation.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        server.api_rejections().is_empty(),
        "{:?}",
        server.api_rejections()
    );
    assert!(
        server.token_rejections().is_empty(),
        "{:?}",
        server.token_rejections()
    );
    let mints = server.mints();
    assert!(
        (3..=8).contains(&mints),
        "{mints} tokens over 4.5 s of 2 s tokens"
    );
}

#[tokio::test]
async fn client_authentication_in_the_form_with_a_scope() {
    let env = TestEnv::new();
    let server = OAuth2Server::spawn(
        &env.ca,
        CLIENT_ID,
        CLIENT_SECRET,
        ClientAuth::Form,
        Some("reports:read"),
        3600,
    );
    let proxy = start(&env, &server, "form", Some("reports:read")).await;
    for _ in 0..3 {
        let resp = get(proxy.proxy_addr(), &url("/v1/reports")).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    }
    assert!(
        server.token_rejections().is_empty(),
        "{:?}",
        server.token_rejections()
    );
    assert_eq!(server.mints(), 1);
    let token_request = server
        .requests()
        .into_iter()
        .find(|r| r.path() == "/oauth/token")
        .expect("a token request");
    assert!(!token_request.has_header("authorization"));
}

#[tokio::test]
async fn a_wrong_secret_is_a_503_naming_the_oauth_error() {
    let env = TestEnv::new();
    let server = OAuth2Server::spawn(
        &env.ca,
        CLIENT_ID,
        "another secret",
        ClientAuth::Basic,
        None,
        60,
    );
    let proxy = start(&env, &server, "basic", None).await;
    let resp = get(proxy.proxy_addr(), &url("/v1/reports")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let message = body_json(&resp)["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("HTTP 401 (invalid_client)"), "{message}");
    assert!(!message.contains(CLIENT_SECRET));
}
