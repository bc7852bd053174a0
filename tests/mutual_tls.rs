//! `[route.tls]`: mutual TLS to upstreams and token endpoints. The
//! stand-ins require a client certificate issued by a test CA of the
//! partner (not the CA that signed their own certificates) and record the
//! common name each connection presented.

#![cfg(unix)]

mod support;

use std::collections::HashSet;
use std::path::Path;

use http::StatusCode;
use sidekey::Config;
use support::harness::*;
use support::*;

/// The upstream: answers 200 with the client certificate's name to a
/// request carrying `Bearer api-token`; a connection without a client
/// certificate from `clients` never gets past the handshake.
fn partner_api(env: &TestEnv, clients: &TestCa, token: &'static str) -> StandIn {
    StandIn::spawn_fn(
        Some(
            env.ca
                .server_config_requiring_client(&["api.partner.test"], clients),
        ),
        move |req| {
            let cn = req.tls.as_ref().and_then(|t| t.client_cn.clone());
            if req.header("authorization") != Some(&format!("Bearer {token}")) {
                return json_reply(StatusCode::UNAUTHORIZED, &serde_json::json!({}));
            }
            json_reply(StatusCode::OK, &serde_json::json!({ "client": cn }))
        },
    )
}

fn route(name: &str, host: &str, tls: Option<(&Path, &Path)>) -> String {
    let tls = tls.map_or(String::new(), |(cert, key)| {
        format!(
            "[route.tls]\nclient_cert = {}\nclient_key = {}\n",
            toml_str(&cert.display().to_string()),
            toml_str(&key.display().to_string())
        )
    });
    format!(
        r#"
[[route]]
name = "{name}"
host = "{host}"
upstream = "https://api.partner.test"
{tls}[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {{token}}"
token = "api-token"
"#
    )
}

#[tokio::test]
async fn each_route_presents_its_own_certificate_and_never_shares_a_connection() {
    let env = TestEnv::new();
    let clients = TestCa::new();
    let api = partner_api(&env, &clients, "api-token");
    let (orders_cert, orders_key) =
        clients.write_client_cert(env.dir(), "orders", "sidekey-orders");
    let (billing_cert, billing_key) =
        clients.write_client_cert(env.dir(), "billing", "sidekey-billing");
    // One worker: upstream connections are pooled per worker thread, and
    // which worker accepts a client connection is up to the race between
    // them, so reuse is only asserted within one pool.
    let toml = proxy_toml(
        &env,
        "workers = 1",
        &[connect_to("api.partner.test:443", api.addr())],
    ) + &route("orders", "orders.local", Some((&orders_cert, &orders_key)))
        + &route(
            "billing",
            "billing.local",
            Some((&billing_cert, &billing_key)),
        )
        + &route("nocert", "nocert.local", None);
    let proxy = start_sidekey(&env, &toml).await;

    let mut ids = std::collections::HashMap::<String, HashSet<usize>>::new();
    for round in 0..3 {
        for (host, cn) in [
            ("orders.local", "sidekey-orders"),
            ("billing.local", "sidekey-billing"),
        ] {
            let resp = get(
                proxy.proxy_addr(),
                &format!("http://{host}/v1/x?round={round}"),
            )
            .await;
            assert_eq!(
                resp.status(),
                StatusCode::OK,
                "{host}: {}",
                body_text(&resp)
            );
            assert_eq!(body_json(&resp)["client"], cn, "{host}");
            let last = api.last_request().expect("recorded");
            ids.entry(cn.to_string())
                .or_default()
                .insert(last.connection_id);
        }
    }
    let (orders, billing) = (&ids["sidekey-orders"], &ids["sidekey-billing"]);
    assert!(
        orders.is_disjoint(billing),
        "a connection served both certificates: {ids:?}"
    );
    assert_eq!(orders.len(), 1, "the orders connection is reused: {ids:?}");
    assert_eq!(
        billing.len(),
        1,
        "the billing connection is reused: {ids:?}"
    );

    // The same host without a certificate: the handshake is refused, and
    // no pooled connection of the other routes is lent to it.
    let before = api.request_count();
    let resp = get(proxy.proxy_addr(), "http://nocert.local/v1/x").await;
    assert_eq!(
        resp.status(),
        StatusCode::BAD_GATEWAY,
        "{}",
        body_text(&resp)
    );
    assert!(body_text(&resp).contains("\"route\":\"nocert\""));
    assert_eq!(api.request_count(), before, "nothing reached the API");
}

#[tokio::test]
async fn a_token_endpoint_gets_the_client_certificate_of_its_token_table() {
    let env = TestEnv::new();
    let clients = TestCa::new();
    let api = partner_api(&env, &clients, "minted-42");
    let auth = StandIn::spawn_fn(
        Some(
            env.ca
                .server_config_requiring_client(&["auth.partner.test"], &clients),
        ),
        |req| {
            let cn = req.tls.as_ref().and_then(|t| t.client_cn.as_deref());
            if cn == Some("sidekey-token-client") {
                json_reply(
                    StatusCode::OK,
                    &serde_json::json!({ "access_token": "minted-42", "expires_in": 3600 }),
                )
            } else {
                json_reply(
                    StatusCode::FORBIDDEN,
                    &serde_json::json!({ "error": "who" }),
                )
            }
        },
    );
    // Named relative to the config's folder below.
    clients.write_client_cert(env.dir(), "api", "sidekey-api");
    let (token_cert, token_key) =
        clients.write_client_cert(env.dir(), "token", "sidekey-token-client");
    let toml = proxy_toml(
        &env,
        "",
        &[
            connect_to("api.partner.test:443", api.addr()),
            connect_to("auth.partner.test:443", auth.addr()),
        ],
    ) + &format!(
        r#"
[[route]]
name = "partner"
host = "api.partner.test"
[route.tls]
client_cert = "api.pem"
client_key = "api.key"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {{token}}"
[route.auth.token]
source = "endpoint"
url = "https://auth.partner.test/token"
form = {{ grant_type = "client_credentials" }}
client_cert = {}
client_key = {}
"#,
        toml_str(&token_cert.display().to_string()),
        toml_str(&token_key.display().to_string()),
    );
    let proxy = start_sidekey(&env, &toml).await;
    let resp = get(proxy.proxy_addr(), "http://api.partner.test/v1/orders").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(body_json(&resp)["client"], "sidekey-api");
    let fetches = auth.requests();
    assert_eq!(fetches.len(), 1);
    assert_eq!(
        fetches[0].tls.as_ref().and_then(|t| t.client_cn.as_deref()),
        Some("sidekey-token-client")
    );
}

/// The problems `check` reports for `toml` (which must be invalid).
fn problems(env: &TestEnv, toml: &str) -> String {
    match Config::parse(toml, env.dir(), &|_| None) {
        Ok(_) => panic!("accepted:\n{toml}"),
        Err(e) => e.problems().join("\n"),
    }
}

#[test]
fn a_key_readable_by_others_or_not_matching_is_refused_at_load() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    let clients = TestCa::new();
    let (cert, key) = clients.write_client_cert(env.dir(), "a", "a");
    let (_, other_key) = clients.write_client_cert(env.dir(), "b", "b");
    let toml = |key: &Path| route("partner", "api.partner.test", Some((&cert, key)));

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let shown = problems(&env, &toml(&key));
    assert!(shown.contains("route \"partner\""), "{shown}");
    assert!(shown.contains("tls.client_key"), "{shown}");
    assert!(shown.contains("chmod 600"), "{shown}");

    let shown = problems(&env, &toml(&other_key));
    assert!(shown.contains("does not match the certificate"), "{shown}");
    let key_text = std::fs::read_to_string(&other_key).unwrap();
    let body = key_text.lines().nth(1).unwrap();
    assert!(!shown.contains(body), "the key's contents are never shown");

    let shown = problems(
        &env,
        &route("partner", "api.partner.test", None).replace(
            "[route.auth]",
            "[route.tls]\nclient_cert = \"a.pem\"\n[route.auth]",
        ),
    );
    assert!(
        shown.contains("tls.client_key") && shown.contains("missing"),
        "{shown}"
    );
    // A client certificate means TLS: not for a plain-HTTP upstream.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let plain = toml(&key).replace("https://api.partner.test", "http://api.partner.test");
    let shown = problems(&env, &plain);
    assert!(shown.contains("needs an https:// upstream"), "{shown}");
}

