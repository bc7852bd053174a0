//! One-time tokens (`one_time = true`) against a stand-in of the Invoca
//! PPC Platform (seed 003), whose platform accepts each token exactly
//! once: N requests must mean N distinct tokens, all accepted, with or
//! without a pool minted ahead.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use http::StatusCode;
use sidekey::app::RunningProxy;
use sidekey::Config;
use support::harness::{proxy_toml, start_sidekey};
use support::invoca::{self, INVOCA_HOST};
use support::*;

const USERNAME: &str = "network-api-user";
const PASSWORD: &str = "pa55-w0rd-invoca";

/// The Invoca route of `seed-routes.toml`, unchanged.
const SEED_ROUTE: &str = r#"
[[route]]
name = "invoca"
host = "invoca.net"
[route.auth]
kind = "query"
param = "access_token"
[route.auth.token]
source = "endpoint"
method = "POST"
url = "https://invoca.net/api/2014-01-01/${INVOCA_NETWORK_ID}/advertisers/${INVOCA_ADVERTISER_ID}/${INVOCA_EMAIL_URLENCODED}/create_access_token.json"
basic = { username = "${INVOCA_USERNAME}", password = "${INVOCA_PASSWORD}" }
token_pointer = "/token"                 # JSON pointer into the response
one_time = true                          # never reuse a token: one mint per forwarded request
"#;

struct Setup {
    env: TestEnv,
    api: InvocaApi,
}

impl Setup {
    fn new() -> Setup {
        let env = TestEnv::new();
        let api = InvocaApi::spawn(&env.ca, USERNAME, PASSWORD);
        Setup { env, api }
    }

    /// Starts sidekey; `pool` adds `pool_size` (and a max age) to the route.
    async fn start(&self, pool: usize) -> RunningProxy {
        self.start_with(pool, "").await
    }

    /// [`Setup::start`] with more `[proxy]` lines.
    async fn start_with(&self, pool: usize, proxy_lines: &str) -> RunningProxy {
        RunningProxy::start(self.config(pool, proxy_lines))
            .await
            .expect("sidekey starts")
    }

    /// The config [`Setup::start_with`] starts.
    fn config(&self, pool: usize, proxy_lines: &str) -> Config {
        let mut toml = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nca_file = {}\n{proxy_lines}[proxy.connect_to]\n{}\n{SEED_ROUTE}",
            toml_str(&self.env.ca_file().display().to_string()),
            self.api.connect_to_toml(),
        );
        if pool > 0 {
            toml.push_str(&format!("pool_size = {pool}\npool_max_age = \"60s\"\n"));
        }
        let lookup = |name: &str| -> Option<String> {
            Some(
                match name {
                    "INVOCA_NETWORK_ID" => invoca::NETWORK_ID,
                    "INVOCA_ADVERTISER_ID" => invoca::ADVERTISER_ID,
                    "INVOCA_EMAIL_URLENCODED" => invoca::EMAIL_URLENCODED,
                    "INVOCA_USERNAME" => USERNAME,
                    "INVOCA_PASSWORD" => PASSWORD,
                    _ => return None,
                }
                .to_string(),
            )
        };
        Config::parse(&toml, self.env.dir(), &lookup).unwrap_or_else(|e| panic!("config: {e}"))
    }
}

fn url(path: &str) -> String {
    format!("http://{INVOCA_HOST}{path}")
}

fn metric(proxy: &RunningProxy, series: &str) -> f64 {
    let text = proxy.metrics().encode();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Sends `n` requests at once; returns their statuses.
async fn concurrent(proxy: &RunningProxy, n: usize) -> Vec<StatusCode> {
    let addr = proxy.proxy_addr();
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(async move { get(addr, &url(&format!("/affiliates/{i}"))).await }))
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("request task").status());
    }
    statuses
}

