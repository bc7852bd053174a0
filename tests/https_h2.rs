//! HTTP/2 from `https://` clients: inside a `CONNECT` tunnel and on the TLS
//! listener, a client that chooses `h2` by ALPN is served HTTP/2, each
//! request going the way an HTTP/1.1 one goes (route, credential,
//! streamed body, `421` for another host).

mod support;

use std::time::Duration;

use http::{StatusCode, Version};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use support::harness::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// A fresh sidekey CA in `env`'s folder: its certificate PEM, and the
/// `[proxy.intercept]` table naming it (with `extra` lines).
fn intercept_ca(env: &TestEnv, extra: &str) -> (String, String) {
    let ca = support::seeds::intercept_ca(env.dir(), extra);
    (ca.cert_pem, ca.table)
}

/// A config with the Copilot route and interception.
fn intercept_config(env: &TestEnv, copilot: &CopilotApi, extra: &str) -> (String, String) {
    let (cert, table) = intercept_ca(env, extra);
    let config = proxy_toml(env, "", &[copilot.connect_to_toml()]) + &table + &copilot_route();
    (cert, config)
}

/// reqwest speaking HTTP/2 only, with `HTTPS_PROXY` pointing at sidekey
/// and sidekey's CA as the only root.
fn h2_client(proxy: std::net::SocketAddr, ca_pem: &str) -> reqwest::Client {
    seeds::via_https_proxy(proxy, ca_pem)
        .http2_prior_knowledge()
        .build()
        .expect("a client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_through_connect_reaches_copilot_with_the_credential_on_one_connection() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let (ca, config) = intercept_config(&env, &copilot, "");
    let proxy = start_sidekey(&env, &config).await;

    let client = h2_client(proxy.proxy_addr(), &ca);
    // One first, so that the others share its connection.
    let resp = client
        .get("https://api.copilot.cx/v1/users")
        .send()
        .await
        .expect("a response through the tunnel");
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), 200, "{:?}", copilot.rejections());
    let many = (0..8).map(|i| {
        let client = client.clone();
        async move {
            let resp = client
                .get(format!("https://api.copilot.cx/v1/users?i={i}"))
                .send()
                .await
                .expect("a response");
            assert_eq!(resp.version(), Version::HTTP_2);
            let status = resp.status();
            let body = resp.bytes().await.expect("the body");
            (status, body)
        }
    });
    let tasks: Vec<_> = many.map(tokio::spawn).collect();
    for task in tasks {
        let (status, body) = task.await.expect("a task");
        assert_eq!(status, 200, "{:?}", copilot.rejections());
        assert!(!body.is_empty());
    }
    assert_eq!(copilot.accepted(), 9, "{:?}", copilot.rejections());
    let rec = copilot.last_request().expect("a request");
    assert_eq!(rec.header_values("authorization"), [COPILOT_AUTH]);
    assert_eq!(
        metric(
            &proxy,
            "sidekey_tls_handshakes_total{listener=\"connect\",outcome=\"ok\"}"
        )
        .await,
        1.0,
        "one tunnel, one HTTP/2 connection for every request"
    );
    drop(client);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_upload_of_a_few_mb_streams_through_whole() {
    const SIZE: u64 = 5 * 1000 * 1000 + 17;
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let (ca, config) = intercept_config(&env, &copilot, "");
    let proxy = start_sidekey(&env, &config).await;

    let client = h2_client(proxy.proxy_addr(), &ca);
    let resp = client
        .post("https://api.copilot.cx/v1/upload")
        .body(reqwest::Body::wrap(streaming_body(SIZE)))
        .send()
        .await
        .expect("a response");
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), 200, "{:?}", copilot.rejections());
    let rec = copilot.last_request().expect("Copilot received the upload");
    assert_eq!(rec.body_len, SIZE);
    assert!(rec.body_error.is_none(), "{:?}", rec.body_error);
    assert_eq!(rec.header_values("authorization"), [COPILOT_AUTH]);
    drop(client);
    proxy.shutdown().await;
}

/// Opens a tunnel to `authority` and a TLS connection inside it offering
/// `h2` only, and an HTTP/2 client connection on it.
async fn h2_in_tunnel<B>(
    proxy: std::net::SocketAddr,
    authority: &str,
    sni: &str,
    ca_pem: &str,
) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (stream, head) = connect(proxy, authority).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let tls = tls_h2(stream, sni, ca_pem).await;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("the HTTP/2 handshake");
    tokio::spawn(conn);
    send
}

