//! Stand-in for the Koupon Media API v2 (seed 002): plain HTTP, signed URLs.
//!
//! The document's procedure, checked on the URL as received,
//! `http://{Host}{path}?{query}` (the URI's own authority for absolute-form or HTTP/2):
//! 1. the last parameter is `authSignature=<hex>` (40 hex digits for HMAC-SHA1);
//! 2. the part before `&authSignature=` has exactly one `identifier=<API key>` and
//!    exactly one `timestamp=<epoch seconds>`, within ±300 s of now (see
//!    [`KouponApi::with_fixed_time`] / [`KouponApi::with_tolerance`]), and no other
//!    `authSignature`;
//! 3. the signature equals lowercase hex(HMAC-SHA1(secret key, that part)).
//!
//! Headers: `Accept` must ask for `application/json`; a POST/PUT with a body must have
//! one `Content-Type` of `application/json` (a `charset`, if given, must be utf-8) and,
//! when the body was kept, valid JSON (else 400, as the document says).
//!
//! 200 `{"ok":true}`; otherwise 401 (400 for invalid JSON) with
//! `{"reason": "...", "detail": "..."}`. Details never contain the secret or a signature.

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Method, StatusCode};
use serde_json::json;

use super::server::{json_reply, media_type, single_header, split_query, Recorded, Reply, StandIn};

pub const KOUPON_HOST: &str = "consumer.kouponmedia.com";
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

pub const KEY_PARAM: &str = "identifier";
pub const TIMESTAMP_PARAM: &str = "timestamp";
pub const SIGNATURE_PARAM: &str = "authSignature";

pub const REASON_SIGNATURE: &str = "AUTH.INVALID_SIGNATURE";
pub const REASON_IDENTIFIER: &str = "AUTH.INVALID_IDENTIFIER";
pub const REASON_TIMESTAMP: &str = "AUTH.INVALID_TIMESTAMP";
pub const REASON_ACCEPT: &str = "ACCEPT.REQUIRED";
pub const REASON_CONTENT_TYPE: &str = "CONTENT_TYPE.REQUIRED";
pub const REASON_INVALID_JSON: &str = "REQUEST.INVALID_JSON";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// The document's algorithm (and sidekey's default).
    HmacSha1,
    /// sidekey's `algorithm = "hmac-sha256"` option (not in the document).
    HmacSha256,
}

impl Algorithm {
    fn hex_len(self) -> usize {
        match self {
            Algorithm::HmacSha1 => 40,
            Algorithm::HmacSha256 => 64,
        }
    }
}

/// lowercase hex(HMAC-SHA1(secret, url_so_far)), what the document's openssl command prints.
pub fn sign(url_so_far: &str, secret: &str) -> String {
    sign_with(Algorithm::HmacSha1, url_so_far, secret)
}

pub fn sign_with(algorithm: Algorithm, url_so_far: &str, secret: &str) -> String {
    match algorithm {
        Algorithm::HmacSha1 => {
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())
                .expect("HMAC accepts any key length");
            mac.update(url_so_far.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        Algorithm::HmacSha256 => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
                .expect("HMAC accepts any key length");
            mac.update(url_so_far.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
    }
}

/// `url_so_far&authSignature=<sign(url_so_far, secret)>`.
pub fn signed_url(url_so_far: &str, secret: &str) -> String {
    format!(
        "{url_so_far}&{SIGNATURE_PARAM}={}",
        sign(url_so_far, secret)
    )
}

/// Seconds since the Unix epoch, now.
pub fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("system clock is after 1970")
        .as_secs()
}

/// What the stand-in checks a URL against.
#[derive(Clone, Debug)]
pub struct Rules {
    pub api_key: String,
    pub secret: String,
    pub algorithm: Algorithm,
    /// "Now" for the timestamp check; `None` = the system clock.
    pub now: Option<u64>,
    /// Allowed |timestamp - now| in seconds; `None` = no time check.
    pub tolerance: Option<u64>,
}

impl Rules {
    pub fn new(api_key: &str, secret: &str) -> Rules {
        Rules {
            api_key: api_key.to_string(),
            secret: secret.to_string(),
            algorithm: Algorithm::HmacSha1,
            now: None,
            tolerance: Some(DEFAULT_TOLERANCE_SECS),
        }
    }
}

/// Why a request was refused: status, `reason` (JSON body) and a detail (also in the body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub reason: &'static str,
    pub detail: String,
}

