//! `kind = "aws_sigv4"` end to end: sidekey signs S3 and service requests
//! that a stand-in verifies independently (tests/support/sigv4.rs, written
//! from the AWS documentation), with unsigned payloads streaming, signed
//! payloads read up to `max_signed_body` and refused past it, session
//! tokens, and a wrong secret refused by the stand-in.

mod support;

use http::{Request, StatusCode};
use support::harness::*;
use support::*;

const S3_HOST: &str = "my-bucket.s3.eu-west-1.amazonaws.com";
const API_HOST: &str = "api.example-aws.test";

/// The `s3` route of beyond-routes.toml, over plain HTTP to the stand-in.
fn s3_config(env: &TestEnv, api: &SigV4Api, auth_extra: &str, secret: &str) -> String {
    proxy_toml(env, "", &[connect_to(&format!("{S3_HOST}:80"), api.addr())])
        + &format!(
            r#"
[[route]]
name = "s3"
host = "{S3_HOST}"
upstream = "http://{S3_HOST}"
[route.auth]
kind = "aws_sigv4"
access_key_id = "{AWS_KEY_ID}"
secret_access_key = "{secret}"
region = "eu-west-1"
service = "s3"
{auth_extra}
"#
        )
}

fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = Request::builder().method(method).uri(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    req.body(full_body(body.to_string())).expect("request")
}

