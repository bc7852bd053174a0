//! `source = "endpoint"` tokens against a stand-in of the Algonomy CDP
//! (seed 004): the route is the seed's own, token lifetimes are shortened
//! through its `ALGONOMY_TOKEN_TTL` / `ALGONOMY_REFRESH_BEFORE` variables.
//! Covers reuse and background refresh across several lifetimes, single
//! flight, 401 retry, outages (503 naming the route, then recovery) and
//! that an expired token is never injected.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use http::{Request, StatusCode};
use sidekey::app::RunningProxy;
use sidekey::Config;
use support::algonomy::{ALGONOMY_HOST, CREATE_PATH};
use support::harness::*;
use support::*;

const KEY_SECRET: &str = "4faeaf752ee40a0f";
const TENANT_HASH: &str = "abcd1234efgh5678ijkl9012mnop3456";

/// The Algonomy route of `seed-routes.toml`, unchanged.
const SEED_ROUTE: &str = r#"
[[route]]
name = "algonomy"
host = "${ALGONOMY_API_HOST}"            # given by Algonomy support
[route.headers]
"tenant_hash" = "${ALGONOMY_TENANT_HASH}"
[route.auth]
kind = "header"
name = "Authorization"                   # header that carries the token
value = "Bearer {token}"                 # {token} is replaced
[route.auth.token]
source = "endpoint"
method = "POST"
url = "https://${ALGONOMY_API_HOST}/secureApi/token/profile/create"
headers = { oauth_key_secret = "${ALGONOMY_OAUTH_KEY_SECRET}", tenant_hash = "${ALGONOMY_TENANT_HASH}" }
json = { resource = ["basic", "segments"], validity = 15 }
token_pointer = "/token"                 # JSON pointer into the response
ttl = "${ALGONOMY_TOKEN_TTL:-15m}"       # lifetime when the response carries none
refresh_before = "${ALGONOMY_REFRESH_BEFORE:-60s}"  # refresh this long before expiry, off the request path
"#;

struct Setup {
    env: TestEnv,
    api: AlgonomyApi,
}

impl Setup {
    fn new() -> Setup {
        let env = TestEnv::new();
        let api = AlgonomyApi::spawn(&env.ca, KEY_SECRET, TENANT_HASH);
        Setup { env, api }
    }

    fn toml(&self, connect_to: &str) -> String {
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nca_file = {}\nready_requires_tokens = true\n[proxy.connect_to]\n{connect_to}\n{SEED_ROUTE}",
            toml_str(&self.env.ca_file().display().to_string()),
        )
    }

    /// Starts sidekey with token lifetime `ttl` (also the stand-in's) and
    /// `refresh_before`.
    async fn start(&self, ttl: Option<(Duration, &str)>) -> RunningProxy {
        self.start_with(ttl, &self.api.connect_to_toml()).await
    }

    async fn start_with(&self, ttl: Option<(Duration, &str)>, connect_to: &str) -> RunningProxy {
        RunningProxy::start(self.config(ttl, connect_to))
            .await
            .expect("sidekey starts")
    }

    fn config(&self, ttl: Option<(Duration, &str)>, connect_to: &str) -> Config {
        self.parse(&self.toml(connect_to), ttl)
    }

    /// Parses `toml` with the seed route's variables (token lifetime `ttl`).
    fn parse(&self, toml: &str, ttl: Option<(Duration, &str)>) -> Config {
        let ttl_text = ttl.map(|(t, _)| format!("{}ms", t.as_millis()));
        if let Some((t, _)) = ttl {
            self.api.set_token_lifetime(t);
        }
        let refresh = ttl.map(|(_, r)| r.to_string());
        let lookup = move |name: &str| -> Option<String> {
            match name {
                "ALGONOMY_API_HOST" => Some(ALGONOMY_HOST.to_string()),
                "ALGONOMY_TENANT_HASH" => Some(TENANT_HASH.to_string()),
                "ALGONOMY_OAUTH_KEY_SECRET" => Some(KEY_SECRET.to_string()),
                "ALGONOMY_TOKEN_TTL" => ttl_text.clone(),
                "ALGONOMY_REFRESH_BEFORE" => refresh.clone(),
                _ => None,
            }
        };
        Config::parse(toml, self.env.dir(), &lookup).unwrap_or_else(|e| panic!("config: {e}"))
    }
}

