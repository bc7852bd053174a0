//! Header hygiene: what crosses the proxy in each direction, and what
//! never does (hop-by-hop headers, proxy credentials, injected parameters
//! in redirects).

mod support;

use http::{Request, StatusCode};
use serde_json::json;
use support::harness::*;
use support::*;

#[tokio::test]
async fn hop_by_hop_headers_and_proxy_credentials_never_reach_the_upstream() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), "")).await;

    let request = concat!(
        "GET http://echo.example.test/h?x=1 HTTP/1.1\r\n",
        "Host: echo.example.test\r\n",
        "Connection: keep-alive, X-Hop-Secret\r\n",
        "X-Hop-Secret: listed-in-connection\r\n",
        "Keep-Alive: timeout=5\r\n",
        "TE: trailers\r\n",
        "Upgrade: websocket\r\n",
        "Proxy-Connection: keep-alive\r\n",
        "Proxy-Authorization: Basic cHJveHl1c2VyOnByb3h5LXBhc3M=\r\n",
        "X-Kept: end-to-end\r\n",
        "\r\n",
    );
    let resp = parse_response(&raw(proxy.proxy_addr(), request.as_bytes()).await);
    assert_eq!(resp.status, 200, "{}", resp.body_text());

    let rec = server.last_request().expect("request forwarded");
    for name in [
        "connection",
        "x-hop-secret",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
        "proxy-authorization",
    ] {
        assert!(
            !rec.has_header(name),
            "{name} was forwarded: {:?}",
            rec.headers
        );
    }
    let all = format!("{:?}", rec.headers);
    assert!(!all.contains("cHJveHl1c2Vy"), "{all}");
    assert_eq!(rec.header_values("x-kept"), ["end-to-end"]);
    assert_eq!(rec.header_values("x-api-key"), ["echo-key"]);
}

#[tokio::test]
async fn the_upstream_sees_its_own_host_and_sni() {
    let env = TestEnv::new();
    let server = StandIn::ok(Some(env.ca.server_config(&["real-upstream.test"])));
    let config = proxy_toml(
        &env,
        "",
        &[connect_to("real-upstream.test:8443", server.addr())],
    ) + r#"
[[route]]
name = "aliased"
host = "app.example.test"
upstream = "https://real-upstream.test:8443"
"#;
    let proxy = start_sidekey(&env, &config).await;

    let req = Request::get("/v1/x")
        .header("host", "app.example.test")
        .body(empty_body())
        .expect("request");
    let resp = send(proxy.proxy_addr(), req).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    let resp = get(proxy.proxy_addr(), "http://app.example.test:8080/v1/y").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));

    for rec in server.wait_for_responses(2).await {
        assert_eq!(rec.authority().as_deref(), Some("real-upstream.test:8443"));
        // HTTP/2 carries :authority instead; HTTP/1.1 exactly one Host.
        let hosts = rec.header_values("host");
        assert!(
            hosts.is_empty() || hosts == ["real-upstream.test:8443"],
            "{hosts:?}"
        );
        assert_eq!(
            rec.tls.as_ref().and_then(|t| t.sni.as_deref()),
            Some("real-upstream.test")
        );
    }
}

#[tokio::test]
async fn forwarding_headers_are_added_only_when_configured() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("", &[]),
        ("forwarded = \"none\"", &[]),
        ("forwarded = \"via\"", &[("via", "1.1 sidekey")]),
        (
            "forwarded = \"x-forwarded\"",
            &[
                ("x-forwarded-for", "127.0.0.1"),
                ("x-forwarded-host", "echo.example.test"),
                ("x-forwarded-proto", "http"),
            ],
        ),
    ];
    for (i, (setting, want)) in cases.iter().enumerate() {
        let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), setting)).await;
        let resp = get(proxy.proxy_addr(), "http://echo.example.test/f").await;
        assert_eq!(resp.status(), StatusCode::OK);
        let rec = &server.wait_for_responses(i + 1).await[i];
        for name in [
            "via",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
        ] {
            let expected: Vec<String> = want
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
                .collect();
            assert_eq!(rec.header_values(name), expected, "{name} with {setting:?}");
        }
        proxy.shutdown().await;
    }
}

