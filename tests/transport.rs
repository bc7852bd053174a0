//! The transport under slow and misbehaving peers: an upstream that
//! answers before it has read the upload (full duplex), upstreams and
//! clients that go silent while a body streams (`body_idle_timeout`),
//! `TRACE` on a credentialed route, and what `sidekey_active_connections`
//! counts. The upstreams here are raw TCP servers that behave exactly as
//! each test needs, byte by byte.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use support::harness::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

const UPLOAD: u64 = 8 * 1024 * 1024;

/// A raw upstream: runs `serve` on every connection it accepts.
async fn raw_upstream<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream, usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, n));
            n += 1;
        }
    });
    addr
}

/// Reads a request head; returns it as text (the body, if any, unread
/// beyond what arrived with the head).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The value of header `name` in a head read by [`read_head`].
fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_answers_early_gets_its_answer_to_the_client_and_the_upload_stops() {
    let env = TestEnv::new();
    // Reads the head, answers 413 at once and never reads the body; keeps
    // the connection open (as a server that lingers would) until the test
    // ends.
    let release = Arc::new(Notify::new());
    let hold = release.clone();
    let upstream = raw_upstream(move |mut stream, _| {
        let hold = hold.clone();
        async move {
            read_head(&mut stream).await;
            let _ = stream
                .write_all(
                    b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large",
                )
                .await;
            hold.notified().await;
        }
    })
    .await;
    // Before full duplex, sidekey wrote the whole body first: the upload
    // stalled against the unread socket until request_timeout (504).
    let proxy = start_sidekey(
        &env,
        &echo_config(&env, upstream, "request_timeout = \"20s\""),
    )
    .await;

    let req = Request::post("http://echo.example.test/upload")
        .body(streaming_body(UPLOAD))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), try_send(proxy.proxy_addr(), req))
        .await
        .expect("the early answer arrives while the upload would still be running");
    release.notify_waiters();
    let resp = resp.expect("a response");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body_text(&resp), "too large");
    proxy.shutdown().await;
}

