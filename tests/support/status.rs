//! The status views under test: a config with every kind of token source
//! ([`AllSources`]), working or with every source failing, and readers of
//! the admin listener's `/status`.

use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use super::client::get;
use super::harness::{admin_get, watch_panics};
use super::oauth2::{ClientAuth, OAuth2Server, AUTH_HOST};
use super::seeds::*;
use super::server::StandIn;
use super::sigv4::{AWS_KEY_ID, AWS_SECRET};
use super::test_env::{toml_str, unused_local_addr, TestEnv};
use super::tokens::wait_until;

pub const CC_CLIENT_ID: &str = "reports-client";
pub const CC_CLIENT_SECRET: &str = "cc-secret-Zq81xTTa";
pub const FILE_TOKEN: &str = "file-token-Jw2n5QpL0s";
pub const STATIC_TOKEN: &str = "static-token-Vb7c3Kd9e";
pub const AWS_SESSION_TOKEN: &str = "aws-session-token-Hy6tR2";

/// The routes of [`AllSources`], in config order, with their source.
pub const ROUTES: &[(&str, Option<&str>)] = &[
    ("copilot", None),
    ("koupon", None),
    ("copernica", Some("oauth2_code")),
    ("invoca", Some("endpoint")),
    ("algonomy", Some("endpoint")),
    ("invoca-pooled", Some("endpoint")),
    ("reports", Some("oauth2_client_credentials")),
    ("filed", Some("file")),
    ("fixed", Some("static")),
    ("aws", None),
];

/// The five seed APIs with their seed routes, plus a pooled one-time
/// route, an OAuth2 client-credentials route, a token file route, a
/// static token route and an AWS SigV4 route: every token source there
/// is, and every fixed credential. With `failing`, every
/// source that can fail does: Algonomy's and Invoca's token endpoints
/// answer 503, the OAuth2 server cannot be reached, the Copernica store
/// does not exist and the token file is empty.
pub struct AllSources {
    pub apis: SeedApis,
    /// The upstream of `filed` and `fixed`: answers 200 to anything.
    pub plain: StandIn,
    pub oauth2: OAuth2Server,
    pub store: PathBuf,
    pub token_file: PathBuf,
    pub failing: bool,
    /// The Copernica token written to the store (when not failing).
    pub copernica_token: Option<String>,
    pub toml: String,
    vars: std::collections::HashMap<&'static str, String>,
}

impl AllSources {
    pub fn new(env: &TestEnv, failing: bool) -> AllSources {
        AllSources::with_token_file(env, failing, "filed.token")
    }

    /// [`AllSources::new`] with the token file named `file_name`.
    pub fn with_token_file(env: &TestEnv, failing: bool, file_name: &str) -> AllSources {
        watch_panics();
        let apis = SeedApis::spawn(env);
        let plain = StandIn::ok(None);
        let oauth2 = OAuth2Server::spawn(
            &env.ca,
            CC_CLIENT_ID,
            CC_CLIENT_SECRET,
            ClientAuth::Basic,
            None,
            3600,
        );
        let store = env.dir().join("copernica.token");
        let token_file = env.dir().join(file_name);
        let mut copernica_token = None;
        if failing {
            apis.algonomy.go_down(StatusCode::SERVICE_UNAVAILABLE);
            apis.invoca.go_down(StatusCode::SERVICE_UNAVAILABLE);
            // There (a config needs the file) but empty: no token.
            std::fs::write(&token_file, "").expect("write the token file");
        } else {
            let token = apis.copernica.generate_token();
            std::fs::write(&store, &token).expect("write the Copernica store");
            std::fs::write(&token_file, FILE_TOKEN).expect("write the token file");
            copernica_token = Some(token);
        }
        let oauth2_at = if failing {
            unused_local_addr().to_string()
        } else {
            oauth2.addr().to_string()
        };
        let redirect = format!("http://{}/callback", unused_local_addr());
        let vars = seed_vars(&redirect, &store.display().to_string());
        let extra = format!("\"{AUTH_HOST}:443\" = {}\n", toml_str(&oauth2_at));
        let mut toml = apis.config(env, &extra);
        toml.push_str(&format!(
            r#"
[[route]]
name = "invoca-pooled"
host = "invoca.net"
path_prefix = "/pooled"
[route.auth]
kind = "query"
param = "access_token"
[route.auth.token]
source = "endpoint"
method = "POST"
url = "https://invoca.net/api/2014-01-01/${{INVOCA_NETWORK_ID}}/advertisers/${{INVOCA_ADVERTISER_ID}}/${{INVOCA_EMAIL_URLENCODED}}/create_access_token.json"
basic = {{ username = "${{INVOCA_USERNAME}}", password = "${{INVOCA_PASSWORD}}" }}
token_pointer = "/token"
one_time = true
pool_size = 2

[[route]]
name = "reports"
host = "{AUTH_HOST}"
path_prefix = "/reports"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {{token}}"
[route.auth.token]
source = "oauth2_client_credentials"
token_url = "https://{AUTH_HOST}/oauth/token"
client_id = "{CC_CLIENT_ID}"
client_secret = "{CC_CLIENT_SECRET}"

[[route]]
name = "filed"
host = "filed.example.test"
upstream = "{plain}"
[route.auth]
kind = "header"
name = "X-Api-Key"
[route.auth.token]
source = "file"
path = {file}

[[route]]
name = "fixed"
host = "fixed.example.test"
upstream = "{plain}"
[route.auth]
kind = "query"
param = "key"
token = "{STATIC_TOKEN}"

[[route]]
name = "aws"
host = "s3.example.test"
upstream = "{plain}"
[route.auth]
kind = "aws_sigv4"
access_key_id = "{AWS_KEY_ID}"
secret_access_key = "{AWS_SECRET}"
session_token = "{AWS_SESSION_TOKEN}"
region = "eu-west-1"
service = "s3"
"#,
            file = toml_str(&token_file.display().to_string()),
            plain = plain.url(),
        ));
        AllSources {
            apis,
            plain,
            oauth2,
            store,
            token_file,
            failing,
            copernica_token,
            toml,
            vars,
        }
    }