fn url(path: &str) -> String {
    format!("http://{ALGONOMY_HOST}{path}")
}

/// The value of one series in the Prometheus text.
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

/// The API calls (not token requests) the stand-in received.
fn api_calls(api: &AlgonomyApi) -> Vec<Recorded> {
    api.requests()
        .into_iter()
        .filter(|r| r.path() != CREATE_PATH)
        .collect()
}

async fn readyz(proxy: &RunningProxy) -> StatusCode {
    let admin = proxy.admin_addr().expect("admin listener");
    get(admin, "/readyz").await.status()
}

#[tokio::test]
async fn steady_traffic_across_short_lifetimes_never_waits_and_never_floods() {
    let s = Setup::new();
    // Tokens live 2 s, refreshed 1 s ahead: five seconds of traffic span
    // several lifetimes.
    let proxy = s.start(Some((Duration::from_secs(2), "1s"))).await;
    let addr = proxy.proxy_addr();
    let start = tokio::time::Instant::now();
    let mut requests = 0;
    while start.elapsed() < Duration::from_secs(5) {
        let resp = get(addr, &url("/api/v1/profile/42")).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
        requests += 1;
        // Pacing, not synchronisation: ten requests a second.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        s.api.api_rejections().is_empty(),
        "{:?}",
        s.api.api_rejections()
    );
    let mints = s.api.mints();
    assert!(
        mints >= 4,
        "refreshed only {mints} times in 5 s of 2 s tokens"
    );
    assert!(
        mints <= 8,
        "{mints} tokens for {requests} requests: a flood"
    );
    let used: HashSet<String> = tokens_used(&s.api).into_iter().collect();
    assert!(used.len() >= 3, "only {} distinct tokens used", used.len());
    // Only the first request may have waited (if the warm-up fetch was
    // still running); every refresh happened off the request path.
    let waits = metric(
        &proxy,
        "sidekey_token_wait_seconds_count{route=\"algonomy\"}",
    );
    assert!(waits <= 1.0, "{waits} requests waited for a token");
    let hits = metric(&proxy, "sidekey_token_cache_hits_total{route=\"algonomy\"}");
    assert!(
        hits >= (requests - 1) as f64,
        "{hits} cache hits for {requests} requests"
    );
    let ok = metric(
        &proxy,
        "sidekey_token_fetches_total{route=\"algonomy\",outcome=\"ok\"}",
    );
    // Each mint is one successful fetch. The refresh keeps running while
    // the two counts are read, so one may be counted on one side only.
    assert!(
        (ok as usize).abs_diff(mints) <= 1,
        "{ok} successful fetches for {mints} mints"
    );
    assert_eq!(readyz(&proxy).await, StatusCode::OK);
}

