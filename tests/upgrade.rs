//! HTTP/1.1 `Upgrade` (WebSocket) through sidekey: the upgrade request
//! gets the route's credential, the upstream's `101` is passed back, then
//! frames flow both ways until either side closes or both stay silent for
//! `body_idle_timeout`; `sidekey_upgrades_open` counts the open ones. The
//! upstream is a WebSocket echo server (tokio-tungstenite) that refuses a
//! handshake without the credential, the client tokio-tungstenite's.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use support::harness::*;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// How long any one step may take before the test fails.
const STEP: Duration = Duration::from_secs(10);

/// A WebSocket echo server that accepts a handshake only with
/// `X-Api-Key: {key}` (else `401`), and records the key each handshake
/// came with.
struct EchoWs {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl EchoWs {
    async fn spawn(key: &'static str) -> EchoWs {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    // The refusal's type is tungstenite's callback's.
                    #[allow(clippy::result_large_err)]
                    let check = |req: &Request, resp: Response| {
                        let got = req
                            .headers()
                            .get("x-api-key")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let ok = got.as_deref() == Some(key);
                        record.lock().unwrap().push(got);
                        if ok {
                            return Ok(resp);
                        }
                        let refusal: ErrorResponse = http::Response::builder()
                            .status(401)
                            .header("content-length", "15")
                            .body(Some("no credential\r\n".to_string()))
                            .unwrap();
                        Err(refusal)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, check).await
                    else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        EchoWs { addr, seen }
    }

    fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().clone()
    }
}

/// A WebSocket handshake for `ws://echo.example.test/socket` on `stream`
/// (a connection to sidekey, or a TLS stream inside its tunnel).
async fn ws_handshake<S>(stream: S) -> Result<WebSocketStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let req = "ws://echo.example.test/socket"
        .into_client_request()
        .expect("a WebSocket request");
    let (ws, resp) = tokio::time::timeout(STEP, tokio_tungstenite::client_async(req, stream))
        .await
        .expect("the handshake ends")?;
    assert_eq!(resp.status(), 101);
    Ok(ws)
}

/// Sends a text and a binary message and checks each comes back.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
    for msg in [
        Message::text("hello through sidekey"),
        Message::binary(vec![0u8, 1, 2, 254, 255]),
    ] {
        ws.send(msg.clone()).await.expect("send");
        let back = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("the echo comes back")
            .expect("a message")
            .expect("a frame");
        assert_eq!(back, msg);
    }
}