fn reject(reason: &'static str, detail: impl Into<String>) -> Rejection {
    Rejection {
        status: StatusCode::UNAUTHORIZED,
        reason,
        detail: detail.into(),
    }
}

/// Verifies a full signed URL (`http://host/path?...&authSignature=...`) by the
/// document's procedure. Pure.
pub fn verify_url(url: &str, rules: &Rules) -> Result<(), Rejection> {
    let (before, last) = url.rsplit_once('&').ok_or_else(|| {
        reject(
            REASON_SIGNATURE,
            "no `&authSignature=` parameter at the end of the URL",
        )
    })?;
    let signature = last
        .strip_prefix(SIGNATURE_PARAM)
        .and_then(|rest| rest.strip_prefix('='))
        .ok_or_else(|| reject(REASON_SIGNATURE, "authSignature is not the last parameter"))?;
    let want_len = rules.algorithm.hex_len();
    if signature.len() != want_len
        || !signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(reject(
            REASON_SIGNATURE,
            format!(
                "authSignature is not {want_len} lowercase hex digits (got {} characters)",
                signature.len()
            ),
        ));
    }
    let query = before.split_once('?').map(|(_, q)| q).ok_or_else(|| {
        reject(
            REASON_SIGNATURE,
            "the URL has no query before authSignature",
        )
    })?;
    let pairs = split_query(query);
    let values = |name: &str| -> Vec<&str> {
        pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };

    if !values(SIGNATURE_PARAM).is_empty() {
        return Err(reject(
            REASON_SIGNATURE,
            "authSignature appears more than once",
        ));
    }

    match values(KEY_PARAM).as_slice() {
        [one] => {
            let decoded = percent_encoding::percent_decode_str(one).decode_utf8_lossy();
            if decoded != rules.api_key {
                return Err(reject(REASON_IDENTIFIER, "identifier is not the API key"));
            }
        }
        [] => return Err(reject(REASON_IDENTIFIER, "no identifier parameter")),
        many => {
            return Err(reject(
                REASON_IDENTIFIER,
                format!("identifier sent {} times", many.len()),
            ))
        }
    }

    let timestamp = match values(TIMESTAMP_PARAM).as_slice() {
        [one] => {
            if one.is_empty() || !one.bytes().all(|b| b.is_ascii_digit()) {
                return Err(reject(
                    REASON_TIMESTAMP,
                    format!("timestamp {one:?} is not epoch seconds"),
                ));
            }
            one.parse::<u64>()
                .map_err(|_| reject(REASON_TIMESTAMP, format!("timestamp {one:?} out of range")))?
        }
        [] => return Err(reject(REASON_TIMESTAMP, "no timestamp parameter")),
        many => {
            return Err(reject(
                REASON_TIMESTAMP,
                format!("timestamp sent {} times", many.len()),
            ))
        }
    };
    if let Some(tolerance) = rules.tolerance {
        let now = rules.now.unwrap_or_else(epoch_now);
        if timestamp.abs_diff(now) > tolerance {
            return Err(reject(
                REASON_TIMESTAMP,
                format!("timestamp {timestamp} is more than {tolerance}s from now ({now})"),
            ));
        }
    }

    if signature != sign_with(rules.algorithm, before, &rules.secret) {
        return Err(reject(
            REASON_SIGNATURE,
            format!(
                "authSignature is not the {:?} of the URL before `&authSignature=` (signed part was {before:?})",
                rules.algorithm
            ),
        ));
    }
    Ok(())
}

/// The URL as the stand-in reconstructs it: `http://{Host}{path}?{query}`.
pub fn received_url(rec: &Recorded) -> Option<String> {
    rec.authority()
        .map(|authority| format!("http://{authority}{}", rec.target()))
}

