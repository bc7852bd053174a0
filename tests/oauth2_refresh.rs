//! `oauth2_code` tokens renewed with their refresh token (RFC 6749 6),
//! against the stand-in OAuth2 server, which rotates refresh tokens and
//! accepts each one once: expired tokens renewed, rotated refresh tokens
//! written back to the store (0600) before their next use, `invalid_grant`
//! turned into "run `sidekey authorize`" (503 and a gauge); with
//! `[proxy.shared_cache]`, three replicas renewing through one Redis never
//! send a refresh token twice.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::StatusCode;
use sidekey::app::RunningProxy;
use sidekey::Config;
use support::harness::{assert_no_foreign_panic, metric, watch_panics};
use support::oauth2::{ClientAuth, AUTH_HOST};
use support::*;

const CLIENT_ID: &str = "web-reports";
const CLIENT_SECRET: &str = "code-s3cret-0c4d";
const CACHE_KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

fn server(env: &TestEnv, expires_in: u64) -> OAuth2Server {
    OAuth2Server::spawn(
        &env.ca,
        CLIENT_ID,
        CLIENT_SECRET,
        ClientAuth::Form,
        None,
        expires_in,
    )
}

/// A store as `authorize` leaves it, its access token long expired.
fn write_store(path: &Path, refresh_token: &str) {
    let text = serde_json::json!({
        "access_token": "expired-long-ago",
        "created_at": 1,
        "expires_at": 1,
        "updated_at_ms": 1000,
        "refresh_token": refresh_token,
    })
    .to_string();
    std::fs::write(path, text).expect("write the store");
}

fn stored(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read the store"))
        .expect("the store is JSON")
}

async fn start(
    env: &TestEnv,
    server: &OAuth2Server,
    store: &Path,
    redis_url: Option<&str>,
) -> RunningProxy {
    watch_panics();
    let shared = redis_url.map_or(String::new(), |url| {
        format!("[proxy.shared_cache]\nurl = \"{url}\"\nencryption_key = \"{CACHE_KEY}\"\ntimeout = \"200ms\"\n")
    });
    let toml = format!(
        r#"[proxy]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
ca_file = {ca}
{shared}[proxy.connect_to]
{connect_to}

[[route]]
name = "reports"
host = "{AUTH_HOST}"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {{token}}"
[route.auth.token]
source = "oauth2_code"
authorize_url = "https://{AUTH_HOST}/authorize"
token_url = "https://{AUTH_HOST}/oauth/token"
token_request = "post_form"
client_id = "{CLIENT_ID}"
client_secret = "${{SECRET}}"
redirect_uri = "http://127.0.0.1:8765/callback"
store = {store}
"#,
        ca = toml_str(&env.ca_file().display().to_string()),
        connect_to = server.connect_to_toml(),
        store = toml_str(&store.display().to_string()),
    );
    let lookup = |name: &str| (name == "SECRET").then(|| CLIENT_SECRET.to_string());
    let config = Config::parse(&toml, env.dir(), &lookup).unwrap_or_else(|e| panic!("config: {e}"));
    RunningProxy::start(config).await.expect("sidekey starts")
}

fn url() -> String {
    format!("http://{AUTH_HOST}/v1/reports")
}