/// Waits (bounded) until `series` is `value`; returns what it last was.
async fn metric_becomes(proxy: &sidekey::app::RunningProxy, series: &str, value: f64) -> f64 {
    let waited = tokio::time::timeout(STEP, async {
        loop {
            let v = metric(proxy, series).await;
            if v == value {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match waited {
        Ok(v) => v,
        Err(_) => metric(proxy, series).await,
    }
}

const OPEN: &str = "sidekey_upgrades_open";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_round_trip_gets_the_routes_credential_and_is_counted_while_open() {
    let env = TestEnv::new();
    let upstream = EchoWs::spawn("echo-key").await;
    // The stand-in refuses a handshake without the credential.
    let direct = TcpStream::connect(upstream.addr).await.expect("connect");
    match ws_handshake(direct).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("the stand-in must refuse without a key: {:?}", other.err()),
    }
    let proxy = start_sidekey(&env, &echo_config(&env, upstream.addr, "")).await;

    let stream = TcpStream::connect(proxy.proxy_addr())
        .await
        .expect("connect");
    let mut ws = ws_handshake(stream)
        .await
        .expect("the upgrade through sidekey");
    round_trip(&mut ws).await;
    assert_eq!(
        upstream.seen(),
        [None, Some("echo-key".to_string())],
        "the upgrade request carried the route's credential"
    );
    assert_eq!(metric_becomes(&proxy, OPEN, 1.0).await, 1.0);
    assert_eq!(
        metric(
            &proxy,
            "sidekey_requests_total{route=\"echo\",status=\"101\",class=\"1xx\"}"
        )
        .await,
        1.0
    );

    ws.close(None).await.expect("close");
    // The upstream answers the close and ends its connection.
    let end = tokio::time::timeout(STEP, async { while let Some(Ok(_)) = ws.next().await {} });
    end.await.expect("the connection ends after the close");
    // The upstream closed its connection; the client closes its own.
    drop(ws);
    assert_eq!(metric_becomes(&proxy, OPEN, 0.0).await, 0.0);
    assert_no_foreign_panic();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_refuses_the_upgrade_has_its_answer_passed_back() {
    let env = TestEnv::new();
    // Expects another key than the route's: refuses with 401.
    let upstream = EchoWs::spawn("another-key").await;
    let proxy = start_sidekey(&env, &echo_config(&env, upstream.addr, "")).await;

    let stream = TcpStream::connect(proxy.proxy_addr())
        .await
        .expect("connect");
    match ws_handshake(stream).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected the upstream's 401: {:?}", other.err()),
    }
    assert_eq!(upstream.seen(), [Some("echo-key".to_string())]);
    assert_eq!(
        metric(
            &proxy,
            "sidekey_requests_total{route=\"echo\",status=\"401\",class=\"4xx\"}"
        )
        .await,
        1.0
    );
    assert_eq!(metric(&proxy, OPEN).await, 0.0, "nothing spliced");
    assert_no_foreign_panic();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_upgraded_connection_is_closed_after_body_idle_timeout() {
    let env = TestEnv::new();
    let upstream = EchoWs::spawn("echo-key").await;
    let proxy = start_sidekey(
        &env,
        &echo_config(&env, upstream.addr, "body_idle_timeout = \"300ms\""),
    )
    .await;

    let stream = TcpStream::connect(proxy.proxy_addr())
        .await
        .expect("connect");
    let mut ws = ws_handshake(stream)
        .await
        .expect("the upgrade through sidekey");
    round_trip(&mut ws).await;
    let silent = std::time::Instant::now();
    // Neither side sends anything: sidekey closes both connections.
    let next = tokio::time::timeout(STEP, ws.next())
        .await
        .expect("sidekey closes the idle connection");
    assert!(
        !matches!(next, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{next:?}"
    );
    assert!(silent.elapsed() >= Duration::from_millis(250));
    assert_eq!(metric_becomes(&proxy, OPEN, 0.0).await, 0.0);
    assert_no_foreign_panic();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_inside_a_connect_tunnel_gets_the_credential_too() {
    let env = TestEnv::new();
    let upstream = EchoWs::spawn("echo-key").await;
    let (ca, table) = intercept_ca(&env);
    let proxy = start_sidekey(&env, &(echo_config(&env, upstream.addr, "") + &table)).await;

    let tls = tls_in_tunnel(proxy.proxy_addr(), "echo.example.test:443", &ca).await;
    let mut ws = ws_handshake(tls)
        .await
        .expect("the upgrade inside the tunnel");
    round_trip(&mut ws).await;
    assert_eq!(upstream.seen(), [Some("echo-key".to_string())]);
    assert_eq!(metric_becomes(&proxy, OPEN, 1.0).await, 1.0);
    ws.close(None).await.expect("close");
    let end = tokio::time::timeout(STEP, async { while let Some(Ok(_)) = ws.next().await {} });
    end.await.expect("the connection ends after the close");
    // The upstream closed its connection; the client closes its own.
    drop(ws);
    assert_eq!(metric_becomes(&proxy, OPEN, 0.0).await, 0.0);
    assert_no_foreign_panic();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_for_an_http2_upstream_is_refused_with_a_clear_502() {
    let env = TestEnv::new();
    // The Copilot stand-in offers h2 by ALPN: sidekey speaks HTTP/2 to it.
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let config = proxy_toml(&env, "", &[copilot.connect_to_toml()]) + &copilot_route();
    let proxy = start_sidekey(&env, &config).await;

    let bytes = raw(
        proxy.proxy_addr(),
        b"GET http://api.copilot.cx/v1/socket HTTP/1.1\r\nHost: api.copilot.cx\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    let resp = parse_response(&bytes);
    assert_eq!(resp.status, 502, "{}", resp.body_text());
    let json: serde_json::Value = serde_json::from_slice(&resp.body).expect("a JSON body");
    assert_eq!(json["error"], "upstream_error");
    assert_eq!(json["route"], "copilot");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("HTTP/2") && message.contains("WebSocket"),
        "{message}"
    );
    assert!(
        copilot.server().requests().is_empty(),
        "nothing was sent upstream"
    );
    assert_eq!(metric(&proxy, OPEN).await, 0.0);
    assert_no_foreign_panic();
    proxy.shutdown().await;
}

/// A fresh sidekey CA in `env`'s folder: its certificate PEM, and the
/// `[proxy.intercept]` table naming it.
fn intercept_ca(env: &TestEnv) -> (String, String) {
    let ca = support::seeds::intercept_ca(env.dir(), "");
    (ca.cert_pem, ca.table)
}

/// `CONNECT authority` through sidekey, then TLS inside the tunnel
/// trusting `ca_pem` only.
async fn tls_in_tunnel(
    proxy: SocketAddr,
    authority: &str,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(STEP, async {
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
    })
    .await
    .expect("a response head");
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("a PEM certificate")).expect("a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let host = authority.split(':').next().unwrap_or(authority);
    let name = rustls_pki_types::ServerName::try_from(host.to_string()).expect("a server name");
    tokio::time::timeout(STEP, connector.connect(name, stream))
        .await
        .expect("the handshake ends")
        .expect("the TLS handshake inside the tunnel")
}
