//! Injection: each credential kind, as the upstream sees it, and the
//! client's own copies of injected values replaced, never duplicated.

mod support;

use http::{Request, StatusCode};
use serde_json::json;
use support::harness::*;
use support::*;

fn koupon_rules() -> koupon::Rules {
    koupon::Rules::new(KOUPON_KEY, KOUPON_SECRET)
}

async fn koupon_proxy(env: &TestEnv, api: &KouponApi) -> ::sidekey::app::RunningProxy {
    start_sidekey(
        env,
        &(proxy_toml(env, "", &[api.connect_to_toml()]) + &koupon_route()),
    )
    .await
}

#[tokio::test]
async fn koupon_signs_the_exact_url_after_the_clients_own_parameters() {
    let env = TestEnv::new();
    let api = KouponApi::spawn(KOUPON_KEY, KOUPON_SECRET);
    let proxy = koupon_proxy(&env, &api).await;

    let client_query = "zip=10001&tag=a&tag=b&q=caf%C3%A9+au%20lait&amp=%26&empty=&flag";
    let req = Request::post(format!(
        "http://consumer.kouponmedia.com/v2/offers?{client_query}"
    ))
    .body(full_body(r#"{"consumer":"c-1"}"#))
    .expect("request");
    let resp = send(proxy.proxy_addr(), req).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(api.accepted(), 1, "{:?}", api.rejections());

    let rec = api.last_request().expect("Koupon received the request");
    let query = rec.query().expect("a signed query");
    let (signed, signature) = query
        .rsplit_once("&authSignature=")
        .expect("authSignature is appended");
    let timestamp = signed
        .strip_prefix(&format!(
            "{client_query}&identifier={KOUPON_KEY}&timestamp="
        ))
        .unwrap_or_else(|| panic!("client parameters first, byte for byte: {query}"));
    assert!(
        timestamp.parse::<u64>().is_ok(),
        "epoch seconds last before the signature: {query}"
    );
    let url = koupon::received_url(&rec).expect("a Host");
    assert_eq!(
        url,
        format!("http://consumer.kouponmedia.com/v2/offers?{query}")
    );
    assert_eq!(
        signature,
        koupon::sign(
            &format!("http://consumer.kouponmedia.com/v2/offers?{signed}"),
            KOUPON_SECRET
        )
    );
    assert_eq!(koupon::verify_url(&url, &koupon_rules()), Ok(()));
    assert_eq!(rec.body_text(), r#"{"consumer":"c-1"}"#);
}

#[tokio::test]
async fn koupon_without_client_parameters_follows_the_documents_procedure() {
    let env = TestEnv::new();
    let api = KouponApi::spawn(KOUPON_KEY, KOUPON_SECRET);
    let proxy = koupon_proxy(&env, &api).await;

    // The document's own call: POST /v2/consumer, no optional parameters.
    let req = Request::post("/v2/consumer")
        .header("host", "consumer.kouponmedia.com")
        .body(empty_body())
        .expect("request");
    let resp = send(proxy.proxy_addr(), req).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    let rec = api.last_request().expect("request received");
    let target = rec.target();
    assert!(
        target.starts_with(&format!("/v2/consumer?identifier={KOUPON_KEY}&timestamp=")),
        "{target}"
    );
    // The headers the route adds.
    assert_eq!(rec.header_values("accept"), ["application/json"]);
}

#[tokio::test]
async fn client_supplied_signature_parameters_are_replaced_not_duplicated() {
    let env = TestEnv::new();
    let api = KouponApi::spawn(KOUPON_KEY, KOUPON_SECRET);
    let proxy = koupon_proxy(&env, &api).await;

    let resp = get(
        proxy.proxy_addr(),
        "http://consumer.kouponmedia.com/v2/consumer?identifier=forged-key&x=1&authSignature=0000000000000000000000000000000000000000&timestamp=1&auth%53ignature=encoded&identifier=again",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    let rec = api.last_request().expect("request received");
    assert_eq!(rec.query_values("identifier"), [KOUPON_KEY]);
    assert_eq!(rec.query_values("timestamp").len(), 1);
    assert_ne!(rec.query_values("timestamp"), ["1"]);
    assert_eq!(rec.query_values("authSignature").len(), 1);
    let target = rec.target();
    for forged in ["forged-key", "0000000000", "auth%53ignature", "again"] {
        assert!(!target.contains(forged), "{forged} was forwarded: {target}");
    }
    assert!(
        target.starts_with("/v2/consumer?x=1&identifier="),
        "{target}"
    );
    assert_eq!(api.accepted(), 1);
}

#[tokio::test]
async fn a_client_authorization_header_is_replaced() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let proxy = start_sidekey(
        &env,
        &(proxy_toml(&env, "", &[copilot.connect_to_toml()]) + &copilot_route()),
    )
    .await;

    let req = Request::get("http://api.copilot.cx/v1/x")
        .header("authorization", "Basic Y2xpZW50OmNvcHk=")
        .header("authorization", "Bearer the-apps-own")
        .body(empty_body())
        .expect("request");
    let resp = send(proxy.proxy_addr(), req).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    let rec = copilot.last_request().expect("request received");
    assert_eq!(rec.header_values("authorization"), [COPILOT_AUTH]);
}

#[tokio::test]
async fn route_headers_are_added_only_when_the_client_sent_none() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let proxy = start_sidekey(
        &env,
        &(proxy_toml(&env, "", &[copilot.connect_to_toml()]) + &copilot_route()),
    )
    .await;
    let post = |content_type: Option<&str>| {
        let mut req = Request::post("http://api.copilot.cx/v1/collect");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.body(full_body("{}")).expect("request")
    };

    // None sent: the route's Content-Type is added.
    let resp = send(proxy.proxy_addr(), post(None)).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    // The client's own is kept as sent, not doubled.
    let resp = send(
        proxy.proxy_addr(),
        post(Some("application/json; charset=utf-8")),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    // Even one the API refuses: sidekey does not override the app.
    let resp = send(proxy.proxy_addr(), post(Some("text/plain"))).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        body_json(&resp),
        json!({ "reason": copilot::CONTENT_TYPE_REASON })
    );

    let recs = copilot.wait_for_responses(3).await;
    let sent: Vec<_> = recs
        .iter()
        .map(|r| r.header_values("content-type"))
        .collect();
    assert_eq!(
        sent,
        [
            vec!["application/json".to_string()],
            vec!["application/json; charset=utf-8".to_string()],
            vec!["text/plain".to_string()],
        ]
    );
}

/// A stand-in that accepts a request only when `check` says so.
fn checking_stand_in(
    check: impl Fn(&Recorded) -> Result<(), String> + Send + Sync + 'static,
) -> StandIn {
    StandIn::spawn_fn(None, move |rec| match check(rec) {
        Ok(()) => json_reply(StatusCode::OK, &json!({ "ok": true })),
        Err(why) => json_reply(StatusCode::UNAUTHORIZED, &json!({ "reason": why })),
    })
}

#[tokio::test]
async fn a_query_route_appends_its_static_token_exactly_once() {
    let env = TestEnv::new();
    // Characters that must be percent-encoded in a query value.
    const TOKEN: &str = "tok/en+1=2&3 4";
    const ENCODED: &str = "tok%2Fen%2B1%3D2%263%204";
    let api = checking_stand_in(|rec| match rec.query_values("access_token").as_slice() {
        [one] if one == ENCODED => Ok(()),
        other => Err(format!("access_token values {other:?}")),
    });
    let config = proxy_toml(&env, "", &[connect_to("query.example.test:80", api.addr())])
        + &query_route(TOKEN);
    let proxy = start_sidekey(&env, &config).await;

    for url in [
        "http://query.example.test/v1/profile/123456",
        "http://query.example.test/v1/profiles?fields=a%2Cb&access_token=the-apps-own&page=2&access_token=",
    ] {
        let resp = get(proxy.proxy_addr(), url).await;
        assert_eq!(resp.status(), StatusCode::OK, "{url}: {}", body_text(&resp));
    }
    let recs = api.wait_for_responses(2).await;
    assert_eq!(
        recs[0].target(),
        format!("/v1/profile/123456?access_token={ENCODED}")
    );
    assert_eq!(
        recs[1].target(),
        format!("/v1/profiles?fields=a%2Cb&page=2&access_token={ENCODED}")
    );
}

#[tokio::test]
async fn a_header_route_fills_its_template() {
    let env = TestEnv::new();
    let api = checking_stand_in(|rec| match rec.header_values("authorization").as_slice() {
        [one] if one == "Bearer hdr-token-123" => Ok(()),
        other => Err(format!("authorization values {other:?}")),
    });
    let config = proxy_toml(
        &env,
        "",
        &[connect_to("header.example.test:80", api.addr())],
    ) + &header_route("hdr-token-123");
    let proxy = start_sidekey(&env, &config).await;

    let req = Request::get("http://header.example.test/segments")
        .header("authorization", "Bearer the-apps-own")
        .body(empty_body())
        .expect("request");
    let resp = send(proxy.proxy_addr(), req).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    let resp = get(proxy.proxy_addr(), "http://header.example.test/segments").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(api.wait_for_responses(2).await.len(), 2);
}

#[test]
fn the_sign_command_prints_a_url_the_koupon_verifier_accepts() {
    let env = TestEnv::new();
    // Only the route matters to `sign`; nothing is bound.
    let path = env.write_config(&format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n{}",
        koupon_route()
    ));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sidekey"))
        .args(["sign", "--config"])
        .arg(&path)
        .args(["koupon", "http://consumer.kouponmedia.com/v2/consumer"])
        .env_remove("SIDEKEY_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run sidekey sign");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let url = stdout.trim();
    assert_eq!(url.lines().count(), 1, "one line: {stdout}");
    assert!(
        url.starts_with(&format!(
            "http://consumer.kouponmedia.com/v2/consumer?identifier={KOUPON_KEY}&timestamp="
        )),
        "{url}"
    );
    assert_eq!(koupon::verify_url(url, &koupon_rules()), Ok(()));
    assert!(!stdout.contains(KOUPON_SECRET) && !stderr.contains(KOUPON_SECRET));

    // A route that does not sign URLs is an error, not a URL.
    let path = env.write_config(&format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n{}{}",
        koupon_route(),
        copilot_route()
    ));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sidekey"))
        .args(["sign", "--config"])
        .arg(&path)
        .args(["copilot", "http://api.copilot.cx/v1/x"])
        .env_remove("SIDEKEY_CONFIG")
        .output()
        .expect("run sidekey sign");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
