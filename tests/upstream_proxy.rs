//! `[proxy] upstream_proxy`: upstreams and token endpoints reached through
//! a corporate HTTP proxy stand-in that records what went through it and
//! requires its own credential. sidekey never dials the API hosts itself
//! (no `connect_to` for them: only the proxy knows where they are), except
//! a host listed in `no_upstream_proxy`.

mod support;

use http::StatusCode;
use support::harness::*;
use support::*;

/// `corp\user` / `p@ss w0rd`, percent-encoded in the URL.
const PROXY_USERINFO: &str = "corp%5Cuser:p%40ss%20w0rd";
/// `Basic base64("corp\user:p@ss w0rd")`.
const PROXY_AUTH: &str = "Basic Y29ycFx1c2VyOnBAc3MgdzByZA==";

/// An API that answers 200 only to `Bearer {token}` and records the rest.
fn bearer_api(tls: Option<std::sync::Arc<rustls::ServerConfig>>, token: &'static str) -> StandIn {
    StandIn::spawn_fn(tls, move |req| {
        if req.header("authorization") == Some(&format!("Bearer {token}")) {
            json_reply(StatusCode::OK, &serde_json::json!({ "ok": true }))
        } else {
            json_reply(StatusCode::UNAUTHORIZED, &serde_json::json!({}))
        }
    })
}

fn proxy_section(env: &TestEnv, url: &str, connect_to: &[String]) -> String {
    proxy_toml(
        env,
        &format!(
            "upstream_proxy = {}\nno_upstream_proxy = [\"direct.partner.test\", \"*.internal.test\"]",
            toml_str(url)
        ),
        connect_to,
    )
}

const ROUTES: &str = r#"
[[route]]
name = "partner"
host = "api.partner.test"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {token}"
[route.auth.token]
source = "endpoint"
url = "https://auth.partner.test/token"
form = { grant_type = "client_credentials" }

[[route]]
name = "plain"
host = "plain.partner.test"
upstream = "http://plain.partner.test"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {token}"
token = "plain-token"

[[route]]
name = "direct"
host = "direct.partner.test"
upstream = "http://direct.partner.test"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {token}"
token = "direct-token"
"#;

struct Setup {
    env: TestEnv,
    api: StandIn,
    auth: StandIn,
    plain: StandIn,
    direct: StandIn,
    corp: ConnectProxy,
}

impl Setup {
    async fn new() -> Setup {
        let env = TestEnv::new();
        let api = bearer_api(
            Some(env.ca.server_config(&["api.partner.test"])),
            "minted-7",
        );
        let auth = StandIn::spawn_fn(Some(env.ca.server_config(&["auth.partner.test"])), |_| {
            json_reply(
                StatusCode::OK,
                &serde_json::json!({ "access_token": "minted-7", "expires_in": 3600 }),
            )
        });
        let plain = bearer_api(None, "plain-token");
        let direct = bearer_api(None, "direct-token");
        let corp = ConnectProxy::spawn(
            Some(PROXY_AUTH),
            &[
                ("api.partner.test:443", api.addr()),
                ("auth.partner.test:443", auth.addr()),
                ("plain.partner.test:80", plain.addr()),
            ],
        )
        .await;
        Setup {
            env,
            api,
            auth,
            plain,
            direct,
            corp,
        }
    }

    fn toml(&self, userinfo: &str) -> String {
        proxy_section(
            &self.env,
            &format!("http://{userinfo}@{}", self.corp.addr()),
            // Only the bypassed host is dialled by sidekey itself.
            &[connect_to("direct.partner.test:80", self.direct.addr())],
        ) + ROUTES
    }
}

#[tokio::test]
async fn https_upstreams_and_token_endpoints_go_through_connect_with_the_proxy_credential() {
    let s = Setup::new().await;
    let proxy = start_sidekey(&s.env, &s.toml(PROXY_USERINFO)).await;
    let resp = get(proxy.proxy_addr(), "http://api.partner.test/v1/orders").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));

    let seen = s.corp.seen();
    let tunnels: Vec<&str> = seen
        .iter()
        .filter(|t| t.method == "CONNECT")
        .map(|t| t.target.as_str())
        .collect();
    assert!(tunnels.contains(&"auth.partner.test:443"), "{seen:?}");
    assert!(tunnels.contains(&"api.partner.test:443"), "{seen:?}");
    assert!(
        seen.iter()
            .all(|t| t.proxy_authorization.as_deref() == Some(PROXY_AUTH) && t.status == 200),
        "{seen:?}"
    );
    // TLS to the API inside the tunnel, to its own name; the proxy's
    // credential stays with the proxy.
    let got = s.api.last_request().expect("the API got the request");
    assert_eq!(
        got.tls.as_ref().and_then(|t| t.sni.as_deref()),
        Some("api.partner.test")
    );
    assert!(!got.has_header("proxy-authorization"));
    let token_request = s.auth.last_request().expect("the token endpoint was asked");
    assert!(!token_request.has_header("proxy-authorization"));
}