#[tokio::test]
async fn a_reload_with_a_renewed_certificate_presents_the_new_one_on_new_connections() {
    let env = TestEnv::new();
    let clients = TestCa::new();
    let api = partner_api(&env, &clients, "api-token");
    let (cert, key) = clients.write_client_cert(env.dir(), "partner", "sidekey-2025");
    // One worker: with two, the second request could land on the other
    // worker's pool and need a new connection whatever the reload did.
    let toml = proxy_toml(
        &env,
        "workers = 1",
        &[connect_to("api.partner.test:443", api.addr())],
    ) + &route("partner", "api.partner.test", Some((&cert, &key)));
    let proxy = start_sidekey(&env, &toml).await;
    let resp = get(proxy.proxy_addr(), "http://api.partner.test/v1/x").await;
    assert_eq!(body_json(&resp)["client"], "sidekey-2025");

    // Renewed in place: same paths, new certificate and key.
    clients.write_client_cert(env.dir(), "partner", "sidekey-2026");
    proxy.reload(parse_config(&env, &toml)).expect("reload");
    let resp = get(proxy.proxy_addr(), "http://api.partner.test/v1/x").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));
    assert_eq!(body_json(&resp)["client"], "sidekey-2026");
    let ids: HashSet<usize> = api.requests().iter().map(|r| r.connection_id).collect();
    assert_eq!(
        ids.len(),
        2,
        "the renewed certificate needs a new connection"
    );
}
