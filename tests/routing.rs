//! Routing: which requests reach which upstream, and what happens to the
//! ones that match no route.

mod support;

use http::{Request, StatusCode};
use serde_json::json;
use support::harness::*;
use support::*;

/// A TLS stand-in answering 200 `{"server": name}`, with a certificate for `hosts`.
fn named_tls(env: &TestEnv, hosts: &[&str], name: &'static str) -> StandIn {
    StandIn::spawn_fn(Some(env.ca.server_config(hosts)), move |_| {
        json_reply(StatusCode::OK, &json!({ "server": name }))
    })
}

fn copilot_env() -> (TestEnv, CopilotApi) {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    (env, copilot)
}

fn copilot_config(env: &TestEnv, copilot: &CopilotApi) -> String {
    proxy_toml(env, "", &[copilot.connect_to_toml()]) + &copilot_route()
}

#[tokio::test]
async fn absolute_form_reaches_copilot_with_the_basic_credential() {
    let (env, copilot) = copilot_env();
    let proxy = start_sidekey(&env, &copilot_config(&env, &copilot)).await;

    let resp = get(proxy.proxy_addr(), "http://api.copilot.cx/v1/x?page=2").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(body_json(&resp), json!({ "ok": true }));

    let rec = copilot
        .last_request()
        .expect("Copilot received the request");
    assert_eq!(rec.header_values("authorization"), [COPILOT_AUTH]);
    assert_eq!(rec.target(), "/v1/x?page=2");
    assert_eq!(rec.authority().as_deref(), Some("api.copilot.cx"));
    let tls = rec.tls.as_ref().expect("sidekey upgrades to TLS");
    assert_eq!(tls.sni.as_deref(), Some("api.copilot.cx"));
    assert_eq!(copilot.accepted(), 1, "{:?}", copilot.rejections());
}

#[tokio::test]
async fn origin_form_is_routed_by_the_host_header() {
    let (env, copilot) = copilot_env();
    let proxy = start_sidekey(&env, &copilot_config(&env, &copilot)).await;

    let req = Request::post("/v1/y")
        .header("host", "api.copilot.cx")
        .body(full_body(r#"{"event":"signup"}"#))
        .expect("request");
    let resp = send(proxy.proxy_addr(), req).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));

    let rec = copilot
        .last_request()
        .expect("Copilot received the request");
    assert_eq!(rec.path(), "/v1/y");
    assert_eq!(rec.body_text(), r#"{"event":"signup"}"#);
    assert_eq!(rec.header_values("authorization"), [COPILOT_AUTH]);
}

#[tokio::test]
async fn in_absolute_form_the_uri_host_wins_over_the_host_header() {
    let (env, copilot) = copilot_env();
    let hole = Blackhole::spawn(&env.ca);
    let config = proxy_toml(
        &env,
        "",
        &[
            copilot.connect_to_toml(),
            connect_to("unconfigured.example:443", hole.tls.addr()),
            connect_to("unconfigured.example:80", hole.plain.addr()),
        ],
    ) + &copilot_route();
    let proxy = start_sidekey(&env, &config).await;

    let req = Request::get("http://api.copilot.cx/v1/x")
        .header("host", "unconfigured.example")
        .body(empty_body())
        .expect("request");
    let resp = send(proxy.proxy_addr(), req).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(copilot.accepted(), 1);
    hole.assert_untouched();
}

#[tokio::test]
async fn a_routes_own_listener_takes_any_host() {
    let (env, copilot) = copilot_env();
    let config = copilot_config(&env, &copilot).replace(
        "host = \"api.copilot.cx\"\n",
        "host = \"api.copilot.cx\"\nlisten = \"127.0.0.1:0\"\n",
    );
    let proxy = start_sidekey(&env, &config).await;
    let own = proxy.route_addr("copilot").expect("copilot has a listener");
    assert_ne!(own, proxy.proxy_addr());

    for host in ["localhost:9999", "anything.example"] {
        let req = Request::get("/v1/own")
            .header("host", host)
            .body(empty_body())
            .expect("request");
        let resp = send(own, req).await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{host}: {}",
            body_text(&resp)
        );
    }
    // An absolute-form URI for another host too: the listener decides.
    let resp = get(own, "http://other.example/v1/abs").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));

    let recs = copilot.wait_for_responses(3).await;
    for rec in &recs {
        assert_eq!(rec.authority().as_deref(), Some("api.copilot.cx"));
        assert_eq!(rec.header_values("authorization"), [COPILOT_AUTH]);
    }
    assert_eq!(recs[2].path(), "/v1/abs");

    // The same Host on the shared listener matches no route.
    let req = Request::get("/v1/own")
        .header("host", "anything.example")
        .body(empty_body())
        .expect("request");
    let resp = send(proxy.proxy_addr(), req).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(copilot.request_count(), 3);
}

