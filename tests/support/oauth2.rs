//! Stand-in for a generic OAuth2 server with the client-credentials grant
//! (RFC 6749 4.4) and an API behind it.
//!
//! `POST /oauth/token` needs `grant_type=client_credentials` in a form
//! body and the client authenticated either by `Authorization: Basic
//! base64(urlencode(id):urlencode(secret))` (RFC 6749 2.3.1) or by
//! `client_id`/`client_secret` in the form, as configured; when a scope is
//! required, `scope` must equal it. It answers `{"access_token",
//! "token_type": "Bearer", "expires_in"}`, and the API (any other path)
//! accepts `Authorization: Bearer <token>` until `expires_in` has passed.
//!
//! It also renews tokens (RFC 6749 6): `grant_type=refresh_token` with the
//! client in the form and a refresh token it issued
//! ([`OAuth2Server::issue_refresh_token`]), each accepted **once**
//! (rotation): the answer carries a new access token and a new refresh
//! token; a refresh token used again, or unknown, gets `invalid_grant`.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::json;

use super::ca::TestCa;
use super::server::{json_reply, media_type, single_header, split_query, Recorded, Reply, StandIn};
use super::tokens::{EndpointControls, TokenBook};

pub const AUTH_HOST: &str = "auth.example.test";
pub const TOKEN_PATH: &str = "/oauth/token";

/// How the client must authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Form,
}

struct State {
    client_id: String,
    client_secret: String,
    auth: ClientAuth,
    scope: Option<String>,
    expires_in: u64,
    book: TokenBook,
    endpoint: EndpointControls,
    api_accepted: usize,
    api_rejections: Vec<String>,
    token_rejections: Vec<String>,
    /// Refresh tokens issued, and whether each was used.
    refresh_tokens: HashMap<String, bool>,
    refreshes: usize,
    invalid_grants: usize,
}

pub struct OAuth2Server {
    server: StandIn,
    state: Arc<Mutex<State>>,
}

impl OAuth2Server {
    pub fn spawn(
        ca: &TestCa,
        client_id: &str,
        client_secret: &str,
        auth: ClientAuth,
        scope: Option<&str>,
        expires_in: u64,
    ) -> OAuth2Server {
        let state = Arc::new(Mutex::new(State {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            auth,
            scope: scope.map(str::to_string),
            expires_in,
            book: TokenBook::default(),
            endpoint: EndpointControls::default(),
            api_accepted: 0,
            api_rejections: Vec::new(),
            token_rejections: Vec::new(),
            refresh_tokens: HashMap::new(),
            refreshes: 0,
            invalid_grants: 0,
        }));
        let s = state.clone();
        let server = StandIn::spawn_fn(Some(ca.server_config(&[AUTH_HOST])), move |rec| {
            handle(rec, &s)
        });
        OAuth2Server { server, state }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("oauth2 state poisoned")
    }