    /// One plain request to each route through the proxy at `proxy`
    /// (whatever the answers: this is what makes a one-time source without
    /// a pool mint, and the traffic counters count).
    pub async fn traffic(&self, proxy: std::net::SocketAddr) {
        for url in [
            "http://api.copilot.cx/v1/users",
            "http://consumer.kouponmedia.com/v2/offers",
            "http://api.copernica.com/v1/profiles",
            "http://invoca.net/api/2014-01-01/transactions",
            &format!("http://{}/status-probe", super::algonomy::ALGONOMY_HOST),
            "http://invoca.net/pooled/x",
            &format!("http://{AUTH_HOST}/reports/x"),
            "http://filed.example.test/x",
            "http://fixed.example.test/x",
            "http://s3.example.test/bucket/key",
        ] {
            let _ = get(proxy, url).await;
        }
    }

    /// The config, parsed with the seed variables.
    pub fn config(&self, env: &TestEnv) -> sidekey::Config {
        sidekey::Config::parse(&self.toml, env.dir(), &|name: &str| {
            self.vars.get(name).cloned()
        })
        .unwrap_or_else(|e| panic!("config: {}\n{}", e.problems().join("\n"), self.toml))
    }

    /// The config and the variables it names, for a `sidekey` process.
    pub fn write(&self, env: &TestEnv) -> (PathBuf, Vec<(&'static str, String)>) {
        let path = env.write_config(&self.toml);
        (
            path,
            self.vars.iter().map(|(k, v)| (*k, v.clone())).collect(),
        )
    }

    /// Every secret of the config and every token the stand-ins issued.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = [
            COPILOT_ID,
            COPILOT_SECRET,
            KOUPON_KEY,
            KOUPON_SECRET,
            COPERNICA_SECRET,
            INVOCA_PASSWORD,
            ALGONOMY_KEY_SECRET,
            CC_CLIENT_SECRET,
            FILE_TOKEN,
            STATIC_TOKEN,
            AWS_SECRET,
            AWS_SESSION_TOKEN,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        secrets.extend(self.copernica_token.clone());
        secrets.extend(self.apis.algonomy.issued());
        secrets.extend(self.apis.invoca.issued());
        secrets.extend(self.oauth2.issued());
        secrets
    }

    /// The state every route reaches once warmed up.
    pub fn expected_state(&self, route: &str) -> &'static str {
        match (route, self.failing) {
            ("copilot" | "koupon" | "fixed" | "aws", _) => "valid",
            (_, false) => "valid",
            ("copernica", true) => "needs_authorize",
            ("filed", true) => "missing",
            (_, true) => "failing",
        }
    }
}

/// `/status`, parsed (asserting 200 and JSON).
pub async fn status_json(proxy: &sidekey::app::RunningProxy) -> Value {
    let resp = admin_get(proxy, "/status").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json",
        "/status is JSON"
    );
    serde_json::from_slice(resp.body()).expect("/status is valid JSON")
}

/// The route named `name` in a `/status` document.
pub fn route<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no route {name:?} in {status:#}"))
}

/// Waits (at most 20 s) until every route of `sources` shows its expected
/// state (and a pool, when it has one, is full); returns that `/status`.
pub async fn wait_for_states(proxy: &sidekey::app::RunningProxy, sources: &AllSources) -> Value {
    wait_until(
        "every route shows its state",
        Duration::from_secs(20),
        || async {
            let status = status_json(proxy).await;
            ROUTES.iter().all(|(name, _)| {
                let r = route(&status, name);
                let pool_full = r["token"]["pool"].is_null()
                    || sources.failing
                    || r["token"]["pool"]["ready"] == r["token"]["pool"]["size"];
                r["state"] == sources.expected_state(name) && pool_full
            })
        },
    )
    .await;
    status_json(proxy).await
}