/// A query route whose upstream answers 302 with URLs that carry the token
/// it received, as a real API building links from the request URL would.
#[tokio::test]
async fn redirects_are_not_followed_and_injected_parameters_are_scrubbed() {
    const TOKEN: &str = "query-token-SECRET";
    let env = TestEnv::new();
    let hole = Blackhole::spawn_for(&env.ca, &["other.example"]);
    let server = StandIn::spawn_fn(None, |rec| {
        let token = rec
            .query_values("access_token")
            .pop()
            .unwrap_or_else(|| "missing".to_string());
        http::Response::builder()
            .status(StatusCode::FOUND)
            .header(
                "location",
                format!("https://other.example/next?x=1&access_token={token}"),
            )
            .header(
                "content-location",
                format!("/content?access_token={token}&y=2#part"),
            )
            .header(
                "link",
                format!(
                    "<https://other.example/p?page=2&access_token={token}>; rel=\"next\", </p?access_token={token}>; rel=\"first\""
                ),
            )
            .header("x-echo", token)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"moved",
            )))
            .expect("valid reply")
    });
    let config = proxy_toml(
        &env,
        "",
        &[
            connect_to("query.example.test:80", server.addr()),
            connect_to("other.example:443", hole.tls.addr()),
            connect_to("other.example:80", hole.plain.addr()),
        ],
    ) + &query_route(TOKEN);
    let proxy = start_sidekey(&env, &config).await;

    let resp = get(proxy.proxy_addr(), "http://query.example.test/start").await;
    assert_eq!(resp.status(), StatusCode::FOUND, "not followed");
    let header = |name: &str| {
        resp.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ASCII").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(header("location"), ["https://other.example/next?x=1"]);
    assert_eq!(header("content-location"), ["/content?y=2#part"]);
    assert_eq!(
        header("link"),
        ["<https://other.example/p?page=2>; rel=\"next\", </p>; rel=\"first\""]
    );
    assert_eq!(body_text(&resp), "moved");
    assert_eq!(server.request_count(), 1);
    assert_eq!(
        server
            .last_request()
            .map(|r| r.query_values("access_token")),
        Some(vec![TOKEN.to_string()]),
        "the upstream did get the token"
    );
    hole.assert_untouched();
    // Only the three URL headers are scrubbed: an upstream that echoes a
    // token in some other header is beyond what sidekey can know.
    assert_eq!(header("x-echo"), [TOKEN]);
}

#[tokio::test]
async fn signed_url_parameters_are_scrubbed_from_redirects_too() {
    let env = TestEnv::new();
    // Redirects to the very URL it was called with, signature and all.
    let server = StandIn::spawn_fn(None, |rec| {
        http::Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(
                "location",
                format!("http://consumer.kouponmedia.com{}", rec.target()),
            )
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("valid reply")
    });
    let config = proxy_toml(
        &env,
        "",
        &[connect_to("consumer.kouponmedia.com:80", server.addr())],
    ) + &koupon_route();
    let proxy = start_sidekey(&env, &config).await;

    let resp = get(
        proxy.proxy_addr(),
        "http://consumer.kouponmedia.com/v2/offers?zip=10001&page=2",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        resp.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("http://consumer.kouponmedia.com/v2/offers?zip=10001&page=2")
    );
    let rec = server.last_request().expect("request forwarded");
    assert_eq!(
        rec.query_values("identifier"),
        [KOUPON_KEY],
        "it was signed"
    );
}

