//! Self-tests of the integration-test support module: the stand-ins must accept
//! exactly what the seed documents describe and refuse everything else.

mod support;

use std::time::Duration;

use http::{Method, Request, StatusCode, Version};
use serde_json::json;
use support::*;

const COPILOT_ID: &str = "ABABABABQQIRZ";
const COPILOT_SECRET: &str = "k9H2Nd3T5j5EW2Fu160l11Hal3x3oa";
const COPILOT_AUTH: &str = "Basic QUJBQkFCQUJRUUlSWjprOUgyTmQzVDVqNUVXMkZ1MTYwbDExSGFsM3gzb2E=";

const KOUPON_KEY: &str = "6348256714038520009a57d1d2-5188-457b-854b-86aafea65fc5";
const KOUPON_SECRET: &str = "4623B7B8-18A6-4B2C-B2C1-18157F5C4AFE";
const KOUPON_TS: u64 = 1400606387;
const KOUPON_URL: &str = "http://consumer.kouponmedia.com/v2/consumer?identifier=6348256714038520009a57d1d2-5188-457b-854b-86aafea65fc5&timestamp=1400606387";
const KOUPON_SIG: &str = "8547acaa441306a5718ea82e11697debee68d2ea";
/// The document's printed example, which its own inputs do not produce.
const KOUPON_DOC_SIG: &str = "efe13eb5946fa208627142960352353efefd1d84";

// ---------------------------------------------------------------------------
// Copilot

async fn copilot_call(
    api: &CopilotApi,
    ca: &TestCa,
    alpn: &[&[u8]],
    headers: &[(&str, &str)],
) -> http::Response<bytes::Bytes> {
    let mut req = Request::post("/v1/collect").header("host", copilot::COPILOT_HOST);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(full_body(r#"{"event":"x"}"#))
        .expect("valid request");
    send_tls(
        api.addr(),
        copilot::COPILOT_HOST,
        ca.client_config(alpn),
        req,
    )
    .await
    .expect("TLS request to the Copilot stand-in")
}

#[test]
fn copilot_basic_value_is_the_document_vector() {
    assert_eq!(
        copilot::basic_authorization(COPILOT_ID, COPILOT_SECRET),
        COPILOT_AUTH
    );
}

#[tokio::test]
async fn copilot_accepts_the_document_vector_over_http1_and_http2() {
    let ca = TestCa::new();
    let api = CopilotApi::spawn(&ca, COPILOT_ID, COPILOT_SECRET);
    assert_eq!(api.expected_authorization(), COPILOT_AUTH);
    let good = [
        ("authorization", COPILOT_AUTH),
        ("content-type", "application/json"),
    ];

    let h1 = copilot_call(&api, &ca, &[b"http/1.1"], &good).await;
    assert_eq!(h1.status(), StatusCode::OK, "{}", body_text(&h1));
    assert_eq!(body_json(&h1), json!({ "ok": true }));

    let h2 = copilot_call(&api, &ca, &[b"h2", b"http/1.1"], &good).await;
    assert_eq!(h2.status(), StatusCode::OK, "{}", body_text(&h2));

    let recs = api.wait_for_responses(2).await;
    assert_eq!(recs[0].version, Version::HTTP_11);
    assert_eq!(recs[1].version, Version::HTTP_2);
    for rec in &recs {
        let tls = rec.tls.as_ref().expect("TLS request");
        assert_eq!(tls.sni.as_deref(), Some(copilot::COPILOT_HOST));
        assert_eq!(rec.authority().as_deref(), Some(copilot::COPILOT_HOST));
        assert_eq!(rec.path(), "/v1/collect");
        assert_eq!(rec.body_json(), json!({ "event": "x" }));
    }
    assert_eq!(
        recs[1].tls.as_ref().and_then(|t| t.alpn.clone()),
        Some(b"h2".to_vec())
    );
    assert_eq!(api.accepted(), 2);
    assert!(api.rejections().is_empty());
}

#[tokio::test]
async fn copilot_rejects_wrong_missing_and_duplicated_credentials() {
    let ca = TestCa::new();
    let api = CopilotApi::spawn(&ca, COPILOT_ID, COPILOT_SECRET);
    let ct = ("content-type", "application/json");
    let wrong_secret = copilot::basic_authorization(COPILOT_ID, "not-the-secret");
    let lowercase_scheme = COPILOT_AUTH.replacen("Basic", "basic", 1);
    // (Trailing whitespace is not a difference: HTTP strips it from field values.)
    let double_space = COPILOT_AUTH.replacen(' ', "  ", 1);
    let bare = COPILOT_AUTH.trim_start_matches("Basic ").to_string();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("missing", vec![ct]),
        (
            "wrong secret",
            vec![("authorization", wrong_secret.as_str()), ct],
        ),
        (
            "duplicated",
            vec![
                ("authorization", COPILOT_AUTH),
                ("authorization", COPILOT_AUTH),
                ct,
            ],
        ),
        (
            "lowercase scheme",
            vec![("authorization", lowercase_scheme.as_str()), ct],
        ),
        (
            "double space",
            vec![("authorization", double_space.as_str()), ct],
        ),
        ("no scheme", vec![("authorization", bare.as_str()), ct]),
        ("bearer", vec![("authorization", "Bearer abc"), ct]),
    ];
    for (name, headers) in &cases {
        for alpn in [&[b"http/1.1" as &[u8]][..], &[b"h2"]] {
            let resp = copilot_call(&api, &ca, alpn, headers).await;
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "case {name}");
            assert_eq!(
                body_json(&resp),
                json!({ "reason": "AUTH.UNAUTHORIZED" }),
                "case {name}"
            );
        }
    }
    assert_eq!(api.accepted(), 0);
    assert_eq!(api.rejections().len(), cases.len() * 2);
    assert!(
        api.rejections()[4].detail.contains("2 times"),
        "{:?}",
        api.rejections()[4]
    );
}

