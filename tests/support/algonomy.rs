//! Stand-in for the Algonomy Real-time CDP (seed 004): the create-token
//! endpoint and an API that accepts only live tokens it issued.
//!
//! `POST /secureApi/token/profile/create` needs exactly one
//! `oauth_key_secret` and one `tenant_hash` header with the configured
//! values and a JSON body whose `resource` is a non-empty array of strings
//! (`validity`, in minutes, optional, default 15); it answers
//! `{"token": "..."}`. Anything else is 401 (wrong credentials) or 400
//! (bad body). Every other path is the API: it needs `Authorization:
//! Bearer <token>` with a token this stand-in issued that has not expired
//! or been revoked, and the `tenant_hash` header; else 401.
//!
//! The TLS certificate and the expected Host/SNI are [`ALGONOMY_HOST`], so
//! a token fetch that `connect_to` redirects must keep both.

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, StatusCode};
use serde_json::json;

use super::ca::TestCa;
use super::server::{json_reply, media_type, single_header, Gate, Recorded, Reply, StandIn};
use super::tokens::{EndpointControls, TokenBook};

/// The `ALGONOMY_API_HOST` of the tests (given by Algonomy support in real life).
pub const ALGONOMY_HOST: &str = "cdp.algonomy.test";
pub const CREATE_PATH: &str = "/secureApi/token/profile/create";

struct State {
    key_secret: String,
    tenant_hash: String,
    /// Overrides `validity` (tests need seconds, the API speaks minutes).
    lifetime: Option<Duration>,
    /// Answer 200 without a `token` (a broken endpoint).
    omit_token: bool,
    /// The API refuses every token (401), even fresh ones.
    refuse_all: bool,
    book: TokenBook,
    endpoint: EndpointControls,
    /// Why API calls were refused, in order.
    api_rejections: Vec<String>,
    api_accepted: usize,
}

pub struct AlgonomyApi {
    server: StandIn,
    state: Arc<Mutex<State>>,
}

impl AlgonomyApi {
    pub fn spawn(ca: &TestCa, oauth_key_secret: &str, tenant_hash: &str) -> AlgonomyApi {
        let state = Arc::new(Mutex::new(State {
            key_secret: oauth_key_secret.to_string(),
            tenant_hash: tenant_hash.to_string(),
            lifetime: None,
            omit_token: false,
            refuse_all: false,
            book: TokenBook::default(),
            endpoint: EndpointControls::default(),
            api_rejections: Vec::new(),
            api_accepted: 0,
        }));
        let s = state.clone();
        let server = StandIn::spawn(Some(ca.server_config(&[ALGONOMY_HOST])), move |rec| {
            let s = s.clone();
            async move { handle(rec, &s).await }
        });
        AlgonomyApi { server, state }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("algonomy state poisoned")
    }

    /// Tokens live this long instead of `validity` minutes.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.lock().lifetime = Some(lifetime);
    }

    /// The create-token endpoint answers `status` until [`AlgonomyApi::come_back`].
    pub fn go_down(&self, status: StatusCode) {
        self.lock().endpoint.down = Some(status);
    }

    pub fn come_back(&self) {
        self.lock().endpoint.down = None;
    }

    /// The endpoint answers 200 with no token in the body.
    pub fn omit_token(&self, omit: bool) {
        self.lock().omit_token = omit;
    }

    /// The API answers 401 to every call, whatever the token.
    pub fn refuse_all(&self, refuse: bool) {
        self.lock().refuse_all = refuse;
    }

    /// Create-token requests wait until the returned gate opens.
    pub fn hold_mints(&self) -> Gate {
        let gate = Gate::new();
        self.lock().endpoint.hold = Some(gate.clone());
        gate
    }

    /// Invalidates every token issued so far.
    pub fn revoke_all(&self) {
        self.lock().book.revoke_all();
    }

    /// Tokens issued.
    pub fn mints(&self) -> usize {
        self.lock().endpoint.mints
    }

    /// Create-token requests received (issued or refused).
    pub fn mint_attempts(&self) -> usize {
        self.lock().endpoint.attempts
    }

    pub fn issued(&self) -> Vec<String> {
        self.lock().book.issued()
    }

    pub fn api_accepted(&self) -> usize {
        self.lock().api_accepted
    }

    pub fn api_rejections(&self) -> Vec<String> {
        self.lock().api_rejections.clone()
    }

    /// `"cdp.algonomy.test:443" = "127.0.0.1:PORT"` for `[proxy.connect_to]`.
    pub fn connect_to_toml(&self) -> String {
        format!("\"{ALGONOMY_HOST}:443\" = \"{}\"", self.server.addr())
    }
}