#[tokio::test]
async fn response_hop_by_hop_headers_are_stripped() {
    let env = TestEnv::new();
    let server = StandIn::spawn_fn(None, |_| {
        http::Response::builder()
            .status(StatusCode::OK)
            .header("connection", "x-resp-hop")
            .header("x-resp-hop", "connection-scoped")
            .header("keep-alive", "timeout=99")
            .header("proxy-authenticate", "Basic realm=\"upstream\"")
            .header("upgrade", "h2c")
            .header("x-kept", "end-to-end")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                json!({ "ok": true }).to_string(),
            )))
            .expect("valid reply")
    });
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), "")).await;

    let bytes = raw(
        proxy.proxy_addr(),
        b"GET http://echo.example.test/r HTTP/1.1\r\nHost: echo.example.test\r\n\r\n",
    )
    .await;
    let resp = parse_response(&bytes);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&bytes));
    for name in ["x-resp-hop", "keep-alive", "proxy-authenticate", "upgrade"] {
        assert!(
            resp.header(name).is_none(),
            "{name} reached the client: {:?}",
            resp.headers
        );
    }
    // sidekey may speak for its own connection, but not name the upstream's.
    if let Some(connection) = resp.header("connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("x-resp-hop"),
            "{connection}"
        );
    }
    assert_eq!(resp.header("x-kept"), Some("end-to-end"));
    assert_eq!(resp.body_text(), r#"{"ok":true}"#);
}

/// A request with header names that hold `_`: a backend that folds `_`
/// into `-` would read most of them as the injected credential, framing or
/// forwarding fields.
const UNDERSCORED: &str = concat!(
    "GET http://echo.example.test/u HTTP/1.1\r\n",
    "Host: echo.example.test\r\n",
    "X_Api_Key: mine\r\n",
    "Content_Length: 5\r\n",
    "Transfer_Encoding: chunked\r\n",
    "X_Forwarded_For: 10.0.0.1\r\n",
    "Host_: evil.example\r\n",
    "X_Trace: t1\r\n",
    "X-Kept: end-to-end\r\n",
    "\r\n",
);

const DROPPED: &str = "sidekey_header_fields_dropped_total";

#[tokio::test]
async fn header_names_with_underscores_are_dropped_by_default_and_counted() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), "")).await;

    let resp = parse_response(&raw(proxy.proxy_addr(), UNDERSCORED.as_bytes()).await);
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let rec = server.last_request().expect("request forwarded");
    let names: Vec<&str> = rec.headers.keys().map(|n| n.as_str()).collect();
    assert!(
        names.iter().all(|n| !n.contains('_')),
        "a name with '_' was forwarded: {names:?}"
    );
    assert_eq!(rec.header_values("x-api-key"), ["echo-key"]);
    assert_eq!(rec.header_values("x-kept"), ["end-to-end"]);
    assert_eq!(metric(&proxy, DROPPED).await, 6.0);
}

#[tokio::test]
async fn allowed_underscores_still_never_fold_to_injected_or_framing_names() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let extra = r#"underscores_in_headers = "allow""#;
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), extra)).await;

    let resp = parse_response(&raw(proxy.proxy_addr(), UNDERSCORED.as_bytes()).await);
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let rec = server.last_request().expect("request forwarded");
    assert_eq!(rec.header_values("x_trace"), ["t1"]);
    assert_eq!(rec.header_values("host_"), ["evil.example"]);
    for name in [
        "x_api_key",
        "content_length",
        "transfer_encoding",
        "x_forwarded_for",
    ] {
        assert!(!rec.has_header(name), "{name} forwarded: {:?}", rec.headers);
    }
    assert_eq!(rec.header_values("x-api-key"), ["echo-key"]);
    assert_eq!(metric(&proxy, DROPPED).await, 4.0);
}