#[tokio::test]
async fn copilot_requires_a_json_content_type() {
    let ca = TestCa::new();
    let api = CopilotApi::spawn(&ca, COPILOT_ID, COPILOT_SECRET);
    let auth = ("authorization", COPILOT_AUTH);
    for (headers, want) in [
        (vec![auth], StatusCode::UNAUTHORIZED),
        (
            vec![auth, ("content-type", "text/plain")],
            StatusCode::UNAUTHORIZED,
        ),
        (
            vec![
                auth,
                ("content-type", "application/json"),
                ("content-type", "application/json"),
            ],
            StatusCode::UNAUTHORIZED,
        ),
        (
            vec![auth, ("content-type", "application/json; charset=utf-8")],
            StatusCode::OK,
        ),
        (
            vec![auth, ("content-type", "Application/JSON")],
            StatusCode::OK,
        ),
    ] {
        let resp = copilot_call(&api, &ca, &[b"http/1.1"], &headers).await;
        assert_eq!(resp.status(), want, "{headers:?}: {}", body_text(&resp));
        if want != StatusCode::OK {
            assert_eq!(body_json(&resp)["reason"], "CONTENT_TYPE.REQUIRED");
        }
    }
}

#[tokio::test]
async fn copilot_checks_sni_and_host_unless_told_not_to() {
    let ca = TestCa::new();
    let good = [
        ("authorization", COPILOT_AUTH),
        ("content-type", "application/json"),
    ];
    let api = CopilotApi::spawn(&ca, COPILOT_ID, COPILOT_SECRET);

    // Right SNI, wrong Host.
    let mut req = Request::get("/v1/x").header("host", "127.0.0.1");
    for (k, v) in good {
        req = req.header(k, v);
    }
    let resp = send_tls(
        api.addr(),
        copilot::COPILOT_HOST,
        ca.client_config(&[b"http/1.1"]),
        req.body(empty_body()).expect("valid request"),
    )
    .await
    .expect("TLS request");
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);

    // No SNI (IP address), right Host.
    let ip_call = |api_addr| {
        let mut req = Request::get("/v1/x").header("host", copilot::COPILOT_HOST);
        for (k, v) in good {
            req = req.header(k, v);
        }
        send_tls(
            api_addr,
            "127.0.0.1",
            ca.client_config(&[b"http/1.1"]),
            req.body(empty_body()).expect("valid request"),
        )
    };
    let resp = ip_call(api.addr()).await.expect("TLS request by IP");
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(api.rejections().len(), 2);

    let lenient = CopilotApi::spawn(&ca, COPILOT_ID, COPILOT_SECRET).allow_any_host();
    let resp = ip_call(lenient.addr()).await.expect("TLS request by IP");
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails_the_handshake() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let api = CopilotApi::spawn(&ca, COPILOT_ID, COPILOT_SECRET);
    let err = send_tls(
        api.addr(),
        copilot::COPILOT_HOST,
        other.client_config(&[b"http/1.1"]),
        Request::get("/").body(empty_body()).expect("valid request"),
    )
    .await
    .expect_err("an untrusted CA must fail the handshake");
    assert!(err.contains("TLS handshake"), "{err}");
    api.wait_for_tls_failures(1).await;
    assert_eq!(api.connection_count(), 1);
    assert_eq!(api.request_count(), 0);
}

