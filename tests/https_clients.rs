//! `https://` clients: `CONNECT` through the proxy (what `HTTPS_PROXY`
//! makes clients send). Hosts no route names are refused without dialling
//! anything, or (only with `unmatched = "passthrough"`) tunnelled blindly,
//! with no credential.

mod support;

use std::time::Duration;

use support::harness::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Sends `CONNECT authority` and returns the connection and the response
/// head's text.
async fn connect(proxy: std::net::SocketAddr, authority: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
    });
    read.await.expect("a response head");
    (stream, String::from_utf8_lossy(&head).into_owned())
}

#[tokio::test]
async fn connect_to_a_host_no_route_names_is_403_and_nothing_is_dialled() {
    let env = TestEnv::new();
    // Where the unknown host would be dialled: it must see no connection.
    let trap = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = proxy_toml(
        &env,
        "",
        &[connect_to(
            "elsewhere.example.test:443",
            trap.local_addr().expect("addr"),
        )],
    ) + &copilot_route();
    let proxy = start_sidekey(&env, &config).await;

    let (mut stream, head) = connect(proxy.proxy_addr(), "elsewhere.example.test:443").await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().ok())
        })
        .flatten()
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut body))
        .await
        .expect("the body")
        .expect("read");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!(json["error"], "no_route");
    assert_eq!(json["host"], "elsewhere.example.test");
    let dialled = tokio::time::timeout(Duration::from_millis(200), trap.accept()).await;
    assert!(dialled.is_err(), "nothing is dialled for an unknown host");
    proxy.shutdown().await;
}

#[tokio::test]
async fn connect_with_passthrough_is_a_blind_tunnel_without_credentials() {
    let env = TestEnv::new();
    // An upstream that echoes what it gets, upper-cased.
    let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = upstream.local_addr().expect("addr");
    tokio::spawn(async move {
        if let Ok((mut s, _)) = upstream.accept().await {
            let mut buf = [0u8; 64];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                    break;
                }
            }
        }
    });
    let config = proxy_toml(
        &env,
        "unmatched = \"passthrough\"",
        &[connect_to("tunnel.example.test:443", addr)],
    ) + &copilot_route();
    let proxy = start_sidekey(&env, &config).await;

    let (mut stream, head) = connect(proxy.proxy_addr(), "tunnel.example.test:443").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "a tunnel's 200 has no framing: {head}"
    );
    stream.write_all(b"hello tunnel").await.expect("write");
    let mut got = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
        .await
        .expect("the echo comes back")
        .expect("read");
    assert_eq!(&got, b"HELLO TUNNEL");
    drop(stream);
    proxy.shutdown().await;
}
