//! An offline demo of sidekey: local stand-ins of the five seed APIs,
//! sidekey in front of them with the routes of
//! `config/examples/seed-routes.toml`, and a "legacy app" that sends plain
//! requests with no credentials. For each API it prints what the app sent,
//! what sidekey added (secrets masked) and what the API answered. Last,
//! an `https://` app: the same kind of request through a `CONNECT` tunnel
//! (`HTTPS_PROXY`), which sidekey intercepts with a local CA the app trusts.
//!
//! Run it with `cargo run --example demo`. No accounts, no internet: the
//! stand-ins (the same ones the integration tests use) verify each request
//! exactly as their API documents say, over TLS from a throw-away CA.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{Request, Uri};
use sidekey::app::RunningProxy;
use sidekey::Config;
use support::algonomy::ALGONOMY_HOST;
use support::copernica::WWW_HOST;
use support::seeds::*;
use support::*;

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
    let apis = SeedApis::spawn(&env);
    let SeedApis {
        copilot,
        koupon,
        copernica,
        invoca,
        algonomy,
    } = &apis;

    let redirect = format!("http://{}/callback", unused_local_addr());
    let store = env.dir().join("copernica.token").display().to_string();
    let vars = seed_vars(&redirect, &store);
    let lookup = |name: &str| vars.get(name).cloned();
    // sidekey's local CA for https:// apps (what `sidekey ca init` writes),
    // and `[proxy.intercept]` naming it.
    let local_ca = intercept_ca(env.dir(), "");
    let toml = apis.config(&env, &local_ca.table);
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

    section("An https:// app (HTTPS_PROXY): CONNECT, intercepted with sidekey's local CA");
    // As the app would be set up: HTTPS_PROXY=http://<sidekey>, and
    // sidekey's CA certificate trusted (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, ...).
    let client = https_proxy_client(addr, &local_ca.cert_pem);
    let url = "https://api.copilot.cx/v1/collect/events";
    println!(
        "app sent:      CONNECT api.copilot.cx:443, then inside TLS: POST {url}   (no credentials)"
    );
    let before = copilot.accepted();
    let resp = client
        .post(url)
        .body(r#"{"event":"thing_created"}"#)
        .send()
        .await?;
    println!("sidekey:       answered 200 to CONNECT, completed TLS with a leaf for api.copilot.cx signed by its CA");
    if let Some(seen) = copilot.server().last_request() {
        println!(
            "sidekey added: Authorization: {}",
            mask(seen.header("authorization").unwrap_or("(none)"))
        );
    }
    let status = resp.status();
    println!("API answered:  {status} {}", resp.text().await?);
    if copilot.accepted() != before + 1 {
        anyhow::bail!("the Copilot stand-in did not accept the tunnelled request");
    }
    drop(client);

    section("A host no route names");
    let url = "http://unconfigured.example/steal";
    println!("app sent:      GET {url}");
    let resp = get(addr, url).await;
    println!("sidekey:       {} {}", resp.status(), body_text(&resp));

    proxy.shutdown().await;
    println!("\nEvery request above was checked by a stand-in that follows its API document.");
    Ok(())
}
