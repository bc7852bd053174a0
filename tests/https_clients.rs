//! `https://` clients: `CONNECT` through the proxy (what `HTTPS_PROXY`
//! makes clients send). Hosts no route names are refused without dialling
//! anything, or (only with `unmatched = "passthrough"`) tunnelled blindly,
//! with no credential.

mod support;

use std::time::Duration;

use rustls_pki_types::pem::PemObject;
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

/// reqwest, as an app would set it up: `HTTPS_PROXY` pointing at sidekey
/// and sidekey's CA as the only root.
fn https_client(proxy: std::net::SocketAddr, ca_pem: &str, http2: bool) -> reqwest::Client {
    let builder = seeds::via_https_proxy(proxy, ca_pem);
    let builder = if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    builder.build().expect("a client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_client_through_connect_reaches_copilot_with_the_credential() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let (ca, config) = intercept_config(&env, &copilot, "");
    let proxy = start_sidekey(&env, &config).await;

    let client = https_client(proxy.proxy_addr(), &ca, false);
    for _ in 0..2 {
        let resp = client
            .get("https://api.copilot.cx/v1/users")
            .send()
            .await
            .expect("a response through the tunnel");
        assert_eq!(resp.status(), 200, "{:?}", copilot.rejections());
        // Read to its end, so that the connection (the tunnel) is reused.
        resp.bytes().await.expect("the body");
    }
    assert_eq!(copilot.accepted(), 2, "{:?}", copilot.rejections());
    // reqwest usually reuses the tunnel, but may open a second one when
    // its pooled connection is not ready yet: at least one handshake; the
    // leaf is minted once and then served from the cache.
    let handshakes = metric(
        &proxy,
        "sidekey_tls_handshakes_total{listener=\"connect\",outcome=\"ok\"}",
    )
    .await;
    assert!(handshakes >= 1.0, "{handshakes}");
    assert_eq!(
        metric(&proxy, "sidekey_leaf_certificates_minted_total").await,
        1.0
    );
    drop(client);
    proxy.shutdown().await;
}

/// Opens a tunnel to `authority` and a TLS connection inside it, naming
/// `sni`, trusting `ca_pem` only.
async fn tls_in_tunnel(
    proxy: std::net::SocketAddr,
    authority: &str,
    sni: &str,
    ca_pem: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let (stream, head) = connect(proxy, authority).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("a PEM certificate")).expect("a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).expect("a server name");
    connector.connect(name, stream).await
}

#[tokio::test]
async fn inside_a_tunnel_another_host_gets_421_and_another_sni_no_handshake() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let (ca, config) = intercept_config(&env, &copilot, "");
    let proxy = start_sidekey(&env, &config).await;

    let mut tls = tls_in_tunnel(
        proxy.proxy_addr(),
        "api.copilot.cx:443",
        "api.copilot.cx",
        &ca,
    )
    .await
    .expect("the handshake for the CONNECT host");
    tls.write_all(
        b"GET /v1/users HTTP/1.1\r\nHost: evil.example.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 421 "), "{text}");
    assert!(text.contains("misdirected_request"), "{text}");
    assert_eq!(
        copilot.accepted() + copilot.rejections().len(),
        0,
        "nothing forwarded"
    );

    let refused = tls_in_tunnel(
        proxy.proxy_addr(),
        "api.copilot.cx:443",
        "evil.example.test",
        &ca,
    )
    .await;
    assert!(
        refused.is_err(),
        "a ClientHello for another host is refused"
    );
    assert_eq!(
        metric_reaches(
            &proxy,
            "sidekey_tls_handshakes_total{listener=\"connect\",outcome=\"refused\"}",
            1.0
        )
        .await,
        1.0
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_serves_routed_hosts_by_sni_and_refuses_others() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let (ca, config) = intercept_config(&env, &copilot, "listen = \"127.0.0.1:0\"");
    let proxy = start_sidekey(&env, &config).await;
    let tls_addr = proxy.intercept_addr().expect("the TLS listener");

    // An app whose https://api.copilot.cx resolves to sidekey.
    let client = seeds::trusting_only(&ca)
        .resolve("api.copilot.cx", tls_addr)
        .http1_only()
        .build()
        .expect("a client");
    let url = format!("https://api.copilot.cx:{}/v1/users", tls_addr.port());
    let resp = client.get(&url).send().await.expect("a response");
    assert_eq!(resp.status(), 200, "{:?}", copilot.rejections());
    assert_eq!(copilot.accepted(), 1);

    // A name no route has: no certificate, no handshake.
    let other = seeds::trusting_only(&ca)
        .resolve("unknown.example.test", tls_addr)
        .build()
        .expect("a client");
    let url = format!("https://unknown.example.test:{}/", tls_addr.port());
    assert!(other.get(&url).send().await.is_err());
    assert_eq!(
        metric_reaches(
            &proxy,
            "sidekey_tls_handshakes_total{listener=\"tls\",outcome=\"refused\"}",
            1.0
        )
        .await,
        1.0
    );
    drop(client);
    proxy.shutdown().await;
}
