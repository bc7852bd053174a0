//! Stand-in for the Copilot.cx Server API (seed 001): HTTPS, HTTP Basic
//! `CLIENT_ID:CLIENT_SECRET`, `Content-Type: application/json` on every request.
//!
//! Answers 200 `{"ok":true}` when the request is right. Otherwise:
//! - 401 `{"reason":"AUTH.UNAUTHORIZED"}` (the document's body) when `Authorization` is
//!   missing, repeated, or not exactly `Basic base64(CLIENT_ID:CLIENT_SECRET)`;
//! - 401 `{"reason":"CONTENT_TYPE.REQUIRED"}` when there is not exactly one
//!   `Content-Type` whose media type is `application/json` (the document names the
//!   header as required but gives no error for it; this stand-in's choice);
//! - 421 `{"reason":"MISDIRECTED"}` when the TLS SNI or the Host/authority is not
//!   `api.copilot.cx` (sidekey must keep both when `connect_to` redirects the dial);
//!   turn off with [`CopilotApi::allow_any_host`].
//!
//! Why each rejection happened is kept in [`CopilotApi::rejections`].

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::StatusCode;
use serde_json::json;

use super::ca::TestCa;
use super::server::{json_reply, media_type, single_header, Recorded, Reply, StandIn};

pub const COPILOT_HOST: &str = "api.copilot.cx";
/// The body the document gives for authentication errors.
pub const UNAUTHORIZED_REASON: &str = "AUTH.UNAUTHORIZED";
pub const CONTENT_TYPE_REASON: &str = "CONTENT_TYPE.REQUIRED";
pub const MISDIRECTED_REASON: &str = "MISDIRECTED";

/// `Basic base64(client_id:client_secret)`, computed here, independently of sidekey.
pub fn basic_authorization(client_id: &str, client_secret: &str) -> String {
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{client_secret}"));
    format!("Basic {credentials}")
}

/// Why a request was refused: status, the `reason` put in the JSON body, and a detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub reason: &'static str,
    pub detail: String,
}

struct Settings {
    expected_authorization: String,
    check_host: bool,
}

/// Checks one request against the document. Pure; used by the stand-in.
pub fn check(
    rec: &Recorded,
    expected_authorization: &str,
    check_host: bool,
) -> Result<(), Rejection> {
    if check_host {
        let misdirected = |detail: String| Rejection {
            status: StatusCode::MISDIRECTED_REQUEST,
            reason: MISDIRECTED_REASON,
            detail,
        };
        if let Some(tls) = &rec.tls {
            match tls.sni.as_deref() {
                Some(sni) if sni.eq_ignore_ascii_case(COPILOT_HOST) => {}
                other => return Err(misdirected(format!("TLS SNI was {other:?}"))),
            }
        }
        match rec.authority() {
            Some(a)
                if a.eq_ignore_ascii_case(COPILOT_HOST)
                    || a.eq_ignore_ascii_case(&format!("{COPILOT_HOST}:443")) => {}
            other => {
                return Err(misdirected(format!(
                    "Host/authority was {other:?} (Host headers sent: {})",
                    rec.header_count("host")
                )))
            }
        }
    }

    let unauthorized = |detail: &str| Rejection {
        status: StatusCode::UNAUTHORIZED,
        reason: UNAUTHORIZED_REASON,
        detail: detail.to_string(),
    };
    let auth_values = rec.headers.get_all(AUTHORIZATION).iter().count();
    match auth_values {
        0 => return Err(unauthorized("no Authorization header")),
        1 => {}
        n => {
            return Err(unauthorized(&format!(
                "Authorization header sent {n} times"
            )))
        }
    }
    let auth = rec
        .headers
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if auth != expected_authorization.as_bytes() {
        return Err(unauthorized(
            "Authorization is not exactly `Basic base64(CLIENT_ID:CLIENT_SECRET)`",
        ));
    }

    let content_type = single_header(&rec.headers, &CONTENT_TYPE).map_err(|e| Rejection {
        status: StatusCode::UNAUTHORIZED,
        reason: CONTENT_TYPE_REASON,
        detail: e,
    })?;
    if media_type(content_type) != "application/json" {
        return Err(Rejection {
            status: StatusCode::UNAUTHORIZED,
            reason: CONTENT_TYPE_REASON,
            detail: format!("Content-Type was {content_type:?}, want application/json"),
        });
    }
    Ok(())
}

/// The Copilot.cx stand-in (TLS, certificate for `api.copilot.cx` from the given CA).
pub struct CopilotApi {
    server: StandIn,
    settings: Arc<Mutex<Settings>>,
    rejections: Arc<Mutex<Vec<Rejection>>>,
}

impl CopilotApi {
    pub fn spawn(ca: &TestCa, client_id: &str, client_secret: &str) -> CopilotApi {
        let settings = Arc::new(Mutex::new(Settings {
            expected_authorization: basic_authorization(client_id, client_secret),
            check_host: true,
        }));
        let rejections = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (settings.clone(), rejections.clone());
        let server = StandIn::spawn_fn(Some(ca.server_config(&[COPILOT_HOST])), move |rec| {
            handle(rec, &s, &r)
        });
        CopilotApi {
            server,
            settings,
            rejections,
        }
    }

    /// Accept any SNI and Host (for routes whose upstream is `https://127.0.0.1:PORT`).
    pub fn allow_any_host(self) -> Self {
        self.settings.lock().expect("settings poisoned").check_host = false;
        self
    }

    /// The exact `Authorization` value this stand-in accepts.
    pub fn expected_authorization(&self) -> String {
        self.settings
            .lock()
            .expect("settings poisoned")
            .expected_authorization
            .clone()
    }

    /// `127.0.0.1:PORT`, the value for `[proxy.connect_to]`.
    pub fn connect_to(&self) -> String {
        self.server.addr().to_string()
    }

    /// A `[proxy.connect_to]` line: `"api.copilot.cx:443" = "127.0.0.1:PORT"`.
    pub fn connect_to_toml(&self) -> String {
        format!("\"{COPILOT_HOST}:443\" = \"{}\"", self.server.addr())
    }

    /// Requests answered 200.
    pub fn accepted(&self) -> usize {
        self.server
            .statuses()
            .iter()
            .filter(|s| **s == Some(StatusCode::OK))
            .count()
    }

    /// Why each refused request was refused, in order.
    pub fn rejections(&self) -> Vec<Rejection> {
        self.rejections.lock().expect("rejections poisoned").clone()
    }

    pub fn server(&self) -> &StandIn {
        &self.server
    }
}

impl Deref for CopilotApi {
    type Target = StandIn;
    fn deref(&self) -> &StandIn {
        &self.server
    }
}

fn handle(rec: &Recorded, settings: &Mutex<Settings>, rejections: &Mutex<Vec<Rejection>>) -> Reply {
    let (expected, check_host) = {
        let s = settings.lock().expect("settings poisoned");
        (s.expected_authorization.clone(), s.check_host)
    };
    match check(rec, &expected, check_host) {
        Ok(()) => json_reply(StatusCode::OK, &json!({ "ok": true })),
        Err(rejection) => {
            let reply = json_reply(rejection.status, &json!({ "reason": rejection.reason }));
            rejections
                .lock()
                .expect("rejections poisoned")
                .push(rejection);
            reply
        }
    }
}
