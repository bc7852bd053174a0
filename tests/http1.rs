//! sidekey's own HTTP/1.1 on both sides of the proxy: pipelining, HEAD,
//! `Expect: 100-continue`, HTTP/1.0 clients, and upstream bodies framed
//! each way RFC 9112 allows (length, chunked with trailers, until close),
//! checked on the wire.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use support::harness::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GET_ONE: &str =
    "GET http://echo.example.test/one HTTP/1.1\r\nHost: echo.example.test\r\n\r\n";

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let env = TestEnv::new();
    let server = StandIn::spawn_fn(None, |rec| text_reply(StatusCode::OK, rec.path()));
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), "")).await;

    let two = format!(
        "{GET_ONE}GET /two HTTP/1.1\r\nHost: echo.example.test\r\nConnection: close\r\n\r\n"
    );
    let got = raw_until_eof(proxy.proxy_addr(), two.as_bytes(), Duration::from_secs(10)).await;
    let responses = split_responses(&got);
    let bodies: Vec<String> = responses.iter().map(RawResponse::body_text).collect();
    assert_eq!(
        bodies,
        ["/one", "/two"],
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(responses.iter().all(|r| r.status == 200));
    assert_eq!(responses[1].header("connection"), Some("close"));
    let keys: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.header("x-api-key").map(str::to_string))
        .collect();
    assert_eq!(keys, [Some("echo-key".into()), Some("echo-key".into())]);
}

#[tokio::test]
async fn head_keeps_the_upstreams_content_length_and_sends_no_body() {
    let env = TestEnv::new();
    let server = StandIn::spawn_fn(None, |_| text_reply(StatusCode::OK, "hello"));
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), "")).await;

    let head = "HEAD http://echo.example.test/h HTTP/1.1\r\nHost: echo.example.test\r\n\
                Connection: close\r\n\r\n";
    let got = raw_until_eof(proxy.proxy_addr(), head.as_bytes(), Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("\r\ncontent-length: 5\r\n"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\n"), "no body after the head: {text}");
    assert_eq!(server.requests()[0].method, http::Method::HEAD);
}

#[tokio::test]
async fn expect_100_continue_gets_an_interim_answer_before_the_body_is_sent() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), "")).await;

    let mut tcp = TcpStream::connect(proxy.proxy_addr()).await.unwrap();
    tcp.write_all(
        b"POST http://echo.example.test/upload HTTP/1.1\r\nHost: echo.example.test\r\n\
          Content-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let interim = read_until(&mut tcp, b"\r\n\r\n").await;
    assert_eq!(interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    tcp.write_all(b"hello").await.unwrap();
    let mut got = Vec::new();
    while complete_response_len(&got).is_none() {
        got.extend_from_slice(&read_some(&mut tcp).await);
    }
    assert_eq!(parse_response(&got).status, 200);
    let rec = &server.requests()[0];
    assert_eq!(rec.body.as_deref(), Some(&b"hello"[..]));
    assert!(!rec.has_header("expect"), "Expect is answered by sidekey");
}

#[tokio::test]
async fn an_http_1_0_client_gets_its_connection_closed_unless_it_asks_to_keep_it() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), "")).await;

    let plain = "GET http://echo.example.test/a HTTP/1.0\r\nHost: echo.example.test\r\n\r\n";
    let got = raw_until_eof(
        proxy.proxy_addr(),
        plain.as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    let responses = split_responses(&got);
    assert_eq!(responses.len(), 1, "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(responses[0].status, 200);
    assert_eq!(responses[0].header("connection"), Some("close"));

    let mut tcp = TcpStream::connect(proxy.proxy_addr()).await.unwrap();
    let kept = "GET http://echo.example.test/b HTTP/1.0\r\nHost: echo.example.test\r\n\
                Connection: keep-alive\r\n\r\n";
    for _ in 0..2 {
        tcp.write_all(kept.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        while complete_response_len(&got).is_none() {
            got.extend_from_slice(&read_some(&mut tcp).await);
        }
        let resp = parse_response(&got);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("connection"), Some("keep-alive"));
    }
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn a_request_body_left_unread_ends_the_connection_after_its_answer() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), "")).await;

    // No route for this host: the answer comes before the body is read.
    let post = format!(
        "POST http://elsewhere.example/a HTTP/1.1\r\nHost: elsewhere.example\r\n\
         Content-Length: 5\r\n\r\nhello{GET_ONE}"
    );
    let got = raw_until_eof(proxy.proxy_addr(), post.as_bytes(), Duration::from_secs(10)).await;
    let responses = split_responses(&got);
    assert_eq!(responses.len(), 1, "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(responses[0].status, 403);
    assert_eq!(responses[0].header("connection"), Some("close"));
    assert_eq!(server.request_count(), 0);
}

