//! Upstream connections: kept alive and reused, HTTP/2 shared, never
//! reused mid-response, dropped after `pool_idle_timeout`, and carried
//! over a reload only when the new config connects the same way. An
//! upstream that closes idle connections without notice still gets every
//! request exactly once.

mod support;

use std::net::SocketAddr;

use http::{Request, StatusCode, Version};
use support::harness::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn get_echo(proxy: &sidekey::app::RunningProxy, path: &str) -> http::Response<bytes::Bytes> {
    get(
        proxy.proxy_addr(),
        &format!("http://echo.example.test{path}"),
    )
    .await
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    // One worker: every client connection lands on the same thread's pool.
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), "workers = 1")).await;
    for i in 0..5 {
        // A new client connection each time.
        let resp = get_echo(&proxy, &format!("/n{i}")).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    }
    let recs = server.requests();
    assert_eq!(recs.len(), 5);
    assert!(
        recs.iter().all(|r| r.connection_id == 1),
        "{:?}",
        recs.iter().map(|r| r.connection_id).collect::<Vec<_>>()
    );
    assert!(recs.iter().all(|r| r.version == Version::HTTP_11));
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test]
async fn an_http2_upstream_connection_is_shared() {
    let env = TestEnv::new();
    let server = StandIn::ok(Some(env.ca.server_config(&["echo.example.test"])));
    let config = proxy_toml(
        &env,
        "workers = 1",
        &[connect_to("echo.example.test:443", server.addr())],
    ) + r#"
[[route]]
name = "echo"
host = "echo.example.test"
[route.auth]
kind = "header"
name = "X-Api-Key"
token = "echo-key"
"#;
    let proxy = start_sidekey(&env, &config).await;
    for _ in 0..3 {
        let resp = get_echo(&proxy, "/h2").await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    }
    let recs = server.requests();
    assert_eq!(recs.len(), 3);
    assert!(recs
        .iter()
        .all(|r| r.version == Version::HTTP_2 && r.connection_id == 1));
    assert_eq!(recs[0].header("x-api-key"), Some("echo-key"));
}

#[tokio::test]
async fn a_connection_is_not_reused_before_its_response_was_read_to_the_end() {
    let env = TestEnv::new();
    // A large body, so the first client can leave in the middle of it.
    let big = vec![b'x'; 4 << 20];
    let server = StandIn::spawn_fn(None, move |rec| {
        if rec.path() == "/big" {
            http::Response::builder()
                .status(StatusCode::OK)
                .body(http_body_util::Full::new(bytes::Bytes::from(big.clone())))
                .expect("valid reply")
        } else {
            text_reply(StatusCode::OK, "small")
        }
    });
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), "workers = 1")).await;

    // Read the head of the big response only, then go away.
    let mut client = TcpStream::connect(proxy.proxy_addr()).await.unwrap();
    client
        .write_all(b"GET http://echo.example.test/big HTTP/1.1\r\nHost: echo.example.test\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = client.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    drop(client);

    // The next request gets its own complete answer.
    let resp = get_echo(&proxy, "/small").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_text(&resp), "small");
    let recs = server.requests();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1].path(), "/small");
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_pool_idle_timeout() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let extra = "workers = 1\npool_idle_timeout = \"100ms\"";
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), extra)).await;
    let resp = get_echo(&proxy, "/first").await;
    assert_eq!(resp.status(), StatusCode::OK);
    // sidekey closes the idle connection (the worker sweeps once a second).
    server.wait_for_closed(1).await;
    let resp = get_echo(&proxy, "/second").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let ids: Vec<usize> = server.requests().iter().map(|r| r.connection_id).collect();
    assert_eq!(ids, [1, 2]);
}

#[tokio::test]
async fn a_reload_that_connects_the_same_way_keeps_upstream_connections() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let config = echo_config(&env, server.addr(), "workers = 1");
    let proxy = start_sidekey(&env, &config).await;
    assert_eq!(get_echo(&proxy, "/before").await.status(), StatusCode::OK);
    // Routes may change; `ca_file`, `connect_to` and the timeouts of
    // connections do not.
    let more_routes =
        format!("{config}\n[[route]]\nname = \"other\"\nhost = \"other.example.test\"\n");
    proxy.reload(parse_config(&env, &more_routes)).unwrap();
    assert_eq!(get_echo(&proxy, "/after").await.status(), StatusCode::OK);
    let ids: Vec<usize> = server.requests().iter().map(|r| r.connection_id).collect();
    assert_eq!(ids, [1, 1]);
}

