//! `source = "file"`: the token is read from a file and re-read when the
//! file changes (rotated by another program), without a restart.

mod support;

use http::StatusCode;
use sidekey::app::RunningProxy;
use sidekey::Config;
use support::*;

async fn start(env: &TestEnv, upstream: &StandIn) -> RunningProxy {
    let token_file = env.dir().join("api.token");
    let toml = format!(
        r#"[proxy]
listen = "127.0.0.1:0"

[[route]]
name = "files"
host = "files.example.test"
upstream = "{upstream}"
[route.auth]
kind = "header"
name = "X-Api-Key"
[route.auth.token]
source = "file"
path = {path}
"#,
        upstream = upstream.url(),
        path = toml_str(&token_file.display().to_string()),
    );
    let config =
        Config::parse(&toml, env.dir(), &|_| None).unwrap_or_else(|e| panic!("config: {e}"));
    RunningProxy::start(config).await.expect("sidekey starts")
}

/// Replaces the file the way rotation tools do: a new file renamed over it.
fn rotate(env: &TestEnv, token: &str) {
    let tmp = env.write_file("api.token.new", format!("{token}\n"));
    std::fs::rename(tmp, env.dir().join("api.token")).expect("rename");
}

#[tokio::test]
async fn a_rotated_token_file_is_picked_up_without_a_restart() {
    let env = TestEnv::new();
    env.write_file("api.token", "file-token-one\n");
    let upstream = StandIn::ok(None);
    let proxy = start(&env, &upstream).await;
    let url = "http://files.example.test/v1/list";

    let resp = get(proxy.proxy_addr(), url).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = upstream.last_request().expect("a request");
    assert_eq!(seen.header("x-api-key"), Some("file-token-one"));

    rotate(&env, "file-token-two");
    wait_until("the new token is used", WAIT_TIMEOUT, || async {
        get(proxy.proxy_addr(), url).await;
        upstream
            .last_request()
            .is_some_and(|r| r.header("x-api-key") == Some("file-token-two"))
    })
    .await;

    // The file is the source of truth: once it is gone, there is no token.
    std::fs::remove_file(env.dir().join("api.token")).expect("remove");
    wait_until("a missing file gives 503", WAIT_TIMEOUT, || async {
        get(proxy.proxy_addr(), url).await.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let resp = get(proxy.proxy_addr(), url).await;
    let json = body_json(&resp);
    assert_eq!(json["route"], "files");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not exist")),
        "{json}"
    );
}
