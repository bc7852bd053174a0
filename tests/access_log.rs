//! The access log as an operator meets it, from the built binary: one line
//! per request with the usual fields (text and JSON) within a second, none
//! lost when sidekey stops or reloads, `RUST_LOG` still deciding, and a
//! stderr that nobody reads never holding up a request.

mod support;

use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use support::harness::*;
use support::*;

/// The query carries a value that must never reach the log.
const QUERY_SECRET: &str = "api_key=never-log-this-7c1e";

fn config(env: &TestEnv, copilot: &CopilotApi) -> String {
    proxy_toml(env, "", &[copilot.connect_to_toml()]) + &copilot_route()
}

fn start(format: &str, rust_log: Option<&str>) -> (TestEnv, CopilotApi, SidekeyProcess) {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let path = env.write_config(&config(&env, &copilot));
    let envs: Vec<(&str, &str)> = rust_log.map(|l| ("RUST_LOG", l)).into_iter().collect();
    let sidekey = SidekeyProcess::spawn(&path, &envs, &["--log-format", format]);
    (env, copilot, sidekey)
}

/// Whether `line` is the access line of `/v1/n/{n}` (text or JSON).
fn is_access_line_of(line: &str, n: usize) -> bool {
    let path = format!("/v1/n/{n}");
    (line.contains(" request route=") && line.contains(&format!(" path={path} ")))
        || (line.contains("\"message\":\"request\"")
            && line.contains(&format!("\"path\":\"{path}\"")))
}

fn is_access_line(line: &str) -> bool {
    line.contains(" request route=") || line.contains("\"message\":\"request\"")
}

/// `count` requests `/v1/n/{first}..`, each answered 200, on one connection.
async fn requests(proxy: std::net::SocketAddr, first: usize, count: usize) {
    let mut conn = ProxyConn::connect(proxy).await.expect("connect");
    for n in first..first + count {
        let req = Request::get(format!("http://api.copilot.cx/v1/n/{n}?{QUERY_SECRET}"))
            .body(empty_body())
            .expect("request");
        let resp = conn.send(req).await.expect("answered");
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    }
}