/// Requests for `how_long`, `per_round` at a time over `fleet`; asserts
/// every one is answered 200.
async fn run_for(fleet: &[RunningProxy], how_long: Duration, per_round: usize) -> usize {
    let start = tokio::time::Instant::now();
    let mut sent = 0;
    while start.elapsed() < how_long {
        let mut tasks = Vec::new();
        for i in 0..per_round {
            let addr = fleet[i % fleet.len()].proxy_addr();
            tasks.push(tokio::spawn(async move {
                let resp = get(addr, &url()).await;
                (resp.status(), body_text(&resp))
            }));
        }
        for t in tasks {
            let (status, body) = t.await.expect("request task");
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        sent += per_round;
        // Pacing, not synchronisation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sent
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn an_expired_token_is_renewed_and_each_rotated_refresh_token_is_written_back() {
    let env = TestEnv::new();
    // 2 s tokens, renewed at half their lifetime.
    let server = server(&env, 2);
    let store = env.dir().join("reports.token");
    let first = server.issue_refresh_token();
    write_store(&store, &first);
    let proxy = start(&env, &server, &store, None).await;

    run_for(std::slice::from_ref(&proxy), Duration::from_millis(3500), 2).await;
    assert_eq!(
        server.invalid_grants(),
        0,
        "{:?}",
        server.token_rejections()
    );
    assert!(
        server.api_rejections().is_empty(),
        "{:?}",
        server.api_rejections()
    );
    let refreshes = server.refreshes();
    assert!(
        (3..=6).contains(&refreshes),
        "{refreshes} renewals in 3.5 s of 2 s tokens"
    );
    // The store holds the latest rotated refresh token and access token.
    let doc = stored(&store);
    let refresh = doc["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh, first);
    assert!(server.refresh_tokens().contains(&refresh));
    assert_eq!(
        doc["access_token"].as_str(),
        server.issued().last().map(String::as_str)
    );
    #[cfg(unix)]
    assert_eq!(mode(&store), 0o600);
    assert_eq!(
        metric(&proxy, "sidekey_token_needs_authorize{route=\"reports\"}").await,
        0.0
    );
    assert_no_foreign_panic();
}

#[tokio::test]
async fn invalid_grant_asks_for_authorize_with_a_503_and_a_gauge() {
    let env = TestEnv::new();
    let server = server(&env, 60);
    let store = env.dir().join("reports.token");
    write_store(&store, "a-refresh-token-the-server-never-issued");
    let proxy = start(&env, &server, &store, None).await;

    let resp = get(proxy.proxy_addr(), &url()).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body_json(&resp);
    assert_eq!(body["route"], "reports");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("run `sidekey authorize reports`"),
        "{message}"
    );
    assert!(message.contains("invalid_grant"), "{message}");
    assert!(!message.contains("never-issued"), "{message}");
    assert_eq!(
        metric(&proxy, "sidekey_token_needs_authorize{route=\"reports\"}").await,
        1.0
    );
    // The refused refresh token is not sent again.
    for _ in 0..5 {
        let resp = get(proxy.proxy_addr(), &url()).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(server.invalid_grants(), 1);

    // `authorize` again (a new store): the route recovers.
    let fresh = server.issue_refresh_token();
    write_store(&store, &fresh);
    wait_until(
        "the route serves again",
        Duration::from_secs(10),
        || async { get(proxy.proxy_addr(), &url()).await.status() == StatusCode::OK },
    )
    .await;
    assert_eq!(
        metric(&proxy, "sidekey_token_needs_authorize{route=\"reports\"}").await,
        0.0
    );
    assert_no_foreign_panic();
}

#[tokio::test]
async fn three_replicas_renewing_through_redis_never_send_a_refresh_token_twice() {
    let Some(redis) = RedisServer::start("three_replicas_renewing_through_redis").await else {
        return;
    };
    let env = TestEnv::new();
    // 1 s tokens: a renewal every half second, several lifetimes.
    let server = server(&env, 1);
    let first = server.issue_refresh_token();
    // Each replica has its own copy of the store `authorize` wrote.
    let stores: Vec<PathBuf> = (0..3)
        .map(|i| {
            let p = env.dir().join(format!("replica-{i}.token"));
            write_store(&p, &first);
            p
        })
        .collect();
    let mut fleet = Vec::new();
    for store in &stores {
        fleet.push(start(&env, &server, store, Some(&redis.url())).await);
    }

    run_for(&fleet, Duration::from_millis(4000), 6).await;
    assert_eq!(
        server.invalid_grants(),
        0,
        "{:?}",
        server.token_rejections()
    );
    assert!(
        server.api_rejections().is_empty(),
        "{:?}",
        server.api_rejections()
    );
    let refreshes = server.refreshes();
    assert!(
        (5..=12).contains(&refreshes),
        "{refreshes} renewals in 4 s of 1 s tokens"
    );
    // Nothing in Redis in clear: no access token, no refresh token, no
    // client secret.
    let mut secrets = server.issued();
    secrets.extend(server.refresh_tokens());
    secrets.push(CLIENT_SECRET.to_string());
    let all = redis.all().await;
    assert!(
        all.len() >= 2,
        "the token and the refresh record: {:?}",
        all.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    for (key, value) in &all {
        assert!(key.starts_with("sidekey:reports:"), "{key}");
        for s in &secrets {
            assert!(!key.contains(s.as_str()), "a secret in the key {key}");
            assert!(
                !value.windows(s.len()).any(|w| w == s.as_bytes()),
                "a secret in clear under {key}"
            );
        }
    }
    for proxy in &fleet {
        assert_eq!(
            metric(proxy, "sidekey_shared_cache_errors_total").await,
            0.0
        );
    }
    assert_no_foreign_panic();
}
