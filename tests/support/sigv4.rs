//! A stand-in AWS API that verifies Signature Version 4 the way AWS does,
//! written from the AWS documentation ("Create a signed AWS API request",
//! and the S3 API reference's "Signature Calculations for the
//! Authorization Header"), independently of sidekey's signer: it rebuilds
//! the canonical request from what it received, derives the signing key
//! and compares signatures. Anything off is answered 403 with the AWS
//! error code and recorded in [`SigV4Api::rejections`].
//!
//! What it checks beyond the signature: the credential scope (key ID,
//! date, region, service), `X-Amz-Date` within 15 minutes of now,
//! `host`, `x-amz-date` and `x-amz-content-sha256` signed, every `x-amz-*`
//! header signed (as S3 requires), `content-type` signed when sent, the
//! session token when one is expected, and the payload hash against the
//! body (or `UNSIGNED-PAYLOAD` when unsigned payloads are accepted).

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::server::{json_reply, Recorded, Reply, StandIn};

/// AWS's documented example keys (S3 API reference).
pub const AWS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
pub const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// What the stand-in accepts.
#[derive(Clone, Debug)]
pub struct SigV4Rules {
    pub key_id: String,
    pub secret: String,
    pub region: String,
    pub service: String,
    /// The `X-Amz-Security-Token` required, if any.
    pub session_token: Option<String>,
    /// Whether `x-amz-content-sha256: UNSIGNED-PAYLOAD` is accepted.
    pub unsigned_payload: bool,
}

impl SigV4Rules {
    /// S3 in `region` with AWS's example keys.
    pub fn s3(region: &str) -> SigV4Rules {
        SigV4Rules {
            key_id: AWS_KEY_ID.into(),
            secret: AWS_SECRET.into(),
            region: region.into(),
            service: "s3".into(),
            session_token: None,
            unsigned_payload: true,
        }
    }
}

/// Why a request was refused.
#[derive(Clone, Debug)]
pub struct SigV4Rejection {
    /// AWS's error code (`SignatureDoesNotMatch`, ...).
    pub code: &'static str,
    pub detail: String,
}

/// The verifying stand-in (plain HTTP; reach it with `connect_to`).
pub struct SigV4Api {
    server: StandIn,
    rejections: Arc<Mutex<Vec<SigV4Rejection>>>,
}

impl SigV4Api {
    pub fn spawn(rules: SigV4Rules) -> SigV4Api {
        let rejections = Arc::new(Mutex::new(Vec::new()));
        let seen = rejections.clone();
        let server = StandIn::spawn_fn(None, move |rec| match verify(rec, &rules) {
            Ok(()) => json_reply(
                StatusCode::OK,
                &json!({ "ok": true, "method": rec.method.as_str(), "bytes": rec.body_len }),
            ),
            Err(rejection) => {
                let reply = reject(&rejection);
                seen.lock().expect("rejections poisoned").push(rejection);
                reply
            }
        });
        SigV4Api { server, rejections }
    }

    pub fn rejections(&self) -> Vec<SigV4Rejection> {
        self.rejections.lock().expect("rejections poisoned").clone()
    }

    /// Requests answered 200.
    pub fn accepted(&self) -> usize {
        self.server
            .statuses()
            .iter()
            .filter(|s| **s == Some(StatusCode::OK))
            .count()
    }
}

impl Deref for SigV4Api {
    type Target = StandIn;
    fn deref(&self) -> &StandIn {
        &self.server
    }
}

fn reject(r: &SigV4Rejection) -> Reply {
    json_reply(
        StatusCode::FORBIDDEN,
        &json!({ "Code": r.code, "Message": r.detail }),
    )
}

fn fail(code: &'static str, detail: impl Into<String>) -> SigV4Rejection {
    SigV4Rejection {
        code,
        detail: detail.into(),
    }
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
struct AuthHeader {
    key_id: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
}

fn parse_authorization(value: &str) -> Result<AuthHeader, SigV4Rejection> {
    let malformed = |why: &str| fail("AuthorizationHeaderMalformed", why.to_string());
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| malformed("not AWS4-HMAC-SHA256"))?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| malformed("a part without '='"))?;
        match k {
            "Credential" => credential = Some(v.to_string()),
            "SignedHeaders" => signed = Some(v.to_string()),
            "Signature" => signature = Some(v.to_string()),
            _ => return Err(malformed("unknown part")),
        }
    }
    let credential = credential.ok_or_else(|| malformed("no Credential"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, "aws4_request"] = scope[..] else {
        return Err(malformed(
            "Credential is not key/date/region/service/aws4_request",
        ));
    };
    Ok(AuthHeader {
        key_id: key_id.into(),
        date: date.into(),
        region: region.into(),
        service: service.into(),
        signed_headers: signed
            .ok_or_else(|| malformed("no SignedHeaders"))?
            .split(';')
            .map(str::to_string)
            .collect(),
        signature: signature.ok_or_else(|| malformed("no Signature"))?,
    })
}

/// The one value of `name`, as text.
fn header<'a>(rec: &'a Recorded, name: &str) -> Result<&'a str, SigV4Rejection> {
    let values: Vec<_> = rec.headers.get_all(name).iter().collect();
    match values[..] {
        [one] => one
            .to_str()
            .map_err(|_| fail("InvalidRequest", format!("{name} is not text"))),
        [] => Err(fail("MissingSecurityHeader", format!("no {name}"))),
        _ => Err(fail(
            "InvalidRequest",
            format!("{name} sent {} times", values.len()),
        )),
    }
}

