//! An offline demo of sidekey: local stand-ins of the seed APIs, sidekey in
//! front of them, and a "legacy app" that sends plain requests with no
//! credentials. For each API it prints what the app sent, what sidekey
//! added (secrets masked) and what the API answered.
//!
//! Run it with `cargo run --example demo`. No accounts, no internet: the
//! stand-ins verify each request exactly as their API documents say, over
//! TLS from a throw-away CA.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;

use http::Request;
use sidekey::{Config, RunningProxy};
use support::*;

// Credentials from the seed documents' own examples.
const COPILOT_ID: &str = "ABABABABQQIRZ";
const COPILOT_SECRET: &str = "k9H2Nd3T5j5EW2Fu160l11Hal3x3oa";
const KOUPON_KEY: &str = "6348256714038520009a57d1d2-5188-457b-854b-86aafea65fc5";
const KOUPON_SECRET: &str = "4623B7B8-18A6-4B2C-B2C1-18157F5C4AFE";

/// Shows the first characters of a secret-bearing value.
fn mask(value: &str) -> String {
    let keep: String = value.chars().take(10).collect();
    format!("{keep}… ({} chars, masked)", value.len())
}

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET);
    let koupon = KouponApi::spawn(KOUPON_KEY, KOUPON_SECRET);

    let toml = format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
ca_file = {ca}

[proxy.connect_to]
{copilot_to}
{koupon_to}

[[route]]
name = "copilot"
host = "api.copilot.cx"
[route.headers]
"Content-Type" = "application/json"
[route.auth]
kind = "basic"
username = "${{COPILOT_CLIENT_ID}}"
password = "${{COPILOT_CLIENT_SECRET}}"

[[route]]
name = "koupon"
host = "consumer.kouponmedia.com"
upstream = "http://consumer.kouponmedia.com"
[route.headers]
"Accept" = "application/json"
[route.auth]
kind = "signed_url"
key = "${{KOUPON_API_KEY}}"
secret = "${{KOUPON_SECRET_KEY}}"
"#,
        ca = toml_str(&env.ca_file().display().to_string()),
        copilot_to = copilot.connect_to_toml(),
        koupon_to = koupon.connect_to_toml(),
    );
    let lookup = |name: &str| -> Option<String> {
        Some(
            match name {
                "COPILOT_CLIENT_ID" => COPILOT_ID,
                "COPILOT_CLIENT_SECRET" => COPILOT_SECRET,
                "KOUPON_API_KEY" => KOUPON_KEY,
                "KOUPON_SECRET_KEY" => KOUPON_SECRET,
                _ => return None,
            }
            .to_string(),
        )
    };
    let config = Config::parse(&toml, Path::new("."), &lookup)?;
    let proxy = RunningProxy::start(config).await?;
    let addr = proxy.proxy_addr();
    println!(
        "sidekey is listening on http://{addr} (stand-ins on 127.0.0.1, TLS from a test CA)\n"
    );

    // Copilot.cx: HTTP Basic.
    println!("== Copilot.cx Server API (basic) ==");
    let url = "http://api.copilot.cx/v1/collect/events";
    println!("app sent:      POST {url}   (no credentials)");
    let req = Request::post(url).body(full_body(r#"{"event":"thing_created"}"#))?;
    let resp = send(addr, req).await;
    let seen = copilot
        .server()
        .last_request()
        .expect("copilot saw the request");
    println!(
        "sidekey added: Authorization: {}",
        mask(seen.header("authorization").unwrap_or("(none)"))
    );
    println!(
        "               Content-Type: {}",
        seen.header("content-type").unwrap_or("(none)")
    );
    println!(
        "               over TLS to https://api.copilot.cx{}",
        seen.path()
    );
    println!("API answered:  {} {}\n", resp.status(), body_text(&resp));

    // Koupon Media: signed URL.
    println!("== Koupon Media API v2 (signed_url) ==");
    let url = "http://consumer.kouponmedia.com/v2/offers?zip=10001";
    println!("app sent:      GET {url}   (no credentials)");
    let resp = get(addr, url).await;
    let seen = koupon
        .server()
        .last_request()
        .expect("koupon saw the request");
    println!(
        "sidekey sent:  GET http://consumer.kouponmedia.com{}?{}",
        seen.path(),
        mask_query(seen.query().unwrap_or(""), &["identifier", "authSignature"])
    );
    println!("               authSignature = HMAC-SHA1(secret, the URL up to it), appended last");
    println!("API answered:  {} {}\n", resp.status(), body_text(&resp));

    // A host no route names: refused, nothing forwarded.
    println!("== A host no route names ==");
    let url = "http://unconfigured.example/steal";
    println!("app sent:      GET {url}");
    let resp = get(addr, url).await;
    println!("sidekey:       {} {}\n", resp.status(), body_text(&resp));

    proxy.shutdown().await;
    println!("Every request above was checked by a stand-in that follows its API document.");
    Ok(())
}