#[tokio::test]
async fn plain_http_goes_to_the_proxy_in_absolute_form() {
    let s = Setup::new().await;
    let proxy = start_sidekey(&s.env, &s.toml(PROXY_USERINFO)).await;
    let resp = get(
        proxy.proxy_addr(),
        "http://plain.partner.test/v1/items?id=3",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    let seen = s.corp.seen();
    let through: Vec<(&str, &str, Option<&str>)> = seen
        .iter()
        .filter(|t| t.method != "CONNECT")
        .map(|t| {
            (
                t.method.as_str(),
                t.target.as_str(),
                t.proxy_authorization.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        through,
        [(
            "GET",
            "http://plain.partner.test/v1/items?id=3",
            Some(PROXY_AUTH)
        )]
    );
    let got = s.plain.last_request().expect("the API got the request");
    assert_eq!(got.header("authorization"), Some("Bearer plain-token"));
    assert!(!got.has_header("proxy-authorization"));
}

#[tokio::test]
async fn a_host_in_no_upstream_proxy_is_dialled_directly_with_connect_to() {
    let s = Setup::new().await;
    let proxy = start_sidekey(&s.env, &s.toml(PROXY_USERINFO)).await;
    let resp = get(proxy.proxy_addr(), "http://direct.partner.test/v1/x").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(s.direct.request_count(), 1);
    assert!(
        s.corp
            .seen()
            .iter()
            .all(|t| !t.target.contains("direct.partner.test")),
        "{:?}",
        s.corp.seen()
    );
}

#[tokio::test]
async fn a_refused_connect_is_a_502_naming_the_proxy_status_never_its_credential() {
    let s = Setup::new().await;
    // A wrong password: the proxy answers 407 to every CONNECT.
    let proxy = start_sidekey(&s.env, &s.toml("corp%5Cuser:wr0ng-hunter2")).await;
    let resp = get(proxy.proxy_addr(), "http://api.partner.test/v1/orders").await;
    // No token could be fetched through the proxy either: the token
    // endpoint's CONNECT was refused the same way.
    let body = body_text(&resp);
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("407"), "{body}");
    assert!(
        !body.contains("hunter2") && !body.contains("d3IwbmctaHVudGVyMg"),
        "{body}"
    );

    // A route with a static token: the refused tunnel to the API itself.
    let toml = proxy_section(
        &s.env,
        &format!("http://corp%5Cuser:wr0ng-hunter2@{}", s.corp.addr()),
        &[],
    ) + r#"
[[route]]
name = "static"
host = "api.partner.test"
[route.auth]
kind = "header"
name = "Authorization"
token = "Bearer minted-7"
"#;
    let proxy = start_sidekey(&s.env, &toml).await;
    let resp = get(proxy.proxy_addr(), "http://api.partner.test/v1/orders").await;
    let body = body_text(&resp);
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("\"route\":\"static\""), "{body}");
    assert!(
        body.contains(&format!(
            "the upstream proxy {} answered HTTP 407 to CONNECT api.partner.test:443",
            s.corp.addr()
        )),
        "{body}"
    );
    assert!(!body.contains("hunter2"), "{body}");
    assert_eq!(s.api.request_count(), 0);
}

/// Plain HTTP goes to the proxy in absolute form, so its `407` comes back
/// as a response: that is the proxy's refusal, not the API's answer.
#[tokio::test]
async fn a_407_to_a_plain_http_request_is_a_502_naming_the_proxy() {
    let s = Setup::new().await;
    let proxy = start_sidekey(&s.env, &s.toml("corp%5Cuser:wr0ng-hunter2")).await;
    let resp = get(
        proxy.proxy_addr(),
        "http://plain.partner.test/v1/items?id=3",
    )
    .await;
    let body = body_text(&resp);
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body.contains(&format!(
            "the upstream proxy {} answered HTTP 407 to the request for http://plain.partner.test",
            s.corp.addr()
        )),
        "{body}"
    );
    assert!(resp.headers().get("proxy-authenticate").is_none());
    assert!(
        !body.contains("hunter2") && !body.contains("plain-token"),
        "{body}"
    );
    assert_eq!(s.plain.request_count(), 0);
}

#[tokio::test]
async fn a_blind_tunnel_for_an_unmatched_host_goes_through_the_proxy_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Setup::new().await;
    let other = StandIn::ok(None);
    let corp = ConnectProxy::spawn(Some(PROXY_AUTH), &[("other.test:443", other.addr())]).await;
    let ca = support::seeds::intercept_ca(s.env.dir(), "");
    let toml = proxy_toml(
        &s.env,
        &format!(
            "unmatched = \"passthrough\"\nupstream_proxy = {}",
            toml_str(&format!("http://{PROXY_USERINFO}@{}", corp.addr()))
        ),
        &[],
    ) + &ca.table;
    let proxy = start_sidekey(&s.env, &toml).await;

    let mut conn = tokio::net::TcpStream::connect(proxy.proxy_addr())
        .await
        .unwrap();
    conn.write_all(b"CONNECT other.test:443 HTTP/1.1\r\nHost: other.test:443\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(conn.read(&mut byte).await.unwrap(), 1, "{head:?}");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Whatever the app sends goes through unchanged (here plain HTTP).
    conn.write_all(b"GET /through HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        other
            .last_request()
            .map(|r| r.path().to_string())
            .as_deref(),
        Some("/through")
    );
    let seen = corp.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (
            seen[0].method.as_str(),
            seen[0].target.as_str(),
            seen[0].proxy_authorization.as_deref()
        ),
        ("CONNECT", "other.test:443", Some(PROXY_AUTH))
    );
}