#[tokio::test]
async fn a_routes_own_listener_keeps_to_its_path_prefix() {
    let (env, copilot) = copilot_env();
    let config = copilot_config(&env, &copilot).replace(
        "host = \"api.copilot.cx\"\n",
        "host = \"api.copilot.cx\"\nlisten = \"127.0.0.1:0\"\npath_prefix = \"/v1\"\n",
    );
    // Even with unmatched requests passed through: a request outside the
    // prefix is not forwarded anywhere, with or without the credential.
    let config = config.replacen("[proxy]\n", "[proxy]\nunmatched = \"passthrough\"\n", 1);
    let proxy = start_sidekey(&env, &config).await;
    let own = proxy.route_addr("copilot").expect("copilot has a listener");

    let resp = get(own, "/v1/inside").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    for path in ["/v2/outside", "/v1x", "/"] {
        let resp = get(own, path).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
        let body = body_json(&resp);
        assert_eq!(body["error"], "no_route", "{path}");
        assert_eq!(body["route"], "copilot", "{path}");
    }
    assert_eq!(copilot.request_count(), 1);
    assert_eq!(
        copilot
            .last_request()
            .map(|r| r.path().to_string())
            .as_deref(),
        Some("/v1/inside")
    );
}

#[tokio::test]
async fn the_longest_path_prefix_wins() {
    let env = TestEnv::new();
    let root = named_tls(&env, &["root.upstream.test"], "root");
    let v2 = named_tls(&env, &["v2.upstream.test"], "v2");
    let users = named_tls(&env, &["users.upstream.test"], "users");
    let mut config = proxy_toml(
        &env,
        "",
        &[
            connect_to("root.upstream.test:443", root.addr()),
            connect_to("v2.upstream.test:443", v2.addr()),
            connect_to("users.upstream.test:443", users.addr()),
        ],
    );
    // Listed shortest first, so that file order cannot be what decides.
    for (name, prefix) in [("root", ""), ("v2", "/v2"), ("users", "/v2/users")] {
        let prefix_line = if prefix.is_empty() {
            String::new()
        } else {
            format!("path_prefix = \"{prefix}\"\n")
        };
        config += &format!(
            "\n[[route]]\nname = \"{name}\"\nhost = \"api.example.test\"\n{prefix_line}upstream = \"https://{name}.upstream.test\"\n[route.auth]\nkind = \"header\"\nname = \"X-Api-Key\"\ntoken = \"key-of-{name}\"\n"
        );
    }
    let proxy = start_sidekey(&env, &config).await;

    for (path, want) in [
        ("/v2/users/7", "users"),
        ("/v2/users", "users"),
        ("/v2/x", "v2"),
        ("/v2", "v2"),
        ("/v2x", "root"),
        ("/v1/users", "root"),
        ("/", "root"),
    ] {
        let resp = get(
            proxy.proxy_addr(),
            &format!("http://api.example.test{path}"),
        )
        .await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{path}: {}",
            body_text(&resp)
        );
        assert_eq!(body_json(&resp)["server"], want, "{path}");
    }
    for (server, name, paths) in [
        (&root, "root", vec!["/v2x", "/v1/users", "/"]),
        (&v2, "v2", vec!["/v2/x", "/v2"]),
        (&users, "users", vec!["/v2/users/7", "/v2/users"]),
    ] {
        let recs = server.requests();
        assert_eq!(
            recs.iter()
                .map(|r| r.path().to_string())
                .collect::<Vec<_>>(),
            paths,
            "{name}: the path is forwarded unchanged"
        );
        for rec in recs {
            assert_eq!(
                rec.header_values("x-api-key"),
                [format!("key-of-{name}")],
                "each route injects its own credential"
            );
        }
    }
}