/// Every request's line is there exactly once, and no query.
fn assert_lines(output: &str, first: usize, count: usize) {
    for n in first..first + count {
        let found = output.lines().filter(|l| is_access_line_of(l, n)).count();
        assert_eq!(found, 1, "access lines of /v1/n/{n}: {found}\n{output}");
    }
    assert!(!output.contains("never-log-this"), "the query was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_line_appears_within_a_second_with_the_usual_fields() {
    let (_env, copilot, mut sidekey) = start("text", None);
    requests(sidekey.proxy_addr, 0, 1).await;
    let answered = Instant::now();
    let line = sidekey
        .line_within(" request ", Duration::from_secs(1))
        .unwrap_or_else(|| {
            panic!(
                "no access line within 1 s of the answer:\n{}",
                sidekey.output()
            )
        });
    assert!(answered.elapsed() <= Duration::from_secs(1));
    assert!(
        line.contains(" INFO sidekey::proxy::handler: request route=\"copilot\" method=GET path=/v1/n/0 status=200 latency_ms="),
        "{line}"
    );
    let latency: f64 = line
        .rsplit("latency_ms=")
        .next()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("latency_ms is a number: {line}"));
    assert!(latency >= 0.0, "{line}");
    // The timestamp as tracing writes it: RFC 3339, UTC, microseconds.
    let stamp = line.split(' ').next().expect("a timestamp");
    assert_eq!(stamp.len(), "2026-01-01T00:00:00.000000Z".len(), "{line}");
    assert!(humantime::parse_rfc3339(stamp).is_ok(), "{line}");

    // A refused request: WARN, with the error code and cause.
    let resp = get(sidekey.proxy_addr, "http://unknown.example/x?k=v").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let line = sidekey
        .line_within("path=/x", Duration::from_secs(1))
        .unwrap_or_else(|| panic!("no access line of the refusal:\n{}", sidekey.output()));
    assert!(
        line.contains(" WARN sidekey::proxy::handler: request route=\"-\" method=GET path=/x status=403 latency_ms="),
        "{line}"
    );
    assert!(
        line.contains(" error=\"") && line.contains(" cause="),
        "{line}"
    );
    assert_eq!(copilot.accepted(), 1, "{:?}", copilot.rejections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_line_appears_within_a_second_with_the_usual_fields() {
    let (_env, _copilot, mut sidekey) = start("json", None);
    requests(sidekey.proxy_addr, 0, 1).await;
    let line = sidekey
        .line_within("\"message\":\"request\"", Duration::from_secs(1))
        .unwrap_or_else(|| {
            panic!(
                "no access line within 1 s of the answer:\n{}",
                sidekey.output()
            )
        });
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
    assert_eq!(v["level"], "INFO", "{line}");
    assert_eq!(v["target"], "sidekey::proxy::handler", "{line}");
    assert_eq!(v["route"], "copilot", "{line}");
    assert_eq!(v["method"], "GET", "{line}");
    assert_eq!(v["path"], "/v1/n/0", "{line}");
    assert_eq!(v["status"], 200, "{line}");
    assert!(v["latency_ms"].as_f64().is_some(), "{line}");
    let stamp = v["timestamp"].as_str().expect("a timestamp");
    assert!(humantime::parse_rfc3339(stamp).is_ok(), "{line}");

    let resp = get(sidekey.proxy_addr, "http://unknown.example/x").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let line = sidekey
        .line_within("\"path\":\"/x\"", Duration::from_secs(1))
        .unwrap_or_else(|| panic!("no access line of the refusal:\n{}", sidekey.output()));
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
    assert_eq!(v["level"], "WARN", "{line}");
    assert_eq!(v["status"], 403, "{line}");
    assert!(v["error"].is_string() && v["cause"].is_string(), "{line}");
}

async fn no_line_lost_when_stopped_with(signal: &str) {
    const N: usize = 200;
    let (_env, _copilot, sidekey) = start("text", None);
    requests(sidekey.proxy_addr, 0, N).await;
    // At once: most of the lines are still queued.
    let (status, output) = tokio::task::block_in_place(|| sidekey.stop_with(signal));
    assert!(status.success(), "{status:?}\n{output}");
    assert_lines(&output, 0, N);
    // And before the last line.
    let lines: Vec<&str> = output.lines().collect();
    let last_access = lines.iter().rposition(|l| is_access_line(l));
    let stopped = lines.iter().position(|l| l.contains("stopped"));
    assert!(
        matches!((last_access, stopped), (Some(a), Some(s)) if a < s),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_line_is_lost_on_sigterm() {
    no_line_lost_when_stopped_with("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_line_is_lost_on_sigint() {
    no_line_lost_when_stopped_with("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_line_is_lost_across_a_reload() {
    const N: usize = 100;
    let (_env, _copilot, mut sidekey) = start("json", None);
    requests(sidekey.proxy_addr, 0, N).await;
    sidekey.signal("HUP");
    sidekey.wait_for_line("config reloaded");
    // The lines before the reload arrive without more traffic.
    let found = tokio::task::block_in_place(|| sidekey.wait_for_lines(N, is_access_line));
    assert_eq!(found, N, "{}", sidekey.output());
    requests(sidekey.proxy_addr, N, N).await;
    let (status, output) = tokio::task::block_in_place(|| sidekey.stop());
    assert!(status.success(), "{status:?}\n{output}");
    assert_lines(&output, 0, 2 * N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_warn_leaves_out_the_access_lines_of_answered_requests() {
    // (sidekey::app at info: the line saying it listens.)
    let (_env, _copilot, sidekey) = start("text", Some("warn,sidekey::app=info"));
    requests(sidekey.proxy_addr, 0, 5).await;
    // A refusal is logged at warn: it still is.
    let resp = get(sidekey.proxy_addr, "http://unknown.example/refused").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (status, output) = tokio::task::block_in_place(|| sidekey.stop());
    assert!(status.success(), "{status:?}\n{output}");
    assert!(
        !(0..5).any(|n| output.lines().any(|l| is_access_line_of(l, n))),
        "info access lines under RUST_LOG=warn:\n{output}"
    );
    assert_eq!(
        output
            .lines()
            .filter(|l| is_access_line(l) && l.contains("path=/refused"))
            .count(),
        1,
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_nobody_reads_never_holds_up_requests() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let path = env.write_config(&config(&env, &copilot));
    let mut sidekey = SidekeyProcess::spawn_stderr_unread(&path, &[], &[]);
    let admin = sidekey.admin_addr.expect("the admin listener");
    let dropped = || async {
        let text = body_text(&get(admin, "/metrics").await);
        text.lines()
            .find_map(|l| l.strip_prefix("sidekey_access_log_dropped_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no sidekey_access_log_dropped_total:\n{text}"))
    };
    assert_eq!(dropped().await, 0.0);
    // Lines of ~4 KiB: the pipe (64 KiB) and sidekey's buffer (1 MiB)
    // fill after a few hundred requests; every request is still answered
    // (each within the client's timeout), and the lines beyond are
    // dropped and counted.
    let long = "a".repeat(4000);
    let mut conn = ProxyConn::connect(sidekey.proxy_addr)
        .await
        .expect("connect");
    let mut sent = 0;
    while dropped().await == 0.0 {
        assert!(sent < 2000, "{sent} requests and nothing dropped");
        for _ in 0..50 {
            let req = Request::get(format!("http://api.copilot.cx/v1/{long}/{sent}"))
                .body(empty_body())
                .expect("request");
            let resp = conn.send(req).await.expect("answered");
            assert_eq!(resp.status(), StatusCode::OK);
            sent += 1;
        }
    }
    // Drops are said once in the log, when someone reads it again.
    sidekey.read_stderr_again();
    let (status, output) = tokio::task::block_in_place(|| sidekey.stop());
    assert!(status.success(), "{status:?}\n{output}");
    let said = output
        .lines()
        .filter(|l| l.contains("access lines are being dropped"))
        .count();
    assert_eq!(said, 1, "{output}");
    let logged = output.lines().filter(|l| is_access_line(l)).count();
    assert!(logged > 0 && logged < sent, "{logged} of {sent} logged");
    assert_eq!(copilot.accepted(), sent, "{:?}", copilot.rejections());
}