#[tokio::test]
async fn after_a_reload_that_changes_how_to_connect_old_connections_are_not_reused() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), "workers = 1")).await;
    assert_eq!(get_echo(&proxy, "/before").await.status(), StatusCode::OK);
    let changed = echo_config(&env, server.addr(), "workers = 1\nconnect_timeout = \"3s\"");
    proxy.reload(parse_config(&env, &changed)).unwrap();
    assert_eq!(get_echo(&proxy, "/after").await.status(), StatusCode::OK);
    let ids: Vec<usize> = server.requests().iter().map(|r| r.connection_id).collect();
    assert_eq!(ids, [1, 2]);
}

/// An HTTP/1.1 upstream that answers one request per connection, then
/// closes it without a `Connection: close` header (as servers with a short
/// keep-alive timeout do). Counts the requests it answered.
async fn one_request_per_connection() -> (SocketAddr, tokio::sync::watch::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (count_tx, count) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count_tx = count_tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let ok = String::from_utf8_lossy(&head)
                    .to_ascii_lowercase()
                    .contains("x-api-key: echo-key\r\n");
                let reply: &[u8] = if ok {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                } else {
                    b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n"
                };
                count_tx.send_modify(|n| *n += 1);
                let _ = stream.write_all(reply).await;
                // Closed here: the proxy learns of it only when it reads.
            });
        }
    });
    (addr, count)
}

#[tokio::test]
async fn an_upstream_that_drops_idle_connections_gets_each_request_once() {
    let env = TestEnv::new();
    let (addr, count) = one_request_per_connection().await;
    let proxy = start_sidekey(&env, &echo_config(&env, addr, "workers = 1")).await;
    let mut conn = ProxyConn::connect(proxy.proxy_addr()).await.unwrap();
    for i in 0..5 {
        let req = Request::get(format!("http://echo.example.test/r{i}"))
            .body(empty_body())
            .unwrap();
        let resp = conn.send(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "request {i}");
        assert_eq!(resp.body().as_ref(), b"ok");
    }
    assert_eq!(*count.borrow(), 5, "each request reached the upstream once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_beyond_pool_max_idle_per_host_are_closed() {
    const CLIENTS: usize = 20;
    const KEPT: usize = 4;
    let env = TestEnv::new();
    // Holds every request until all are in flight: one upstream connection
    // each.
    let gate = Gate::new();
    let held = gate.clone();
    let server = StandIn::spawn(None, move |rec| {
        let held = held.clone();
        async move {
            held.wait().await;
            match rec.header("x-api-key") {
                Some("echo-key") => empty_reply(StatusCode::OK),
                _ => empty_reply(StatusCode::UNAUTHORIZED),
            }
        }
    });
    let extra = format!("workers = 1\npool_max_idle_per_host = {KEPT}");
    let proxy = start_sidekey(&env, &echo_config(&env, server.addr(), &extra)).await;
    let addr = proxy.proxy_addr();
    let burst = |n: usize| {
        (0..n)
            .map(|i| {
                tokio::spawn(
                    async move { get(addr, &format!("http://echo.example.test/b{i}")).await },
                )
            })
            .collect::<Vec<_>>()
    };
    let clients = burst(CLIENTS);
    server.wait_for_requests(CLIENTS).await;
    assert_eq!(server.connection_count(), CLIENTS, "one connection each");
    gate.open();
    for client in clients {
        let resp = client.await.expect("a client task");
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    }
    // sidekey closes all but the idle ones it may keep.
    server.wait_for_closed(CLIENTS - KEPT).await;
    assert_eq!(server.closed_count(), CLIENTS - KEPT);
    // Those it kept serve the next requests: no new connection.
    for client in burst(KEPT) {
        let resp = client.await.expect("a client task");
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    }
    assert_eq!(server.connection_count(), CLIENTS);
    assert_eq!(server.closed_count(), CLIENTS - KEPT);
}
