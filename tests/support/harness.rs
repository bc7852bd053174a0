//! sidekey itself, run in-process for integration tests: config text built
//! around the stand-ins, [`start_sidekey`], admin requests, and a panic
//! watch that tells a sidekey panic from a failed test assertion.
//!
//! (Named `harness`, not `sidekey`: `use support::*` would otherwise bring a
//! module called `sidekey` into scope and shadow the crate.)

use std::net::SocketAddr;
use std::sync::{Mutex, Once};

use bytes::Bytes;
use http::{Request, Response};

use super::client::{empty_body, send};
use super::test_env::{toml_str, TestEnv};

/// Copilot.cx document vector (seed 001).
pub const COPILOT_ID: &str = "ABABABABQQIRZ";
pub const COPILOT_SECRET: &str = "k9H2Nd3T5j5EW2Fu160l11Hal3x3oa";
pub const COPILOT_AUTH: &str = "Basic QUJBQkFCQUJRUUlSWjprOUgyTmQzVDVqNUVXMkZ1MTYwbDExSGFsM3gzb2E=";
/// Koupon Media document vector (seed 002).
pub const KOUPON_KEY: &str = "6348256714038520009a57d1d2-5188-457b-854b-86aafea65fc5";
pub const KOUPON_SECRET: &str = "4623B7B8-18A6-4B2C-B2C1-18157F5C4AFE";

/// A `[proxy.connect_to]` line: `"host:port" = "addr"`.
pub fn connect_to(host_port: &str, addr: SocketAddr) -> String {
    format!("{} = {}", toml_str(host_port), toml_str(&addr.to_string()))
}

/// The `[proxy]` table of a test: proxy and admin listeners on port 0, the
/// test CA trusted for upstream TLS, the `extra` key lines (e.g.
/// `request_timeout = "300ms"`), then `[proxy.connect_to]` with `connect_to`.
pub fn proxy_toml(env: &TestEnv, extra: &str, connect_to: &[String]) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nca_file = {ca}\n{extra}\n\n[proxy.connect_to]\n{to}\n\n",
        ca = toml_str(&env.ca_file().display().to_string()),
        to = connect_to.join("\n"),
    )
}

/// A plain-HTTP route `echo` for `echo.example.test` (dialled at
/// `upstream`) with the header credential `X-Api-Key: echo-key`, after
/// [`proxy_toml`] with `extra`.
pub fn echo_config(env: &TestEnv, upstream: SocketAddr, extra: &str) -> String {
    proxy_toml(env, extra, &[connect_to("echo.example.test:80", upstream)])
        + r#"
[[route]]
name = "echo"
host = "echo.example.test"
upstream = "http://echo.example.test"
[route.auth]
kind = "header"
name = "X-Api-Key"
token = "echo-key"
"#
}

/// The seed `copilot` route with the document's credentials.
pub fn copilot_route() -> String {
    format!(
        r#"
[[route]]
name = "copilot"
host = "api.copilot.cx"
[route.headers]
"Content-Type" = "application/json"
[route.auth]
kind = "basic"
username = "{COPILOT_ID}"
password = "{COPILOT_SECRET}"
"#
    )
}

/// The seed `koupon` route with the document's key and secret.
pub fn koupon_route() -> String {
    format!(
        r#"
[[route]]
name = "koupon"
host = "consumer.kouponmedia.com"
upstream = "http://consumer.kouponmedia.com"
[route.headers]
"Accept" = "application/json"
"Content-Type" = "application/json; charset=utf-8"
[route.auth]
kind = "signed_url"
key = "{KOUPON_KEY}"
secret = "{KOUPON_SECRET}"
"#
    )
}

/// A `query` route for `http://query.example.test` that appends
/// `access_token=<token>` (dial it with `connect_to("query.example.test:80", ...)`).
pub fn query_route(token: &str) -> String {
    format!(
        r#"
[[route]]
name = "query"
host = "query.example.test"
upstream = "http://query.example.test"
[route.auth]
kind = "query"
param = "access_token"
token = {}
"#,
        toml_str(token)
    )
}

/// A `header` route for `http://header.example.test` that sends
/// `Authorization: Bearer <token>` (dial it with
/// `connect_to("header.example.test:80", ...)`).
pub fn header_route(token: &str) -> String {
    format!(
        r#"
[[route]]
name = "header"
host = "header.example.test"
upstream = "http://header.example.test"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {{token}}"
token = {}
"#,
        toml_str(token)
    )
}

/// Parses config text as sidekey would (relative paths against the test's
/// directory, no environment variables); panics listing every problem.
pub fn parse_config(env: &TestEnv, toml: &str) -> ::sidekey::Config {
    ::sidekey::Config::parse(toml, env.dir(), &|_| None).unwrap_or_else(|e| {
        panic!(
            "test config is invalid:\n{}\n--- config ---\n{toml}",
            e.problems().join("\n")
        )
    })
}

/// Starts sidekey in-process with `toml`; panics when it cannot start.
pub async fn start_sidekey(env: &TestEnv, toml: &str) -> ::sidekey::app::RunningProxy {
    watch_panics();
    let config = parse_config(env, toml);
    ::sidekey::app::RunningProxy::start(config)
        .await
        .unwrap_or_else(|e| panic!("sidekey did not start: {e}\n--- config ---\n{toml}"))
}

/// `GET path` on the admin listener.
pub async fn admin_get(proxy: &::sidekey::app::RunningProxy, path: &str) -> Response<Bytes> {
    let addr = proxy
        .admin_addr()
        .expect("the test config has an admin listener");
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(empty_body())
        .expect("valid admin request");
    send(addr, req).await
}

static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

/// Records every panic raised outside the test files (in sidekey or a
/// library it uses), keeping the default panic output. Idempotent.
pub fn watch_panics() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info.location().map(|l| l.to_string()).unwrap_or_default();
            let in_tests = location.starts_with("tests/") || location.starts_with("tests\\");
            if !in_tests {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                if let Ok(mut list) = PANICS.lock() {
                    list.push(format!("{location}: {message}"));
                }
            }
            previous(info);
        }));
    });
}

/// Panics raised so far outside the test files (see [`watch_panics`]).
pub fn foreign_panics() -> Vec<String> {
    PANICS.lock().map(|l| l.clone()).unwrap_or_default()
}

/// Asserts that nothing but test code panicked in this test binary.
pub fn assert_no_foreign_panic() {
    let panics = foreign_panics();
    assert!(panics.is_empty(), "sidekey panicked: {panics:#?}");
}

/// A `sidekey_...` series' value from the admin listener's `/metrics` (0
/// when absent).
pub async fn metric(proxy: &::sidekey::app::RunningProxy, series: &str) -> f64 {
    let resp = admin_get(proxy, "/metrics").await;
    String::from_utf8_lossy(resp.body())
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits (at most 10 s) until the metric `series` reaches `value`, for
/// what sidekey counts just after the client has seen it; returns the last
/// value read.
pub async fn metric_reaches(proxy: &::sidekey::app::RunningProxy, series: &str, value: f64) -> f64 {
    let reached = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let v = metric(proxy, series).await;
            if v >= value {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    match reached {
        Ok(v) => v,
        Err(_) => metric(proxy, series).await,
    }
}