/// The `Authorization` values of the API calls so far.
fn tokens_used(api: &AlgonomyApi) -> Vec<String> {
    api_calls(api)
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_reload_keeps_the_token_of_an_unchanged_route_and_fetches_anew_for_a_changed_one() {
    let s = Setup::new();
    let connect_to = s.api.connect_to_toml();
    let proxy = s.start(None).await;
    let addr = proxy.proxy_addr();
    let resp = get(addr, &url("/api/v1/profile/1")).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(s.api.mints(), 1);

    // The same config again, as a SIGHUP after an unrelated edit loads it.
    proxy.reload(s.config(None, &connect_to)).unwrap();
    let resp = get(addr, &url("/api/v1/profile/2")).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(s.api.mints(), 1, "the reload fetched a token it had");
    let used = tokens_used(&s.api);
    assert_eq!(used.len(), 2);
    assert_eq!(used[0], used[1]);

    // A changed token setting (here its lifetime) is a new token source.
    proxy
        .reload(s.config(Some((Duration::from_secs(600), "60s")), &connect_to))
        .unwrap();
    let resp = get(addr, &url("/api/v1/profile/3")).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(s.api.mints(), 2);
    let used = tokens_used(&s.api);
    assert_eq!(used.len(), 3);
    assert_ne!(used[2], used[1]);
}

#[tokio::test]
async fn fifty_concurrent_requests_on_a_cold_cache_cause_one_fetch() {
    let s = Setup::new();
    let gate = s.api.hold_mints();
    let proxy = s.start(None).await;
    let addr = proxy.proxy_addr();
    let mut tasks = Vec::new();
    for i in 0..50 {
        tasks.push(tokio::spawn(async move {
            get(addr, &url(&format!("/api/v1/profile/{i}"))).await
        }));
    }
    // Every request is in (waiting for the token) and the one fetch is
    // held at the endpoint.
    wait_until(
        "50 requests wait and one fetch is held",
        WAIT_TIMEOUT,
        || async { proxy.metrics().active_connections.get() >= 50 && s.api.mint_attempts() >= 1 },
    )
    .await;
    assert_eq!(readyz(&proxy).await, StatusCode::SERVICE_UNAVAILABLE);
    gate.open();
    for task in tasks {
        let resp = task.await.expect("request task");
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    }
    assert_eq!(s.api.mint_attempts(), 1);
    assert_eq!(s.api.mints(), 1);
    assert_eq!(s.api.api_accepted(), 50);
    assert_eq!(readyz(&proxy).await, StatusCode::OK);
}

#[tokio::test]
async fn a_401_invalidates_the_token_and_the_request_is_retried_once_with_its_body() {
    let s = Setup::new();
    let proxy = s.start(None).await;
    let addr = proxy.proxy_addr();
    assert_eq!(get(addr, &url("/api/v1/x")).await.status(), StatusCode::OK);
    assert_eq!(s.api.mints(), 1);

    // The API forgets every token it issued (e.g. revoked by an admin).
    s.api.revoke_all();
    let body = r#"{"profile":{"id":7}}"#;
    let req = Request::post(url("/api/v1/profile"))
        .header("content-type", "application/json")
        .body(full_body(body))
        .expect("request");
    let resp = send(addr, req).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(s.api.mints(), 2);
    let calls = api_calls(&s.api);
    let posts: Vec<&Recorded> = calls
        .iter()
        .filter(|r| r.path() == "/api/v1/profile")
        .collect();
    assert_eq!(posts.len(), 2, "one 401, one retry");
    assert_eq!(posts[0].status, Some(StatusCode::UNAUTHORIZED));
    assert_eq!(posts[1].status, Some(StatusCode::OK));
    assert_eq!(posts[0].body_text(), body);
    assert_eq!(posts[1].body_text(), body);
    assert_ne!(
        posts[0].header("authorization"),
        posts[1].header("authorization")
    );

    // An API that refuses every token: one retry, then the 401 goes back
    // to the client; no loop.
    s.api.refuse_all(true);
    let before = api_calls(&s.api).len();
    let resp = get(addr, &url("/api/v1/y")).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api_calls(&s.api).len() - before, 2);
    assert_eq!(s.api.mints(), 3);
}