/// A raw HTTP/1.1 upstream: answers each request with `reply(path)` (the
/// bytes to write, and whether to close afterwards).
async fn raw_upstream(reply: fn(&str) -> (Vec<u8>, bool)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let head = read_until(&mut stream, b"\r\n\r\n").await;
                    if head.is_empty() {
                        return;
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let path = text.split(' ').nth(1).unwrap_or("").to_string();
                    let (bytes, close) = reply(&path);
                    // In small pieces: framing must not depend on reads.
                    for piece in bytes.chunks(7) {
                        if stream.write_all(piece).await.is_err() {
                            return;
                        }
                        let _ = stream.flush().await;
                    }
                    if close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn framed_replies(path: &str) -> (Vec<u8>, bool) {
    match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
                .to_vec(),
            false,
        ),
        "/until-close" => (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it".to_vec(),
            true,
        ),
        "/early-hints" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
                .to_vec(),
            false,
        ),
        "/garbage" => (b"HTTP/1.1 abc\r\n\r\n".to_vec(), true),
        "/short" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
            true,
        ),
        _ => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            false,
        ),
    }
}

#[tokio::test]
async fn upstream_bodies_arrive_whole_however_they_are_framed() {
    let env = TestEnv::new();
    let addr = raw_upstream(framed_replies).await;
    let proxy = start_sidekey(&env, &echo_config(&env, addr, "workers = 1")).await;
    let mut conn = ProxyConn::connect(proxy.proxy_addr()).await.unwrap();
    for (path, body) in [
        ("/chunked", "hello, world"),
        ("/early-hints", "final"),
        ("/plain", "ok"),
        ("/until-close", "all of it"),
        ("/chunked", "hello, world"),
    ] {
        let req = http::Request::get(format!("http://echo.example.test{path}"))
            .body(empty_body())
            .unwrap();
        let resp = conn.send(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(body_text(&resp), body, "{path}");
    }
}

#[tokio::test]
async fn an_upstream_that_breaks_http_is_a_502_and_the_client_never_gets_a_cut_body() {
    let env = TestEnv::new();
    let addr = raw_upstream(framed_replies).await;
    let proxy = start_sidekey(&env, &echo_config(&env, addr, "")).await;

    let resp = get(proxy.proxy_addr(), "http://echo.example.test/garbage").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(body_json(&resp)["route"], "echo");

    // 3 of 10 promised bytes, then the upstream closed: the client sees
    // the response end early (an error), never a complete-looking body.
    let short = "GET http://echo.example.test/short HTTP/1.1\r\nHost: echo.example.test\r\n\r\n";
    let got = raw_until_eof(
        proxy.proxy_addr(),
        short.as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(complete_response_len(&got).is_none(), "{text}");
}

async fn read_some(tcp: &mut TcpStream) -> Vec<u8> {
    let mut buf = vec![0; 16 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    assert!(n > 0, "closed early");
    buf.truncate(n);
    buf
}

/// Reads byte by byte up to and including `end` (empty at EOF first).
async fn read_until(tcp: &mut TcpStream, end: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(end) {
        match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte)).await {
            Ok(Ok(1)) => got.push(byte[0]),
            _ => return Vec::new(),
        }
    }
    got
}
