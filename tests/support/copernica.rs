//! Stand-in for the Copernica REST API (seed 000): OAuth2 authorization
//! code, then a long-lived token appended as `?access_token=`.
//!
//! One TLS server with a certificate for both of the document's hosts:
//! - `GET https://www.copernica.com/en/authorize?client_id&redirect_uri&state&response_type=code`:
//!   the user's consent, skipped: checks the client id, `response_type=code`
//!   and a `state` of at least 32 characters ("at least a MD5 hash
//!   string"), issues a single-use code bound to the `redirect_uri` and
//!   redirects (302) to `redirect_uri?state=...&code=...`;
//! - `GET https://api.copernica.com/v1/token?client_id&client_secret&redirect_uri&code`:
//!   checks all four (the code unused, the redirect_uri the one it was
//!   issued for) and answers `{"access_token": "..."}`; else 400
//!   `{"error": "invalid_grant"}` / 401 `{"error": "invalid_client"}`;
//! - any other `api.copernica.com` path: the API, needing `access_token=`
//!   with a token issued here.
//!
//! [`CopernicaApi::tamper_state`] makes the redirect carry another state
//! (or none), to play a forged callback.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use http::header::LOCATION;
use http::{Method, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::json;

use super::ca::TestCa;
use super::server::{json_reply, split_query, Recorded, Reply, StandIn};
use super::tokens::{random_token, TokenBook};

pub const WWW_HOST: &str = "www.copernica.com";
pub const API_HOST: &str = "api.copernica.com";
pub const AUTHORIZE_PATH: &str = "/en/authorize";
pub const TOKEN_PATH: &str = "/v1/token";

/// What the authorize endpoint does to the state it sends back.
#[derive(Clone, Debug)]
pub enum Tamper {
    /// Sends this state instead.
    Replace(String),
    /// Sends no state.
    Drop,
}

struct Code {
    redirect_uri: String,
    used: bool,
}

struct State {
    client_id: String,
    client_secret: String,
    tamper: Option<Tamper>,
    codes: HashMap<String, Code>,
    /// States received at the authorize endpoint.
    states: Vec<String>,
    exchanges: usize,
    book: TokenBook,
    api_accepted: usize,
    api_rejections: Vec<String>,
    /// When set, the exchange also answers `refresh_token` and this
    /// `expires_in` (as RFC 6749 providers do; Copernica itself does not).
    refresh_expires_in: Option<u64>,
    refresh_tokens: Vec<String>,
}

pub struct CopernicaApi {
    server: StandIn,
    state: Arc<Mutex<State>>,
}

impl CopernicaApi {
    pub fn spawn(ca: &TestCa, client_id: &str, client_secret: &str) -> CopernicaApi {
        let state = Arc::new(Mutex::new(State {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            tamper: None,
            codes: HashMap::new(),
            states: Vec::new(),
            exchanges: 0,
            book: TokenBook::default(),
            api_accepted: 0,
            api_rejections: Vec::new(),
            refresh_expires_in: None,
            refresh_tokens: Vec::new(),
        }));
        let s = state.clone();
        let server = StandIn::spawn_fn(Some(ca.server_config(&[WWW_HOST, API_HOST])), move |rec| {
            handle(rec, &s)
        });
        CopernicaApi { server, state }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("copernica state poisoned")
    }

    /// From now on the code exchange also answers a `refresh_token` and
    /// `expires_in` (the access token then expires).
    pub fn offer_refresh_tokens(&self, expires_in: u64) {
        self.state
            .lock()
            .expect("copernica state")
            .refresh_expires_in = Some(expires_in);
    }

    /// The refresh tokens the exchange gave out.
    pub fn refresh_tokens(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("copernica state")
            .refresh_tokens
            .clone()
    }

    pub fn tamper_state(&self, tamper: Tamper) {
        self.lock().tamper = Some(tamper);
    }

    /// Codes issued by the authorize endpoint.
    pub fn codes(&self) -> Vec<String> {
        self.lock().codes.keys().cloned().collect()
    }

    /// States the authorize endpoint received.
    pub fn states(&self) -> Vec<String> {
        self.lock().states.clone()
    }

    /// Successful code exchanges.
    pub fn exchanges(&self) -> usize {
        self.lock().exchanges
    }

    /// A token from the dashboard's "access token generator" (the
    /// document's other way to get one), valid until revoked.
    pub fn generate_token(&self) -> String {
        self.lock().book.issue(None)
    }

    /// Access tokens issued.
    pub fn issued(&self) -> Vec<String> {
        self.lock().book.issued()
    }

    pub fn api_accepted(&self) -> usize {
        self.lock().api_accepted
    }

    pub fn api_rejections(&self) -> Vec<String> {
        self.lock().api_rejections.clone()
    }

    /// Both hosts' `[proxy.connect_to]` lines.
    pub fn connect_to_toml(&self) -> String {
        let addr = self.server.addr();
        format!("\"{WWW_HOST}:443\" = \"{addr}\"\n\"{API_HOST}:443\" = \"{addr}\"")
    }
}

impl Deref for CopernicaApi {
    type Target = StandIn;
    fn deref(&self) -> &StandIn {
        &self.server
    }
}

fn reply(status: StatusCode, error: &str) -> Reply {
    json_reply(status, &json!({ "error": error }))
}

/// The query's pairs, percent-decoded.
fn params(rec: &Recorded) -> HashMap<String, String> {
    split_query(rec.query().unwrap_or(""))
        .into_iter()
        .map(|(k, v)| {
            let decode = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(&k), decode(&v))
        })
        .collect()
}