#[tokio::test]
async fn rejected_underscores_get_400_naming_the_route() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let extra = r#"underscores_in_headers = "reject""#;
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), extra)).await;

    let resp = parse_response(&raw(proxy.proxy_addr(), UNDERSCORED.as_bytes()).await);
    assert_eq!(resp.status, 400, "{}", resp.body_text());
    let body: serde_json::Value = serde_json::from_slice(&resp.body).expect("a JSON body");
    assert_eq!(body["route"], "echo", "{body}");
    assert_eq!(body["error"], "bad_request", "{body}");
    assert_eq!(server.request_count(), 0, "nothing reached the upstream");
    // Names without '_' still pass.
    let plain =
        "GET http://echo.example.test/u HTTP/1.1\r\nHost: echo.example.test\r\nX-Trace: 1\r\n\r\n";
    let resp = parse_response(&raw(proxy.proxy_addr(), plain.as_bytes()).await);
    assert_eq!(resp.status, 200, "{}", resp.body_text());
}

/// A query token with characters that encodings change.
const ODD_TOKEN: &str = "tok/en+ SECRET";

/// Percent-encodes everything but unreserved characters (as
/// `encodeURIComponent` or Python's `quote(s, safe="")` do).
fn pct(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Form-encodes (`application/x-www-form-urlencoded`: a space is `+`).
fn form(s: &str) -> String {
    s.split(' ').map(pct).collect::<Vec<_>>().join("+")
}

/// A `302 Found` with one field, `name: value`, and no body.
fn found(name: &str, value: String) -> Reply {
    http::Response::builder()
        .status(StatusCode::FOUND)
        .header(name, value)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("valid reply")
}

/// Checks, for each `(path, name, want)`, that `GET http://{host}{path}`
/// through `proxy` comes back as a `302` whose `name` field is `want`.
async fn assert_redirects(
    proxy: &sidekey::app::RunningProxy,
    host: &str,
    cases: &[(&str, &str, &str)],
) {
    for &(path, name, want) in cases {
        let resp = get(proxy.proxy_addr(), &format!("http://{host}{path}")).await;
        assert_eq!(
            resp.status(),
            StatusCode::FOUND,
            "{path}: {}",
            body_text(&resp)
        );
        let got = resp.headers().get(name).and_then(|v| v.to_str().ok());
        assert_eq!(got, Some(want), "{path}");
    }
}

#[tokio::test]
async fn an_applied_token_is_scrubbed_from_redirects_in_every_encoding() {
    let env = TestEnv::new();
    // Answers each path with the token in one form, in one of the four
    // fields; 401 without the token.
    let server = StandIn::spawn_fn(None, |rec| {
        // As sent (encoded), decoded.
        let sent = rec.query_values("access_token").pop().unwrap_or_default();
        let token = percent_encoding::percent_decode_str(&sent).decode_utf8_lossy();
        if token != ODD_TOKEN {
            return empty_reply(StatusCode::UNAUTHORIZED);
        }
        let (name, value) = match rec.path() {
            "/raw" => ("location", format!("/p/{token}/q?keep=1")),
            "/once" => (
                "content-location",
                format!("/login?r={}&keep=1", pct(&token)),
            ),
            "/twice" => ("location", format!("/login?r={}&keep=1", pct(&pct(&token)))),
            "/form" => (
                "link",
                format!("</login?r={}&keep=1>; rel=\"next\"", form(&token)),
            ),
            "/form-twice" => (
                "location",
                format!("/login?r={}&keep=1", pct(&form(&token))),
            ),
            "/refresh" => (
                "refresh",
                format!("0; url=/next?access_token={}&keep=1", pct(&token)),
            ),
            "/nested" => (
                "refresh",
                format!(
                    "0; url=/login?return_to={}&keep=1",
                    pct(&format!(
                        "http://query.example.test/a?access_token={}",
                        pct(&token)
                    ))
                ),
            ),
            _ => return empty_reply(StatusCode::NOT_FOUND),
        };
        found(name, value)
    });
    let config = proxy_toml(
        &env,
        "",
        &[connect_to("query.example.test:80", server.addr())],
    ) + &query_route(ODD_TOKEN);
    let proxy = start_sidekey(&env, &config).await;

    let cases = [
        ("/raw", "location", "/p//q?keep=1"),
        ("/once", "content-location", "/login?r=&keep=1"),
        ("/twice", "location", "/login?r=&keep=1"),
        ("/form", "link", "</login?r=&keep=1>; rel=\"next\""),
        ("/form-twice", "location", "/login?r=&keep=1"),
        ("/refresh", "refresh", "0; url=/next?keep=1"),
        (
            "/nested",
            "refresh",
            "0; url=/login?return_to=http%3A%2F%2Fquery%2Eexample%2Etest%2Fa%3Faccess%5Ftoken%3D&keep=1",
        ),
    ];
    assert_redirects(&proxy, "query.example.test", &cases).await;
}

/// A `kind = "header"` token an upstream copies into a redirect's URL is
/// removed too, in any encoding, template (`Bearer `) left out.
#[tokio::test]
async fn a_header_token_copied_into_a_redirect_is_scrubbed() {
    const TOKEN: &str = "abc/DEF+ghi=";
    let env = TestEnv::new();
    let server = StandIn::spawn_fn(None, |rec| {
        if rec.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return empty_reply(StatusCode::UNAUTHORIZED);
        }
        let (name, value) = match rec.path() {
            "/raw" => ("location", format!("/p/{TOKEN}/q?keep=1")),
            "/once" => (
                "location",
                format!("/cb?access_token={}&keep=1", pct(TOKEN)),
            ),
            "/form" => (
                "link",
                format!("</cb?t={}&keep=1>; rel=\"next\"", form(TOKEN)),
            ),
            "/clean" => ("location", "/elsewhere?keep=1".to_string()),
            _ => return empty_reply(StatusCode::NOT_FOUND),
        };
        found(name, value)
    });
    let config = proxy_toml(
        &env,
        "",
        &[connect_to("header.example.test:80", server.addr())],
    ) + &header_route(TOKEN);
    let proxy = start_sidekey(&env, &config).await;

    let cases = [
        ("/raw", "location", "/p//q?keep=1"),
        ("/once", "location", "/cb?access_token=&keep=1"),
        ("/form", "link", "</cb?t=&keep=1>; rel=\"next\""),
        ("/clean", "location", "/elsewhere?keep=1"),
    ];
    assert_redirects(&proxy, "header.example.test", &cases).await;
}