/// A TLS connection on `stream` naming `sni`, offering `h2` only and
/// trusting `ca_pem` only; checks that `h2` was chosen.
async fn tls_h2(
    stream: TcpStream,
    sni: &str,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("a PEM certificate")).expect("a root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).expect("a server name");
    let tls = connector
        .connect(name, stream)
        .await
        .expect("the handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_tunnel_an_h2_request_for_another_authority_gets_421() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let (ca, config) = intercept_config(&env, &copilot, "");
    let proxy = start_sidekey(&env, &config).await;

    let mut send = h2_in_tunnel(
        proxy.proxy_addr(),
        "api.copilot.cx:443",
        "api.copilot.cx",
        &ca,
    )
    .await;
    let empty = http_body_util::Empty::<bytes::Bytes>::new;
    let req = http::Request::get("https://evil.example.test/v1/users")
        .body(empty())
        .expect("request");
    let resp = send.send_request(req).await.expect("a response");
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("misdirected_request"), "{text}");

    // :authority and a Host field that disagree: refused (RFC 9113 8.3.1).
    let req = http::Request::get("https://api.copilot.cx/v1/users")
        .header("host", "evil.example.test")
        .body(empty())
        .expect("request");
    let resp = send.send_request(req).await.expect("a response");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // CONNECT inside HTTP/2: not a tunnel.
    let req = http::Request::connect("elsewhere.example.test:443")
        .body(empty())
        .expect("request");
    let resp = send.send_request(req).await.expect("a response");
    assert_eq!(resp.status(), StatusCode::NOT_IMPLEMENTED);

    // The same connection still serves the right host.
    let req = http::Request::get("https://api.copilot.cx/v1/users")
        .body(empty())
        .expect("request");
    let resp = send.send_request(req).await.expect("a response");
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", copilot.rejections());
    assert!(resp.headers().get("connection").is_none());
    assert_eq!(copilot.accepted(), 1, "only the last one is forwarded");
    assert_eq!(copilot.rejections().len(), 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_serves_h2() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let (ca, config) = intercept_config(&env, &copilot, "listen = \"127.0.0.1:0\"");
    let proxy = start_sidekey(&env, &config).await;
    let tls_addr = proxy.intercept_addr().expect("the TLS listener");

    // An app whose https://api.copilot.cx resolves to sidekey.
    let client = seeds::trusting_only(&ca)
        .resolve("api.copilot.cx", tls_addr)
        .http2_prior_knowledge()
        .build()
        .expect("a client");
    let url = format!("https://api.copilot.cx:{}/v1/users", tls_addr.port());
    for _ in 0..2 {
        let resp = client.get(&url).send().await.expect("a response");
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(resp.status(), 200, "{:?}", copilot.rejections());
    }
    assert_eq!(copilot.accepted(), 2);
    drop(client);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_that_sends_nothing_is_closed_after_header_read_timeout() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let (ca, table) = intercept_ca(&env, "listen = \"127.0.0.1:0\"");
    let config = proxy_toml(
        &env,
        "header_read_timeout = \"300ms\"",
        &[copilot.connect_to_toml()],
    ) + &table
        + &copilot_route();
    let proxy = start_sidekey(&env, &config).await;
    let tls_addr = proxy.intercept_addr().expect("the TLS listener");

    let stream = TcpStream::connect(tls_addr).await.expect("connect");
    let mut tls = tls_h2(stream, "api.copilot.cx", &ca).await;
    // No HTTP/2 preface: sidekey closes the connection (after its
    // SETTINGS and GOAWAY, if any).
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "the connection is closed");
    proxy.shutdown().await;
}

/// A request body that sends one piece, then nothing, ever.
struct Stalling(Option<bytes::Bytes>);

