//! Bad input from either side: oversized, malformed or ambiguous requests,
//! slow clients, and upstreams that are down, silent or untrusted. Each
//! gets a clear error, nothing ambiguous is forwarded, and the proxy keeps
//! serving (no panic anywhere).

mod support;

use std::time::Duration;

use http::StatusCode;
use support::harness::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy with one plain-HTTP route `plain` (host `plain.example.test`) to
/// `server`, plus the `extra` `[proxy]` keys and routes.
async fn plain_proxy(
    env: &TestEnv,
    server: &StandIn,
    extra: &str,
    more_connect_to: &[String],
    more_routes: &str,
) -> ::sidekey::app::RunningProxy {
    let mut to = vec![connect_to("plain.example.test:80", server.addr())];
    to.extend_from_slice(more_connect_to);
    let config = proxy_toml(env, extra, &to)
        + r#"
[[route]]
name = "plain"
host = "plain.example.test"
upstream = "http://plain.example.test"
[route.auth]
kind = "header"
name = "X-Api-Key"
token = "plain-key"
"# + more_routes;
    start_sidekey(env, &config).await
}

/// A normal request still works, and nothing panicked so far.
async fn still_serves(proxy: &::sidekey::app::RunningProxy, server: &StandIn) {
    let before = server.request_count();
    let resp = get(proxy.proxy_addr(), "http://plain.example.test/after").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(server.request_count(), before + 1);
    assert_no_foreign_panic();
}

/// Writes `bytes`, then reads until the first complete response or EOF.
async fn raw_response(proxy: &::sidekey::app::RunningProxy, bytes: &[u8]) -> RawResponse {
    let got = raw(proxy.proxy_addr(), bytes).await;
    parse_response(&got)
}

/// The JSON body of a raw response.
fn raw_json(resp: &RawResponse) -> serde_json::Value {
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", resp.body_text()))
}

#[tokio::test]
async fn a_header_block_over_max_header_bytes_is_431() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = plain_proxy(&env, &server, "max_header_bytes = 8192", &[], "").await;

    // 8 KiB of head without its end: exactly what sidekey may buffer, so
    // it must answer without reading more (and nothing is left unread).
    let mut head =
        b"GET http://plain.example.test/big HTTP/1.1\r\nHost: plain.example.test\r\nX-Big: "
            .to_vec();
    head.resize(8192, b'a');
    let resp = raw_response(&proxy, &head).await;
    assert_eq!(resp.status, 431, "{}", resp.body_text());

    // Well under the limit is fine.
    let mut ok =
        b"GET http://plain.example.test/fits HTTP/1.1\r\nHost: plain.example.test\r\nX-Big: "
            .to_vec();
    ok.resize(6000, b'a');
    ok.extend_from_slice(b"\r\n\r\n");
    let resp = raw_response(&proxy, &ok).await;
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(server.request_count(), 1, "only the one that fits");
    still_serves(&proxy, &server).await;
}

#[tokio::test]
async fn more_than_max_headers_is_431() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = plain_proxy(&env, &server, "max_headers = 20", &[], "").await;

    let mut many =
        String::from("GET http://plain.example.test/many HTTP/1.1\r\nHost: plain.example.test\r\n");
    for i in 0..30 {
        many += &format!("X-H{i}: {i}\r\n");
    }
    many += "\r\n";
    let resp = raw_response(&proxy, many.as_bytes()).await;
    assert_eq!(resp.status, 431, "{}", resp.body_text());
    assert_eq!(server.request_count(), 0);

    let mut few =
        String::from("GET http://plain.example.test/few HTTP/1.1\r\nHost: plain.example.test\r\n");
    for i in 0..10 {
        few += &format!("X-H{i}: {i}\r\n");
    }
    few += "\r\n";
    let resp = raw_response(&proxy, few.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    still_serves(&proxy, &server).await;
}

