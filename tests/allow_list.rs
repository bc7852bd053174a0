//! `[[route.allow]]`: requests outside a route's rules get
//! `403 {"error":"not_allowed"}`, are counted, and never reach the
//! upstream, whatever the spelling of their path; TRACE stays refused on a
//! credentialed route even when a rule names it.

mod support;

use http::{Request, StatusCode};
use support::harness::*;
use support::*;

const HOST: &str = "api.partner.example";

/// The partner route's `[[route.allow]]` blocks of beyond-routes.toml,
/// unchanged (plus TRACE, which must stay refused), with a static token.
fn config(env: &TestEnv, upstream: std::net::SocketAddr) -> String {
    proxy_toml(env, "", &[connect_to(&format!("{HOST}:80"), upstream)])
        + &format!(
            r#"
[[route]]
name = "partner"
host = "{HOST}"
upstream = "http://{HOST}"
[[route.allow]]
methods = ["GET"]
paths = ["/v1/orders/*", "/v1/catalog/**"]
[[route.allow]]
methods = ["POST"]
paths = ["/v1/orders"]
[[route.allow]]
methods = ["TRACE"]
paths = ["/**"]
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {{token}}"
token = "partner-token"
"#
        )
}

#[tokio::test]
async fn only_allowed_requests_reach_the_upstream() {
    let env = TestEnv::new();
    let api = StandIn::ok(None);
    let proxy = start_sidekey(&env, &config(&env, api.addr())).await;
    let addr = proxy.proxy_addr();
    let url = |path: &str| format!("http://{HOST}{path}");

    let refused = [
        ("GET", "/v1/orders"),
        ("GET", "/v1/orders/42/items"),
        ("DELETE", "/v1/orders/42"),
        ("POST", "/v1/orders/42"),
        ("PUT", "/v1/catalog/shoes"),
        ("GET", "/v1/orders/../admin"),
        ("GET", "/v1/orders/%2e%2e"),
        ("GET", "/v1/catalog/..%2f..%2fadmin"),
        ("GET", "/v1/orders/a%2Fb"),
        ("GET", "/admin"),
    ];
    for (method, path) in refused {
        let req = Request::builder()
            .method(method)
            .uri(url(path))
            .body(full_body("{}"))
            .expect("request");
        let resp = send(addr, req).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method} {path}");
        let json = body_json(&resp);
        assert_eq!(json["error"], "not_allowed", "{method} {path}");
        assert_eq!(json["route"], "partner");
        assert!(!body_text(&resp).contains("partner-token"));
    }
    // TRACE would echo the credential: refused whatever the rules say.
    let trace = Request::builder()
        .method("TRACE")
        .uri(url("/v1/orders/1"))
        .body(empty_body())
        .expect("request");
    assert_eq!(
        send(addr, trace).await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );

    let allowed = [
        ("GET", "/v1/orders/42"),
        ("GET", "/v1/catalog"),
        ("GET", "/v1/catalog/shoes/red?size=9"),
        ("POST", "/v1/orders"),
    ];
    for (method, path) in allowed {
        let req = Request::builder()
            .method(method)
            .uri(url(path))
            .body(full_body("{}"))
            .expect("request");
        assert_eq!(
            send(addr, req).await.status(),
            StatusCode::OK,
            "{method} {path}"
        );
    }
    let seen: Vec<String> = api
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.target()))
        .collect();
    assert_eq!(
        seen,
        [
            "GET /v1/orders/42",
            "GET /v1/catalog",
            "GET /v1/catalog/shoes/red?size=9",
            "POST /v1/orders"
        ],
        "only the allowed requests were forwarded"
    );
    assert_eq!(
        metric(
            &proxy,
            "sidekey_requests_not_allowed_total{route=\"partner\"}"
        )
        .await,
        refused.len() as f64
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn check_lists_the_rules_and_rejects_bad_patterns() {
    let env = TestEnv::new();
    let good = parse_config(&env, &config(&env, unused_local_addr()));
    let shown = sidekey::redact::describe_route(&good.routes[0]);
    assert!(
        shown.contains("allow: GET /v1/orders/*, /v1/catalog/**"),
        "{shown}"
    );
    assert!(shown.contains("allow: POST /v1/orders"), "{shown}");

    let bad = config(&env, unused_local_addr()).replace("/v1/catalog/**", "/v1/**/x");
    let problems = sidekey::Config::parse(&bad, env.dir(), &|_| None)
        .expect_err("rejected")
        .problems()
        .join("\n");
    assert!(
        problems.contains("route \"partner\"") && problems.contains("allow[1].paths"),
        "{problems}"
    );
}
