//! The proxy over time: admin endpoints, reload with requests in flight,
//! listeners opened and closed by a reload, refused reloads, and graceful
//! shutdown.

mod support;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::json;
use support::harness::*;
use support::*;
use tokio::net::TcpStream;

/// Client credentials of the second Copilot account (stand-in B).
const OTHER_ID: &str = "CDCDCDCDZZYYX";
const OTHER_SECRET: &str = "other-secret-0123456789abcdef";

/// A Copilot-like TLS stand-in named `name` that accepts only `id:secret`
/// and holds `/hold` requests until `gate` opens.
fn copilot_like(env: &TestEnv, name: &'static str, id: &str, secret: &str, gate: &Gate) -> StandIn {
    let expected = copilot::basic_authorization(id, secret);
    let gate = gate.clone();
    StandIn::spawn(
        Some(env.ca.server_config(&[copilot::COPILOT_HOST])),
        move |rec| {
            let ok = rec.header("authorization") == Some(expected.as_str());
            let gate = gate.clone();
            async move {
                if !ok {
                    return json_reply(StatusCode::UNAUTHORIZED, &json!({ "server": name }));
                }
                if rec.path() == "/hold" {
                    gate.wait().await;
                }
                json_reply(StatusCode::OK, &json!({ "server": name }))
            }
        },
    )
}

/// The copilot route to `upstream` with credentials `id:secret`.
fn config_to(env: &TestEnv, upstream: &StandIn, id: &str, secret: &str, extra: &str) -> String {
    proxy_toml(
        env,
        extra,
        &[connect_to("api.copilot.cx:443", upstream.addr())],
    ) + &copilot_route()
        .replace(COPILOT_ID, id)
        .replace(COPILOT_SECRET, secret)
}

/// Runs `fut` in the background (a request held in flight).
fn in_background<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(fut)
}