impl http_body::Body for Stalling {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.0.take() {
            Some(data) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(data)))),
            None => std::task::Poll::Pending,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_upload_that_stalls_gets_408_after_body_idle_timeout() {
    let env = TestEnv::new();
    // An HTTP/1.1 upstream (the route `echo`, plain HTTP).
    let server = StandIn::spawn_fn(None, |rec| text_reply(StatusCode::OK, rec.path()));
    let (ca, table) = intercept_ca(&env, "");
    let config = echo_config(&env, server.addr(), "body_idle_timeout = \"300ms\"") + &table;
    let proxy = start_sidekey(&env, &config).await;

    let mut send = h2_in_tunnel(
        proxy.proxy_addr(),
        "echo.example.test:443",
        "echo.example.test",
        &ca,
    )
    .await;
    let req = http::Request::post("https://echo.example.test/upload")
        .body(Stalling(Some(bytes::Bytes::from_static(b"the start"))))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .expect("an answer once the body has been silent for 300 ms")
        .expect("a response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(
        status,
        StatusCode::REQUEST_TIMEOUT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(String::from_utf8_lossy(&body).contains("request_body_timeout"));
    assert_eq!(
        metric(&proxy, "sidekey_body_idle_timeouts_total{side=\"client\"}").await,
        1.0
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_header_list_over_max_header_bytes_is_refused() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let (ca, table) = intercept_ca(&env, "");
    let config = proxy_toml(
        &env,
        "max_header_bytes = 8192",
        &[copilot.connect_to_toml()],
    ) + &table
        + &copilot_route();
    let proxy = start_sidekey(&env, &config).await;

    let mut send = h2_in_tunnel(
        proxy.proxy_addr(),
        "api.copilot.cx:443",
        "api.copilot.cx",
        &ca,
    )
    .await;
    let req = http::Request::get("https://api.copilot.cx/v1/users")
        .header("x-big", "x".repeat(10_000))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    // hyper answers 431 for the stream (the connection stays up).
    let resp = send.send_request(req).await.expect("a response");
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(copilot.accepted() + copilot.rejections().len(), 0);
    let req = http::Request::get("https://api.copilot.cx/v1/users")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("a response");
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", copilot.rejections());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_header_names_with_underscores_are_dropped_like_http1_ones() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let (ca, config) = intercept_config(&env, &copilot, "");
    let proxy = start_sidekey(&env, &config).await;

    let client = h2_client(proxy.proxy_addr(), &ca);
    let resp = client
        .get("https://api.copilot.cx/v1/users")
        .header("authorization_", "Basic bWluZTptaW5l")
        .header("content_length", "5")
        .header("x_trace", "t1")
        .header("x-kept", "1")
        .send()
        .await
        .expect("a response through the tunnel");
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), 200, "{:?}", copilot.rejections());
    let rec = copilot.last_request().expect("a request");
    let names: Vec<&str> = rec.headers.keys().map(|n| n.as_str()).collect();
    assert!(
        names.iter().all(|n| !n.contains('_')),
        "a name with '_' was forwarded: {names:?}"
    );
    assert_eq!(rec.header_values("authorization"), [COPILOT_AUTH]);
    assert_eq!(rec.header_values("x-kept"), ["1"]);
    assert_eq!(
        metric(&proxy, "sidekey_header_fields_dropped_total").await,
        3.0
    );
    drop(client);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_an_h2_request_in_flight_finishes_and_the_connection_ends() {
    let env = TestEnv::new();
    let gate = Gate::new();
    let expected = copilot::basic_authorization(COPILOT_ID, COPILOT_SECRET);
    let held = gate.clone();
    // Answers once `gate` opens, with the credential checked.
    let upstream = StandIn::spawn(
        Some(env.ca.server_config(&[copilot::COPILOT_HOST])),
        move |rec| {
            let ok = rec.header("authorization") == Some(expected.as_str());
            let held = held.clone();
            async move {
                if !ok {
                    return json_reply(StatusCode::UNAUTHORIZED, &serde_json::json!({}));
                }
                held.wait().await;
                json_reply(StatusCode::OK, &serde_json::json!({ "held": true }))
            }
        },
    );
    let (ca, table) = intercept_ca(&env, "");
    let config = proxy_toml(
        &env,
        "drain_timeout = \"60s\"",
        &[connect_to("api.copilot.cx:443", upstream.addr())],
    ) + &table
        + &copilot_route();
    let proxy = start_sidekey(&env, &config).await;
    let addr = proxy.proxy_addr();

    let mut send = h2_in_tunnel(addr, "api.copilot.cx:443", "api.copilot.cx", &ca).await;
    let req = http::Request::get("https://api.copilot.cx/hold")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let in_flight = tokio::spawn(async move {
        let resp = send.send_request(req).await.expect("a response");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body, send)
    });
    upstream.wait_for_requests(1).await;

    let stopping = tokio::spawn(proxy.shutdown());
    // Stopped accepting: the stop signal is out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !in_flight.is_finished(),
        "the request in flight was cut off"
    );

    gate.open();
    let (status, body, mut send) = in_flight.await.expect("the request task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], br#"{"held":true}"#);
    // The connection got GOAWAY: no new request on it. And sidekey's
    // shutdown does not wait for the idle client to leave (the drain
    // timeout is a minute).
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("shutdown returns once the stream is done")
        .expect("shutdown task");
    let req = http::Request::get("https://api.copilot.cx/v1/users")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    assert!(
        send.send_request(req).await.is_err(),
        "a new stream was served after shutdown"
    );
    assert_eq!(upstream.request_count(), 1);
}
