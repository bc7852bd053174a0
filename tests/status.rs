//! The status views' JSON (`GET /status` on the admin listener) and
//! `sidekey status`: each route's state with every token source working
//! and failing, the failure causes a client's 503 names, traffic counts
//! over the last minute (status classes, 401 retries, latency), the
//! process's config, reloads and listeners; and the command's exit status
//! as a health check.

mod support;

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use support::harness::*;
use support::status::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_source_reports_valid_with_its_times() {
    let env = TestEnv::new();
    let sources = AllSources::new(&env, false);
    let proxy = ::sidekey::app::RunningProxy::start(sources.config(&env))
        .await
        .expect("sidekey starts");
    sources.traffic(proxy.proxy_addr()).await;
    let status = wait_for_states(&proxy, &sources).await;

    assert_eq!(status["version"], 1);
    assert_eq!(status["all_usable"], true, "{status:#}");
    assert_eq!(status["shared_cache"], Value::Null);
    let names: Vec<&str> = status["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| r["name"].as_str().expect("a name"))
        .collect();
    let expected: Vec<&str> = ROUTES.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, expected, "every route, in config order");
    for (name, source) in ROUTES {
        let r = route(&status, name);
        assert_eq!(r["usable"], true, "{name}: {r:#}");
        assert_eq!(r["token"]["source"].as_str(), *source, "{name}");
    }

    let copilot = route(&status, "copilot");
    assert_eq!(copilot["hosts"], serde_json::json!(["api.copilot.cx"]));
    assert_eq!(copilot["upstream"], "https://api.copilot.cx");
    assert_eq!(copilot["credential"], "basic");
    assert_eq!(copilot["token"], Value::Null);
    assert_eq!(route(&status, "aws")["credential"], "aws_sigv4");
    assert_eq!(route(&status, "aws")["state"], "valid");

    // A cached endpoint token: fetched, expiring in ~15 min (the seed's
    // ttl), refreshed 60 s before.
    let algonomy = route(&status, "algonomy");
    let token = &algonomy["token"];
    assert_eq!(algonomy["credential"], "header");
    assert_eq!(token["one_time"], false);
    assert!(token["fetched_at"].is_string(), "{token:#}");
    let expires_in = token["expires_in_s"].as_f64().expect("an expiry");
    assert!((800.0..=900.0).contains(&expires_in), "{expires_in}");
    let refresh_in = token["next_refresh_in_s"].as_f64().expect("a refresh");
    assert!(
        (expires_in - refresh_in - 60.0).abs() < 1.0,
        "{refresh_in} vs {expires_in}"
    );
    assert_eq!(token["consecutive_failures"], 0);
    assert_eq!(token["last_failure"], Value::Null);

    // A one-time pool, full; a one-time source without a pool has none.
    let pooled = &route(&status, "invoca-pooled")["token"];
    assert_eq!(pooled["one_time"], true);
    assert_eq!(pooled["pool"]["size"], 2);
    assert_eq!(pooled["pool"]["ready"], 2);
    assert_eq!(route(&status, "invoca")["token"]["pool"], Value::Null);

    // Client credentials: expires_in of the server's answer (3600 s).
    let reports = &route(&status, "reports")["token"];
    let expires_in = reports["expires_in_s"].as_f64().expect("an expiry");
    assert!((3500.0..=3600.0).contains(&expires_in), "{expires_in}");

    // The process: listeners as bound, no config file, no reload yet.
    let admin = proxy.admin_addr().expect("admin").to_string();
    let listeners = status["listeners"].as_array().expect("listeners");
    assert!(listeners
        .iter()
        .any(|l| l["role"] == "proxy.admin" && l["addr"] == admin.as_str()));
    assert!(listeners.iter().any(
        |l| l["role"] == "proxy.listen" && l["addr"] == proxy.proxy_addr().to_string().as_str()
    ));
    assert!(listeners
        .iter()
        .any(|l| l["role"] == "route \"copilot\" listen"));
    assert_eq!(status["config"]["file"], Value::Null);
    assert_eq!(status["config"]["last_reload"], Value::Null);
    assert!(status["uptime_s"].as_u64().is_some());
    proxy.shutdown().await;
    assert_no_foreign_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_sources_report_the_cause_a_client_gets() {
    let env = TestEnv::new();
    let sources = AllSources::new(&env, true);
    let proxy = ::sidekey::app::RunningProxy::start(sources.config(&env))
        .await
        .expect("sidekey starts");
    sources.traffic(proxy.proxy_addr()).await;
    let status = wait_for_states(&proxy, &sources).await;
    assert_eq!(status["all_usable"], false);
    for (name, _) in ROUTES {
        let r = route(&status, name);
        let fixed = matches!(*name, "copilot" | "koupon" | "fixed" | "aws");
        assert_eq!(r["usable"], fixed, "{name}: {r:#}");
    }

    // The cause on the status is the one in a client's 503 body.
    for (name, url) in [
        ("algonomy", format!("http://{}/x", algonomy::ALGONOMY_HOST)),
        ("reports", format!("http://{}/reports/x", oauth2::AUTH_HOST)),
        ("copernica", "http://api.copernica.com/v1/x".to_string()),
        ("filed", "http://filed.example.test/x".to_string()),
    ] {
        let resp = get(proxy.proxy_addr(), &url).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{name}");
        let body: Value = serde_json::from_slice(resp.body()).expect("a JSON error");
        let message = body["message"].as_str().expect("a message");
        let status = status_json(&proxy).await;
        let token = &route(&status, name)["token"];
        let cause = token["last_failure"]["cause"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no cause in {token:#}"));
        assert!(
            message.ends_with(cause),
            "{name}: the 503 says {message:?}, the status {cause:?}"
        );
        assert!(token["last_failure"]["at"].is_string());
    }
    let status = status_json(&proxy).await;
    let algonomy = &route(&status, "algonomy")["token"];
    assert!(algonomy["consecutive_failures"].as_u64() >= Some(1));
    assert!(
        algonomy["last_failure"]["cause"]
            .as_str()
            .is_some_and(|c| c.contains("HTTP 503")),
        "{algonomy:#}"
    );
    assert_eq!(algonomy["expires_at"], Value::Null);
    assert!(
        route(&status, "copernica")["token"]["last_failure"]["cause"]
            .as_str()
            .is_some_and(|c| c.contains("run `sidekey authorize copernica`"))
    );

    // The endpoint comes back: valid again, the last failure kept.
    sources.apis.algonomy.come_back();
    wait_until("algonomy recovers", Duration::from_secs(20), || async {
        route(&status_json(&proxy).await, "algonomy")["state"] == "valid"
    })
    .await;
    let status = status_json(&proxy).await;
    let algonomy = &route(&status, "algonomy")["token"];
    assert_eq!(algonomy["consecutive_failures"], 0);
    assert!(algonomy["last_failure"]["cause"].is_string());
    proxy.shutdown().await;
    assert_no_foreign_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_counts_classes_retries_and_latency_of_the_last_minute() {
    let env = TestEnv::new();
    let sources = AllSources::new(&env, false);
    let proxy = ::sidekey::app::RunningProxy::start(sources.config(&env))
        .await
        .expect("sidekey starts");
    wait_for_states(&proxy, &sources).await;
    let addr = proxy.proxy_addr();
    for _ in 0..3 {
        let resp = get(addr, "http://fixed.example.test/ok").await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // Algonomy revokes its tokens: the next request gets a 401, is
    // retried once with a fresh token, and succeeds.
    let create = format!("http://{}{}", algonomy::ALGONOMY_HOST, "/api/v1/profile");
    let first = get(addr, &create).await;
    assert_eq!(
        first.status(),
        StatusCode::OK,
        "{:?}",
        sources.apis.algonomy.api_rejections()
    );
    sources.apis.algonomy.revoke_all();
    let second = get(addr, &create).await;
    assert_eq!(second.status(), StatusCode::OK, "the retry hides the 401");
    assert_eq!(sources.apis.algonomy.api_rejections().len(), 1);
    // A route without a token: 503s are errors.
    let filed_status = {
        std::fs::remove_file(&sources.token_file).expect("remove the token file");
        wait_until(
            "the file route notices",
            Duration::from_secs(20),
            || async {
                let r = get(addr, "http://filed.example.test/x").await;
                r.status() == StatusCode::SERVICE_UNAVAILABLE
            },
        )
        .await;
        status_json(&proxy).await
    };
    let filed = route(&filed_status, "filed");
    assert_eq!(filed["state"], "missing");
    assert!(filed["traffic"]["last_minute"]["5xx"].as_u64() >= Some(1));
    assert_eq!(
        filed["traffic"]["last_minute"]["errors"],
        filed["traffic"]["last_minute"]["5xx"]
    );

    let status = status_json(&proxy).await;
    let fixed = &route(&status, "fixed")["traffic"];
    assert_eq!(fixed["last_minute"]["requests"], 3);
    assert_eq!(fixed["last_minute"]["2xx"], 3);
    assert_eq!(fixed["last_minute"]["errors"], 0);
    assert_eq!(fixed["since_start"]["requests"], 3);
    let p50 = fixed["latency_ms"]["p50"].as_f64().expect("a p50");
    let p99 = fixed["latency_ms"]["p99"].as_f64().expect("a p99");
    assert!(p50 > 0.0 && p50 <= p99, "{p50} {p99}");
    let per_second = fixed["per_second"]["requests"].as_array().expect("series");
    assert_eq!(per_second.len(), 60);
    let sum: u64 = per_second.iter().filter_map(Value::as_u64).sum();
    assert_eq!(sum, 3, "the series adds up to the minute");

    let algonomy = &route(&status, "algonomy")["traffic"];
    assert_eq!(algonomy["retries_401"]["since_start"], 1, "{algonomy:#}");
    assert_eq!(algonomy["retries_401"]["last_minute"], 1);
    assert_eq!(algonomy["last_minute"]["requests"], 2);
    proxy.shutdown().await;
    assert_no_foreign_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_recorded_with_their_outcome() {
    let env = TestEnv::new();
    let upstream = StandIn::ok(None);
    let toml = echo_config(&env, upstream.addr(), "");
    let proxy = start_sidekey(&env, &toml).await;
    let before = status_json(&proxy).await;
    proxy.reload(parse_config(&env, &toml)).expect("reloads");
    proxy.record_reload("ok");
    let after = status_json(&proxy).await;
    assert_eq!(after["config"]["last_reload"]["outcome"], "ok");
    assert!(after["config"]["loaded_at"].as_str() >= before["config"]["loaded_at"].as_str());
    proxy.record_reload("invalid");
    let failed = status_json(&proxy).await;
    assert_eq!(failed["config"]["last_reload"]["outcome"], "invalid");
    assert_eq!(
        failed["config"]["loaded_at"], after["config"]["loaded_at"],
        "a failed reload leaves the running config's load time"
    );
    assert_eq!(
        metric(&proxy, "sidekey_config_reloads_total{outcome=\"invalid\"}").await,
        1.0
    );
    proxy.shutdown().await;
}

/// `sidekey status` against a running sidekey: the table, `--json`, and
/// the exit status a container health check reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_command_exits_0_only_when_every_route_is_usable() {
    for failing in [false, true] {
        let env = TestEnv::new();
        let sources = AllSources::new(&env, failing);
        let proxy = ::sidekey::app::RunningProxy::start(sources.config(&env))
            .await
            .expect("sidekey starts");
        sources.traffic(proxy.proxy_addr()).await;
        wait_for_states(&proxy, &sources).await;
        let admin = proxy.admin_addr().expect("admin").to_string();
        let (status, stdout, stderr) =
            tokio::task::block_in_place(|| run_cli(&["status", "--admin", &admin], &[]));
        assert_eq!(
            status.code(),
            Some(if failing { 1 } else { 0 }),
            "{stdout}\n{stderr}"
        );
        for (name, _) in ROUTES {
            let line = stdout
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no line for {name}:\n{stdout}"));
            assert!(
                line.contains(sources.expected_state(name)),
                "{name}: {line}"
            );
        }
        if failing {
            let verdict = stdout.lines().last().unwrap_or_default();
            assert!(
                verdict.starts_with("NOT OK: no usable credential for "),
                "{stdout}"
            );
            for name in [
                "copernica",
                "invoca",
                "algonomy",
                "invoca-pooled",
                "reports",
                "filed",
            ] {
                assert!(verdict.contains(name), "{name}: {verdict}");
            }
            assert!(
                !verdict.contains("copilot")
                    && !verdict.contains("fixed")
                    && !verdict.contains("aws"),
                "{verdict}"
            );
            assert!(stdout.contains("HTTP 503"), "the cause is shown:\n{stdout}");
        } else {
            assert!(
                stdout.contains("ok: all 10 routes have a usable credential"),
                "{stdout}"
            );
        }
        let (status, stdout, _) =
            tokio::task::block_in_place(|| run_cli(&["status", "--admin", &admin, "--json"], &[]));
        assert_eq!(status.code(), Some(if failing { 1 } else { 0 }));
        let json: Value = serde_json::from_str(&stdout).expect("--json prints JSON");
        assert_eq!(json["all_usable"], !failing);
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_command_finds_the_admin_listener_in_the_config() {
    let env = TestEnv::new();
    let upstream = StandIn::ok(None);
    let admin = unused_local_addr();
    let toml = echo_config(&env, upstream.addr(), "")
        .replace("admin = \"127.0.0.1:0\"", &format!("admin = \"{admin}\""));
    let path = env.write_config(&toml);
    let path = path.display().to_string();
    // Nothing listens yet: exit 1, saying so.
    let (status, _, stderr) = run_cli(&["status", "--config", &path], &[]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("cannot connect to the admin listener"),
        "{stderr}"
    );
    let proxy = start_sidekey(&env, &toml).await;
    assert_eq!(proxy.admin_addr(), Some(admin));
    let (status, stdout, stderr) =
        tokio::task::block_in_place(|| run_cli(&["status", "--config", &path], &[]));
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("sidekey at {admin}")), "{stdout}");
    assert!(stdout
        .lines()
        .any(|l| l.starts_with("echo ") && l.contains("valid")));
    proxy.shutdown().await;
}

/// `sidekey run`: `/status` names the config file, and each SIGHUP's
/// outcome (a good reload, then a file that does not load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_sidekey_reports_its_config_file_and_reloads() {
    let env = TestEnv::new();
    let upstream = StandIn::ok(None);
    let toml = echo_config(&env, upstream.addr(), "");
    let path = env.write_config(&toml);
    let mut sidekey = SidekeyProcess::spawn(&path, &[], &[]);
    let admin = sidekey.admin_addr.expect("admin");
    let read = || async {
        let resp = get(admin, "/status").await;
        assert_eq!(resp.status(), StatusCode::OK);
        serde_json::from_slice::<Value>(resp.body()).expect("JSON")
    };
    let status = read().await;
    let file = std::path::absolute(&path).expect("an absolute path");
    assert_eq!(
        status["config"]["file"],
        file.display().to_string().as_str()
    );
    assert_eq!(status["config"]["last_reload"], Value::Null);

    sidekey.signal("HUP");
    sidekey.wait_for_line("config reloaded");
    let status = read().await;
    assert_eq!(status["config"]["last_reload"]["outcome"], "ok");
    let loaded = status["config"]["loaded_at"].clone();

    env.write_config(&toml.replace("kind = \"header\"", "kind = \"nonsense\""));
    sidekey.signal("HUP");
    sidekey.wait_for_line("config reload failed");
    let status = read().await;
    assert_eq!(status["config"]["last_reload"]["outcome"], "invalid");
    assert_eq!(status["config"]["loaded_at"], loaded);
    assert_eq!(route(&status, "echo")["state"], "valid");
    let (exit, _) = tokio::task::block_in_place(|| sidekey.stop());
    assert!(exit.success());
}

/// The page is HTML that may not be cached, with a policy that allows
/// only its own style and script.
#[tokio::test]
async fn the_page_is_served_with_its_content_security_policy() {
    let env = TestEnv::new();
    let upstream = StandIn::ok(None);
    let proxy = start_sidekey(&env, &echo_config(&env, upstream.addr(), "")).await;
    let resp = admin_get(&proxy, "/").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let csp = headers["content-security-policy"].to_str().expect("ASCII");
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{csp}"
    );
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let page = body_text(&resp);
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(
        page.contains("<tr data-route=\"echo\" class=\"st-valid\">"),
        "{page}"
    );
    // The one script, whose hash the policy names.
    let script = page
        .split("<script>")
        .nth(1)
        .and_then(|s| s.split("</script>").next())
        .expect("an inline script");
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
    assert!(
        csp.contains(&format!("script-src 'sha256-{hash}'")),
        "{csp}"
    );
    proxy.shutdown().await;
}