#[tokio::test]
async fn s3_get_and_put_with_unsigned_payload_are_accepted() {
    let env = TestEnv::new();
    let api = SigV4Api::spawn(SigV4Rules::s3("eu-west-1"));
    let proxy = start_sidekey(
        &env,
        &s3_config(&env, &api, "payload = \"unsigned\"", AWS_SECRET),
    )
    .await;
    let addr = proxy.proxy_addr();

    // A client's own signing headers are replaced, not forwarded.
    let get = request(
        "GET",
        &format!("http://{S3_HOST}/photos/2024/a%20b$c.jpg?versionId=3&acl"),
        &[
            ("Authorization", "AWS4-HMAC-SHA256 Credential=CLIENT/x"),
            ("X-Amz-Date", "19990101T000000Z"),
            ("Range", "bytes=0-9"),
        ],
        "",
    );
    let resp = send(addr, get).await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", api.rejections());

    let put = request(
        "PUT",
        &format!("http://{S3_HOST}/test$file.text"),
        &[
            ("Content-Type", "text/plain"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-meta-owner", "ada  lovelace"),
        ],
        "Welcome to Amazon S3.",
    );
    let resp = send(addr, put).await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", api.rejections());
    assert_eq!(api.accepted(), 2);

    let seen = api.requests();
    assert_eq!(seen[0].header_count("authorization"), 1);
    assert!(!seen[0].header("authorization").unwrap().contains("CLIENT"));
    assert_ne!(seen[0].header("x-amz-date"), Some("19990101T000000Z"));
    assert_eq!(
        seen[1].header("x-amz-content-sha256"),
        Some("UNSIGNED-PAYLOAD")
    );
    assert_eq!(seen[1].body_text(), "Welcome to Amazon S3.");
    assert!(seen[1]
        .header("authorization")
        .unwrap()
        .contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-owner;x-amz-storage-class,"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_unsigned_payload_streams_past_max_signed_body() {
    let env = TestEnv::new();
    let api = SigV4Api::spawn(SigV4Rules::s3("eu-west-1"));
    let proxy = start_sidekey(
        &env,
        &s3_config(&env, &api, "payload = \"unsigned\"", AWS_SECRET),
    )
    .await;
    let len = 3 * 1024 * 1024;
    let req = Request::put(format!("http://{S3_HOST}/big.bin"))
        .body(streaming_body(len))
        .expect("request");
    let resp = send(proxy.proxy_addr(), req).await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", api.rejections());
    assert_eq!(api.requests()[0].body_len, len);
    proxy.shutdown().await;
}

/// A service other than S3, signing its payload: the body is hashed and
/// the path normalised and encoded twice, as the documentation says.
fn service_config(env: &TestEnv, api: &SigV4Api, max: &str, token: &str) -> String {
    proxy_toml(
        env,
        "",
        &[connect_to(&format!("{API_HOST}:80"), api.addr())],
    ) + &format!(
        r#"
[[route]]
name = "execute"
host = "{API_HOST}"
upstream = "http://{API_HOST}"
[route.auth]
kind = "aws_sigv4"
access_key_id = "{AWS_KEY_ID}"
secret_access_key = "{AWS_SECRET}"
session_token = "{token}"
region = "us-east-1"
service = "execute-api"
max_signed_body = "{max}"
"#
    )
}

fn service_rules(token: Option<&str>) -> SigV4Rules {
    SigV4Rules {
        service: "execute-api".into(),
        region: "us-east-1".into(),
        session_token: token.map(str::to_string),
        unsigned_payload: false,
        ..SigV4Rules::s3("us-east-1")
    }
}

#[tokio::test]
async fn a_signed_payload_is_hashed_and_a_session_token_sent() {
    let env = TestEnv::new();
    let token = "FwoGZXIvYXdzEXAMPLE/session+token==";
    let api = SigV4Api::spawn(service_rules(Some(token)));
    let proxy = start_sidekey(&env, &service_config(&env, &api, "1KiB", token)).await;
    let body = r#"{"order":42,"note":"a b"}"#;
    let req = request(
        "POST",
        &format!("http://{API_HOST}/prod/orders/a%20b?z=1&a=%7E"),
        &[
            ("Content-Type", "application/json"),
            ("X-Amz-Security-Token", "client"),
        ],
        body,
    );
    let resp = send(proxy.proxy_addr(), req).await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", api.rejections());

    // A chunked body within the limit is read whole, hashed and sent.
    let chunked = Request::put(format!("http://{API_HOST}/prod/upload"))
        .body(streaming_body(1000))
        .expect("request");
    let (parts, stream) = chunked.into_parts();
    let unsized_body = http_body_util::StreamBody::new(http_body_util::BodyStream::new(stream));
    let resp = send(proxy.proxy_addr(), Request::from_parts(parts, unsized_body)).await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", api.rejections());

    let seen = api.requests();
    assert_eq!(seen[0].header_values("x-amz-security-token"), [token]);
    assert_eq!(seen[0].body_text(), body);
    assert_ne!(
        seen[0].header("x-amz-content-sha256"),
        Some("UNSIGNED-PAYLOAD")
    );
    assert_eq!(seen[1].body_len, 1000);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_body_past_max_signed_body_is_413_and_nothing_is_sent() {
    let env = TestEnv::new();
    let api = SigV4Api::spawn(service_rules(None));
    let proxy = start_sidekey(&env, &service_config(&env, &api, "1KiB", "")).await;
    let addr = proxy.proxy_addr();
    let url = format!("http://{API_HOST}/prod/upload");

    // Declared too long: refused before it is read.
    let resp = send(addr, request("PUT", &url, &[], &"x".repeat(1025))).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let json = body_json(&resp);
    assert_eq!(json["error"], "payload_too_large");
    assert_eq!(json["route"], "execute");

    // Chunked, no length: refused once 1 KiB has been read.
    let chunked = Request::put(&url)
        .body(streaming_body(64 * 1024))
        .expect("request");
    let (parts, body) = chunked.into_parts();
    let unsized_body = http_body_util::StreamBody::new(http_body_util::BodyStream::new(body));
    let resp = send(addr, Request::from_parts(parts, unsized_body)).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Exactly the limit goes through, signed.
    let resp = send(addr, request("PUT", &url, &[], &"y".repeat(1024))).await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", api.rejections());
    assert_eq!(
        api.request_count(),
        1,
        "the refused bodies never reached the API"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_verifier() {
    let env = TestEnv::new();
    let api = SigV4Api::spawn(SigV4Rules::s3("eu-west-1"));
    let wrong = AWS_SECRET.replace('K', "Q");
    let proxy = start_sidekey(
        &env,
        &s3_config(&env, &api, "payload = \"unsigned\"", &wrong),
    )
    .await;
    let resp = get(proxy.proxy_addr(), &format!("http://{S3_HOST}/test.txt")).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let codes: Vec<_> = api.rejections().iter().map(|r| r.code).collect();
    assert_eq!(codes, ["SignatureDoesNotMatch"]);
    proxy.shutdown().await;
}