impl Deref for AlgonomyApi {
    type Target = StandIn;
    fn deref(&self) -> &StandIn {
        &self.server
    }
}

fn reply(status: StatusCode, reason: &str) -> Reply {
    json_reply(status, &json!({ "error": reason }))
}

async fn handle(rec: Recorded, state: &Mutex<State>) -> Reply {
    let host_ok = rec.authority().is_some_and(|a| {
        a.eq_ignore_ascii_case(ALGONOMY_HOST)
            || a.eq_ignore_ascii_case(&format!("{ALGONOMY_HOST}:443"))
    }) && rec
        .tls
        .as_ref()
        .is_some_and(|t| t.sni.as_deref() == Some(ALGONOMY_HOST));
    if !host_ok {
        return reply(StatusCode::MISDIRECTED_REQUEST, "misdirected");
    }
    if rec.path() == CREATE_PATH {
        create_token(rec, state).await
    } else {
        api(&rec, state)
    }
}

async fn create_token(rec: Recorded, state: &Mutex<State>) -> Reply {
    let hold = {
        let mut s = state.lock().expect("algonomy state poisoned");
        s.endpoint.attempts += 1;
        if let Some(status) = s.endpoint.down {
            return reply(status, "unavailable");
        }
        s.endpoint.hold.clone()
    };
    if let Some(gate) = hold {
        gate.wait().await;
    }
    let mut s = state.lock().expect("algonomy state poisoned");
    if rec.method != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    let key = single_header(&rec.headers, &"oauth_key_secret".parse().expect("name"));
    let tenant = single_header(&rec.headers, &"tenant_hash".parse().expect("name"));
    if key.ok() != Some(s.key_secret.as_str()) || tenant.ok() != Some(s.tenant_hash.as_str()) {
        return reply(
            StatusCode::UNAUTHORIZED,
            "bad oauth_key_secret or tenant_hash",
        );
    }
    let json_type = single_header(&rec.headers, &CONTENT_TYPE)
        .map(media_type)
        .is_ok_and(|t| t == "application/json");
    let body: Option<serde_json::Value> = rec
        .body
        .as_ref()
        .and_then(|b| serde_json::from_slice(b).ok());
    let resources_ok = body
        .as_ref()
        .and_then(|b| b.get("resource"))
        .and_then(|r| r.as_array())
        .is_some_and(|r| !r.is_empty() && r.iter().all(|x| x.is_string()));
    if !json_type || !resources_ok {
        return reply(StatusCode::BAD_REQUEST, "resource is required");
    }
    let validity = body
        .as_ref()
        .and_then(|b| b.get("validity"))
        .and_then(|v| v.as_u64())
        .unwrap_or(15);
    let lifetime = s.lifetime.unwrap_or(Duration::from_secs(validity * 60));
    let token = s.book.issue(Some(lifetime));
    s.endpoint.mints += 1;
    if s.omit_token {
        return json_reply(StatusCode::OK, &json!({ "message": "ok" }));
    }
    json_reply(StatusCode::OK, &json!({ "token": token }))
}

fn api(rec: &Recorded, state: &Mutex<State>) -> Reply {
    let mut s = state.lock().expect("algonomy state poisoned");
    let refuse = |s: &mut State, why: String| {
        s.api_rejections.push(why);
        reply(StatusCode::UNAUTHORIZED, "invalid token")
    };
    if single_header(&rec.headers, &"tenant_hash".parse().expect("name")).ok()
        != Some(s.tenant_hash.as_str())
    {
        return refuse(&mut s, "no tenant_hash".into());
    }
    let token = match single_header(&rec.headers, &AUTHORIZATION) {
        Ok(v) => match v.strip_prefix("Bearer ") {
            Some(t) => t.to_string(),
            None => return refuse(&mut s, "not a Bearer token".into()),
        },
        Err(e) => return refuse(&mut s, e),
    };
    if s.refuse_all {
        return refuse(&mut s, "refusing everything".into());
    }
    match s.book.use_token(&token, false) {
        Ok(()) => {
            s.api_accepted += 1;
            json_reply(StatusCode::OK, &json!({ "ok": true, "path": rec.path() }))
        }
        Err(problem) => refuse(&mut s, format!("{problem:?}")),
    }
}