#[tokio::test]
async fn a_wildcard_route_matches_subdomains_only() {
    let env = TestEnv::new();
    let tenants = named_tls(
        &env,
        &["one.example.test", "two.deep.example.test"],
        "tenants",
    );
    let hole = Blackhole::spawn_for(&env.ca, &["example.test"]);
    // One worker: every request on the same thread's upstream connections.
    let config = proxy_toml(
        &env,
        "workers = 1",
        &[
            connect_to("one.example.test:443", tenants.addr()),
            connect_to("two.deep.example.test:443", tenants.addr()),
            connect_to("example.test:443", hole.tls.addr()),
            connect_to("example.test:80", hole.plain.addr()),
        ],
    ) + r#"
[[route]]
name = "tenants"
host = "*.example.test"
[route.auth]
kind = "header"
name = "X-Api-Key"
token = "tenant-key"
"#;
    let proxy = start_sidekey(&env, &config).await;

    for host in [
        "one.example.test",
        "two.deep.example.test",
        "ONE.Example.Test",
    ] {
        let resp = get(proxy.proxy_addr(), &format!("http://{host}/t")).await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{host}: {}",
            body_text(&resp)
        );
    }
    let recs = tenants.wait_for_responses(3).await;
    // Without `upstream`, a wildcard route goes to https://{the request's
    // host}, in lowercase however the client spelled it.
    let seen: Vec<_> = recs
        .iter()
        .map(|r| (r.authority(), r.tls.as_ref().and_then(|t| t.sni.clone())))
        .collect();
    assert_eq!(
        seen,
        [
            (
                Some("one.example.test".into()),
                Some("one.example.test".into())
            ),
            (
                Some("two.deep.example.test".into()),
                Some("two.deep.example.test".into())
            ),
            (
                Some("one.example.test".into()),
                Some("one.example.test".into())
            ),
        ]
    );
    for rec in &recs {
        assert_eq!(rec.header_values("x-api-key"), ["tenant-key"]);
    }
    // ONE.Example.Test reused one.example.test's upstream connection.
    assert_eq!(recs[2].connection_id, recs[0].connection_id);

    // The apex is not a subdomain, nor is a look-alike.
    for host in ["example.test", "evil-example.test"] {
        let resp = get(proxy.proxy_addr(), &format!("http://{host}/t")).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{host}");
    }
    hole.assert_untouched();
}

#[tokio::test]
async fn host_matching_ignores_case() {
    let (env, copilot) = copilot_env();
    let proxy = start_sidekey(&env, &copilot_config(&env, &copilot)).await;

    let resp = get(proxy.proxy_addr(), "http://API.Copilot.CX/v1/x").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    let req = Request::get("/v1/y")
        .header("host", "API.COPILOT.CX")
        .body(empty_body())
        .expect("request");
    let resp = send(proxy.proxy_addr(), req).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    // A Host with a port and a trailing dot names the same host.
    let req = Request::get("/v1/z")
        .header("host", "api.copilot.cx.:80")
        .body(empty_body())
        .expect("request");
    let resp = send(proxy.proxy_addr(), req).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(copilot.accepted(), 3, "{:?}", copilot.rejections());
}

#[tokio::test]
async fn the_upstream_base_path_and_port_are_used() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET).allow_any_host();
    let config = proxy_toml(
        &env,
        "",
        &[connect_to("api.copilot.cx:8443", copilot.addr())],
    ) + &copilot_route().replace(
        "host = \"api.copilot.cx\"\n",
        "host = \"api.copilot.cx\"\nupstream = \"https://api.copilot.cx:8443/base/\"\n",
    );
    let proxy = start_sidekey(&env, &config).await;

    let resp = get(proxy.proxy_addr(), "http://api.copilot.cx/v1/x?y=1").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    let rec = copilot.last_request().expect("request received");
    assert_eq!(rec.target(), "/base/v1/x?y=1");
    assert_eq!(rec.authority().as_deref(), Some("api.copilot.cx:8443"));
    assert_eq!(
        rec.tls.as_ref().and_then(|t| t.sni.as_deref()),
        Some("api.copilot.cx")
    );
    assert_eq!(rec.header_values("authorization"), [COPILOT_AUTH]);
}

