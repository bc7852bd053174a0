//! All five seed APIs at once: their stand-ins, the routes of
//! `config/examples/seed-routes.toml` unchanged behind a `[proxy]` table
//! that points each API host at its stand-in, and the variables those
//! routes name. Used by `examples/demo.rs` and `tests/https_seeds.rs`.
//! Also a fresh local CA for `[proxy.intercept]` ([`intercept_ca`]).

use std::collections::HashMap;
use std::path::Path;

use super::algonomy::ALGONOMY_HOST;
use super::invoca::{ADVERTISER_ID, EMAIL_URLENCODED, NETWORK_ID};
use super::test_env::{toml_str, TestEnv};
use super::{AlgonomyApi, CopernicaApi, CopilotApi, InvocaApi, KouponApi};

// Credentials from the seed documents' own examples where they give some.
pub const COPILOT_ID: &str = "ABABABABQQIRZ";
pub const COPILOT_SECRET: &str = "k9H2Nd3T5j5EW2Fu160l11Hal3x3oa";
pub const KOUPON_KEY: &str = "6348256714038520009a57d1d2-5188-457b-854b-86aafea65fc5";
pub const KOUPON_SECRET: &str = "4623B7B8-18A6-4B2C-B2C1-18157F5C4AFE";
pub const COPERNICA_KEY: &str = "demo-client-key";
pub const COPERNICA_SECRET: &str = "demo-client-secret";
pub const INVOCA_USER: &str = "network-api-user";
pub const INVOCA_PASSWORD: &str = "demo-invoca-password";
pub const ALGONOMY_KEY_SECRET: &str = "4faeaf752ee40a0f";
pub const ALGONOMY_TENANT: &str = "abcd1234efgh5678ijkl9012mnop3456";

/// The five seed stand-ins, each verifying requests as its document says.
pub struct SeedApis {
    pub copilot: CopilotApi,
    pub koupon: KouponApi,
    pub copernica: CopernicaApi,
    pub invoca: InvocaApi,
    pub algonomy: AlgonomyApi,
}

impl SeedApis {
    /// Spawns all five; the TLS ones with certificates from `env`'s test CA.
    pub fn spawn(env: &TestEnv) -> SeedApis {
        SeedApis {
            copilot: CopilotApi::spawn(&env.ca, COPILOT_ID, COPILOT_SECRET),
            koupon: KouponApi::spawn(KOUPON_KEY, KOUPON_SECRET),
            copernica: CopernicaApi::spawn(&env.ca, COPERNICA_KEY, COPERNICA_SECRET),
            invoca: InvocaApi::spawn(&env.ca, INVOCA_USER, INVOCA_PASSWORD),
            algonomy: AlgonomyApi::spawn(&env.ca, ALGONOMY_KEY_SECRET, ALGONOMY_TENANT),
        }
    }

    /// The `[proxy.connect_to]` lines of all five.
    pub fn connect_to(&self) -> Vec<String> {
        vec![
            self.copilot.connect_to_toml(),
            self.koupon.connect_to_toml(),
            self.copernica.connect_to_toml(),
            self.invoca.connect_to_toml(),
            self.algonomy.connect_to_toml(),
        ]
    }

    /// The seed routes, unchanged, behind a `[proxy]` table: free ports,
    /// the test CA trusted upstream, `connect_to` pointing each API host
    /// at its stand-in, then `extra` (e.g. a `[proxy.intercept]` table).
    pub fn config(&self, env: &TestEnv, extra: &str) -> String {
        let seed = include_str!("../../config/examples/seed-routes.toml");
        let routes = &seed[seed.find("[[route]]").unwrap_or(0)..];
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nca_file = {}\n\n[proxy.connect_to]\n{}\n{extra}\n\n{}",
            toml_str(&env.ca_file().display().to_string()),
            self.connect_to().join("\n"),
            // The seed's dedicated Copilot port may be taken on this machine.
            routes.replace("listen = \"127.0.0.1:8101\"", "listen = \"127.0.0.1:0\""),
        )
    }
}

