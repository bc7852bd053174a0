//! `oauth2_code` tokens and `sidekey authorize`, against a stand-in of the
//! Copernica REST API (seed 000). The built binary runs the flow (with
//! `RUST_LOG=trace`, its stderr checked for secrets); the test plays the
//! browser: it follows the printed URL to the stand-in's authorize
//! endpoint, which redirects to `redirect_uri` with `code` and `state`.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use sidekey::app::RunningProxy;
use sidekey::Config;
use support::copernica::{Tamper, API_HOST, WWW_HOST};
use support::*;

const CLIENT_KEY: &str = "client-key-8d1f";
const CLIENT_SECRET: &str = "copernica-s3cret-77ab";

/// The Copernica route of `seed-routes.toml`, unchanged.
const SEED_ROUTE: &str = r#"
[[route]]
name = "copernica"
host = "api.copernica.com"
[route.auth]
kind = "query"
param = "access_token"
[route.auth.token]
source = "oauth2_code"                   # `sidekey authorize copernica` runs the flow once and writes `store`
authorize_url = "https://www.copernica.com/en/authorize"
token_url = "https://api.copernica.com/v1/token"
token_request = "get_query"              # Copernica: GET token_url?client_id&client_secret&redirect_uri&code; "post_form" = RFC 6749
client_id = "${COPERNICA_CLIENT_KEY}"
client_secret = "${COPERNICA_CLIENT_SECRET}"
redirect_uri = "${COPERNICA_REDIRECT_URI:-http://127.0.0.1:8765/callback}"  # sidekey listens here during `authorize`
store = "${COPERNICA_TOKEN_STORE:-copernica.token}"                         # written with mode 0600
"#;

struct Setup {
    env: TestEnv,
    api: CopernicaApi,
    config: PathBuf,
    redirect_uri: String,
}

impl Setup {
    fn new() -> Setup {
        let env = TestEnv::new();
        let api = CopernicaApi::spawn(&env.ca, CLIENT_KEY, CLIENT_SECRET);
        let toml = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nca_file = {}\n[proxy.connect_to]\n{}\n{SEED_ROUTE}",
            toml_str(&env.ca_file().display().to_string()),
            api.connect_to_toml(),
        );
        let config = env.write_config(&toml);
        let redirect_uri = format!("http://{}/callback", unused_local_addr());
        Setup {
            env,
            api,
            config,
            redirect_uri,
        }
    }

    fn store(&self) -> PathBuf {
        self.env.dir().join("copernica.token")
    }

    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("COPERNICA_CLIENT_KEY", CLIENT_KEY.to_string()),
            ("COPERNICA_CLIENT_SECRET", CLIENT_SECRET.to_string()),
            ("COPERNICA_REDIRECT_URI", self.redirect_uri.clone()),
        ]
    }

    async fn start_proxy(&self) -> RunningProxy {
        let vars = self.vars();
        let lookup = move |name: &str| -> Option<String> {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        let text = std::fs::read_to_string(&self.config).expect("config file");
        let config =
            Config::parse(&text, self.env.dir(), &lookup).unwrap_or_else(|e| panic!("config: {e}"));
        RunningProxy::start(config).await.expect("sidekey starts")
    }

    /// Runs the sidekey binary with `args` (after `--config FILE`).
    fn sidekey(&self, args: &[&str]) -> SidekeyCommand {
        self.sidekey_with(args, &[])
    }

    /// [`Setup::sidekey`] with some variables set otherwise.
    fn sidekey_with(&self, args: &[&str], vars: &[(&str, &str)]) -> SidekeyCommand {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sidekey"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("SIDEKEY_CONFIG")
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in self.vars() {
            cmd.env(k, v);
        }
        for (k, v) in vars {
            cmd.env(k, v);
        }
        SidekeyCommand::spawn(cmd)
    }
}

/// The query pairs of `url`, percent-decoded.
fn query_of(url: &Uri) -> Vec<(String, String)> {
    split_query(url.query().unwrap_or(""))
        .into_iter()
        .map(|(k, v)| {
            let d = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (d(&k), d(&v))
        })
        .collect()
}