#[tokio::test]
async fn a_malformed_request_line_is_400_and_nothing_is_forwarded() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = plain_proxy(&env, &server, "", &[], "").await;

    for bad in [
        &b"GET http://plain.example.test/a b HTTP/1.1\r\nHost: plain.example.test\r\n\r\n"[..],
        b"GET http://plain.example.test/ HTTP/9.9\r\nHost: plain.example.test\r\n\r\n",
        b"G\x01T http://plain.example.test/ HTTP/1.1\r\nHost: plain.example.test\r\n\r\n",
        b"GET\r\nHost: plain.example.test\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: plain.example.test\r\n\r\n",
    ] {
        let resp = raw_response(&proxy, bad).await;
        assert_eq!(
            resp.status,
            400,
            "{:?}: {}",
            String::from_utf8_lossy(bad),
            resp.body_text()
        );
    }
    assert_eq!(server.request_count(), 0);
    still_serves(&proxy, &server).await;
}

const SMUGGLED: &str =
    "GET http://plain.example.test/smuggled HTTP/1.1\r\nHost: plain.example.test\r\n\r\n";

#[tokio::test]
async fn ambiguous_framing_and_duplicate_hosts_are_rejected_unforwarded() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = plain_proxy(&env, &server, "", &[], "").await;

    // Requests two parsers could frame differently. Each is followed by a
    // pipelined request that must not be answered either: the connection
    // is closed after the error.
    let post = "POST http://plain.example.test/a HTTP/1.1\r\nHost: plain.example.test\r\n";
    let cases = [
        (
            "two different Content-Lengths",
            format!("{post}Content-Length: 5\r\nContent-Length: 7\r\n\r\nhello{SMUGGLED}"),
        ),
        (
            "a Content-Length list",
            format!("{post}Content-Length: 5, 7\r\n\r\nhello{SMUGGLED}"),
        ),
        (
            "a Content-Length that is not a number",
            format!("{post}Content-Length: 5x\r\n\r\nhello{SMUGGLED}"),
        ),
        (
            "a Transfer-Encoding other than chunked",
            format!("{post}Transfer-Encoding: gzip\r\n\r\n{SMUGGLED}"),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!("POST http://plain.example.test/a HTTP/1.0\r\nHost: plain.example.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        ),
    ];
    for (name, bytes) in &cases {
        let got = raw_until_eof(
            proxy.proxy_addr(),
            bytes.as_bytes(),
            Duration::from_secs(10),
        )
        .await;
        let responses = split_responses(&got);
        assert!(!responses.is_empty(), "{name}: closed without an answer");
        assert!(
            (400..500).contains(&responses[0].status),
            "{name}: {} {}",
            responses[0].status,
            responses[0].body_text()
        );
        assert_eq!(
            responses.len(),
            1,
            "{name}: the pipelined request was answered too: {:?}",
            String::from_utf8_lossy(&got)
        );
        assert_eq!(server.request_count(), 0, "{name}: something was forwarded");
    }

    // A second Host could make the upstream see another host than the one
    // routed on.
    let resp = raw_response(
        &proxy,
        b"GET /a HTTP/1.1\r\nHost: plain.example.test\r\nHost: evil.example\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 400, "{}", resp.body_text());
    assert_eq!(raw_json(&resp)["error"], "bad_request");
    assert_eq!(server.request_count(), 0, "duplicate Host was forwarded");
    still_serves(&proxy, &server).await;
}

/// RFC 9112 6.1 lets a server either frame by Transfer-Encoding alone or
/// refuse a request with both headers; sidekey refuses it (400) and closes
/// the connection, so nothing is forwarded and the bytes after it are
/// never read as a request.
#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_desynchronise() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = plain_proxy(&env, &server, "", &[], "").await;

    let post = "POST http://plain.example.test/a HTTP/1.1\r\nHost: plain.example.test\r\n";
    for order in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ] {
        let bytes = format!("{post}{order}\r\n0\r\n\r\n{SMUGGLED}");
        let got = raw_until_eof(
            proxy.proxy_addr(),
            bytes.as_bytes(),
            Duration::from_secs(10),
        )
        .await;
        let responses = split_responses(&got);
        assert_eq!(
            responses.len(),
            1,
            "{order:?}: one answer, then the connection is closed: {:?}",
            String::from_utf8_lossy(&got)
        );
        assert_eq!(responses[0].status, 400, "{order:?}");
        assert_eq!(raw_json(&responses[0])["error"], "bad_request");
        assert_eq!(
            server.request_count(),
            0,
            "{order:?}: something was forwarded"
        );
    }
    still_serves(&proxy, &server).await;
}