/// Checks a whole request (URL + headers + body). Pure; used by the stand-in.
pub fn check(rec: &Recorded, rules: &Rules) -> Result<(), Rejection> {
    let url = received_url(rec)
        .ok_or_else(|| reject(REASON_SIGNATURE, "no single Host header / authority"))?;
    verify_url(&url, rules)?;

    let accept = rec.header_values(ACCEPT.as_str());
    let accepts_json = accept.iter().any(|v| {
        v.split(',')
            .any(|item| media_type(item) == "application/json")
    });
    if !accepts_json {
        return Err(reject(
            REASON_ACCEPT,
            format!("Accept is {accept:?}, want application/json"),
        ));
    }

    if (rec.method == Method::POST || rec.method == Method::PUT) && rec.body_len > 0 {
        let content_type = single_header(&rec.headers, &CONTENT_TYPE)
            .map_err(|e| reject(REASON_CONTENT_TYPE, e))?;
        let charset_ok =
            content_type
                .split(';')
                .skip(1)
                .all(|param| match param.trim().split_once('=') {
                    Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
                        v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
                    }
                    _ => true,
                });
        if media_type(content_type) != "application/json" || !charset_ok {
            return Err(reject(
                REASON_CONTENT_TYPE,
                format!("Content-Type is {content_type:?}, want application/json; charset=utf-8"),
            ));
        }
        if let Some(body) = &rec.body {
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(body) {
                return Err(Rejection {
                    status: StatusCode::BAD_REQUEST,
                    reason: REASON_INVALID_JSON,
                    detail: format!("Bad Request: body is not valid JSON: {e}"),
                });
            }
        }
    }
    Ok(())
}

/// The Koupon Media stand-in (plain HTTP).
pub struct KouponApi {
    server: StandIn,
    rules: Arc<Mutex<Rules>>,
    rejections: Arc<Mutex<Vec<Rejection>>>,
}

impl KouponApi {
    pub fn spawn(api_key: &str, secret_key: &str) -> KouponApi {
        let rules = Arc::new(Mutex::new(Rules::new(api_key, secret_key)));
        let rejections = Arc::new(Mutex::new(Vec::new()));
        let (ru, re) = (rules.clone(), rejections.clone());
        let server = StandIn::spawn_fn(None, move |rec| handle(rec, &ru, &re));
        KouponApi {
            server,
            rules,
            rejections,
        }
    }

    /// Treat `now` as the current time for the timestamp check (for fixed vectors).
    pub fn with_fixed_time(self, now: u64) -> Self {
        self.rules.lock().expect("rules poisoned").now = Some(now);
        self
    }

    /// Allowed clock skew in seconds; `None` disables the timestamp window.
    pub fn with_tolerance(self, tolerance: Option<u64>) -> Self {
        self.rules.lock().expect("rules poisoned").tolerance = tolerance;
        self
    }

    pub fn with_algorithm(self, algorithm: Algorithm) -> Self {
        self.rules.lock().expect("rules poisoned").algorithm = algorithm;
        self
    }

    pub fn rules(&self) -> Rules {
        self.rules.lock().expect("rules poisoned").clone()
    }

    /// `127.0.0.1:PORT`, the value for `[proxy.connect_to]`.
    pub fn connect_to(&self) -> String {
        self.server.addr().to_string()
    }

    /// A `[proxy.connect_to]` line: `"consumer.kouponmedia.com:80" = "127.0.0.1:PORT"`.
    pub fn connect_to_toml(&self) -> String {
        format!("\"{KOUPON_HOST}:80\" = \"{}\"", self.server.addr())
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

impl Deref for KouponApi {
    type Target = StandIn;
    fn deref(&self) -> &StandIn {
        &self.server
    }
}

fn handle(rec: &Recorded, rules: &Mutex<Rules>, rejections: &Mutex<Vec<Rejection>>) -> Reply {
    let rules = rules.lock().expect("rules poisoned").clone();
    match check(rec, &rules) {
        Ok(()) => json_reply(StatusCode::OK, &json!({ "ok": true })),
        Err(rejection) => {
            let reply = json_reply(
                rejection.status,
                &json!({ "reason": rejection.reason, "detail": rejection.detail }),
            );
            rejections
                .lock()
                .expect("rejections poisoned")
                .push(rejection);
            reply
        }
    }
}