/// A token endpoint minting `t1`, `t2`, ...: returns its address and the
/// count of tokens minted.
fn token_endpoint() -> (StandIn, Arc<Mutex<usize>>) {
    let minted = Arc::new(Mutex::new(0usize));
    let count = minted.clone();
    let server = StandIn::spawn_fn(None, move |_| {
        let mut n = count.lock().expect("count");
        *n += 1;
        json_reply(
            StatusCode::OK,
            &serde_json::json!({ "access_token": format!("t{n}"), "expires_in": 3600 }),
        )
    });
    (server, minted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_401_during_an_upload_invalidates_the_token() {
    let env = TestEnv::new();
    let (tokens, minted) = token_endpoint();
    // The first connection's request gets an early 401 (its token was
    // revoked); later ones are read whole and answered 200. Each request's
    // Authorization is reported.
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<String>();
    let release = Arc::new(Notify::new());
    let hold = release.clone();
    let upstream = raw_upstream(move |mut stream, n| {
        let seen = seen_tx.clone();
        let hold = hold.clone();
        async move {
            let head = read_head(&mut stream).await;
            let _ = seen.send(header_of(&head, "authorization").unwrap_or_default());
            if n == 0 {
                let _ = stream
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
                    .await;
                hold.notified().await;
                return;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
    })
    .await;
    let config = proxy_toml(
        &env,
        "request_timeout = \"20s\"",
        &[
            connect_to("api.example.test:80", upstream),
            connect_to("tokens.example.test:80", tokens.addr()),
        ],
    ) + r#"
[[route]]
name = "api"
host = "api.example.test"
upstream = "http://api.example.test"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {token}"
[route.auth.token]
source = "endpoint"
method = "POST"
url = "http://tokens.example.test/token"
token_pointer = "/access_token"
expires_in_pointer = "/expires_in"
"#;
    let proxy = start_sidekey(&env, &config).await;

    let req = Request::post("http://api.example.test/upload")
        .body(streaming_body(UPLOAD))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), try_send(proxy.proxy_addr(), req))
        .await
        .expect("the early 401 arrives while the upload would still be running");
    release.notify_waiters();
    // Too large to keep for a retry: the 401 goes back to the client.
    assert_eq!(resp.expect("a response").status(), StatusCode::UNAUTHORIZED);
    assert_eq!(seen.recv().await.as_deref(), Some("Bearer t1"));

    // The 401 invalidated t1: the next request fetches and uses t2.
    let resp = get(proxy.proxy_addr(), "http://api.example.test/next").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(seen.recv().await.as_deref(), Some("Bearer t2"));
    assert_eq!(*minted.lock().expect("count"), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_goes_silent_mid_body_is_cut_off_after_body_idle_timeout() {
    let env = TestEnv::new();
    let release = Arc::new(Notify::new());
    let hold = release.clone();
    // Promises 100 bytes, sends 10, then nothing (holding the connection).
    let upstream = raw_upstream(move |mut stream, _| {
        let hold = hold.clone();
        async move {
            read_head(&mut stream).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                .await;
            hold.notified().await;
        }
    })
    .await;
    let proxy = start_sidekey(
        &env,
        &echo_config(&env, upstream, "body_idle_timeout = \"300ms\""),
    )
    .await;

    let mut client = TcpStream::connect(proxy.proxy_addr())
        .await
        .expect("connect");
    client
        .write_all(b"GET http://echo.example.test/slow HTTP/1.1\r\nHost: echo.example.test\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got)).await;
    release.notify_waiters();
    assert!(
        read.is_ok(),
        "sidekey closed the connection of a stalled body (got {:?})",
        String::from_utf8_lossy(&got)
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.ends_with("0123456789"),
        "cut short, never padded: {text}"
    );
    assert_eq!(
        metric_reaches(
            &proxy,
            "sidekey_body_idle_timeouts_total{side=\"upstream\"}",
            1.0
        )
        .await,
        1.0
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_after_body_idle_timeout() {
    let env = TestEnv::new();
    // Sends a 64 MiB body as fast as it can be taken; reports how its
    // connection ended.
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<&'static str>();
    let upstream = raw_upstream(move |mut stream, _| {
        let ended = ended_tx.clone();
        async move {
            read_head(&mut stream).await;
            let size = 64 * 1024 * 1024;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..size / chunk.len() {
                if stream.write_all(&chunk).await.is_err() {
                    let _ = ended.send("closed by sidekey");
                    return;
                }
            }
            let _ = ended.send("sent whole");
        }
    })
    .await;
    let proxy = start_sidekey(
        &env,
        &echo_config(&env, upstream, "body_idle_timeout = \"300ms\""),
    )
    .await;

    // Reads the head and a little, then nothing more.
    let mut client = TcpStream::connect(proxy.proxy_addr())
        .await
        .expect("connect");
    client
        .write_all(b"GET http://echo.example.test/big HTTP/1.1\r\nHost: echo.example.test\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 1024];
    let n = client.read(&mut first).await.expect("read");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200 OK"));

    let how = tokio::time::timeout(Duration::from_secs(20), ended.recv())
        .await
        .expect("the upstream connection ends once the client is cut off");
    assert_eq!(how, Some("closed by sidekey"));
    assert_eq!(
        metric_reaches(
            &proxy,
            "sidekey_body_idle_timeouts_total{side=\"client\"}",
            1.0
        )
        .await,
        1.0
    );
    drop(client);
    proxy.shutdown().await;
}

#[tokio::test]
async fn trace_on_a_credentialed_route_is_refused_and_not_forwarded() {
    let env = TestEnv::new();
    let server = StandIn::spawn_fn(None, |rec| text_reply(StatusCode::OK, rec.path()));
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), "")).await;

    let req = Request::builder()
        .method("TRACE")
        .uri("http://echo.example.test/echo")
        .body(empty_body())
        .expect("request");
    let resp = send(proxy.proxy_addr(), req).await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let json = body_json(&resp);
    assert_eq!(json["error"], "method_not_allowed");
    assert_eq!(json["route"], "echo");
    assert!(!body_text(&resp).contains("echo-key"));
    assert!(server.requests().is_empty(), "nothing was forwarded");
    proxy.shutdown().await;
}

#[tokio::test]
async fn admin_connections_are_not_counted_as_active_proxy_connections() {
    let env = TestEnv::new();
    let server = StandIn::spawn_fn(None, |rec| text_reply(StatusCode::OK, rec.path()));
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), "")).await;
    let admin = proxy.admin_addr().expect("admin listener");

    // Two admin connections kept open (one has spoken), none to the proxy.
    let mut kept = TcpStream::connect(admin).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    let n = kept.read(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let _silent = TcpStream::connect(admin).await.expect("connect");
    assert_eq!(metric(&proxy, "sidekey_active_connections").await, 0.0);

    // A proxy connection is counted.
    let mut client = TcpStream::connect(proxy.proxy_addr())
        .await
        .expect("connect");
    client
        .write_all(b"GET http://echo.example.test/a HTTP/1.1\r\nHost: echo.example.test\r\n\r\n")
        .await
        .expect("write");
    let n = client.read(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(metric(&proxy, "sidekey_active_connections").await, 1.0);
    proxy.shutdown().await;
}