// ---------------------------------------------------------------------------
// Koupon

#[test]
fn koupon_sign_matches_the_documented_openssl_command() {
    assert_eq!(koupon::sign(KOUPON_URL, KOUPON_SECRET), KOUPON_SIG);
    assert_ne!(koupon::sign(KOUPON_URL, KOUPON_SECRET), KOUPON_DOC_SIG);
    assert_eq!(
        koupon::signed_url(KOUPON_URL, KOUPON_SECRET),
        format!("{KOUPON_URL}&authSignature={KOUPON_SIG}")
    );
    let sha256 = koupon::sign_with(koupon::Algorithm::HmacSha256, KOUPON_URL, KOUPON_SECRET);
    assert_eq!(sha256.len(), 64);
}

#[test]
fn koupon_verify_url_follows_the_procedure() {
    let mut rules = koupon::Rules::new(KOUPON_KEY, KOUPON_SECRET);
    rules.now = Some(KOUPON_TS);
    let ok = format!("{KOUPON_URL}&authSignature={KOUPON_SIG}");
    assert_eq!(koupon::verify_url(&ok, &rules), Ok(()));

    let reason =
        |url: &str, rules: &koupon::Rules| koupon::verify_url(url, rules).expect_err(url).reason;
    let doc = format!("{KOUPON_URL}&authSignature={KOUPON_DOC_SIG}");
    assert_eq!(reason(&doc, &rules), koupon::REASON_SIGNATURE);
    assert_eq!(reason(KOUPON_URL, &rules), koupon::REASON_SIGNATURE);
    assert_eq!(
        reason(&format!("{ok}&extra=1"), &rules),
        koupon::REASON_SIGNATURE
    );
    assert_eq!(reason(&ok.to_uppercase(), &rules), koupon::REASON_SIGNATURE);

    // A timestamp outside ±300 s of "now".
    let mut late = rules.clone();
    late.now = Some(KOUPON_TS + 301);
    assert_eq!(reason(&ok, &late), koupon::REASON_TIMESTAMP);
    late.now = Some(KOUPON_TS - 301);
    assert_eq!(reason(&ok, &late), koupon::REASON_TIMESTAMP);
    late.now = Some(KOUPON_TS + 300);
    assert_eq!(koupon::verify_url(&ok, &late), Ok(()));
    late.tolerance = None;
    late.now = Some(KOUPON_TS + 1_000_000);
    assert_eq!(koupon::verify_url(&ok, &late), Ok(()));

    let signed = |url: &str| format!("{url}&authSignature={}", koupon::sign(url, KOUPON_SECRET));
    let other_key = KOUPON_URL.replace("identifier=6348", "identifier=9999");
    assert_eq!(
        reason(&signed(&other_key), &rules),
        koupon::REASON_IDENTIFIER
    );
    let twice = format!("{KOUPON_URL}&identifier={KOUPON_KEY}");
    assert_eq!(reason(&signed(&twice), &rules), koupon::REASON_IDENTIFIER);
    let no_ts = KOUPON_URL.replace("&timestamp=1400606387", "");
    assert_eq!(reason(&signed(&no_ts), &rules), koupon::REASON_TIMESTAMP);
    let two_ts = format!("{KOUPON_URL}&timestamp={KOUPON_TS}");
    assert_eq!(reason(&signed(&two_ts), &rules), koupon::REASON_TIMESTAMP);
    let bad_ts = KOUPON_URL.replace("timestamp=1400606387", "timestamp=14006063.87");
    assert_eq!(reason(&signed(&bad_ts), &rules), koupon::REASON_TIMESTAMP);
    let early_sig = format!("{KOUPON_URL}&authSignature={KOUPON_SIG}");
    assert_eq!(
        reason(&signed(&early_sig), &rules),
        koupon::REASON_SIGNATURE
    );
    // Client parameters before identifier are signed like the rest.
    let with_client_params = KOUPON_URL.replace("?identifier", "?zip=10001&identifier");
    assert_eq!(
        koupon::verify_url(&signed(&with_client_params), &rules),
        Ok(())
    );

    let mut sha256 = rules.clone();
    sha256.algorithm = koupon::Algorithm::HmacSha256;
    assert_eq!(reason(&ok, &sha256), koupon::REASON_SIGNATURE);
    let ok256 = format!(
        "{KOUPON_URL}&authSignature={}",
        koupon::sign_with(koupon::Algorithm::HmacSha256, KOUPON_URL, KOUPON_SECRET)
    );
    assert_eq!(koupon::verify_url(&ok256, &sha256), Ok(()));
}

