//! Large bodies both ways through sidekey, with the credential applied.
//! (Memory use is benchmarked elsewhere; this checks the bytes.)

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use support::harness::*;
use support::*;

const SIZE: u64 = 50 * 1000 * 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_upload_reaches_the_upstream_whole_with_the_credential() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let proxy = start_sidekey(
        &env,
        &(proxy_toml(&env, "", &[copilot.connect_to_toml()]) + &copilot_route()),
    )
    .await;

    let req = Request::post("http://api.copilot.cx/v1/upload")
        .body(streaming_body(SIZE))
        .expect("request");
    let resp = send(proxy.proxy_addr(), req).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));

    let rec = copilot.last_request().expect("Copilot received the upload");
    assert_eq!(rec.body_len, SIZE);
    assert!(rec.body_error.is_none(), "{:?}", rec.body_error);
    assert_eq!(rec.header_values("authorization"), [COPILOT_AUTH]);
    assert_eq!(copilot.accepted(), 1, "{:?}", copilot.rejections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_download_streams_back_intact() {
    let env = TestEnv::new();
    // Not a repeating pattern: a shifted or dropped chunk would show.
    let payload: Bytes = (0..SIZE)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into();
    let served = payload.clone();
    let api = StandIn::spawn_fn(
        Some(env.ca.server_config(&["files.example.test"])),
        move |rec| {
            if rec.header("authorization") == Some("Bearer download-token") {
                http::Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/octet-stream")
                    .body(http_body_util::Full::new(served.clone()))
                    .expect("valid reply")
            } else {
                empty_reply(StatusCode::UNAUTHORIZED)
            }
        },
    );
    let config = proxy_toml(
        &env,
        "",
        &[connect_to("files.example.test:443", api.addr())],
    ) + r#"
[[route]]
name = "files"
host = "files.example.test"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {token}"
token = "download-token"
"#;
    let proxy = start_sidekey(&env, &config).await;

    let resp = get(proxy.proxy_addr(), "http://files.example.test/big.bin").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.body().len() as u64, SIZE);
    assert!(
        *resp.body() == payload,
        "the body differs from what was served"
    );
    if let Some(len) = resp.headers().get("content-length") {
        assert_eq!(len.to_str().ok(), Some(SIZE.to_string().as_str()));
    }
}