#[tokio::test]
async fn a_client_that_stops_mid_headers_is_disconnected() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = plain_proxy(&env, &server, "header_read_timeout = \"300ms\"", &[], "").await;

    let mut tcp = TcpStream::connect(proxy.proxy_addr())
        .await
        .expect("connect");
    tcp.write_all(
        b"GET http://plain.example.test/slow HTTP/1.1\r\nHost: plain.example.test\r\nX-Part",
    )
    .await
    .expect("write");
    // Wait for sidekey to close the connection (bounded: a hung test must
    // fail, not wait forever); whatever it says before, it is not a 2xx.
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was not closed");
    if !got.is_empty() {
        let resp = parse_response(&got);
        assert!(resp.status >= 400, "{}", String::from_utf8_lossy(&got));
    }
    assert_eq!(server.request_count(), 0);
    still_serves(&proxy, &server).await;
}

#[tokio::test]
async fn an_upstream_that_is_down_is_502_naming_the_route() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    // A port that was free a moment ago: nothing listens there.
    let closed = unused_local_addr();
    let proxy = plain_proxy(
        &env,
        &server,
        "",
        &[connect_to("down.example.test:443", closed)],
        "\n[[route]]\nname = \"down\"\nhost = \"down.example.test\"\n",
    )
    .await;

    let resp = get(proxy.proxy_addr(), "http://down.example.test/x").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body = body_json(&resp);
    assert_eq!(body["route"], "down", "{body}");
    assert_eq!(body["error"], "upstream_unreachable", "{body}");
    still_serves(&proxy, &server).await;
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_504() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let gate = Gate::new();
    let held = gate.clone();
    let silent = StandIn::spawn(None, move |_| {
        let gate = held.clone();
        async move {
            gate.wait().await;
            empty_reply(StatusCode::OK)
        }
    });
    let proxy = plain_proxy(
        &env,
        &server,
        "request_timeout = \"300ms\"",
        &[connect_to("silent.example.test:80", silent.addr())],
        "\n[[route]]\nname = \"silent\"\nhost = \"silent.example.test\"\nupstream = \"http://silent.example.test\"\n",
    )
    .await;

    let resp = get(proxy.proxy_addr(), "http://silent.example.test/x").await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let body = body_json(&resp);
    assert_eq!(body["route"], "silent", "{body}");
    assert_eq!(body["error"], "upstream_timeout", "{body}");
    assert_eq!(silent.request_count(), 1, "the request was delivered");
    gate.open();
    still_serves(&proxy, &server).await;
}

#[tokio::test]
async fn an_upstream_with_an_untrusted_certificate_is_502_and_gets_nothing() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let stranger = TestCa::new();
    let untrusted = StandIn::ok(Some(stranger.server_config(&["untrusted.example.test"])));
    let proxy = plain_proxy(
        &env,
        &server,
        "",
        &[connect_to("untrusted.example.test:443", untrusted.addr())],
        r#"
[[route]]
name = "untrusted"
host = "untrusted.example.test"
[route.auth]
kind = "header"
name = "X-Api-Key"
token = "untrusted-key"
"#,
    )
    .await;

    let resp = get(proxy.proxy_addr(), "http://untrusted.example.test/x").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body = body_json(&resp);
    assert_eq!(body["route"], "untrusted", "{body}");
    assert!(!body_text(&resp).contains("untrusted-key"));
    untrusted.wait_for_tls_failures(1).await;
    assert_eq!(untrusted.request_count(), 0);
    still_serves(&proxy, &server).await;
}