#[tokio::test]
async fn an_endpoint_outage_gives_503_naming_the_route_then_recovers() {
    let s = Setup::new();
    s.api.go_down(StatusCode::SERVICE_UNAVAILABLE);
    let proxy = s.start(None).await;
    let addr = proxy.proxy_addr();

    let resp = get(addr, &url("/api/v1/x")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry_after));
    let json = body_json(&resp);
    assert_eq!(json["error"], "credential_unavailable");
    assert_eq!(json["route"], "algonomy");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cdp.algonomy.test") && message.contains("HTTP 503"),
        "{message}"
    );
    let text = body_text(&resp);
    assert!(
        !text.contains(KEY_SECRET) && !text.contains(TENANT_HASH),
        "{text}"
    );

    // A burst of requests during the outage does not become a burst of
    // token requests: they are answered from the backoff state.
    for _ in 0..30 {
        assert_eq!(
            get(addr, &url("/api/v1/x")).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let attempts = s.api.mint_attempts();
    assert!(attempts <= 8, "{attempts} token requests during the outage");
    assert!(
        api_calls(&s.api).is_empty(),
        "nothing reached the API without a token"
    );

    s.api.come_back();
    wait_until(
        "sidekey recovers by itself",
        Duration::from_secs(30),
        || async { get(addr, &url("/api/v1/x")).await.status() == StatusCode::OK },
    )
    .await;
    assert_eq!(s.api.mints(), 1);
    assert!(s.api.api_rejections().is_empty());
}

#[tokio::test]
async fn a_valid_token_is_used_through_an_outage_and_an_expired_one_never() {
    let s = Setup::new();
    // 6 s tokens, refreshed from half their life (3 s) on.
    let proxy = s.start(Some((Duration::from_secs(6), "5s"))).await;
    let addr = proxy.proxy_addr();
    assert_eq!(get(addr, &url("/api/v1/a")).await.status(), StatusCode::OK);
    s.api.go_down(StatusCode::INTERNAL_SERVER_ERROR);
    let attempts = s.api.mint_attempts();
    wait_until("a refresh fails", Duration::from_secs(10), || async {
        s.api.mint_attempts() > attempts
    })
    .await;
    // The refresh failed, the token is still valid: it keeps being used.
    let resp = get(addr, &url("/api/v1/b")).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));

    // Once it expires, /readyz says so and requests get 503 from sidekey:
    // the expired token never reaches the API.
    wait_until("the token expires", Duration::from_secs(15), || async {
        readyz(&proxy).await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let resp = get(addr, &url("/api/v1/c")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body_json(&resp)["route"], "algonomy");
    assert!(
        s.api.api_rejections().is_empty(),
        "{:?}",
        s.api.api_rejections()
    );

    s.api.come_back();
    wait_until("sidekey recovers", Duration::from_secs(30), || async {
        get(addr, &url("/api/v1/d")).await.status() == StatusCode::OK
    })
    .await;
    assert_eq!(readyz(&proxy).await, StatusCode::OK);
}

#[tokio::test]
async fn the_503_names_a_refused_connection() {
    let s = Setup::new();
    let closed = unused_local_addr();
    let proxy = s
        .start_with(None, &format!("\"{ALGONOMY_HOST}:443\" = \"{closed}\""))
        .await;
    let resp = get(proxy.proxy_addr(), &url("/api/v1/x")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let json = body_json(&resp);
    assert_eq!(json["route"], "algonomy");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(message.contains("connection refused"), "{message}");
}

#[tokio::test]
async fn a_token_endpoint_that_does_not_answer_gives_503_and_other_routes_are_unaffected() {
    let s = Setup::new();
    let copilot = CopilotApi::spawn(&s.env.ca, COPILOT_ID, COPILOT_SECRET);
    // The endpoint accepts the token request and never answers it.
    let _held = s.api.hold_mints();
    let connect_to = format!("{}\n{}", s.api.connect_to_toml(), copilot.connect_to_toml());
    let toml = s.toml(&connect_to).replace(
        "token_pointer = \"/token\"",
        "token_pointer = \"/token\"\ntimeout = \"300ms\"",
    ) + &copilot_route();
    let proxy = RunningProxy::start(s.parse(&toml, None))
        .await
        .expect("sidekey starts");
    let addr = proxy.proxy_addr();

    let resp = get(addr, &url("/api/v1/x")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let json = body_json(&resp);
    assert_eq!(json["error"], "credential_unavailable");
    assert_eq!(json["route"], "algonomy");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(message.contains("did not answer within 300ms"), "{message}");
    assert!(s.api.mint_attempts() >= 1);
    assert_eq!(s.api.api_accepted(), 0);

    // The Basic route beside it does not notice.
    let resp = get(addr, "http://api.copilot.cx/v1/users").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(copilot.accepted(), 1, "{:?}", copilot.rejections());
}

#[tokio::test]
async fn the_503_names_a_response_without_a_token() {
    let s = Setup::new();
    s.api.omit_token(true);
    let proxy = s.start(None).await;
    let resp = get(proxy.proxy_addr(), &url("/api/v1/x")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let message = body_json(&resp)["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("no token at /token"), "{message}");
}

#[tokio::test]
async fn the_token_request_is_the_documented_one() {
    let s = Setup::new();
    let proxy = s.start(None).await;
    assert_eq!(
        get(proxy.proxy_addr(), &url("/api/v1/x")).await.status(),
        StatusCode::OK
    );
    let create = s
        .api
        .requests()
        .into_iter()
        .find(|r| r.path() == CREATE_PATH)
        .expect("a create-token request");
    assert_eq!(create.method, http::Method::POST);
    assert_eq!(create.header("oauth_key_secret"), Some(KEY_SECRET));
    assert_eq!(create.header("tenant_hash"), Some(TENANT_HASH));
    assert_eq!(
        create.body_json(),
        serde_json::json!({ "resource": ["basic", "segments"], "validity": 15 })
    );
    // The Host header and SNI stay the API's own under connect_to.
    assert_eq!(
        create.tls.as_ref().and_then(|t| t.sni.as_deref()),
        Some(ALGONOMY_HOST)
    );
}
