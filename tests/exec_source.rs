//! `source = "exec"`: the token is printed by a command. The command here
//! is a small shell script written into the test's directory that counts
//! its runs in a file and prints `gcloud auth print-access-token`-style
//! JSON; a control file makes it fail or hang. The stand-in API accepts
//! only the token of the script's latest run, so a stale or made-up token
//! is refused.

#![cfg(unix)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::StatusCode;
use sidekey::app::RunningProxy;
use support::harness::*;
use support::*;

/// The token command: `$1` is the audience; `RUNS` counts runs,
/// `CONTROL` holds `fail`, `hang` or nothing, `LIFETIME` is the
/// `expires_in` it prints. It writes to stderr every time (never to be
/// logged or shown).
const SCRIPT: &str = r#"#!/bin/sh
n=$(( $(cat "$RUNS" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$RUNS"
echo "partner-cli: using refresh token stderr-secret-7f3a" >&2
case "$(cat "$CONTROL" 2>/dev/null)" in
  fail) exit 2 ;;
  hang) echo $$ > "$RUNS.pid"; exec sleep 60 ;;
esac
printf '{"token":"tok-%s-%s","expires_in":%s,"token_type":"Bearer"}\n' "$1" "$n" "$LIFETIME"
"#;

struct Setup {
    env: TestEnv,
    api: StandIn,
    runs: PathBuf,
    control: PathBuf,
}

impl Setup {
    /// The script and an API stand-in that answers 200 to the token of
    /// the latest run, 401 to any other (and to tokens in `revoked`).
    fn new(revoked: &'static [&'static str]) -> Setup {
        use std::os::unix::fs::PermissionsExt;
        let env = TestEnv::new();
        let script = env.dir().join("partner-token");
        std::fs::write(&script, SCRIPT).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        let runs = env.dir().join("runs");
        let control = env.dir().join("control");
        let runs_seen = runs.clone();
        let api = StandIn::spawn_fn(None, move |req| {
            let latest = format!("Bearer tok-orders-{}", read_runs(&runs_seen));
            match req.header("authorization") {
                Some(auth) if auth == latest && !revoked.iter().any(|r| auth.ends_with(r)) => {
                    json_reply(StatusCode::OK, &serde_json::json!({ "orders": [] }))
                }
                _ => json_reply(
                    StatusCode::UNAUTHORIZED,
                    &serde_json::json!({ "error": "invalid token" }),
                ),
            }
        });
        Setup {
            env,
            api,
            runs,
            control,
        }
    }

    fn toml(&self, lifetime: u64, timeout: &str) -> String {
        proxy_toml(
            &self.env,
            "",
            &[connect_to("api.partner.test:80", self.api.addr())],
        ) + &format!(
            r#"
[[route]]
name = "partner"
host = "api.partner.test"
upstream = "http://api.partner.test"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {{token}}"
[route.auth.token]
source = "exec"
command = ["./partner-token", "orders"]
env = {{ RUNS = {runs}, CONTROL = {control}, LIFETIME = "{lifetime}" }}
token_pointer = "/token"
expires_in_pointer = "/expires_in"
timeout = "{timeout}"
refresh_before = "1s"
"#,
            runs = toml_str(&self.runs.display().to_string()),
            control = toml_str(&self.control.display().to_string()),
        )
    }

    async fn start(&self, lifetime: u64, timeout: &str) -> RunningProxy {
        start_sidekey(&self.env, &self.toml(lifetime, timeout)).await
    }

    fn runs(&self) -> u64 {
        read_runs(&self.runs)
    }

    fn control(&self, mode: &str) {
        std::fs::write(&self.control, mode).unwrap();
    }
}

fn read_runs(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

const ORDERS: &str = "http://api.partner.test/v1/orders";
const FETCHED_OK: &str = "sidekey_token_fetches_total{route=\"partner\",outcome=\"ok\"}";
const FETCH_FAILED: &str = "sidekey_token_fetches_total{route=\"partner\",outcome=\"error\"}";

#[tokio::test]
async fn one_run_serves_many_requests_and_the_next_comes_before_expiry() {
    let s = Setup::new(&[]);
    let proxy = s.start(3, "5s").await;
    for _ in 0..5 {
        let resp = get(proxy.proxy_addr(), ORDERS).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    }
    assert_eq!(s.runs(), 1, "the printed token is cached");
    // A 3 s token with refresh_before = 1s: run again at about 2 s, off
    // the request path.
    metric_reaches(&proxy, FETCHED_OK, 2.0).await;
    assert!(s.runs() >= 2);
    let resp = get(proxy.proxy_addr(), ORDERS).await;
    assert_eq!(resp.status(), StatusCode::OK, "the refreshed token is used");
    let waits = metric(
        &proxy,
        "sidekey_token_wait_seconds_count{route=\"partner\"}",
    )
    .await;
    assert!(waits <= 1.0, "{waits} requests waited for the command");
    assert_eq!(s.api.request_count(), 6);
}

#[tokio::test]
async fn a_failing_command_is_a_503_naming_the_route_and_its_stderr_is_never_shown() {
    let s = Setup::new(&[]);
    s.control("fail");
    let proxy = s.start(3600, "5s").await;
    metric_reaches(&proxy, FETCH_FAILED, 1.0).await;
    let resp = get(proxy.proxy_addr(), ORDERS).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body_text(&resp);
    assert!(body.contains("\"route\":\"partner\""), "{body}");
    assert!(body.contains("exited with status 2"), "{body}");
    assert!(body.contains("stderr: 52 bytes"), "{body}");
    assert!(!body.contains("stderr-secret"), "{body}");
    assert_eq!(
        s.api.request_count(),
        0,
        "nothing forwarded without a token"
    );
    // Fixed: the retry after the backoff gets a token.
    s.control("");
    metric_reaches(&proxy, FETCHED_OK, 1.0).await;
    let resp = get(proxy.proxy_addr(), ORDERS).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
}

#[tokio::test]
async fn a_command_that_hangs_is_killed_at_its_timeout() {
    let s = Setup::new(&[]);
    s.control("hang");
    let proxy = s.start(3600, "300ms").await;
    metric_reaches(&proxy, FETCH_FAILED, 1.0).await;
    let resp = get(proxy.proxy_addr(), ORDERS).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body_text(&resp);
    assert!(body.contains("did not finish within 300ms"), "{body}");
    let pid = std::fs::read_to_string(s.runs.with_extension("pid")).unwrap();
    let stat = PathBuf::from(format!("/proc/{}/stat", pid.trim()));
    wait_until("the hung command is killed", Duration::from_secs(5), || {
        let stat = stat.clone();
        async move {
            // Gone, or a zombie about to be reaped: not sleeping.
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            !state
                .rsplit(')')
                .next()
                .is_some_and(|rest| matches!(rest.trim_start().chars().next(), Some('S' | 'R')))
        }
    })
    .await;
}

#[tokio::test]
async fn a_rejected_token_runs_the_command_again_and_the_request_is_retried() {
    // The first token is revoked upstream.
    let s = Setup::new(&["tok-orders-1"]);
    let proxy = s.start(3600, "5s").await;
    let resp = get(proxy.proxy_addr(), ORDERS).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(s.runs(), 2);
    let auths: Vec<String> = s
        .api
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert_eq!(auths, ["Bearer tok-orders-1", "Bearer tok-orders-2"]);
}