fn param(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Plays the browser: opens the authorization URL at the stand-in, then
/// follows its redirect to sidekey's callback. Returns sidekey's page.
async fn browse(s: &Setup, url: &str) -> Response<Bytes> {
    let uri: Uri = url.parse().expect("the printed URL parses");
    assert_eq!(uri.scheme_str(), Some("https"));
    assert_eq!(uri.host(), Some(WWW_HOST));
    let pq = uri.path_and_query().expect("path").as_str().to_string();
    let req = Request::get(pq)
        .header("host", WWW_HOST)
        .body(empty_body())
        .expect("request");
    let consent = send_tls(
        s.api.addr(),
        WWW_HOST,
        s.env.ca.client_config(&[b"http/1.1"]),
        req,
    )
    .await
    .expect("the authorize endpoint answers");
    assert_eq!(
        consent.status(),
        StatusCode::FOUND,
        "{}",
        body_text(&consent)
    );
    let location: Uri = consent.headers()["location"]
        .to_str()
        .expect("ASCII Location")
        .parse()
        .expect("Location parses");
    let authority = location.authority().expect("absolute Location").to_string();
    let addr: SocketAddr = authority.parse().expect("loopback redirect_uri");
    let req = Request::get(location.path_and_query().expect("path").as_str())
        .header("host", authority)
        .body(empty_body())
        .expect("request");
    try_send(addr, req)
        .await
        .expect("sidekey answers the callback")
}

fn assert_no_secrets(stderr: &str, s: &Setup) {
    let mut secrets = vec![CLIENT_SECRET.to_string()];
    secrets.extend(s.api.codes());
    secrets.extend(s.api.issued());
    for secret in &secrets {
        assert!(
            !stderr.contains(secret.as_str()),
            "a secret ({} chars) is in the log:\n{stderr}",
            secret.len()
        );
    }
}

#[tokio::test]
async fn authorize_end_to_end_then_the_proxy_uses_the_token() {
    let s = Setup::new();
    // The proxy runs before anyone authorized: the route says what to do.
    let proxy = s.start_proxy().await;
    let api_url = format!("http://{API_HOST}/v1/profile/123456");
    let resp = get(proxy.proxy_addr(), &api_url).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let json = body_json(&resp);
    assert_eq!(json["route"], "copernica");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("run `sidekey authorize copernica` first"),
        "{message}"
    );

    let mut cli = s.sidekey(&["authorize", "copernica", "--timeout", "60s"]);
    let url = cli.next_line().await;
    assert!(
        url.starts_with("https://www.copernica.com/en/authorize?"),
        "{url}"
    );
    let pairs = query_of(&url.parse().expect("URL"));
    assert_eq!(param(&pairs, "client_id").as_deref(), Some(CLIENT_KEY));
    assert_eq!(param(&pairs, "redirect_uri"), Some(s.redirect_uri.clone()));
    assert_eq!(param(&pairs, "response_type").as_deref(), Some("code"));
    let state = param(&pairs, "state").expect("a state");
    assert!(
        state.len() >= 32 && state.bytes().all(|b| b.is_ascii_hexdigit()),
        "{state}"
    );

    let page = browse(&s, &url).await;
    assert_eq!(page.status(), StatusCode::OK, "{}", body_text(&page));
    assert!(body_text(&page).contains("authorized"));
    let (status, rest, stderr) = cli.finish().await;
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(rest.is_empty(), "stdout holds only the URL: {rest:?}");
    assert_eq!(s.api.states(), [state]);
    assert_eq!(s.api.exchanges(), 1);

    let store = s.store();
    let text = std::fs::read_to_string(&store).expect("the store is written");
    let stored: serde_json::Value = serde_json::from_str(&text).expect("JSON store");
    let token = s.api.issued().pop().expect("a token was issued");
    assert_eq!(stored["access_token"], token.as_str());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&store)
            .expect("store")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(
        stderr.lines().count() > 3,
        "RUST_LOG=trace logged: {stderr}"
    );
    assert_no_secrets(&stderr, &s);

    // The running proxy notices the new store by itself.
    wait_until("the proxy uses the stored token", WAIT_TIMEOUT, || async {
        get(proxy.proxy_addr(), &api_url).await.status() == StatusCode::OK
    })
    .await;
    let last = s.api.last_request().expect("an API call");
    assert_eq!(last.query_values("access_token"), [token]);
}

async fn refused(tamper: Tamper) {
    let s = Setup::new();
    s.api.tamper_state(tamper);
    let mut cli = s.sidekey(&["authorize", "copernica", "--timeout", "60s"]);
    let url = cli.next_line().await;
    let page = browse(&s, &url).await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(&page).contains("state"), "{}", body_text(&page));
    let (status, _, stderr) = cli.finish().await;
    assert!(!status.success(), "a forged callback must fail the command");
    assert!(stderr.contains("state"), "{stderr}");
    assert!(!s.store().exists(), "nothing may be written");
    assert_eq!(s.api.exchanges(), 0, "the code must not be exchanged");
    let leftovers: Vec<_> = std::fs::read_dir(s.env.dir())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("token"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_no_secrets(&stderr, &s);
}

#[tokio::test]
async fn a_wrong_state_is_refused_and_nothing_is_written() {
    refused(Tamper::Replace("0123456789abcdef0123456789abcdef".into())).await;
}

#[tokio::test]
async fn a_missing_state_is_refused_and_nothing_is_written() {
    refused(Tamper::Drop).await;
}

