//! Stand-in for the Invoca PPC Platform (seed 003): one-time access tokens.
//!
//! `POST /api/2014-01-01/<network_id>/advertisers/<advertiser_id>/<email,
//! url-encoded>/create_access_token.json` with HTTP Basic
//! `username:password` mints a token: `{"token": "...", "id": 1}` (the
//! document's response). Wrong credentials are 401, a wrong path 404.
//! Every other path is the platform: it needs `access_token=<token>` in
//! the query, a token minted here and never used before; a token works
//! exactly once.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::{Method, StatusCode};
use serde_json::json;

use super::ca::TestCa;
use super::server::{json_reply, single_header, Gate, Recorded, Reply, StandIn};
use super::tokens::{EndpointControls, TokenBook};

pub const INVOCA_HOST: &str = "invoca.net";
pub const NETWORK_ID: &str = "1234";
pub const ADVERTISER_ID: &str = "354";
/// The document's example user, url-encoded as the URL carries it.
pub const EMAIL_URLENCODED: &str = "sy%40young.com";

/// The mint path for the constants above.
pub fn mint_path() -> String {
    format!(
        "/api/2014-01-01/{NETWORK_ID}/advertisers/{ADVERTISER_ID}/{EMAIL_URLENCODED}/create_access_token.json"
    )
}

struct State {
    authorization: String,
    book: TokenBook,
    endpoint: EndpointControls,
    accepted: usize,
    /// Why platform calls were refused, in order.
    rejections: Vec<String>,
    /// Every token presented to the platform, in order.
    presented: Vec<String>,
}

pub struct InvocaApi {
    server: StandIn,
    state: Arc<Mutex<State>>,
}

impl InvocaApi {
    pub fn spawn(ca: &TestCa, username: &str, password: &str) -> InvocaApi {
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let state = Arc::new(Mutex::new(State {
            authorization: format!("Basic {credentials}"),
            book: TokenBook::default(),
            endpoint: EndpointControls::default(),
            accepted: 0,
            rejections: Vec::new(),
            presented: Vec::new(),
        }));
        let s = state.clone();
        let server = StandIn::spawn(Some(ca.server_config(&[INVOCA_HOST])), move |rec| {
            let s = s.clone();
            async move { handle(rec, &s).await }
        });
        InvocaApi { server, state }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("invoca state poisoned")
    }

    pub fn go_down(&self, status: StatusCode) {
        self.lock().endpoint.down = Some(status);
    }

    pub fn come_back(&self) {
        self.lock().endpoint.down = None;
    }

    /// Mint requests wait until the returned gate opens.
    pub fn hold_mints(&self) -> Gate {
        let gate = Gate::new();
        self.lock().endpoint.hold = Some(gate.clone());
        gate
    }

    /// Makes every token minted so far unusable.
    pub fn revoke_all(&self) {
        self.lock().book.revoke_all();
    }

    pub fn mints(&self) -> usize {
        self.lock().endpoint.mints
    }

    pub fn mint_attempts(&self) -> usize {
        self.lock().endpoint.attempts
    }

    pub fn issued(&self) -> Vec<String> {
        self.lock().book.issued()
    }

    pub fn accepted(&self) -> usize {
        self.lock().accepted
    }

    pub fn rejections(&self) -> Vec<String> {
        self.lock().rejections.clone()
    }

    /// Tokens presented to the platform more than once.
    pub fn reused(&self) -> usize {
        self.lock().book.reused()
    }

    /// Every request the stand-in received (mints and platform calls).
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    pub fn presented(&self) -> Vec<String> {
        self.lock().presented.clone()
    }

    /// `"invoca.net:443" = "127.0.0.1:PORT"` for `[proxy.connect_to]`.
    pub fn connect_to_toml(&self) -> String {
        format!("\"{INVOCA_HOST}:443\" = \"{}\"", self.server.addr())
    }
}

impl Deref for InvocaApi {
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
        a.eq_ignore_ascii_case(INVOCA_HOST) || a.eq_ignore_ascii_case(&format!("{INVOCA_HOST}:443"))
    });
    if !host_ok {
        return reply(StatusCode::MISDIRECTED_REQUEST, "misdirected");
    }
    if rec.path().ends_with("/create_access_token.json") {
        mint(rec, state).await
    } else {
        platform(&rec, state)
    }
}

async fn mint(rec: Recorded, state: &Mutex<State>) -> Reply {
    let hold = {
        let mut s = state.lock().expect("invoca state poisoned");
        s.endpoint.attempts += 1;
        if let Some(status) = s.endpoint.down {
            return reply(status, "unavailable");
        }
        s.endpoint.hold.clone()
    };
    if let Some(gate) = hold {
        gate.wait().await;
    }
    let mut s = state.lock().expect("invoca state poisoned");
    if rec.method != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    if single_header(&rec.headers, &AUTHORIZATION).ok() != Some(s.authorization.as_str()) {
        return reply(StatusCode::UNAUTHORIZED, "bad credentials");
    }
    if rec.path() != mint_path() {
        return reply(StatusCode::NOT_FOUND, "no such network, advertiser or user");
    }
    let token = s.book.issue(None);
    s.endpoint.mints += 1;
    json_reply(StatusCode::OK, &json!({ "token": token, "id": 1 }))
}

fn platform(rec: &Recorded, state: &Mutex<State>) -> Reply {
    let mut s = state.lock().expect("invoca state poisoned");
    let tokens = rec.query_values("access_token");
    let token = match tokens.as_slice() {
        [one] => one.clone(),
        other => {
            s.rejections
                .push(format!("{} access_token parameters", other.len()));
            return reply(StatusCode::UNAUTHORIZED, "access_token required");
        }
    };
    s.presented.push(token.clone());
    match s.book.use_token(&token, true) {
        Ok(()) => {
            s.accepted += 1;
            json_reply(StatusCode::OK, &json!({ "ok": true, "path": rec.path() }))
        }
        Err(problem) => {
            s.rejections.push(format!("{problem:?}"));
            reply(StatusCode::UNAUTHORIZED, "invalid access token")
        }
    }
}