/// The variables the seed routes name, with `redirect_uri` and the
/// Copernica token `store` given.
pub fn seed_vars(redirect_uri: &str, store: &str) -> HashMap<&'static str, String> {
    [
        ("COPILOT_CLIENT_ID", COPILOT_ID),
        ("COPILOT_CLIENT_SECRET", COPILOT_SECRET),
        ("KOUPON_API_KEY", KOUPON_KEY),
        ("KOUPON_SECRET_KEY", KOUPON_SECRET),
        ("COPERNICA_CLIENT_KEY", COPERNICA_KEY),
        ("COPERNICA_CLIENT_SECRET", COPERNICA_SECRET),
        ("COPERNICA_REDIRECT_URI", redirect_uri),
        ("COPERNICA_TOKEN_STORE", store),
        ("INVOCA_NETWORK_ID", NETWORK_ID),
        ("INVOCA_ADVERTISER_ID", ADVERTISER_ID),
        ("INVOCA_EMAIL_URLENCODED", EMAIL_URLENCODED),
        ("INVOCA_USERNAME", INVOCA_USER),
        ("INVOCA_PASSWORD", INVOCA_PASSWORD),
        ("ALGONOMY_API_HOST", ALGONOMY_HOST),
        ("ALGONOMY_TENANT_HASH", ALGONOMY_TENANT),
        ("ALGONOMY_OAUTH_KEY_SECRET", ALGONOMY_KEY_SECRET),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

/// A fresh sidekey local CA written to `dir` as `sidekey ca init` would
/// (`sidekey-ca.pem`, and `sidekey-ca.key` with mode 0600).
pub struct InterceptCa {
    /// The CA certificate (PEM): what clients trust.
    pub cert_pem: String,
    /// The CA private key (PEM): never to appear anywhere but its file.
    pub key_pem: String,
    /// The `[proxy.intercept]` table naming both files.
    pub table: String,
}

/// Generates an [`InterceptCa`] in `dir`; `extra` lines go into its table.
pub fn intercept_ca(dir: &Path, extra: &str) -> InterceptCa {
    let (cert_pem, key_pem) = sidekey::tls::LocalCa::generate().expect("a local CA");
    let cert_path = dir.join("sidekey-ca.pem");
    let key_path = dir.join("sidekey-ca.key");
    std::fs::write(&cert_path, &cert_pem).expect("write the CA certificate");
    std::fs::write(&key_path, &key_pem).expect("write the CA key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 0600 the CA key");
    }
    let table = format!(
        "\n[proxy.intercept]\nca_cert = {}\nca_key = {}\n{extra}\n",
        toml_str(&cert_path.display().to_string()),
        toml_str(&key_path.display().to_string()),
    );
    InterceptCa {
        cert_pem,
        key_pem,
        table,
    }
}

/// reqwest with sidekey's CA (`ca_pem`) as its only root, as an app set
/// up to trust sidekey has it.
pub fn trusting_only(ca_pem: &str) -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("the CA certificate");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
}

/// [`trusting_only`], behind `HTTPS_PROXY=http://{proxy}`.
pub fn via_https_proxy(proxy: std::net::SocketAddr, ca_pem: &str) -> reqwest::ClientBuilder {
    trusting_only(ca_pem)
        .proxy(reqwest::Proxy::https(format!("http://{proxy}")).expect("a proxy URL"))
}

/// reqwest as an `https://` app behind `HTTPS_PROXY=http://{proxy}` sets
/// it up: sidekey's CA (`ca_pem`) as its only root, HTTP/1.1.
pub fn https_proxy_client(proxy: std::net::SocketAddr, ca_pem: &str) -> reqwest::Client {
    via_https_proxy(proxy, ca_pem)
        .http1_only()
        .build()
        .expect("a client")
}