    pub fn mints(&self) -> usize {
        self.lock().endpoint.mints
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

    /// Why token requests were refused, in order.
    pub fn token_rejections(&self) -> Vec<String> {
        self.lock().token_rejections.clone()
    }

    /// A new refresh token (what `authorize` would have stored).
    pub fn issue_refresh_token(&self) -> String {
        let token = super::tokens::random_token(32);
        self.lock().refresh_tokens.insert(token.clone(), false);
        token
    }

    /// Every refresh token issued so far.
    pub fn refresh_tokens(&self) -> Vec<String> {
        self.lock().refresh_tokens.keys().cloned().collect()
    }

    /// Refreshes answered with a new token.
    pub fn refreshes(&self) -> usize {
        self.lock().refreshes
    }

    /// Refreshes refused with `invalid_grant` (reused or unknown token).
    pub fn invalid_grants(&self) -> usize {
        self.lock().invalid_grants
    }

    /// `expires_in` of the tokens it issues.
    pub fn expires_in(&self) -> u64 {
        self.lock().expires_in
    }

    /// `expires_in` of the tokens issued from now on.
    pub fn set_expires_in(&self, secs: u64) {
        self.lock().expires_in = secs;
    }

    /// Revokes every token issued so far (the API answers 401 to them).
    pub fn revoke_all(&self) {
        self.lock().book.revoke_all();
    }

    pub fn connect_to_toml(&self) -> String {
        format!("\"{AUTH_HOST}:443\" = \"{}\"", self.server.addr())
    }
}

impl Deref for OAuth2Server {
    type Target = StandIn;
    fn deref(&self) -> &StandIn {
        &self.server
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn handle(rec: &Recorded, state: &Mutex<State>) -> Reply {
    let mut s = state.lock().expect("oauth2 state poisoned");
    if rec.path() == TOKEN_PATH && rec.body_text().contains("grant_type=refresh_token") {
        s.endpoint.attempts += 1;
        return refresh(rec, &mut s);
    }
    if rec.path() == TOKEN_PATH {
        s.endpoint.attempts += 1;
        match check_token_request(rec, &s) {
            Ok(()) => {
                let lifetime = Duration::from_secs(s.expires_in);
                let token = s.book.issue(Some(lifetime));
                s.endpoint.mints += 1;
                json_reply(
                    StatusCode::OK,
                    &json!({ "access_token": token, "token_type": "Bearer", "expires_in": s.expires_in }),
                )
            }
            Err((status, error, why)) => {
                s.token_rejections.push(why);
                json_reply(status, &json!({ "error": error }))
            }
        }
    } else {
        let token = single_header(&rec.headers, &AUTHORIZATION)
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let result = match token {
            Some(t) => s.book.use_token(&t, false).map_err(|p| format!("{p:?}")),
            None => Err("no Bearer token".to_string()),
        };
        match result {
            Ok(()) => {
                s.api_accepted += 1;
                json_reply(StatusCode::OK, &json!({ "ok": true }))
            }
            Err(why) => {
                s.api_rejections.push(why);
                json_reply(
                    StatusCode::UNAUTHORIZED,
                    &json!({ "error": "invalid_token" }),
                )
            }
        }
    }
}

/// `grant_type=refresh_token`: the client in the form, a refresh token
/// issued here and never used before.
fn refresh(rec: &Recorded, s: &mut State) -> Reply {
    let form: HashMap<String, String> = split_query(&rec.body_text())
        .into_iter()
        .map(|(k, v)| (decode(&k), decode(&v)))
        .collect();
    let form_type = single_header(&rec.headers, &CONTENT_TYPE)
        .map(media_type)
        .is_ok_and(|t| t == "application/x-www-form-urlencoded");
    if rec.method != Method::POST
        || !form_type
        || form.get("client_id") != Some(&s.client_id)
        || form.get("client_secret") != Some(&s.client_secret)
    {
        s.token_rejections.push("refresh: request or client".into());
        return json_reply(
            StatusCode::UNAUTHORIZED,
            &json!({ "error": "invalid_client" }),
        );
    }
    let given = form.get("refresh_token").cloned().unwrap_or_default();
    match s.refresh_tokens.get_mut(&given) {
        Some(used) if !*used => *used = true,
        _ => {
            s.invalid_grants += 1;
            s.token_rejections.push("refresh: invalid_grant".into());
            return json_reply(
                StatusCode::BAD_REQUEST,
                &json!({ "error": "invalid_grant" }),
            );
        }
    }
    let rotated = super::tokens::random_token(32);
    s.refresh_tokens.insert(rotated.clone(), false);
    let lifetime = Duration::from_secs(s.expires_in);
    let token = s.book.issue(Some(lifetime));
    s.endpoint.mints += 1;
    s.refreshes += 1;
    json_reply(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": s.expires_in,
            "refresh_token": rotated,
        }),
    )
}

type Refusal = (StatusCode, &'static str, String);

fn check_token_request(rec: &Recorded, s: &State) -> Result<(), Refusal> {
    let bad =
        |error: &'static str, why: &str| Err((StatusCode::BAD_REQUEST, error, why.to_string()));
    if rec.method != Method::POST {
        return bad("invalid_request", "not POST");
    }
    let form_type = single_header(&rec.headers, &CONTENT_TYPE)
        .map(media_type)
        .is_ok_and(|t| t == "application/x-www-form-urlencoded");
    if !form_type {
        return bad("invalid_request", "not a form");
    }
    let form: HashMap<String, String> = split_query(&rec.body_text())
        .into_iter()
        .map(|(k, v)| (decode(&k), decode(&v)))
        .collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return bad("unsupported_grant_type", "grant_type");
    }
    if form.get("scope") != s.scope.as_ref() {
        return bad("invalid_scope", "scope");
    }
    let client_ok = match s.auth {
        ClientAuth::Basic => {
            let expected = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                super::tokens::form_urlencode(&s.client_id),
                super::tokens::form_urlencode(&s.client_secret)
            ));
            single_header(&rec.headers, &AUTHORIZATION).ok()
                == Some(format!("Basic {expected}").as_str())
                && !form.contains_key("client_secret")
        }
        ClientAuth::Form => {
            form.get("client_id") == Some(&s.client_id)
                && form.get("client_secret") == Some(&s.client_secret)
                && !rec.has_header("authorization")
        }
    };
    if !client_ok {
        return Err((
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication".into(),
        ));
    }
    Ok(())
}