#[tokio::test]
async fn every_request_gets_a_fresh_token_even_under_concurrency() {
    let s = Setup::new();
    let proxy = s.start(0).await;
    let statuses = concurrent(&proxy, 30).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(s.api.mints(), 30);
    assert_eq!(s.api.accepted(), 30);
    assert_eq!(s.api.reused(), 0);
    let presented: HashSet<String> = s.api.presented().into_iter().collect();
    assert_eq!(presented.len(), 30);
    assert!(s.api.rejections().is_empty(), "{:?}", s.api.rejections());

    // A client's own access_token is replaced, its other parameters kept.
    let resp = get(
        proxy.proxy_addr(),
        &url("/home?access_token=from-the-app&x=1"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    let last = s.api.last_request().expect("a request");
    assert_eq!(last.query_values("x"), ["1"]);
    assert_eq!(last.query_values("access_token").len(), 1);
    assert_ne!(last.query_values("access_token")[0], "from-the-app");
}

/// Mints travel like proxied requests: over the worker's kept-alive
/// connection (HTTP/2 here, as the stand-in offers it), not a new
/// connection per mint.
#[tokio::test]
async fn mints_reuse_a_kept_alive_connection() {
    let s = Setup::new();
    // One worker: every request, and so every mint, on one thread's pool.
    let proxy = s.start_with(0, "workers = 1\n").await;
    for i in 0..5 {
        let resp = get(proxy.proxy_addr(), &url(&format!("/calls/{i}"))).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    }
    let mints: Vec<_> = s
        .api
        .requests()
        .into_iter()
        .filter(|r| r.path() == invoca::mint_path())
        .collect();
    assert_eq!(mints.len(), 5);
    assert!(
        mints.iter().all(|r| r.version == http::Version::HTTP_2),
        "{:?}",
        mints.iter().map(|r| r.version).collect::<Vec<_>>()
    );
    let connections: HashSet<usize> = mints.iter().map(|r| r.connection_id).collect();
    assert_eq!(connections.len(), 1, "{connections:?}");
    assert_eq!(s.api.accepted(), 5);
}

/// The same over a plain HTTP/1.1 endpoint (e.g. a mint service beside
/// the app): the POST carries its form body with a Content-Length, and one
/// kept-alive connection carries every mint.
#[tokio::test]
async fn an_http1_mint_endpoint_is_kept_alive() {
    let env = TestEnv::new();
    let minted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mint = {
        let minted = minted.clone();
        StandIn::spawn_fn(None, move |_| {
            let n = minted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            json_reply(
                StatusCode::OK,
                &serde_json::json!({ "token": format!("t{n}") }),
            )
        })
    };
    let api = StandIn::ok(None);
    let config = proxy_toml(&env, "workers = 1", &[])
        + &format!(
            r#"
[[route]]
name = "local"
host = "api.example.test"
upstream = "http://{api}"
[route.auth]
kind = "query"
param = "access_token"
[route.auth.token]
source = "endpoint"
method = "POST"
url = "http://{mint}/mint"
form = {{ scope = "calls read" }}
token_pointer = "/token"
one_time = true
"#,
            api = api.addr(),
            mint = mint.addr(),
        );
    let proxy = start_sidekey(&env, &config).await;
    for i in 0..3 {
        let resp = get(
            proxy.proxy_addr(),
            &format!("http://api.example.test/v1/{i}"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    }
    let mints = mint.requests();
    assert_eq!(mints.len(), 3);
    for m in &mints {
        assert_eq!(m.version, http::Version::HTTP_11);
        assert_eq!(m.method, http::Method::POST);
        assert_eq!(m.body_text(), "scope=calls%20read");
        assert_eq!(m.header("content-length"), Some("18"));
        assert_eq!(
            m.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
    }
    let connections: HashSet<usize> = mints.iter().map(|r| r.connection_id).collect();
    assert_eq!(connections.len(), 1, "{connections:?}");
    let tokens: Vec<String> = api
        .requests()
        .iter()
        .flat_map(|r| r.query_values("access_token"))
        .collect();
    assert_eq!(tokens, ["t0", "t1", "t2"]);
}

#[tokio::test]
async fn a_pool_takes_minting_off_the_request_path() {
    let s = Setup::new();
    let proxy = s.start(4).await;
    // The pool is filled at start, before any request.
    wait_until("the pool is filled", WAIT_TIMEOUT, || async {
        s.api.mints() == 4
    })
    .await;
    let addr = proxy.proxy_addr();
    for i in 0..12 {
        let resp = get(addr, &url(&format!("/advertisers/{i}"))).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    }
    let statuses = concurrent(&proxy, 20).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // 32 tokens used, and the pool refilled behind them.
    wait_until("the pool is refilled", WAIT_TIMEOUT, || async {
        s.api.mints() == 36
    })
    .await;
    assert_eq!(s.api.accepted(), 32);
    assert_eq!(s.api.reused(), 0);
    assert!(s.api.rejections().is_empty(), "{:?}", s.api.rejections());
    let hits = metric(&proxy, "sidekey_token_cache_hits_total{route=\"invoca\"}");
    assert!(
        hits >= 4.0,
        "only {hits} requests were served from the pool"
    );
    let ok = metric(
        &proxy,
        "sidekey_token_fetches_total{route=\"invoca\",outcome=\"ok\"}",
    );
    assert_eq!(ok, 36.0);
}

#[tokio::test]
async fn a_reload_keeps_the_pool_of_an_unchanged_route() {
    let s = Setup::new();
    let proxy = s.start(4).await;
    wait_until("the pool is filled", WAIT_TIMEOUT, || async {
        s.api.mints() == 4
    })
    .await;
    // From here on the mint endpoint answers nothing: only the tokens
    // minted before the reload can serve these requests.
    let gate = s.api.hold_mints();
    proxy.reload(s.config(4, "")).unwrap();
    let addr = proxy.proxy_addr();
    for i in 0..3 {
        let resp = get(addr, &url(&format!("/advertisers/{i}"))).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    }
    assert_eq!(s.api.accepted(), 3);
    assert_eq!(s.api.reused(), 0);
    assert_eq!(s.api.mints(), 4);
    gate.open();
}

#[tokio::test]
async fn a_rejected_one_time_token_is_retried_with_a_fresh_one() {
    let s = Setup::new();
    let proxy = s.start(2).await;
    wait_until("the pool is filled", WAIT_TIMEOUT, || async {
        s.api.mints() == 2
    })
    .await;
    // The platform invalidates the pooled tokens.
    s.api.revoke_all();
    let resp = get(proxy.proxy_addr(), &url("/affiliates/1")).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    let calls: Vec<Recorded> = s
        .api
        .requests()
        .into_iter()
        .filter(|r| r.path() == "/affiliates/1")
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].status, Some(StatusCode::UNAUTHORIZED));
    assert_eq!(calls[1].status, Some(StatusCode::OK));
    assert_eq!(s.api.reused(), 0);
}

#[tokio::test]
async fn a_mint_outage_gives_503_naming_the_route_then_recovers() {
    let s = Setup::new();
    s.api.go_down(StatusCode::SERVICE_UNAVAILABLE);
    let proxy = s.start(0).await;
    let addr = proxy.proxy_addr();
    let resp = get(addr, &url("/affiliates/1")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let json = body_json(&resp);
    assert_eq!(json["route"], "invoca");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("invoca.net") && message.contains("HTTP 503"),
        "{message}"
    );
    assert!(!body_text(&resp).contains(PASSWORD));
    for _ in 0..30 {
        assert_eq!(
            get(addr, &url("/affiliates/1")).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let attempts = s.api.mint_attempts();
    assert!(
        attempts <= 8,
        "{attempts} mint requests for 31 requests: no backoff"
    );

    s.api.come_back();
    wait_until("sidekey recovers", Duration::from_secs(30), || async {
        get(addr, &url("/affiliates/1")).await.status() == StatusCode::OK
    })
    .await;
    assert_eq!(s.api.reused(), 0);
}