/// A chunked POST whose body is `chunks` is answered 400
/// `bad_request_body`, and the proxy keeps serving.
async fn chunked_post_is_refused(proxy: &::sidekey::app::RunningProxy, chunks: &str, name: &str) {
    let bytes = format!(
        "POST http://plain.example.test/up HTTP/1.1\r\nHost: plain.example.test\r\n\
         Transfer-Encoding: chunked\r\n\r\n{chunks}"
    );
    let got = raw_until_eof(
        proxy.proxy_addr(),
        bytes.as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    let resp = parse_response(&got);
    assert_eq!(resp.status, 400, "{name}: {}", resp.body_text());
    assert_eq!(raw_json(&resp)["error"], "bad_request_body", "{name}");
    // (The stand-in may count the cut request: only the answer is checked.)
    let resp = get(proxy.proxy_addr(), "http://plain.example.test/after").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_no_foreign_panic();
}

#[tokio::test]
async fn a_chunk_size_line_over_4_kib_is_400() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = plain_proxy(&env, &server, "", &[], "").await;
    let ext = format!(";ext={}", "a".repeat(5000));
    chunked_post_is_refused(
        &proxy,
        &format!("2{ext}\r\nok\r\n0\r\n\r\n"),
        "5000 bytes of extensions",
    )
    .await;
}

#[tokio::test]
async fn trailers_over_max_headers_or_max_header_bytes_are_400() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = plain_proxy(
        &env,
        &server,
        "max_headers = 20\nmax_header_bytes = 8192",
        &[],
        "",
    )
    .await;
    let many: String = (0..25).map(|i| format!("X-T{i}: {i}\r\n")).collect();
    chunked_post_is_refused(
        &proxy,
        &format!("2\r\nok\r\n0\r\n{many}\r\n"),
        "25 trailer lines",
    )
    .await;
    let big = format!("X-Big: {}\r\n", "b".repeat(9000));
    chunked_post_is_refused(
        &proxy,
        &format!("2\r\nok\r\n0\r\n{big}\r\n"),
        "9000 trailer bytes",
    )
    .await;
}

#[tokio::test]
async fn a_content_length_over_2_pow_53_is_400_unforwarded() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = plain_proxy(&env, &server, "", &[], "").await;
    let resp = raw_response(
        &proxy,
        b"POST http://plain.example.test/a HTTP/1.1\r\nHost: plain.example.test\r\n\
          Content-Length: 9223372036854775808\r\n\r\nhello",
    )
    .await;
    assert_eq!(resp.status, 400, "{}", resp.body_text());
    assert_eq!(raw_json(&resp)["error"], "bad_request");
    assert_eq!(server.request_count(), 0, "something was forwarded");
    still_serves(&proxy, &server).await;
}

#[tokio::test]
async fn a_target_with_a_fragment_or_userinfo_is_400_unforwarded() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let proxy = plain_proxy(&env, &server, "", &[], "").await;
    for line in [
        "GET http://evil@plain.example.test/ HTTP/1.1",
        "GET http://plain.example.test#@evil/ HTTP/1.1",
        "GET http://plain.example.test/a#frag HTTP/1.1",
        "GET /path#frag HTTP/1.1",
    ] {
        let bytes = format!("{line}\r\nHost: plain.example.test\r\n\r\n");
        let resp = raw_response(&proxy, bytes.as_bytes()).await;
        assert_eq!(resp.status, 400, "{line}: {}", resp.body_text());
        assert_eq!(raw_json(&resp)["error"], "bad_request", "{line}");
        assert_eq!(server.request_count(), 0, "{line}: forwarded");
    }
    still_serves(&proxy, &server).await;
}

#[tokio::test]
async fn an_upstream_chunk_size_line_over_4_kib_cuts_the_response() {
    let env = TestEnv::new();
    let server = StandIn::ok(None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let body = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n1;{}\r\nx\r\n0\r\n\r\n",
            "e".repeat(5000)
        );
        let _ = tcp.write_all(body.as_bytes()).await;
        // Held open: only the proxy ends the exchange.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let routes = r#"
[[route]]
name = "raw"
host = "raw.example.test"
upstream = "http://raw.example.test"
[route.auth]
kind = "header"
name = "X-Api-Key"
token = "raw-key"
"#;
    let proxy = plain_proxy(
        &env,
        &server,
        "",
        &[connect_to("raw.example.test:80", addr)],
        routes,
    )
    .await;
    let got = raw_until_eof(
        proxy.proxy_addr(),
        b"GET http://raw.example.test/ HTTP/1.1\r\nHost: raw.example.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the body was passed on whole: {text}"
    );
    still_serves(&proxy, &server).await;
}