fn handle(rec: &Recorded, state: &Mutex<State>) -> Reply {
    let host = rec
        .authority()
        .map(|a| a.trim_end_matches(":443").to_ascii_lowercase());
    let mut s = state.lock().expect("copernica state poisoned");
    match (host.as_deref(), rec.path()) {
        (Some(WWW_HOST), AUTHORIZE_PATH) => authorize(rec, &mut s),
        (Some(API_HOST), TOKEN_PATH) => token(rec, &mut s),
        (Some(API_HOST), _) => api(rec, &mut s),
        _ => reply(StatusCode::MISDIRECTED_REQUEST, "misdirected"),
    }
}

fn authorize(rec: &Recorded, s: &mut State) -> Reply {
    let p = params(rec);
    if rec.method != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "GET only");
    }
    if p.get("client_id") != Some(&s.client_id) {
        return reply(StatusCode::BAD_REQUEST, "unknown client_id");
    }
    if p.get("response_type").map(String::as_str) != Some("code") {
        return reply(StatusCode::BAD_REQUEST, "response_type must be code");
    }
    let Some(redirect_uri) = p.get("redirect_uri").filter(|r| r.starts_with("http")) else {
        return reply(StatusCode::BAD_REQUEST, "redirect_uri required");
    };
    // "Is the code parameter missing in the redirect URL? Make sure that
    // your state parameter ... is at least a MD5 hash string."
    let state = p.get("state").cloned().unwrap_or_default();
    s.states.push(state.clone());
    let code = (state.len() >= 32).then(|| random_token(32));
    if let Some(code) = &code {
        s.codes.insert(
            code.clone(),
            Code {
                redirect_uri: redirect_uri.clone(),
                used: false,
            },
        );
    }
    let state = match &s.tamper {
        None => Some(state),
        Some(Tamper::Replace(other)) => Some(other.clone()),
        Some(Tamper::Drop) => None,
    };
    let mut location = redirect_uri.clone();
    let mut sep = if location.contains('?') { '&' } else { '?' };
    if let Some(state) = state {
        location.push_str(&format!("{sep}state={state}"));
        sep = '&';
    }
    if let Some(code) = code {
        location.push_str(&format!("{sep}code={code}"));
    }
    http::Response::builder()
        .status(StatusCode::FOUND)
        .header(LOCATION, location)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("redirect response")
}

fn token(rec: &Recorded, s: &mut State) -> Reply {
    if rec.method != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "GET only");
    }
    let p = params(rec);
    if p.get("client_id") != Some(&s.client_id) || p.get("client_secret") != Some(&s.client_secret)
    {
        return reply(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let code = p.get("code").cloned().unwrap_or_default();
    let redirect_uri = p.get("redirect_uri").cloned().unwrap_or_default();
    match s.codes.get_mut(&code) {
        Some(c) if !c.used && c.redirect_uri == redirect_uri => c.used = true,
        _ => return reply(StatusCode::BAD_REQUEST, "invalid_grant"),
    }
    s.exchanges += 1;
    if let Some(expires_in) = s.refresh_expires_in {
        let token = s
            .book
            .issue(Some(std::time::Duration::from_secs(expires_in)));
        let refresh = random_token(32);
        s.refresh_tokens.push(refresh.clone());
        return json_reply(
            StatusCode::OK,
            &json!({ "access_token": token, "expires_in": expires_in, "refresh_token": refresh }),
        );
    }
    let token = s.book.issue(None);
    json_reply(StatusCode::OK, &json!({ "access_token": token }))
}

fn api(rec: &Recorded, s: &mut State) -> Reply {
    let tokens = rec.query_values("access_token");
    let result = match tokens.as_slice() {
        [one] => s.book.use_token(one, false).map_err(|p| format!("{p:?}")),
        other => Err(format!("{} access_token parameters", other.len())),
    };
    match result {
        Ok(()) => {
            s.api_accepted += 1;
            json_reply(StatusCode::OK, &json!({ "ok": true, "path": rec.path() }))
        }
        Err(why) => {
            s.api_rejections.push(why);
            reply(StatusCode::UNAUTHORIZED, "invalid access token")
        }
    }
}
