//! An offline demo of sidekey: local stand-ins of the five seed APIs,
//! sidekey in front of them with the routes of
//! `config/examples/seed-routes.toml`, and a "legacy app" that sends plain
//! requests with no credentials. For each API it prints what the app sent,
//! what sidekey added (secrets masked) and what the API answered.
//!
//! Run it with `cargo run --example demo`. No accounts, no internet: the
//! stand-ins (the same ones the integration tests use) verify each request
//! exactly as their API documents say, over TLS from a throw-away CA.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{Request, Uri};
use sidekey::{Config, RunningProxy};
use support::algonomy::ALGONOMY_HOST;
use support::copernica::WWW_HOST;
use support::invoca::{ADVERTISER_ID, EMAIL_URLENCODED, NETWORK_ID};
use support::*;

// Credentials from the seed documents' own examples where they give some.
const COPILOT_ID: &str = "ABABABABQQIRZ";
const COPILOT_SECRET: &str = "k9H2Nd3T5j5EW2Fu160l11Hal3x3oa";
const KOUPON_KEY: &str = "6348256714038520009a57d1d2-5188-457b-854b-86aafea65fc5";
const KOUPON_SECRET: &str = "4623B7B8-18A6-4B2C-B2C1-18157F5C4AFE";
const COPERNICA_KEY: &str = "demo-client-key";
const COPERNICA_SECRET: &str = "demo-client-secret";
const INVOCA_USER: &str = "network-api-user";
const INVOCA_PASSWORD: &str = "demo-invoca-password";
const ALGONOMY_KEY_SECRET: &str = "4faeaf752ee40a0f";
const ALGONOMY_TENANT: &str = "abcd1234efgh5678ijkl9012mnop3456";

/// Shows the first characters of a secret-bearing value.
fn mask(value: &str) -> String {
    let keep: String = value.chars().take(8).collect();
    format!("{keep}…[{} chars]", value.len())
}

/// The query with the values of `names` masked.
fn mask_query(query: &str, names: &[&str]) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if names.contains(&k) => format!("{k}={}", mask(v)),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The seed routes, unchanged, behind a `[proxy]` section for the demo:
/// free ports, the test CA, and `connect_to` pointing each API host at its
/// stand-in.
fn demo_config(env: &TestEnv, connect_to: &[String]) -> String {
    let seed = include_str!("../config/examples/seed-routes.toml");
    let routes = &seed[seed.find("[[route]]").unwrap_or(0)..];
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nca_file = {}\n\n[proxy.connect_to]\n{}\n\n{}",
        toml_str(&env.ca_file().display().to_string()),
        connect_to.join("\n"),
        // The seed's dedicated Copilot port may be taken on this machine.
        routes.replace("listen = \"127.0.0.1:8101\"", "listen = \"127.0.0.1:0\""),
    )
}

fn section(title: &str) {
    println!("\n== {title} ==");
}