#[tokio::test]
async fn a_signature_is_scrubbed_from_a_redirect_that_nests_the_signed_url() {
    let env = TestEnv::new();
    // Sends the client to a login page that returns to the signed URL.
    let server = StandIn::spawn_fn(None, |rec| {
        let url = format!("http://consumer.kouponmedia.com{}", rec.target());
        http::Response::builder()
            .status(StatusCode::FOUND)
            .header(
                "location",
                format!("https://login.example/?return_to={}", pct(&url)),
            )
            .header(
                "x-signed",
                rec.query_pairs()
                    .last()
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
            )
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("valid reply")
    });
    let config = proxy_toml(
        &env,
        "",
        &[connect_to("consumer.kouponmedia.com:80", server.addr())],
    ) + &koupon_route();
    let proxy = start_sidekey(&env, &config).await;

    let resp = get(
        proxy.proxy_addr(),
        "http://consumer.kouponmedia.com/v2/offers?zip=10001",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let signature = resp.headers()["x-signed"]
        .to_str()
        .expect("ASCII")
        .to_string();
    assert_eq!(signature.len(), 40, "the stand-in saw a signature");
    let location = resp.headers()["location"].to_str().expect("ASCII");
    assert!(
        location.starts_with("https://login.example/?return_to="),
        "{location}"
    );
    assert!(location.contains("zip%3D10001"), "{location}");
    assert!(!location.contains(&signature), "{location}");
}
