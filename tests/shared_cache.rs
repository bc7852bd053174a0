//! `[proxy.shared_cache]`: several sidekey replicas (here: several
//! `RunningProxy` in one test process) share one token per route through
//! a real `redis-server`, against the stand-in OAuth2 server (client
//! credentials), which counts every token it mints and checks every token
//! the API is sent.

mod support;

use std::time::Duration;

use http::StatusCode;
use sidekey::app::RunningProxy;
use sidekey::Config;
use support::harness::{admin_get, assert_no_foreign_panic, metric, watch_panics};
use support::oauth2::{ClientAuth, AUTH_HOST};
use support::status::status_json;
use support::*;

const CLIENT_ID: &str = "svc-fleet";
const CLIENT_SECRET: &str = "fleet-s3cret-5b1e";
/// base64 of 32 bytes.
const CACHE_KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

/// `timeout` bounds each Redis command: generous where a test counts
/// sharing on a loaded machine, short where 1 s tokens must outlive an
/// outage.
fn config_text(env: &TestEnv, server: &OAuth2Server, redis_url: &str, timeout: &str) -> String {
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
ca_file = {ca}
[proxy.shared_cache]
url = "{redis_url}"
key_prefix = "fleet"
encryption_key = "${{CACHE_KEY}}"
timeout = "{timeout}"
[proxy.connect_to]
{connect_to}

[[route]]
name = "reports"
host = "{AUTH_HOST}"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {{token}}"
[route.auth.token]
source = "oauth2_client_credentials"
token_url = "https://{AUTH_HOST}/oauth/token"
client_id = "{CLIENT_ID}"
client_secret = "${{CC_CLIENT_SECRET}}"
"#,
        ca = toml_str(&env.ca_file().display().to_string()),
        connect_to = server.connect_to_toml(),
    )
}

async fn replica(
    env: &TestEnv,
    server: &OAuth2Server,
    redis_url: &str,
    timeout: &str,
) -> RunningProxy {
    watch_panics();
    let toml = config_text(env, server, redis_url, timeout);
    let lookup = |name: &str| -> Option<String> {
        match name {
            "CACHE_KEY" => Some(CACHE_KEY.to_string()),
            "CC_CLIENT_SECRET" => Some(CLIENT_SECRET.to_string()),
            _ => None,
        }
    };
    let config = Config::parse(&toml, env.dir(), &lookup).unwrap_or_else(|e| panic!("config: {e}"));
    RunningProxy::start(config).await.expect("sidekey starts")
}

async fn replicas(
    env: &TestEnv,
    server: &OAuth2Server,
    redis_url: &str,
    n: usize,
) -> Vec<RunningProxy> {
    let mut out = Vec::new();
    for _ in 0..n {
        // Short Redis timeouts for short tokens (see `config_text`).
        let timeout = if server.expires_in() <= 1 {
            "200ms"
        } else {
            "2s"
        };
        out.push(replica(env, server, redis_url, timeout).await);
    }
    out
}

fn url() -> String {
    format!("http://{AUTH_HOST}/v1/reports")
}

/// `n` requests spread round-robin over `fleet`, all at once; the
/// statuses in order.
async fn burst(fleet: &[RunningProxy], n: usize) -> Vec<StatusCode> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let addr = fleet[i % fleet.len()].proxy_addr();
        tasks.push(tokio::spawn(
            async move { get(addr, &url()).await.status() },
        ));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

fn server(env: &TestEnv, expires_in: u64) -> OAuth2Server {
    OAuth2Server::spawn(
        &env.ca,
        CLIENT_ID,
        CLIENT_SECRET,
        ClientAuth::Basic,
        None,
        expires_in,
    )
}

/// Every key and value in Redis holds neither a token the server issued
/// nor the client secret, in clear or base64.
async fn assert_nothing_in_clear(redis: &RedisServer, server: &OAuth2Server) {
    use base64::Engine as _;
    let all = redis.all().await;
    assert!(!all.is_empty(), "Redis holds the shared token");
    let mut secrets = server.issued();
    secrets.push(CLIENT_SECRET.to_string());
    for (key, value) in &all {
        for secret in &secrets {
            let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
            for needle in [secret.as_bytes(), b64.as_bytes()] {
                assert!(
                    !key.as_bytes().windows(needle.len()).any(|w| w == needle),
                    "a secret in the key {key}"
                );
                assert!(
                    !value.windows(needle.len()).any(|w| w == needle),
                    "a secret in clear under {key}"
                );
            }
        }
    }
}