/// Plays the user's browser for `sidekey authorize`: opens the
/// authorization URL at the Copernica stand-in (which skips the consent
/// page) and follows its redirect to sidekey's callback listener.
async fn browse(env: &TestEnv, api: SocketAddr, url: &str) -> anyhow::Result<()> {
    let uri: Uri = url.parse()?;
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let req = Request::get(pq)
        .header("host", WWW_HOST)
        .body(empty_body())?;
    let consent = send_tls(api, WWW_HOST, env.ca.client_config(&[b"http/1.1"]), req)
        .await
        .map_err(anyhow::Error::msg)?;
    let location: Uri = consent
        .headers()
        .get("location")
        .ok_or_else(|| anyhow::anyhow!("Copernica did not redirect: {}", consent.status()))?
        .to_str()?
        .parse()?;
    let authority = location
        .authority()
        .ok_or_else(|| anyhow::anyhow!("relative redirect"))?
        .to_string();
    let pq = location.path_and_query().map_or("/", |pq| pq.as_str());
    let req = Request::get(pq)
        .header("host", &authority)
        .body(empty_body())?;
    let page = try_send(authority.parse()?, req)
        .await
        .map_err(anyhow::Error::msg)?;
    println!(
        "browser:       sidekey's callback page says {}",
        page.status()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let koupon = KouponApi::spawn(KOUPON_KEY, KOUPON_SECRET);
    let copernica = CopernicaApi::spawn(&env.ca, COPERNICA_KEY, COPERNICA_SECRET);
    let invoca = InvocaApi::spawn(&env.ca, INVOCA_USER, INVOCA_PASSWORD);
    let algonomy = AlgonomyApi::spawn(&env.ca, ALGONOMY_KEY_SECRET, ALGONOMY_TENANT);

    let redirect = format!("http://{}/callback", unused_local_addr());
    let store = env.dir().join("copernica.token").display().to_string();
    let vars: HashMap<&str, &str> = HashMap::from([
        ("COPILOT_CLIENT_ID", COPILOT_ID),
        ("COPILOT_CLIENT_SECRET", COPILOT_SECRET),
        ("KOUPON_API_KEY", KOUPON_KEY),
        ("KOUPON_SECRET_KEY", KOUPON_SECRET),
        ("COPERNICA_CLIENT_KEY", COPERNICA_KEY),
        ("COPERNICA_CLIENT_SECRET", COPERNICA_SECRET),
        ("COPERNICA_REDIRECT_URI", redirect.as_str()),
        ("COPERNICA_TOKEN_STORE", store.as_str()),
        ("INVOCA_NETWORK_ID", NETWORK_ID),
        ("INVOCA_ADVERTISER_ID", ADVERTISER_ID),
        ("INVOCA_EMAIL_URLENCODED", EMAIL_URLENCODED),
        ("INVOCA_USERNAME", INVOCA_USER),
        ("INVOCA_PASSWORD", INVOCA_PASSWORD),
        ("ALGONOMY_API_HOST", ALGONOMY_HOST),
        ("ALGONOMY_TENANT_HASH", ALGONOMY_TENANT),
        ("ALGONOMY_OAUTH_KEY_SECRET", ALGONOMY_KEY_SECRET),
    ]);
    let lookup = |name: &str| vars.get(name).map(|v| v.to_string());
    let toml = demo_config(
        &env,
        &[
            copilot.connect_to_toml(),
            koupon.connect_to_toml(),
            copernica.connect_to_toml(),
            invoca.connect_to_toml(),
            algonomy.connect_to_toml(),
        ],
    );
    let config = Config::parse(&toml, Path::new("."), &lookup)?;

    // Copernica first: `sidekey authorize copernica`, once, before running.
    section("Copernica REST API: sidekey authorize copernica (OAuth2 authorization code)");
    let (url_tx, url_rx) = tokio::sync::oneshot::channel::<String>();
    let flow = {
        let config = config.clone();
        tokio::spawn(async move {
            sidekey::authorize::run(&config, "copernica", Duration::from_secs(30), |url| {
                let _ = url_tx.send(url.to_string());
            })
            .await
        })
    };
    let url = url_rx.await?;
    println!("sidekey:       open {}", mask_query(&url, &["state"]));
    browse(&env, copernica.addr(), &url).await?;
    let written = flow.await??;
    println!("sidekey:       exchanged the code (GET /v1/token?client_id&client_secret&redirect_uri&code)");
    println!(
        "               and stored the token in {} (mode 0600)",
        written.display()
    );

    let proxy = RunningProxy::start(config).await?;
    let addr = proxy.proxy_addr();
    println!("\nsidekey is listening on http://{addr}; the app sends plain HTTP through it (HTTP_PROXY).");

    section("Copilot.cx Server API (basic)");
    let url = "http://api.copilot.cx/v1/collect/events";
    println!("app sent:      POST {url}   (no credentials)");
    let req = Request::post(url).body(full_body(r#"{"event":"thing_created"}"#))?;
    let resp = send(addr, req).await;
    if let Some(seen) = copilot.server().last_request() {
        println!(
            "sidekey added: Authorization: {}",
            mask(seen.header("authorization").unwrap_or("(none)"))
        );
        println!(
            "               Content-Type: {}",
            seen.header("content-type").unwrap_or("(none)")
        );
    }
    println!("API answered:  {} {}", resp.status(), body_text(&resp));

    section("Koupon Media API v2 (signed_url)");
    let url = "http://consumer.kouponmedia.com/v2/offers?zip=10001";
    println!("app sent:      GET {url}   (no credentials)");
    let resp = get(addr, url).await;
    if let Some(seen) = koupon.server().last_request() {
        println!(
            "sidekey sent:  GET {}?{}",
            seen.path(),
            mask_query(seen.query().unwrap_or(""), &["identifier", "authSignature"])
        );
        println!("               authSignature = HMAC-SHA1(secret, the full URL before it), appended last");
    }
    println!("API answered:  {} {}", resp.status(), body_text(&resp));

    section("Copernica REST API (query access_token from the stored token)");
    let url = "http://api.copernica.com/v1/profile/123456";
    println!("app sent:      GET {url}   (no credentials)");
    let resp = get(addr, url).await;
    if let Some(seen) = copernica.last_request() {
        println!(
            "sidekey sent:  GET {}?{}",
            seen.path(),
            mask_query(seen.query().unwrap_or(""), &["access_token"])
        );
    }
    println!("API answered:  {} {}", resp.status(), body_text(&resp));

    section("Invoca PPC Platform (one-time token minted per request)");
    for _ in 0..3 {
        let url = "http://invoca.net/affiliates/1";
        let resp = get(addr, url).await;
        println!(
            "app sent:      GET {url}  ->  API answered {} {}",
            resp.status(),
            body_text(&resp)
        );
    }
    let presented = invoca.presented();
    println!(
        "sidekey minted {} tokens (POST create_access_token.json, Basic auth) and sent each once: {}",
        invoca.mints(),
        presented.iter().map(|t| mask(t)).collect::<Vec<_>>().join(", ")
    );

    section("Algonomy Real-time CDP (token cached until shortly before expiry)");
    for i in 1..=3 {
        let url = format!("http://{ALGONOMY_HOST}/profile/v1/customers/{i}");
        let resp = get(addr, &url).await;
        println!(
            "app sent:      GET {url}  ->  API answered {} {}",
            resp.status(),
            body_text(&resp)
        );
    }
    println!(
        "sidekey fetched {} token (create-token POST with oauth_key_secret, tenant_hash, JSON body) for all three requests",
        algonomy.mints()
    );

    section("A host no route names");
    let url = "http://unconfigured.example/steal";
    println!("app sent:      GET {url}");
    let resp = get(addr, url).await;
    println!("sidekey:       {} {}", resp.status(), body_text(&resp));

    proxy.shutdown().await;
    println!("\nEvery request above was checked by a stand-in that follows its API document.");
    Ok(())
}