/// Verifies one request; `Ok` when AWS would accept its signature.
pub fn verify(rec: &Recorded, rules: &SigV4Rules) -> Result<(), SigV4Rejection> {
    let auth = parse_authorization(header(rec, "authorization")?)?;
    if auth.key_id != rules.key_id {
        return Err(fail("InvalidAccessKeyId", "unknown access key ID"));
    }
    if auth.region != rules.region || auth.service != rules.service {
        return Err(fail(
            "AuthorizationHeaderMalformed",
            "wrong region or service in the scope",
        ));
    }
    let amz_date = header(rec, "x-amz-date")?;
    if amz_date.len() != 16 || !amz_date.starts_with(&auth.date) {
        return Err(fail(
            "AuthorizationHeaderMalformed",
            "the scope date is not X-Amz-Date's",
        ));
    }
    let skew = seconds_from_now(amz_date)
        .ok_or_else(|| fail("AccessDenied", "X-Amz-Date is not YYYYMMDDTHHMMSSZ"))?;
    if skew.abs() > 15 * 60 {
        return Err(fail("RequestTimeTooSkewed", format!("{skew}s from now")));
    }
    let signed = &auth.signed_headers;
    let mut sorted = signed.clone();
    sorted.sort();
    sorted.dedup();
    if sorted != *signed {
        return Err(fail(
            "AuthorizationHeaderMalformed",
            "SignedHeaders not sorted and unique",
        ));
    }
    for required in ["host", "x-amz-date", "x-amz-content-sha256"] {
        if !signed.iter().any(|h| h == required) {
            return Err(fail("AccessDenied", format!("{required} is not signed")));
        }
    }
    for name in rec.headers.keys() {
        let name = name.as_str();
        let must_sign =
            name.starts_with("x-amz-") || name == "content-type" || name == "content-md5";
        if must_sign && !signed.iter().any(|h| h == name) {
            return Err(fail(
                "AccessDenied",
                format!("There were headers present in the request which were not signed: {name}"),
            ));
        }
    }
    match (
        &rules.session_token,
        rec.headers.get("x-amz-security-token"),
    ) {
        (Some(want), Some(got)) if got == want.as_str() => {}
        (Some(_), _) => return Err(fail("InvalidToken", "missing or wrong session token")),
        (None, Some(_)) => return Err(fail("InvalidToken", "a session token for long-term keys")),
        (None, None) => {}
    }
    let payload = header(rec, "x-amz-content-sha256")?;
    if payload == "UNSIGNED-PAYLOAD" {
        if !rules.unsigned_payload {
            return Err(fail(
                "InvalidRequest",
                "unsigned payloads are not accepted here",
            ));
        }
    } else {
        let body = rec
            .body
            .as_ref()
            .ok_or_else(|| fail("InvalidRequest", "body too large for this stand-in"))?;
        let actual = hex::encode(Sha256::digest(body));
        if payload != actual {
            return Err(fail("XAmzContentSHA256Mismatch", "the body's hash differs"));
        }
    }
    let creq = canonical_request(rec, signed, payload, rules.service == "s3")?;
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(creq.as_bytes()))
    );
    let k_date = hmac(
        format!("AWS4{}", rules.secret).as_bytes(),
        auth.date.as_bytes(),
    );
    let k_region = hmac(&k_date, auth.region.as_bytes());
    let k_service = hmac(&k_region, auth.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let expected = hex::encode(hmac(&k_signing, sts.as_bytes()));
    if expected != auth.signature {
        return Err(fail(
            "SignatureDoesNotMatch",
            format!("the canonical request computed here:\n{creq}"),
        ));
    }
    Ok(())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// AWS's `UriEncode`: every byte but `A-Za-z0-9-_.~` as `%XX` (upper
/// case), and `/` kept when `path`.
fn uri_encode(bytes: &[u8], path: bool) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (path && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(s).collect()
}

fn canonical_request(
    rec: &Recorded,
    signed: &[String],
    payload: &str,
    s3: bool,
) -> Result<String, SigV4Rejection> {
    let path = rec.uri.path();
    let uri = if s3 {
        // S3: the object key as received, decoded and encoded once.
        uri_encode(&decode(path), true)
    } else {
        // Other services: RFC 3986 path normalisation, then the path as
        // received encoded again.
        let mut segments: Vec<&str> = Vec::new();
        for s in path.split('/') {
            match s {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => segments.push(s),
            }
        }
        let mut uri: String = segments
            .iter()
            .map(|s| format!("/{}", uri_encode(s.as_bytes(), false)))
            .collect();
        if uri.is_empty() || path.ends_with('/') {
            uri.push('/');
        }
        uri
    };
    let mut params: Vec<(String, String)> = rec
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&decode(k), false), uri_encode(&decode(v), false))
        })
        .collect();
    params.sort();
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut headers = String::new();
    for name in signed {
        let values: Vec<String> = rec
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| {
                let text = String::from_utf8_lossy(v.as_bytes());
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(fail(
                "AccessDenied",
                format!("signed header {name} is not in the request"),
            ));
        }
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    Ok(format!(
        "{}\n{uri}\n{}\n{headers}\n{}\n{payload}",
        rec.method,
        query.join("&"),
        signed.join(";")
    ))
}

/// Seconds between `amz_date` (`YYYYMMDDTHHMMSSZ`) and now.
fn seconds_from_now(amz_date: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| amz_date.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    // Days from 1970-01-01 (a civil calendar count, for this check only).
    let y_adj = if m <= 2 { y - 1 } else { y };
    let era = y_adj.div_euclid(400);
    let yoe = y_adj - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let then = days * 86_400 + hh * 3600 + mm * 60 + ss;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(then - now)
}