#[tokio::test]
async fn an_unmatched_host_gets_403_naming_it_and_nothing_is_sent() {
    let (env, copilot) = copilot_env();
    let koupon = KouponApi::spawn(KOUPON_KEY, KOUPON_SECRET);
    let hole = Blackhole::spawn(&env.ca);
    let config = proxy_toml(
        &env,
        "",
        &[
            copilot.connect_to_toml(),
            koupon.connect_to_toml(),
            connect_to("unconfigured.example:443", hole.tls.addr()),
            connect_to("unconfigured.example:80", hole.plain.addr()),
        ],
    ) + &copilot_route()
        + &koupon_route();
    let proxy = start_sidekey(&env, &config).await;

    let absolute = Request::get("http://unconfigured.example/v1/x?q=1")
        .header("authorization", "Bearer the-apps-own")
        .body(full_body(""))
        .expect("request");
    let by_host = Request::post("/v2/consumer")
        .header("host", "unconfigured.example")
        .body(full_body("{}"))
        .expect("request");
    for req in [absolute, by_host] {
        let resp = send(proxy.proxy_addr(), req).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let body = body_json(&resp);
        assert_eq!(body["error"], "no_route");
        assert_eq!(body["host"], "unconfigured.example");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("unconfigured.example")),
            "{body}"
        );
        let all = format!("{:?} {}", resp.headers(), body_text(&resp));
        for secret in [COPILOT_AUTH, COPILOT_SECRET, KOUPON_KEY, KOUPON_SECRET] {
            assert!(!all.contains(secret), "{all}");
        }
    }
    hole.assert_untouched();
    assert_eq!(copilot.connection_count(), 0);
    assert_eq!(koupon.connection_count(), 0);
}

#[tokio::test]
async fn passthrough_forwards_unmatched_hosts_without_any_credential() {
    let (env, copilot) = copilot_env();
    let other = StandIn::ok(None);
    let config = proxy_toml(
        &env,
        "unmatched = \"passthrough\"",
        &[
            copilot.connect_to_toml(),
            connect_to("passthrough.example:80", other.addr()),
        ],
    ) + &copilot_route()
        + r#"
[[route]]
name = "query"
host = "query.example.test"
[route.auth]
kind = "query"
param = "access_token"
token = "query-route-token"
"#;
    let proxy = start_sidekey(&env, &config).await;

    let resp = get(
        proxy.proxy_addr(),
        "http://passthrough.example/p/q?x=1&y=%20",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    let req = Request::get("/by-host")
        .header("host", "passthrough.example")
        .body(empty_body())
        .expect("request");
    let resp = send(proxy.proxy_addr(), req).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));

    let recs = other.wait_for_responses(2).await;
    assert_eq!(recs[0].target(), "/p/q?x=1&y=%20");
    assert_eq!(recs[1].target(), "/by-host");
    for rec in &recs {
        assert_eq!(rec.authority().as_deref(), Some("passthrough.example"));
        assert!(!rec.has_header("authorization"), "{:?}", rec.headers);
        let seen = format!("{} {:?}", rec.target(), rec.headers);
        for secret in [COPILOT_AUTH, "query-route-token", "access_token"] {
            assert!(!seen.contains(secret), "{seen}");
        }
    }
    assert_eq!(copilot.connection_count(), 0);
}

#[tokio::test]
async fn connect_is_refused_with_advice_to_send_http() {
    let (env, copilot) = copilot_env();
    let proxy = start_sidekey(&env, &copilot_config(&env, &copilot)).await;

    let bytes = raw(
        proxy.proxy_addr(),
        b"CONNECT api.copilot.cx:443 HTTP/1.1\r\nHost: api.copilot.cx:443\r\n\r\n",
    )
    .await;
    let resp = parse_response(&bytes);
    assert_eq!(resp.status, 501, "{}", resp.body_text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let body: serde_json::Value =
        serde_json::from_str(&resp.body_text()).expect("a JSON error body");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("http://"), "{body}");
    assert_eq!(copilot.connection_count(), 0);
}

#[tokio::test]
async fn a_request_naming_no_host_is_a_400() {
    let (env, copilot) = copilot_env();
    let proxy = start_sidekey(&env, &copilot_config(&env, &copilot)).await;
    let bytes = raw(proxy.proxy_addr(), b"GET /v1/x HTTP/1.1\r\n\r\n").await;
    let resp = parse_response(&bytes);
    assert_eq!(resp.status, 400, "{}", resp.body_text());
    assert!(resp.body_text().contains("no_host"), "{}", resp.body_text());
    assert_eq!(copilot.connection_count(), 0);
}
