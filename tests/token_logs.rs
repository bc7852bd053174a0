//! No secret or token in any log line: the sidekey binary runs the seed
//! config (`config/examples/seed-routes.toml`, only its listen addresses
//! and `connect_to` changed) with `RUST_LOG=trace`, in front of the
//! Algonomy, Invoca and Copernica stand-ins; after real traffic its whole
//! output is searched for every credential and every token issued.

mod support;

use base64::Engine as _;
use http::StatusCode;
use support::*;

const ALGONOMY_KEY_SECRET: &str = "4faeaf752ee40a0f";
const ALGONOMY_TENANT_HASH: &str = "abcd1234efgh5678ijkl9012mnop3456";
const INVOCA_USERNAME: &str = "invoca-network-user";
const INVOCA_PASSWORD: &str = "invoca-pa55word-xyz";
const COPERNICA_KEY: &str = "copernica-client-key";
const COPERNICA_SECRET: &str = "copernica-client-s3cret";
const COPILOT_SECRET: &str = "k9H2Nd3T5j5EW2Fu160l11Hal3x3oa";
const KOUPON_SECRET: &str = "4623B7B8-18A6-4B2C-B2C1-18157F5C4AFE";

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_or_token_reaches_the_log_at_trace_level() {
    let env = TestEnv::new();
    let algonomy = AlgonomyApi::spawn(&env.ca, ALGONOMY_KEY_SECRET, ALGONOMY_TENANT_HASH);
    let invoca = InvocaApi::spawn(&env.ca, INVOCA_USERNAME, INVOCA_PASSWORD);
    let copernica = CopernicaApi::spawn(&env.ca, COPERNICA_KEY, COPERNICA_SECRET);
    let copernica_token = copernica.generate_token();
    // As if `sidekey authorize` had run.
    std::fs::write(
        env.dir().join("copernica.token"),
        serde_json::json!({ "access_token": copernica_token }).to_string(),
    )
    .expect("write the store");

    let seed = include_str!("../config/examples/seed-routes.toml");
    let connect_to = [
        algonomy.connect_to_toml(),
        invoca.connect_to_toml(),
        copernica.connect_to_toml(),
    ];
    let toml = seed
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace("admin = \"127.0.0.1:9901\"", "admin = \"127.0.0.1:0\"")
        .replace("listen = \"127.0.0.1:8101\"", "listen = \"127.0.0.1:0\"");
    // The stand-ins' addresses go right under the `[proxy.connect_to]` header.
    let toml: String = toml
        .lines()
        .flat_map(|line| {
            let mut out = vec![line.to_string()];
            if line.starts_with("[proxy.connect_to]") {
                out.extend(connect_to.iter().cloned());
            }
            out
        })
        .map(|line| line + "\n")
        .collect();
    let config = env.write_config(&toml);
    let ca_file = env.ca_file().display().to_string();
    let envs = [
        ("RUST_LOG", "trace"),
        ("SIDEKEY_CA_FILE", ca_file.as_str()),
        ("ALGONOMY_API_HOST", algonomy::ALGONOMY_HOST),
        ("ALGONOMY_TENANT_HASH", ALGONOMY_TENANT_HASH),
        ("ALGONOMY_OAUTH_KEY_SECRET", ALGONOMY_KEY_SECRET),
        ("INVOCA_NETWORK_ID", invoca::NETWORK_ID),
        ("INVOCA_ADVERTISER_ID", invoca::ADVERTISER_ID),
        ("INVOCA_EMAIL_URLENCODED", invoca::EMAIL_URLENCODED),
        ("INVOCA_USERNAME", INVOCA_USERNAME),
        ("INVOCA_PASSWORD", INVOCA_PASSWORD),
        ("COPERNICA_CLIENT_KEY", COPERNICA_KEY),
        ("COPERNICA_CLIENT_SECRET", COPERNICA_SECRET),
        ("COPILOT_CLIENT_ID", "ABABABABQQIRZ"),
        ("COPILOT_CLIENT_SECRET", COPILOT_SECRET),
        ("KOUPON_API_KEY", "6348256714038520009a57d1d2"),
        ("KOUPON_SECRET_KEY", KOUPON_SECRET),
    ];
    let sidekey = SidekeyProcess::spawn(&config, &envs, &[]);
    let listen = sidekey.proxy_addr;

    for i in 0..3 {
        for url in [
            format!("http://{}/api/v1/profile/{i}", algonomy::ALGONOMY_HOST),
            format!("http://invoca.net/affiliates/{i}?access_token=from-app"),
            format!("http://api.copernica.com/v1/profile/{i}"),
        ] {
            let resp = get(listen, &url).await;
            assert_eq!(resp.status(), StatusCode::OK, "{url}: {}", body_text(&resp));
        }
    }
    // A 401 retry logs too, and so does a failing token fetch.
    let algonomy_url = format!("http://{}/api/v1/x", algonomy::ALGONOMY_HOST);
    algonomy.revoke_all();
    assert_eq!(get(listen, &algonomy_url).await.status(), StatusCode::OK);
    algonomy.go_down(StatusCode::BAD_GATEWAY);
    algonomy.revoke_all();
    let resp = get(listen, &algonomy_url).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    let (_, stderr) = sidekey.stop();
    assert!(
        stderr.contains("route=\"algonomy\"") && stderr.contains("route=\"invoca\""),
        "the log holds the requests:\n{stderr}"
    );
    assert!(stderr.contains("token fetch failed"), "{stderr}");
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{INVOCA_USERNAME}:{INVOCA_PASSWORD}"));
    let mut secrets: Vec<String> = [
        ALGONOMY_KEY_SECRET,
        ALGONOMY_TENANT_HASH,
        INVOCA_PASSWORD,
        COPERNICA_SECRET,
        COPILOT_SECRET,
        KOUPON_SECRET,
        &basic,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    secrets.extend(algonomy.issued());
    secrets.extend(invoca.issued());
    secrets.extend(copernica.issued());
    assert!(algonomy.issued().len() >= 2 && invoca.issued().len() >= 3);
    for secret in &secrets {
        if let Some(line) = stderr.lines().find(|l| l.contains(secret.as_str())) {
            panic!(
                "a secret ({} chars) is in this log line: {line}",
                secret.len()
            );
        }
    }
}
