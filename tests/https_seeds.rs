//! Every seed API reached by an `https://` client through a `CONNECT`
//! tunnel: the seed routes of `config/examples/seed-routes.toml`, unchanged,
//! with `[proxy.intercept]`, and one request per route from reqwest behind
//! `HTTPS_PROXY` trusting only sidekey's local CA. Each stand-in verifies
//! the request exactly as its API document says.
//!
//! Koupon's route upstream is plain `http://`: the client still opens its
//! tunnel to `consumer.kouponmedia.com:443`, sidekey terminates the TLS and
//! forwards over plain HTTP.

mod support;

use support::algonomy::ALGONOMY_HOST;
use support::harness::watch_panics;
use support::seeds::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seed_api_is_reached_through_a_connect_tunnel() {
    watch_panics();
    let env = TestEnv::new();
    let apis = SeedApis::spawn(&env);
    // Copernica's token, from the dashboard's generator, already stored
    // (as `sidekey authorize copernica` would leave it).
    let store = env.write_file("copernica.token", apis.copernica.generate_token());
    let redirect = format!("http://{}/callback", unused_local_addr());
    let vars = seed_vars(&redirect, &store.display().to_string());
    let ca = intercept_ca(env.dir(), "");
    let toml = apis.config(&env, &ca.table);
    let config = sidekey::Config::parse(&toml, env.dir(), &|name: &str| vars.get(name).cloned())
        .unwrap_or_else(|e| panic!("config: {}\n{toml}", e.problems().join("\n")));
    let proxy = sidekey::app::RunningProxy::start(config)
        .await
        .expect("sidekey starts");
    let client = https_proxy_client(proxy.proxy_addr(), &ca.cert_pem);

    let copilot = client
        .post("https://api.copilot.cx/v1/collect/events")
        .body(r#"{"event":"thing_created"}"#)
        .send()
        .await
        .expect("Copilot through the tunnel");
    let status = copilot.status();
    let body = copilot.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{body} {:?}", apis.copilot.rejections());
    assert_eq!(apis.copilot.accepted(), 1);

    // reqwest sends `Accept: */*` itself, so the route's header (added
    // only when the client sent none) does not apply: say what Koupon wants.
    let koupon = client
        .get("https://consumer.kouponmedia.com/v2/offers?zip=10001")
        .header("accept", "application/json")
        .send()
        .await
        .expect("Koupon through the tunnel");
    let status = koupon.status();
    let body = koupon.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{body} {:?}", apis.koupon.rejections());
    assert_eq!(apis.koupon.accepted(), 1);
    let seen = apis.koupon.server().last_request().expect("Koupon saw it");
    assert!(seen.tls.is_none(), "Koupon's upstream is plain http://");

    let copernica = client
        .get("https://api.copernica.com/v1/profile/123456")
        .send()
        .await
        .expect("Copernica through the tunnel");
    let status = copernica.status();
    let body = copernica.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{body} {:?}", apis.copernica.api_rejections());
    assert_eq!(apis.copernica.api_accepted(), 1);

    let invoca = client
        .get("https://invoca.net/affiliates/1")
        .send()
        .await
        .expect("Invoca through the tunnel");
    let status = invoca.status();
    let body = invoca.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{body} {:?}", apis.invoca.rejections());
    assert_eq!(apis.invoca.accepted(), 1);
    assert_eq!(apis.invoca.reused(), 0, "a one-time token is used once");

    let algonomy = client
        .get(format!("https://{ALGONOMY_HOST}/profile/v1/customers/42"))
        .send()
        .await
        .expect("Algonomy through the tunnel");
    let status = algonomy.status();
    let body = algonomy.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{body} {:?}", apis.algonomy.api_rejections());
    assert_eq!(apis.algonomy.api_accepted(), 1);

    drop(client);
    proxy.shutdown().await;
    harness::assert_no_foreign_panic();
}

/// `config/examples/docker.toml` as shipped, and with its commented
/// `[proxy.intercept]` lines uncommented (a CA next to it, as `sidekey ca
/// init --dir sidekey` puts it): both valid configs, the second one
/// intercepting with that CA and a TLS listener.
#[test]
fn the_docker_example_is_valid_with_and_without_its_intercept_block() {
    let example = include_str!("../config/examples/docker.toml");
    let dir = tempfile::tempdir().expect("a temporary directory");
    intercept_ca(dir.path(), "");
    let vars = |name: &str| match name {
        "COPILOT_CLIENT_ID" => Some(COPILOT_ID.to_string()),
        "COPILOT_CLIENT_SECRET" => Some(COPILOT_SECRET.to_string()),
        _ => None,
    };
    let parse = |text: &str| {
        sidekey::Config::parse(text, dir.path(), &vars)
            .unwrap_or_else(|e| panic!("{}\n--- config ---\n{text}", e.problems().join("\n")))
    };
    assert!(parse(example).proxy.intercept.is_none());

    let mut uncommented = String::new();
    let mut in_block = false;
    for line in example.lines() {
        in_block = (in_block && line.starts_with("# ")) || line == "# [proxy.intercept]";
        let line = if in_block { &line[2..] } else { line };
        uncommented.push_str(line);
        uncommented.push('\n');
    }
    assert!(uncommented.contains("\n[proxy.intercept]\nca_cert = "));
    let config = parse(&uncommented);
    let intercept = config.proxy.intercept.as_ref().expect("[proxy.intercept]");
    assert_eq!(intercept.ca_cert, dir.path().join("sidekey-ca.pem"));
}