#[tokio::test]
async fn a_failed_code_exchange_exits_non_zero_and_writes_nothing() {
    let s = Setup::new();
    // Copernica refuses the exchange: the client secret is not its.
    let mut cli = s.sidekey_with(
        &["authorize", "copernica", "--timeout", "60s"],
        &[("COPERNICA_CLIENT_SECRET", "not-the-secret")],
    );
    let url = cli.next_line().await;
    let page = browse(&s, &url).await;
    assert!(
        !page.status().is_success(),
        "the browser is told it failed: {}",
        body_text(&page)
    );
    let (status, _, stderr) = cli.finish().await;
    assert!(!status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("exchanging the code for a token failed")
            && stderr.contains("answered HTTP 401"),
        "the cause is named: {stderr}"
    );
    assert_eq!(s.api.exchanges(), 0);
    assert!(!s.store().exists(), "nothing may be written");
    assert!(!stderr.contains("not-the-secret"), "{stderr}");
    assert_no_secrets(&stderr, &s);
}

#[tokio::test]
async fn authorize_gives_up_after_its_timeout() {
    let s = Setup::new();
    let mut cli = s.sidekey(&["authorize", "copernica", "--timeout", "1s"]);
    let _url = cli.next_line().await;
    let (status, _, stderr) = cli.finish().await;
    assert!(!status.success());
    assert!(
        stderr.contains("no authorization callback arrived within 1s"),
        "{stderr}"
    );
    assert!(!s.store().exists());
}

#[tokio::test]
async fn check_warns_about_a_missing_store_and_still_exits_0() {
    let s = Setup::new();
    let cli = s.sidekey(&["check"]);
    let (status, stdout, stderr) = cli.finish().await;
    let stdout = stdout.join("\n");
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("warning") && stdout.contains("sidekey authorize"),
        "{stdout}"
    );
    assert!(!stdout.contains(CLIENT_SECRET));
}

#[test]
fn authorize_refuses_a_route_without_oauth2_code() {
    let env = TestEnv::new();
    let config = env.write_config(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[[route]]\nname = \"plain\"\nhost = \"x.example\"\n[route.auth]\nkind = \"query\"\nparam = \"k\"\ntoken = \"t\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sidekey"))
        .arg("--config")
        .arg(&config)
        .args(["authorize", "plain"])
        .env_remove("SIDEKEY_CONFIG")
        .output()
        .expect("run sidekey");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("oauth2_code"), "{stderr}");
}

#[tokio::test]
async fn authorize_keeps_the_refresh_token_and_expiry_in_the_store_and_sealed_in_redis() {
    let Some(redis) = RedisServer::start("authorize_keeps_the_refresh_token").await else {
        return;
    };
    let s = Setup::new();
    s.api.offer_refresh_tokens(3600);
    // The same config, with [proxy.shared_cache].
    let text = std::fs::read_to_string(&s.config).expect("config file");
    let key = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
    let text = text.replacen(
        "[proxy.connect_to]",
        &format!(
            "[proxy.shared_cache]\nurl = \"{}\"\nencryption_key = \"{key}\"\n[proxy.connect_to]",
            redis.url()
        ),
        1,
    );
    std::fs::write(&s.config, text).expect("write config");

    let mut cli = s.sidekey(&["authorize", "copernica", "--timeout", "60s"]);
    let url = cli.next_line().await;
    let page = browse(&s, &url).await;
    assert_eq!(page.status(), StatusCode::OK, "{}", body_text(&page));
    let (status, _, stderr) = cli.finish().await;
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    assert_no_secrets(&stderr, &s);

    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.store()).expect("the store is written"))
            .expect("JSON store");
    let token = s.api.issued().pop().expect("a token was issued");
    let refresh = s
        .api
        .refresh_tokens()
        .pop()
        .expect("a refresh token was issued");
    assert_eq!(stored["access_token"], token.as_str());
    assert_eq!(stored["refresh_token"], refresh.as_str());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expires_at = stored["expires_at"].as_u64().expect("expires_at");
    assert!(
        (now + 3590..=now + 3601).contains(&expires_at),
        "{expires_at} vs {now}"
    );
    for secret in [&token, &refresh] {
        assert!(!stderr.contains(secret.as_str()), "a token in the log");
    }

    // Redis holds the record, sealed, under key_prefix:route:<hash>:refresh.
    let all = redis.all().await;
    assert_eq!(
        all.len(),
        1,
        "{:?}",
        all.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let (name, value) = &all[0];
    assert!(
        name.starts_with("sidekey:copernica:") && name.ends_with(":refresh"),
        "{name}"
    );
    for secret in [&token, &refresh] {
        assert!(!value.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }

    // A replica with no store of its own takes the tokens from Redis.
    std::fs::remove_file(s.store()).expect("remove the store");
    let proxy = s.start_proxy().await;
    let resp = get(
        proxy.proxy_addr(),
        &format!("http://{API_HOST}/v1/profile/123456"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    let last = s.api.last_request().expect("an API call");
    assert_eq!(last.query_values("access_token"), [token]);
}
