//! No secret of the egress features in any log line of the built binary
//! at `RUST_LOG=trace` (text and JSON), nor in `check`: not a token
//! command's stderr or output, not the corporate proxy's password (plain,
//! percent-encoded or as its Basic value), not a client certificate's key.
//! One route goes through the proxy stand-in (CONNECT) to an upstream that
//! requires a client certificate, with a token printed by a command;
//! another's command always fails, so its failure is logged.

#![cfg(unix)]

mod support;

use std::time::Duration;

use base64::Engine as _;
use http::{Request, StatusCode};
use support::harness::*;
use support::*;

const PROXY_PASSWORD: &str = "p@ss-logsecret-31";
const PROXY_PASSWORD_ENCODED: &str = "p%40ss-logsecret-31";
const STDERR_SECRET: &str = "stderr-secret-value-8d2c";
const TOKEN: &str = "exec-token-secret-5e1f";

/// Prints the token, and a secret to stderr.
const GOOD_SCRIPT: &str = "#!/bin/sh\necho \"hint: refresh=$1\" >&2\necho \"$2\"\n";
/// Fails, with a secret on stderr.
const BAD_SCRIPT: &str = "#!/bin/sh\necho \"error: refresh token $1 expired\" >&2\nexit 4\n";

struct Setup {
    env: TestEnv,
    api: StandIn,
    /// A plain-HTTP upstream, reached in absolute form through the proxy.
    plain: StandIn,
    corp: ConnectProxy,
    key_pem: String,
}