fn server_name(resp: &Response<Bytes>) -> String {
    body_json(resp)["server"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn admin_reports_health_readiness_and_metrics_without_secrets() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let proxy = start_sidekey(
        &env,
        &(proxy_toml(&env, "", &[copilot.connect_to_toml()]) + &copilot_route()),
    )
    .await;

    assert_eq!(admin_get(&proxy, "/healthz").await.status(), StatusCode::OK);
    assert_eq!(admin_get(&proxy, "/readyz").await.status(), StatusCode::OK);
    assert_eq!(
        admin_get(&proxy, "/nope").await.status(),
        StatusCode::NOT_FOUND
    );

    let resp = get(
        proxy.proxy_addr(),
        "http://api.copilot.cx/v1/x?email=a%40b.c",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = get(proxy.proxy_addr(), "http://unconfigured.example/x").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let metrics = admin_get(&proxy, "/metrics").await;
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = body_text(&metrics);
    assert!(
        text.contains("sidekey_requests_total{route=\"copilot\",status=\"200\",class=\"2xx\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("sidekey_requests_total{route=\"-\",status=\"403\",class=\"4xx\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("sidekey_upstream_duration_seconds"), "{text}");
    for leak in [
        COPILOT_SECRET,
        COPILOT_ID,
        COPILOT_AUTH.trim_start_matches("Basic "),
        "unconfigured.example",
        "a%40b.c",
    ] {
        assert!(!text.contains(leak), "/metrics shows {leak:?}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_sends_new_requests_to_the_new_upstream_and_lets_old_ones_finish() {
    let env = TestEnv::new();
    let gate = Gate::new();
    let a = copilot_like(&env, "A", COPILOT_ID, COPILOT_SECRET, &gate);
    let b = copilot_like(&env, "B", OTHER_ID, OTHER_SECRET, &gate);
    let proxy = start_sidekey(&env, &config_to(&env, &a, COPILOT_ID, COPILOT_SECRET, "")).await;
    let addr = proxy.proxy_addr();

    let held = in_background(async move { get(addr, "http://api.copilot.cx/hold").await });
    a.wait_for_requests(1).await;

    proxy
        .reload(parse_config(
            &env,
            &config_to(&env, &b, OTHER_ID, OTHER_SECRET, ""),
        ))
        .expect("a valid config with the same listeners reloads");

    let resp = get(addr, "http://api.copilot.cx/v1/new").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(server_name(&resp), "B");
    assert_eq!(a.request_count(), 1, "nothing new went to A");
    assert!(!held.is_finished(), "the old request is still in flight");

    gate.open();
    let resp = held.await.expect("held request task");
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(server_name(&resp), "A", "it completed with the old config");
    assert_eq!(b.request_count(), 1);
}

#[tokio::test]
async fn an_invalid_reload_is_refused_and_the_old_config_keeps_serving() {
    let env = TestEnv::new();
    let open = Gate::new();
    open.open();
    let a = copilot_like(&env, "A", COPILOT_ID, COPILOT_SECRET, &open);
    let b = copilot_like(&env, "B", OTHER_ID, OTHER_SECRET, &open);
    let proxy = start_sidekey(&env, &config_to(&env, &a, COPILOT_ID, COPILOT_SECRET, "")).await;
    let serves_from_a = || async {
        let resp = get(proxy.proxy_addr(), "http://api.copilot.cx/v1/x").await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
        assert_eq!(server_name(&resp), "A");
    };
    serves_from_a().await;

    // A config that does not validate never reaches the proxy.
    let broken = config_to(&env, &b, OTHER_ID, "${UNSET_SECRET}", "");
    let err = ::sidekey::Config::parse(&broken, env.dir(), &|_| None)
        .expect_err("an unset variable is a config error");
    let problems = err.problems().join("\n");
    assert!(problems.contains("UNSET_SECRET"), "{problems}");
    let bad_kind = config_to(&env, &b, OTHER_ID, OTHER_SECRET, "")
        .replace("kind = \"basic\"", "kind = \"basic-ish\"");
    assert!(::sidekey::Config::parse(&bad_kind, env.dir(), &|_| None).is_err());
    serves_from_a().await;

    // A valid config with a listener that cannot be bound (the address
    // is taken) is refused by reload, and changes nothing.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let taken_addr = taken.local_addr().expect("its address");
    let moved = config_to(&env, &b, OTHER_ID, OTHER_SECRET, "").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{taken_addr}\""),
    );
    let err = proxy
        .reload(parse_config(&env, &moved))
        .expect_err("an address in use cannot be listened on");
    assert!(
        err.to_string()
            .contains(&format!("cannot listen on {taken_addr} (proxy.listen)")),
        "{err}"
    );
    serves_from_a().await;
    assert_eq!(b.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_opens_moves_and_closes_listeners() {
    let env = TestEnv::new();
    let open = Gate::new();
    open.open();
    let a = copilot_like(&env, "A", COPILOT_ID, COPILOT_SECRET, &open);
    let b = copilot_like(&env, "B", OTHER_ID, OTHER_SECRET, &open);
    let proxy = start_sidekey(&env, &config_to(&env, &a, COPILOT_ID, COPILOT_SECRET, "")).await;
    let old_addr = proxy.proxy_addr();
    assert_eq!(proxy.route_addr("copilot"), None);
    // A client connection kept alive across the reload.
    let mut kept = ProxyConn::connect(old_addr).await.expect("connect");
    let resp = kept
        .send(
            http::Request::get("http://api.copilot.cx/v1/before")
                .body(empty_body())
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(server_name(&resp), "A");

    // The main listener moves; the route gets a listener of its own.
    let new_addr = unused_local_addr();
    let moved = config_to(&env, &b, OTHER_ID, OTHER_SECRET, "")
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{new_addr}\""),
        )
        .replace(
            "host = \"api.copilot.cx\"\n",
            "host = \"api.copilot.cx\"\nlisten = \"127.0.0.1:0\"\n",
        );
    proxy
        .reload(parse_config(&env, &moved))
        .expect("a config with new listeners reloads");
    assert_eq!(proxy.proxy_addr(), new_addr);
    let resp = get(new_addr, "http://api.copilot.cx/v1/moved").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(server_name(&resp), "B");
    let own = proxy
        .route_addr("copilot")
        .expect("the route's own listener");
    let resp = get(own, "/v1/own").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(server_name(&resp), "B");

    // The old address takes no new connections; the kept one runs on,
    // under the new config.
    wait_until_refused(old_addr).await;
    let resp = kept
        .send(
            http::Request::get("http://api.copilot.cx/v1/after")
                .body(empty_body())
                .expect("request"),
        )
        .await
        .expect("the kept connection still answers");
    assert_eq!(server_name(&resp), "B");
    assert_eq!(a.request_count(), 1);
    assert_eq!(b.request_count(), 3);

    // And back: the route's listener closes again.
    proxy
        .reload(parse_config(
            &env,
            &config_to(&env, &a, COPILOT_ID, COPILOT_SECRET, ""),
        ))
        .expect("reloads");
    assert_eq!(proxy.route_addr("copilot"), None);
    wait_until_refused(own).await;
    proxy.shutdown().await;
}

/// Polls until `addr` refuses connections; panics after 10 s.
async fn wait_until_refused(addr: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} still accepts connections"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_request_in_flight_finish_and_refuses_new_connections() {
    let env = TestEnv::new();
    let gate = Gate::new();
    let a = copilot_like(&env, "A", COPILOT_ID, COPILOT_SECRET, &gate);
    let proxy = start_sidekey(
        &env,
        &config_to(
            &env,
            &a,
            COPILOT_ID,
            COPILOT_SECRET,
            "drain_timeout = \"60s\"",
        ),
    )
    .await;
    let addr = proxy.proxy_addr();
    let admin = proxy.admin_addr().expect("admin listener");

    let held = in_background(async move { get(addr, "http://api.copilot.cx/hold").await });
    a.wait_for_requests(1).await;

    let stopping = in_background(proxy.shutdown());
    // While the held request drains, no new connection is accepted.
    wait_until_refused(addr).await;
    wait_until_refused(admin).await;
    assert!(!held.is_finished(), "the request in flight was cut off");
    assert!(!stopping.is_finished(), "shutdown did not wait for it");

    gate.open();
    let resp = held.await.expect("held request task");
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(server_name(&resp), "A");
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("shutdown returns once the last request is done")
        .expect("shutdown task");
    assert!(TcpStream::connect(addr).await.is_err());
    assert_eq!(a.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_the_drain_timeout() {
    let env = TestEnv::new();
    let never = Gate::new();
    let a = copilot_like(&env, "A", COPILOT_ID, COPILOT_SECRET, &never);
    let proxy = start_sidekey(
        &env,
        &config_to(
            &env,
            &a,
            COPILOT_ID,
            COPILOT_SECRET,
            "drain_timeout = \"200ms\"",
        ),
    )
    .await;
    let addr = proxy.proxy_addr();
    let held = in_background(async move { try_send_get(addr, "http://api.copilot.cx/hold").await });
    a.wait_for_requests(1).await;

    tokio::time::timeout(Duration::from_secs(20), proxy.shutdown())
        .await
        .expect("shutdown gives up on a request that never ends");
    // The connection that was still busy is closed, not left serving.
    let outcome = tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .expect("the held client is released")
        .expect("held request task");
    assert!(
        outcome
            .as_ref()
            .map_or(true, |r| r.status() != StatusCode::OK),
        "{outcome:?}"
    );
    never.open();
}

async fn try_send_get(addr: std::net::SocketAddr, url: &str) -> Result<Response<Bytes>, String> {
    let req = http::Request::get(url).body(empty_body()).expect("request");
    try_send(addr, req).await
}