fn koupon_request(
    method: Method,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(target)
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(full_body(body)).expect("valid request")
}

#[tokio::test]
async fn koupon_accepts_the_document_vector_and_refuses_the_documents_example() {
    let api = KouponApi::spawn(KOUPON_KEY, KOUPON_SECRET).with_fixed_time(KOUPON_TS);
    let path = KOUPON_URL.trim_start_matches("http://consumer.kouponmedia.com");
    let accept = [("accept", "application/json")];

    let target = format!("{path}&authSignature={KOUPON_SIG}");
    let resp = send(
        api.addr(),
        koupon_request(Method::POST, koupon::KOUPON_HOST, &target, &accept, ""),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(body_json(&resp), json!({ "ok": true }));

    // Absolute-form: the URI's authority is the host.
    let absolute = format!("{KOUPON_URL}&authSignature={KOUPON_SIG}");
    let resp = send(
        api.addr(),
        koupon_request(Method::POST, koupon::KOUPON_HOST, &absolute, &accept, ""),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));

    let doc = format!("{path}&authSignature={KOUPON_DOC_SIG}");
    let resp = send(
        api.addr(),
        koupon_request(Method::POST, koupon::KOUPON_HOST, &doc, &accept, ""),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_json(&resp)["reason"], koupon::REASON_SIGNATURE);

    // The Host is part of the signed URL.
    let resp = send(
        api.addr(),
        koupon_request(
            Method::POST,
            "consumer.kouponmedia.com:8080",
            &target,
            &accept,
            "",
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let recs = api.wait_for_responses(4).await;
    assert_eq!(recs[0].target(), target);
    assert_eq!(
        koupon::received_url(&recs[0]).as_deref(),
        Some(absolute.as_str())
    );
    assert_eq!(api.accepted(), 2);
    assert_eq!(api.rejections().len(), 2);
}

#[tokio::test]
async fn koupon_checks_live_timestamps_headers_and_bodies() {
    let api = KouponApi::spawn(KOUPON_KEY, KOUPON_SECRET);
    let host = koupon::KOUPON_HOST;
    let sign_target = |host: &str, path_query: &str| {
        let url = format!("http://{host}{path_query}");
        let signed = koupon::signed_url(&url, KOUPON_SECRET);
        signed
            .trim_start_matches(&format!("http://{host}"))
            .to_string()
    };
    let now = koupon::epoch_now();
    let fresh = sign_target(
        host,
        &format!("/v2/offers?zip=10001&identifier={KOUPON_KEY}&timestamp={now}"),
    );
    let stale = sign_target(
        host,
        &format!("/v2/offers?identifier={KOUPON_KEY}&timestamp={}", now - 301),
    );
    let json_accept = ("accept", "application/json");
    let json_ct = ("content-type", "application/json; charset=utf-8");

    let cases: Vec<(&str, Request<_>, StatusCode, &str)> = vec![
        (
            "fresh GET",
            koupon_request(Method::GET, host, &fresh, &[json_accept], ""),
            StatusCode::OK,
            "",
        ),
        (
            "Accept list",
            koupon_request(
                Method::GET,
                host,
                &fresh,
                &[("accept", "text/html, application/json;q=0.9")],
                "",
            ),
            StatusCode::OK,
            "",
        ),
        (
            "stale",
            koupon_request(Method::GET, host, &stale, &[json_accept], ""),
            StatusCode::UNAUTHORIZED,
            koupon::REASON_TIMESTAMP,
        ),
        (
            "no Accept",
            koupon_request(Method::GET, host, &fresh, &[], ""),
            StatusCode::UNAUTHORIZED,
            koupon::REASON_ACCEPT,
        ),
        (
            "Accept xml",
            koupon_request(
                Method::GET,
                host,
                &fresh,
                &[("accept", "application/xml")],
                "",
            ),
            StatusCode::UNAUTHORIZED,
            koupon::REASON_ACCEPT,
        ),
        (
            "parameter after signature",
            koupon_request(
                Method::GET,
                host,
                &format!("{fresh}&page=2"),
                &[json_accept],
                "",
            ),
            StatusCode::UNAUTHORIZED,
            koupon::REASON_SIGNATURE,
        ),
        (
            "POST JSON",
            koupon_request(
                Method::POST,
                host,
                &fresh,
                &[json_accept, json_ct],
                r#"{"a":1}"#,
            ),
            StatusCode::OK,
            "",
        ),
        (
            "POST without Content-Type",
            koupon_request(Method::POST, host, &fresh, &[json_accept], r#"{"a":1}"#),
            StatusCode::UNAUTHORIZED,
            koupon::REASON_CONTENT_TYPE,
        ),
        (
            "PUT latin-1",
            koupon_request(
                Method::PUT,
                host,
                &fresh,
                &[
                    json_accept,
                    ("content-type", "application/json; charset=iso-8859-1"),
                ],
                r#"{"a":1}"#,
            ),
            StatusCode::UNAUTHORIZED,
            koupon::REASON_CONTENT_TYPE,
        ),
        (
            "POST invalid JSON",
            koupon_request(
                Method::POST,
                host,
                &fresh,
                &[json_accept, json_ct],
                "a=1&b=2",
            ),
            StatusCode::BAD_REQUEST,
            koupon::REASON_INVALID_JSON,
        ),
    ];
    for (name, req, want, reason) in cases {
        let resp = send(api.addr(), req).await;
        assert_eq!(resp.status(), want, "case {name}: {}", body_text(&resp));
        if !reason.is_empty() {
            assert_eq!(body_json(&resp)["reason"], reason, "case {name}");
        }
    }

    // A Host with a port (upstream pointed straight at the stand-in) is signed as sent.
    let direct_host = api.addr().to_string();
    let direct = sign_target(
        &direct_host,
        &format!("/v2/consumer?identifier={KOUPON_KEY}&timestamp={now}"),
    );
    let resp = send(
        api.addr(),
        koupon_request(Method::GET, &direct_host, &direct, &[json_accept], ""),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    for rejection in api.rejections() {
        assert!(!rejection.detail.contains(KOUPON_SECRET));
    }
}

// ---------------------------------------------------------------------------
// Generic stand-in, client, raw bytes

#[tokio::test]
async fn stand_in_records_requests_and_streams_large_bodies() {
    let server = StandIn::ok(None);
    let req = Request::post("/small?a=1&b=%20")
        .header("host", "example.test")
        .header("x-twice", "1")
        .header("x-twice", "2")
        .body(full_body("hello"))
        .expect("valid request");
    let resp = send(server.addr(), req).await;
    assert_eq!(resp.status(), StatusCode::OK);

    const BIG: u64 = 50_000_000;
    let req = Request::put("http://example.test/big")
        .body(streaming_body(BIG))
        .expect("valid request");
    let resp = send(server.addr(), req).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let recs = server.wait_for_responses(2).await;
    let small = &recs[0];
    assert_eq!(small.method, Method::POST);
    assert_eq!(small.target(), "/small?a=1&b=%20");
    assert_eq!(small.query_values("b"), vec!["%20".to_string()]);
    assert_eq!(small.header("host"), Some("example.test"));
    assert_eq!(small.header_values("x-twice"), vec!["1", "2"]);
    assert_eq!(small.header_count("x-twice"), 2);
    assert_eq!(small.body_text(), "hello");
    assert_eq!(small.body_len, 5);
    assert_eq!(small.status, Some(StatusCode::OK));

    let big = &recs[1];
    assert_eq!(big.uri.to_string(), "http://example.test/big");
    assert_eq!(big.header("host"), Some("example.test"));
    assert_eq!(big.body_len, BIG);
    assert!(big.body.is_none(), "a body over 1 MiB is not kept");
    assert!(big.body_error.is_none());
}

#[tokio::test]
async fn a_held_request_is_visible_before_it_is_answered() {
    let gate = Gate::new();
    let handler_gate = gate.clone();
    let server = StandIn::spawn(None, move |_rec| {
        let gate = handler_gate.clone();
        async move {
            gate.wait().await;
            text_reply(StatusCode::ACCEPTED, "released")
        }
    });
    let addr = server.addr();
    let client = tokio::spawn(async move {
        send(
            addr,
            Request::get("/hold").body(empty_body()).expect("request"),
        )
        .await
    });

    let recs = server.wait_for_requests(1).await;
    assert_eq!(recs[0].path(), "/hold");
    assert_eq!(recs[0].status, None);
    assert_eq!(server.response_count(), 0);

    gate.open();
    let resp = client.await.expect("client task");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(body_text(&resp), "released");
    let recs = server.wait_for_responses(1).await;
    assert_eq!(recs[0].status, Some(StatusCode::ACCEPTED));
}

#[tokio::test]
#[should_panic(expected = "timed out after")]
async fn waiting_for_a_request_that_never_comes_panics_clearly() {
    let server = StandIn::ok(None);
    server
        .wait_for_requests_within(1, Duration::from_millis(50))
        .await;
}

#[tokio::test]
async fn keep_alive_requests_share_a_connection() {
    let server = StandIn::ok(None);
    let mut conn = ProxyConn::connect(server.addr()).await.expect("connect");
    for _ in 0..2 {
        let req = Request::get("/k")
            .header("host", "a.test")
            .body(empty_body())
            .expect("request");
        assert_eq!(conn.send(req).await.expect("send").status(), StatusCode::OK);
    }
    let _ = get(server.addr(), "http://a.test/other").await;
    let recs = server.wait_for_responses(3).await;
    assert_eq!(
        recs.iter().map(|r| r.connection_id).collect::<Vec<_>>(),
        vec![1, 1, 2]
    );
    assert_eq!(server.connection_count(), 2);
}

#[tokio::test]
async fn dropping_a_stand_in_ends_its_connections_and_held_requests() {
    let server = StandIn::spawn(None, |_rec| async {
        std::future::pending::<()>().await;
        empty_reply(StatusCode::OK)
    });
    let addr = server.addr();
    let client = tokio::spawn(async move {
        try_send(
            addr,
            Request::get("/never").body(empty_body()).expect("request"),
        )
        .await
    });
    server.wait_for_requests(1).await;
    drop(server);
    match client.await.expect("client task") {
        Ok(resp) => assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE),
        Err(e) => assert!(!e.contains("timed out"), "{e}"),
    }
}

#[tokio::test]
async fn blackhole_counts_every_connection_and_request() {
    let ca = TestCa::new();
    let hole = Blackhole::spawn(&ca);
    hole.assert_untouched();

    let tcp = tokio::net::TcpStream::connect(hole.plain.addr())
        .await
        .expect("connect to blackhole");
    hole.plain.wait_for_connections(1).await;
    assert_eq!((hole.connections(), hole.requests()), (1, 0));
    drop(tcp);

    let resp = send_tls(
        hole.tls.addr(),
        blackhole::BLACKHOLE_HOSTS[0],
        ca.client_config(&[b"http/1.1"]),
        Request::get("/").body(empty_body()).expect("request"),
    )
    .await
    .expect("TLS request to the blackhole");
    assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!((hole.connections(), hole.requests()), (2, 1));
}

#[tokio::test]
async fn the_client_sends_absolute_form_as_given() {
    let server = StandIn::ok(None);
    let resp = get(server.addr(), "http://api.copilot.cx/v1/x?y=1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let req = Request::get("/v1/z")
        .header("host", "api.copilot.cx")
        .body(empty_body())
        .expect("request");
    send(server.addr(), req).await;
    let recs = server.wait_for_responses(2).await;
    assert_eq!(recs[0].uri.to_string(), "http://api.copilot.cx/v1/x?y=1");
    assert_eq!(recs[0].header("host"), Some("api.copilot.cx"));
    assert_eq!(recs[0].authority().as_deref(), Some("api.copilot.cx"));
    assert_eq!(recs[1].uri.to_string(), "/v1/z");
    assert_eq!(recs[1].authority().as_deref(), Some("api.copilot.cx"));
}

#[tokio::test]
async fn raw_reads_one_complete_response_and_splits_pipelined_ones() {
    let server = StandIn::ok(None);
    // Keep-alive: returns on the complete response, not on EOF.
    let bytes = raw(server.addr(), b"GET /r HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    let resp = parse_response(&bytes);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.body_text(), r#"{"ok":true}"#);

    let bytes = raw_until_eof(
        server.addr(),
        b"GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    let responses = split_responses(&bytes);
    assert_eq!(
        responses.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![200, 200]
    );

    let bytes = raw(server.addr(), b"NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(parse_response(&bytes).status, 400);
    assert_eq!(server.wait_for_requests(3).await.len(), 3);
}

#[test]
fn response_framing_is_understood() {
    let chunked = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
    let first_len = chunked.len() - b"HTTP/1.1 204 No Content\r\n\r\n".len();
    assert_eq!(complete_response_len(chunked), Some(first_len));
    assert_eq!(complete_response_len(&chunked[..first_len - 1]), None);
    let parts = split_responses(chunked);
    assert_eq!(
        parts.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![100, 200, 204]
    );
    assert_eq!(parts[1].body, b"5\r\nhello\r\n0\r\n\r\n");
    let sized = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(complete_response_len(sized), Some(sized.len()));
    assert_eq!(complete_response_len(&sized[..sized.len() - 1]), None);
}

#[test]
fn test_env_writes_the_ca_and_config_files() {
    let env = TestEnv::new();
    let pem = std::fs::read_to_string(env.ca_file()).expect("read CA file");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert_eq!(pem, env.ca.ca_pem());
    let config = format!(
        "[proxy]\nca_file = {}\n",
        toml_str(&env.ca_file().display().to_string())
    );
    let path = env.write_config(&config);
    assert_eq!(path.parent(), Some(env.dir()));
    assert_eq!(std::fs::read_to_string(&path).expect("read config"), config);
    assert_eq!(toml_str("a\"b\\c"), r#""a\"b\\c""#);
    let other = env.write_file("token", "t0k3n");
    assert_eq!(std::fs::read(other).expect("read file"), b"t0k3n");
    assert!(unused_local_addr().ip().is_loopback());
}