/// A chunked body, as a client that streams an upload of unknown length
/// sends it: `body` in chunks of at most `chunk` bytes.
fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in body.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A stand-in for `files.example.test` that hands out the token
/// `upload-token` at `/token` and answers 200 to requests carrying it, and
/// the config of a route `files` that fetches it (`[proxy]` lines `extra`).
fn files_api(env: &TestEnv, extra: &str) -> (StandIn, String) {
    let api = StandIn::spawn_fn(Some(env.ca.server_config(&["files.example.test"])), |rec| {
        if rec.path() == "/token" {
            json_reply(
                StatusCode::OK,
                &serde_json::json!({"token": "upload-token"}),
            )
        } else if rec.header("authorization") == Some("Bearer upload-token") {
            empty_reply(StatusCode::OK)
        } else {
            empty_reply(StatusCode::UNAUTHORIZED)
        }
    });
    let config = proxy_toml(
        env,
        extra,
        &[connect_to("files.example.test:443", api.addr())],
    ) + r#"
[[route]]
name = "files"
host = "files.example.test"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {token}"
[route.auth.token]
source = "endpoint"
method = "POST"
url = "https://files.example.test/token"
token_pointer = "/token"
ttl = "15m"
"#;
    (api, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_on_a_token_route_reaches_the_upstream_whole() {
    let env = TestEnv::new();
    let (api, config) = files_api(&env, "");
    let proxy = start_sidekey(&env, &config).await;
    // Below and above `retry_body_limit` (64 KiB): a chunked body's length
    // is not known up front, so both are streamed.
    for (i, size) in [1_000usize, 200_000].into_iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|i| b'a' + (i * 7 % 26) as u8).collect();
        let mut request = format!(
            "POST /upload/{i} HTTP/1.1\r\nHost: files.example.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        request.extend_from_slice(&chunked(&payload, 4096));
        let resp = parse_response(&raw(proxy.proxy_addr(), &request).await);
        assert_eq!(resp.status, 200, "{}", resp.body_text());
        let path = format!("/upload/{i}");
        let rec = api
            .requests()
            .into_iter()
            .find(|r| r.path() == path)
            .expect("the upload reached the upstream");
        assert_eq!(rec.body_len, size as u64);
        assert_eq!(rec.body.as_deref(), Some(&payload[..]));
    }
}

/// Reads one response from `tcp` (5 s at most).
async fn read_response(tcp: &mut tokio::net::TcpStream) -> RawResponse {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while complete_response_len(&got).is_none() {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    let _ = read.await;
    parse_response(&got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_bounds_silence_not_a_slow_upload() {
    use tokio::io::AsyncWriteExt;
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let config = echo_config(&env, server.addr(), "request_timeout = \"300ms\"");
    let proxy = start_sidekey(&env, &config).await;
    let head = b"POST /upload HTTP/1.1\r\nHost: echo.example.test\r\nContent-Length: 8000\r\n\r\n";

    // Eight pieces 100 ms apart: longer than the timeout in all, but never
    // silent for as long.
    let mut tcp = tokio::net::TcpStream::connect(proxy.proxy_addr())
        .await
        .expect("connect");
    tcp.write_all(head).await.expect("write the head");
    for _ in 0..8 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        tcp.write_all(&[b'x'; 1000]).await.expect("write a piece");
    }
    let resp = read_response(&mut tcp).await;
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let rec = server.last_request().expect("the upload arrived");
    assert_eq!(rec.body_len, 8000);

    // A client that stops halfway: once silent for the timeout, 504.
    let mut tcp = tokio::net::TcpStream::connect(proxy.proxy_addr())
        .await
        .expect("connect");
    tcp.write_all(head).await.expect("write the head");
    tcp.write_all(&[b'x'; 1000]).await.expect("write a piece");
    let resp = read_response(&mut tcp).await;
    assert_eq!(resp.status, 504, "{}", resp.body_text());
    assert_eq!(resp.header("x-sidekey-error"), Some("upstream_timeout"));
    // The stand-in records the cut-short upload once its body read fails,
    // which can be just after the client has its 504: wait for it
    // (bounded).
    let recorded = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while server.request_count() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        recorded.is_ok(),
        "the upstream saw the second request's head"
    );
    assert_eq!(server.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_body_kept_for_a_retry_is_bounded_by_request_timeout_too() {
    use tokio::io::AsyncWriteExt;
    let env = TestEnv::new();
    let (api, config) = files_api(&env, "request_timeout = \"300ms\"");
    let proxy = start_sidekey(&env, &config).await;
    // A body small enough to be kept for a 401 retry, and a client that
    // stops sending it.
    let mut tcp = tokio::net::TcpStream::connect(proxy.proxy_addr())
        .await
        .expect("connect");
    tcp.write_all(
        b"POST /slow HTTP/1.1\r\nHost: files.example.test\r\nContent-Length: 10\r\n\r\nabc",
    )
    .await
    .expect("write");
    let resp = read_response(&mut tcp).await;
    assert_eq!(resp.status, 504, "{}", resp.body_text());
    assert_eq!(resp.header("x-sidekey-error"), Some("upstream_timeout"));
    assert!(api.requests().iter().all(|r| r.path() != "/slow"));
}

/// `max_request_body = "100"` in front of a stand-in that records what
/// reaches it.
async fn capped_echo(env: &TestEnv) -> (StandIn, sidekey::app::RunningProxy) {
    let server = StandIn::ok(None);
    let config = echo_config(env, server.addr(), r#"max_request_body = "100""#);
    let proxy = start_sidekey(env, &config).await;
    (server, proxy)
}

fn json_of(resp: &RawResponse) -> serde_json::Value {
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", resp.body_text()))
}

#[tokio::test]
async fn a_declared_length_over_max_request_body_gets_413_before_the_body_is_sent() {
    use tokio::io::AsyncWriteExt;
    let env = TestEnv::new();
    let (server, proxy) = capped_echo(&env).await;
    // Only the head: the answer must come without the body.
    let mut tcp = tokio::net::TcpStream::connect(proxy.proxy_addr())
        .await
        .expect("connect");
    let head = "POST http://echo.example.test/up HTTP/1.1\r\nHost: echo.example.test\r\nContent-Length: 101\r\n\r\n";
    tcp.write_all(head.as_bytes()).await.expect("write");
    let resp = read_response(&mut tcp).await;
    assert_eq!(resp.status, 413, "{}", resp.body_text());
    let body = json_of(&resp);
    assert_eq!(body["route"], "echo", "{body}");
    assert_eq!(body["error"], "request_body_too_large", "{body}");
    assert_eq!(server.request_count(), 0, "nothing was sent upstream");

    // At the limit, it goes through.
    let mut request = "POST http://echo.example.test/up HTTP/1.1\r\nHost: echo.example.test\r\nContent-Length: 100\r\n\r\n".as_bytes().to_vec();
    request.extend_from_slice(&[b'x'; 100]);
    let resp = parse_response(&raw(proxy.proxy_addr(), &request).await);
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(server.last_request().map(|r| r.body_len), Some(100));
}

#[tokio::test]
async fn a_chunked_body_over_max_request_body_is_stopped_with_413() {
    let env = TestEnv::new();
    let (server, proxy) = capped_echo(&env).await;
    let chunked_request = |size: usize| {
        let mut request = "POST http://echo.example.test/up HTTP/1.1\r\nHost: echo.example.test\r\nTransfer-Encoding: chunked\r\n\r\n".as_bytes().to_vec();
        request.extend_from_slice(&chunked(&vec![b'y'; size], 30));
        request
    };
    let resp = parse_response(&raw(proxy.proxy_addr(), &chunked_request(100)).await);
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(server.last_request().map(|r| r.body_len), Some(100));

    let resp = parse_response(&raw(proxy.proxy_addr(), &chunked_request(250)).await);
    assert_eq!(resp.status, 413, "{}", resp.body_text());
    let body = json_of(&resp);
    assert_eq!(body["error"], "request_body_too_large", "{body}");
    assert!(
        server.requests().iter().all(|r| r.body_len <= 100),
        "no body over the limit reached the upstream whole"
    );
}