#[tokio::test]
async fn three_replicas_share_one_token_and_the_hot_path_never_asks_redis() {
    let Some(redis) = RedisServer::start("three_replicas_share_one_token").await else {
        return;
    };
    let env = TestEnv::new();
    let server = server(&env, 3600);
    let fleet = replicas(&env, &server, &redis.url(), 3).await;

    let statuses = burst(&fleet, 300).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let mut errors = Vec::new();
    for proxy in &fleet {
        errors.push(metric(proxy, "sidekey_shared_cache_errors_total").await);
    }
    assert_eq!(
        server.mints(),
        1,
        "one fetch for the whole fleet (Redis errors per replica: {errors:?})"
    );
    assert_eq!(server.api_accepted(), 300);

    // The token lives in Redis under fleet:reports:<hash>, sealed, with a
    // TTL at its expiry (3600 s).
    let all = redis.all().await;
    let keys: Vec<&String> = all.iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = keys[0];
    let hash = key
        .strip_prefix("fleet:reports:")
        .expect("key_prefix:route:hash");
    assert!(
        hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    let ttl = redis.pttl(key).await;
    assert!((3_590_000..=3_600_000).contains(&ttl), "PTTL {ttl}");
    assert_nothing_in_clear(&redis, &server).await;

    // Every replica has the token locally now: 300 more requests do not
    // send Redis a single command.
    let before = redis.commands().await;
    let statuses = burst(&fleet, 300).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(
        redis.commands().await,
        before,
        "no Redis round trip on the hot path"
    );
    assert_eq!(server.mints(), 1);
    for proxy in &fleet {
        assert_eq!(
            metric(proxy, "sidekey_shared_cache_errors_total").await,
            0.0
        );
    }
    assert_no_foreign_panic();
}

#[tokio::test]
async fn one_replica_refreshes_ahead_and_the_others_pick_the_new_token_up() {
    let Some(redis) = RedisServer::start("one_replica_refreshes_ahead").await else {
        return;
    };
    let env = TestEnv::new();
    // 2 s tokens: refreshed at half their lifetime (refresh_before, 60 s
    // by default, is longer than that).
    let server = server(&env, 2);
    let fleet = replicas(&env, &server, &redis.url(), 3).await;
    let start = tokio::time::Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_millis(5200) {
        let statuses = burst(&fleet, 6).await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
        sent += 6;
        // Pacing, not synchronisation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server.api_rejections().is_empty(),
        "{:?}",
        server.api_rejections()
    );
    assert_eq!(server.api_accepted(), sent);
    // One token per second for the fleet (each replica alone would mint
    // its own: about 3 times as many).
    let mints = server.mints();
    assert!(
        (5..=7).contains(&mints),
        "{mints} tokens in 5.2 s of 2 s tokens, refreshed at 1 s"
    );
    assert_no_foreign_panic();
}

#[tokio::test]
async fn a_revoked_token_seen_by_every_replica_is_refetched_once() {
    let Some(redis) = RedisServer::start("a_revoked_token_is_refetched_once").await else {
        return;
    };
    let env = TestEnv::new();
    let server = server(&env, 3600);
    let fleet = replicas(&env, &server, &redis.url(), 3).await;
    let statuses = burst(&fleet, 3).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(server.mints(), 1);

    server.revoke_all();
    // Every replica gets a 401 for the old token at once, and retries.
    let statuses = burst(&fleet, 3).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(
        server.api_rejections().len(),
        3,
        "{:?}",
        server.api_rejections()
    );
    assert_eq!(server.mints(), 2, "three 401s for one token: one refetch");
    // And the new token is the one in Redis, still one key.
    assert_eq!(redis.all().await.len(), 1);
    assert_nothing_in_clear(&redis, &server).await;
    assert_no_foreign_panic();
}

#[tokio::test]
async fn redis_killed_mid_run_fails_no_request_and_sharing_resumes_after_restart() {
    let Some(mut redis) = RedisServer::start("redis_killed_mid_run").await else {
        return;
    };
    let env = TestEnv::new();
    let server = server(&env, 1);
    let fleet = replicas(&env, &server, &redis.url(), 3).await;
    let statuses = burst(&fleet, 30).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );

    redis.kill();
    // Tokens live 1 s: every replica refreshes (alone) while Redis is
    // gone; no request fails, /readyz stays ready.
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        let statuses = burst(&fleet, 6).await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for proxy in &fleet {
        assert!(metric(proxy, "sidekey_shared_cache_errors_total").await >= 1.0);
        assert_eq!(admin_get(proxy, "/readyz").await.status(), StatusCode::OK);
        let cache = &status_json(proxy).await["shared_cache"];
        assert_eq!(cache["state"], "unreachable", "{cache}");
        assert!(cache["errors_total"].as_u64() >= Some(1), "{cache}");
    }

    redis.restart().await;
    // Sharing resumes: a lease holder stores the next token in Redis.
    wait_until(
        "a token is shared through Redis again",
        Duration::from_secs(10),
        || async { !redis.all().await.is_empty() },
    )
    .await;
    let errors: Vec<f64> = {
        let mut v = Vec::new();
        for proxy in &fleet {
            v.push(metric(proxy, "sidekey_shared_cache_errors_total").await);
        }
        v
    };
    let mints_before = server.mints();
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_millis(3000) {
        let statuses = burst(&fleet, 6).await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One token per half second for the fleet again, not one per replica.
    let mints = server.mints() - mints_before;
    assert!(
        mints <= 8,
        "{mints} tokens in 3 s of 1 s tokens after Redis came back"
    );
    for (proxy, before) in fleet.iter().zip(errors) {
        assert_eq!(
            metric(proxy, "sidekey_shared_cache_errors_total").await,
            before,
            "no Redis errors once it is back"
        );
        let cache = &status_json(proxy).await["shared_cache"];
        assert_eq!(cache["state"], "ok", "{cache}");
        assert_eq!(cache["redis"], redis.url().as_str(), "{cache}");
    }
    assert!(
        server.api_rejections().is_empty(),
        "{:?}",
        server.api_rejections()
    );
    assert_nothing_in_clear(&redis, &server).await;
    assert_no_foreign_panic();
}

#[tokio::test]
async fn with_no_redis_at_all_each_replica_fetches_its_own_and_stays_ready() {
    let env = TestEnv::new();
    let server = server(&env, 3600);
    let nowhere = format!("redis://{}/0", unused_local_addr());
    let fleet = replicas(&env, &server, &nowhere, 2).await;
    let statuses = burst(&fleet, 20).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(server.mints(), 2, "one token per replica, as without Redis");
    for proxy in &fleet {
        assert!(metric(proxy, "sidekey_shared_cache_errors_total").await >= 1.0);
        assert_eq!(admin_get(proxy, "/readyz").await.status(), StatusCode::OK);
        let cache = &status_json(proxy).await["shared_cache"];
        assert_eq!(cache["redis"], nowhere.as_str(), "{cache}");
        assert_eq!(cache["state"], "unreachable", "{cache}");
    }
    assert_no_foreign_panic();
}

#[test]
fn check_accepts_the_contract_table_and_refuses_a_bad_key_without_printing_it() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/shared-cache.toml");
    let example = example.to_str().expect("utf-8 path");
    let (status, stdout, stderr) = run_cli(
        &["check", "--config", example],
        &[("SIDEKEY_CACHE_KEY", CACHE_KEY)],
    );
    assert!(status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("shared cache: redis://127.0.0.1:6379/0, key_prefix sidekey"),
        "{stdout}"
    );
    assert!(!stdout.contains(CACHE_KEY) && !stderr.contains(CACHE_KEY));

    let short = "c2hvcnQta2V5";
    let (status, stdout, stderr) = run_cli(
        &["check", "--config", example],
        &[("SIDEKEY_CACHE_KEY", short)],
    );
    assert!(!status.success());
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("shared_cache.encryption_key"), "{all}");
    assert!(all.contains("32 bytes"), "{all}");
    assert!(!all.contains(short), "{all}");
}