fn script(env: &TestEnv, name: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = env.write_file(name, text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    path.display().to_string()
}

fn proxy_auth() -> String {
    let pair = format!("svc:{PROXY_PASSWORD}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

impl Setup {
    async fn new() -> Setup {
        let env = TestEnv::new();
        let clients = TestCa::new();
        let api = StandIn::spawn_fn(
            Some(
                env.ca
                    .server_config_requiring_client(&["api.partner.test"], &clients),
            ),
            |req| {
                if req.header("authorization") == Some(&format!("Bearer {TOKEN}")) {
                    json_reply(StatusCode::OK, &serde_json::json!({ "ok": true }))
                } else {
                    json_reply(StatusCode::UNAUTHORIZED, &serde_json::json!({}))
                }
            },
        );
        let (_, key) = clients.write_client_cert(env.dir(), "partner-client", "sidekey-partner");
        let key_pem = std::fs::read_to_string(key).unwrap();
        let auth = proxy_auth();
        let plain = StandIn::ok(None);
        let corp = ConnectProxy::spawn(
            Some(&auth),
            &[
                ("api.partner.test:443", api.addr()),
                ("plain.partner.test:80", plain.addr()),
            ],
        )
        .await;
        Setup {
            env,
            api,
            plain,
            corp,
            key_pem,
        }
    }

    fn toml(&self) -> String {
        let good = script(&self.env, "good-token", GOOD_SCRIPT);
        let bad = script(&self.env, "bad-token", BAD_SCRIPT);
        proxy_toml(
            &self.env,
            &format!(
                "upstream_proxy = {}",
                toml_str(&format!(
                    "http://svc:{PROXY_PASSWORD_ENCODED}@{}",
                    self.corp.addr()
                ))
            ),
            &[],
        ) + &format!(
            r#"
[[route]]
name = "partner"
host = "api.partner.test"
[route.tls]
client_cert = "partner-client.pem"
client_key = "partner-client.key"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {{token}}"
[route.auth.token]
source = "exec"
command = [{good}, {stderr}, {token}]
ttl = "1h"

[[route]]
name = "plain"
host = "plain.partner.test"
upstream = "http://plain.partner.test"

[[route]]
name = "broken"
host = "broken.partner.test"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {{token}}"
[route.auth.token]
source = "exec"
command = [{bad}, {stderr}]
"#,
            good = toml_str(&good),
            bad = toml_str(&bad),
            stderr = toml_str(STDERR_SECRET),
            token = toml_str(TOKEN),
        )
    }

    /// Every secret of this setup, in each form it could be printed in.
    fn secrets(&self) -> Vec<String> {
        let auth = proxy_auth();
        let mut secrets = vec![
            PROXY_PASSWORD.to_string(),
            PROXY_PASSWORD_ENCODED.to_string(),
            auth.trim_start_matches("Basic ").to_string(),
            STDERR_SECRET.to_string(),
            TOKEN.to_string(),
            "PRIVATE KEY".to_string(),
        ];
        secrets.extend(
            self.key_pem
                .lines()
                .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
                .map(str::to_string),
        );
        secrets
    }
}

async fn wait_ready(admin: std::net::SocketAddr) {
    wait_until("sidekey is ready", Duration::from_secs(20), || async move {
        let req = Request::get("/readyz")
            .header("host", admin.to_string())
            .body(empty_body())
            .expect("request");
        try_send(admin, req)
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
}

async fn run_and_check_logs(format: &str) {
    let s = Setup::new().await;
    let path = s.env.write_config(&s.toml());
    let path_var = std::env::var("PATH").unwrap_or_default();
    let sidekey = SidekeyProcess::spawn(
        &path,
        &[("RUST_LOG", "trace"), ("PATH", &path_var)],
        &["--log-format", format],
    );
    wait_ready(sidekey.admin_addr.expect("admin listener")).await;

    let resp = get(sidekey.proxy_addr, "http://api.partner.test/v1/orders").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    let resp = get(sidekey.proxy_addr, "http://broken.partner.test/v1/x").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!body_text(&resp).contains(STDERR_SECRET));
    assert_eq!(s.api.request_count(), 1);
    let resp = get(sidekey.proxy_addr, "http://plain.partner.test/v1/x").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(s.plain.request_count(), 1);
    assert!(s.corp.seen().iter().all(|t| t.status == 200));

    let (status, output) = tokio::task::block_in_place(|| sidekey.stop());
    assert!(status.success(), "{status:?}\n{output}");
    // The failing command's failure is logged (with its stderr's size):
    // a 503 is answered only once a run has failed.
    let failed = output
        .lines()
        .find(|l| l.contains("token fetch failed") && l.contains("broken"))
        .unwrap_or_else(|| panic!("no failure logged:\n{output}"));
    assert!(failed.contains("exited with status 4"), "{failed}");
    assert!(failed.contains("bytes, not shown"), "{failed}");
    for secret in s.secrets() {
        if let Some(line) = output.lines().find(|l| l.contains(secret.as_str())) {
            panic!("{format} logs show {secret:?}:\n{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_at_trace_hold_no_egress_secret() {
    run_and_check_logs("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_at_trace_hold_no_egress_secret() {
    run_and_check_logs("json").await;
}

#[tokio::test]
async fn check_shows_the_proxy_certificate_and_program_but_no_secret() {
    let s = Setup::new().await;
    let path = s.env.write_config(&s.toml()).display().to_string();
    let (status, stdout, stderr) = run_cli(&["check", "--config", &path], &[]);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "upstream proxy: http://[REDACTED]@{}",
            s.corp.addr()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("CN=sidekey-partner"), "{stdout}");
    assert!(stdout.contains("good-token (2 arguments)"), "{stdout}");
    for secret in s.secrets() {
        assert!(
            !stdout.contains(&secret) && !stderr.contains(&secret),
            "check shows {secret:?}:\n{stdout}\n{stderr}"
        );
    }
}

/// The contract's `[proxy]` table (config/examples/intercept.toml) with
/// `CORP_PROXY` set: `check` shows the proxy and its bypass list, never
/// its user or password.
#[test]
fn check_of_the_contract_proxy_table_with_a_corporate_proxy() {
    let env = TestEnv::new();
    support::seeds::intercept_ca(env.dir(), "");
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/intercept.toml");
    let ca_dir = env.dir().display().to_string();
    let (status, stdout, stderr) = run_cli(
        &["check", "--config", example.to_str().unwrap()],
        &[
            ("SIDEKEY_CA_DIR", &ca_dir),
            (
                "CORP_PROXY",
                "http://svc:corp-pw-0c1d@proxy.corp.example:3128",
            ),
        ],
    );
    assert!(status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "upstream proxy: http://[REDACTED]@proxy.corp.example:3128, direct to internal.example, *.corp.example"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("corp-pw-0c1d") && !stderr.contains("corp-pw-0c1d"));
    assert!(!stdout.contains("svc:"), "{stdout}");
}