/// Requests to one sidekey for `how_long`; every one must get 200.
async fn keep_sending(addr: std::net::SocketAddr, how_long: Duration) {
    let start = tokio::time::Instant::now();
    while start.elapsed() < how_long {
        let resp = get(addr, &url()).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
        // Pacing, not synchronisation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_outage_is_logged_once_and_its_end_once_with_no_secret_in_the_log() {
    let Some(mut redis) = RedisServer::start("an_outage_is_logged_once").await else {
        return;
    };
    let env = TestEnv::new();
    // 1 s tokens: a fetch (and so a Redis look) every half second.
    let server = server(&env, 1);
    let path = env.write_config(&config_text(&env, &server, &redis.url(), "200ms"));
    let process = SidekeyProcess::spawn(
        &path,
        &[
            ("CACHE_KEY", CACHE_KEY),
            ("CC_CLIENT_SECRET", CLIENT_SECRET),
            ("RUST_LOG", "info"),
        ],
        &[],
    );
    let addr = process.proxy_addr;
    keep_sending(addr, Duration::from_millis(1000)).await;
    redis.kill();
    keep_sending(addr, Duration::from_millis(2000)).await;
    redis.restart().await;
    let start = tokio::time::Instant::now();
    while redis.all().await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sharing did not resume"
        );
        keep_sending(addr, Duration::from_millis(200)).await;
    }
    keep_sending(addr, Duration::from_millis(1000)).await;
    let (_, log) = process.stop();

    let warned = log.lines().filter(|l| l.contains("is unreachable")).count();
    let back = log.lines().filter(|l| l.contains("answers again")).count();
    assert_eq!(
        (warned, back),
        (1, 1),
        "one warning per outage, one notice at its end:\n{log}"
    );
    let mut secrets = server.issued();
    secrets.push(CLIENT_SECRET.to_string());
    secrets.push(CACHE_KEY.to_string());
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret in the log:\n{log}"
        );
    }
    assert!(
        server.api_rejections().is_empty(),
        "{:?}",
        server.api_rejections()
    );
}
