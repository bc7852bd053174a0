//! `kind = "aws_sigv4"`: AWS Signature Version 4, in the `Authorization`
//! header.
//!
//! Each request is signed as it goes upstream: its method, path and query
//! as sent ([`canonical`]), and these headers, all set by sidekey in place
//! of any the client sent: `Host`, `X-Amz-Date`, `X-Amz-Content-Sha256`,
//! `X-Amz-Security-Token` (with a session token); plus, when the request
//! carries them, `Content-Type`, `Content-MD5` and every other `x-amz-*`
//! header (S3 refuses requests with unsigned `x-amz-*` headers).
//!
//! `X-Amz-Content-Sha256` is the body's SHA-256 (`payload = "signed"`:
//! the handler reads the body first, up to `max_signed_body`) or
//! `UNSIGNED-PAYLOAD` (the body streams). The signing key is derived once
//! per day ([`key`]); the canonical request and the string to sign are
//! hashed in the buffer they are written to ([`sha`]).
//!
//! Never printed: the secret key, the session token, the signature
//! (`Debug` shows the region, service and payload mode only).

pub(crate) mod canonical;
mod key;
mod sha;
#[cfg(test)]
mod tests;
mod time;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST};
use http::Method;
use secrecy::ExposeSecret;

#[cfg(test)]
use self::canonical::CanonicalRequest;
use self::canonical::UNSIGNED_PAYLOAD;
use self::key::KeyCache;
use super::hex::hex32;
use super::CredentialError;
use crate::config::{AwsSigV4Config, PayloadSigning};
use crate::target::Target;
use crate::wire::headers::ForwardHeaders;

const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
const X_AMZ_CONTENT_SHA256: HeaderName = HeaderName::from_static("x-amz-content-sha256");
const X_AMZ_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");

/// A route's SigV4 signer, built once at load.
pub struct SigV4 {
    /// The `X-Amz-Security-Token` value, marked sensitive.
    session_token: Option<HeaderValue>,
    region: String,
    service: String,
    /// S3 signs the path encoded once and not normalised.
    s3: bool,
    payload: PayloadSigning,
    max_signed_body: usize,
    keys: KeyCache,
}

impl std::fmt::Debug for SigV4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4")
            .field("region", &self.region)
            .field("service", &self.service)
            .field("payload", &self.payload)
            .field("session_token", &self.session_token.is_some())
            .finish_non_exhaustive()
    }
}

/// What signing produced besides the headers (for tests).
#[cfg(test)]
pub(crate) struct Signed {
    pub(crate) canonical_request: CanonicalRequest,
}

impl SigV4 {
    pub fn new(config: &AwsSigV4Config) -> Result<SigV4, crate::token::BuildError> {
        let session_token = match &config.session_token {
            Some(token) => {
                let mut value = HeaderValue::from_str(token.expose_secret()).map_err(|_| {
                    crate::token::BuildError::Invalid(
                        "the session token cannot be sent in a header".into(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(SigV4 {
            session_token,
            region: config.region.clone(),
            service: config.service.clone(),
            s3: config.service == "s3",
            payload: config.payload,
            max_signed_body: config.max_signed_body,
            keys: KeyCache::new(
                config.access_key_id.clone(),
                config.secret_access_key.clone(),
                config.region.clone(),
                config.service.clone(),
            ),
        })
    }

    /// The most body bytes read to hash a request's body; `None` when the
    /// body is not hashed (it streams).
    pub(crate) fn signed_body_limit(&self) -> Option<usize> {
        (self.payload == PayloadSigning::Signed).then_some(self.max_signed_body)
    }

    /// Signs the request about to be sent, at `unix` seconds. `body` is
    /// the whole body for `payload = "signed"` (`None`: empty).
    pub fn apply(
        &self,
        method: &Method,
        target: &Target,
        headers: &mut ForwardHeaders,
        body: Option<&[u8]>,
        unix: u64,
    ) -> Result<(), CredentialError> {
        use std::cell::RefCell;
        // The canonical request is written to one buffer per thread,
        // reused by every request the thread signs.
        thread_local! {
            static CANONICAL: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        CANONICAL.with_borrow_mut(|buf| {
            let signed = self.sign_into(buf, method, target, headers, body, unix);
            // A long URL made it big: not kept.
            if buf.capacity() > 16 * 1024 {
                *buf = Vec::new();
            }
            signed.map(drop)
        })
    }

    /// [`SigV4::apply`], keeping the canonical request (for tests).
    #[cfg(test)]
    pub(crate) fn sign(
        &self,
        method: &Method,
        target: &Target,
        headers: &mut ForwardHeaders,
        body: Option<&[u8]>,
        unix: u64,
    ) -> Result<Signed, CredentialError> {
        let mut bytes = Vec::new();
        let signed = self.sign_into(&mut bytes, method, target, headers, body, unix)?;
        Ok(Signed {
            canonical_request: CanonicalRequest::new(bytes, signed),
        })
    }

    /// Signs the request, writing its canonical request to `canonical`;
    /// returns where the `SignedHeaders` list is in it.
    fn sign_into(
        &self,
        canonical: &mut Vec<u8>,
        method: &Method,
        target: &Target,
        headers: &mut ForwardHeaders,
        body: Option<&[u8]>,
        unix: u64,
    ) -> Result<std::ops::Range<usize>, CredentialError> {
        let (amz_date, amz_date_value) = amz_date(unix)?;
        let mut date = [0u8; 8];
        date.copy_from_slice(&amz_date[..8]);
        let body_hash;
        let (payload_hash, payload_value): (&[u8], HeaderValue) = match self.payload {
            PayloadSigning::Unsigned => (
                UNSIGNED_PAYLOAD.as_bytes(),
                HeaderValue::from_static(UNSIGNED_PAYLOAD),
            ),
            PayloadSigning::Signed => {
                body_hash = hex32(&canonical::sha256(body.unwrap_or_default()));
                let value =
                    HeaderValue::from_bytes(&body_hash).map_err(|_| CredentialError::Unsignable)?;
                (&body_hash, value)
            }
        };
        // The handler has usually set `Host` to the upstream's already.
        if headers.added(&HOST).map(HeaderValue::as_bytes) != Some(target.authority.as_bytes()) {
            let host = HeaderValue::from_str(&target.authority)
                .map_err(|_| CredentialError::Unsignable)?;
            headers.insert(HOST, host);
        }
        // Clients rarely send `x-amz-*` fields or `Authorization`: one
        // look for any, instead of one per name set below.
        let (client_amz, client_authorization) =
            headers
                .client()
                .iter()
                .fold((false, false), |(amz, authorization), (name, _)| {
                    (
                        amz || is_amz(name),
                        authorization
                            || (name.len() == 13 && name.eq_ignore_ascii_case(b"authorization")),
                    )
                });
        let mut set =
            |name: HeaderName, value: HeaderValue| headers.set_where(client_amz, name, value);
        // In their canonical order: the headers are sorted as they are.
        set(X_AMZ_CONTENT_SHA256, payload_value);
        set(X_AMZ_DATE, amz_date_value);
        match &self.session_token {
            Some(token) => set(X_AMZ_SECURITY_TOKEN, token.clone()),
            // Each name left out costs a comparison per forwarded field:
            // only when the client sent one.
            None if client_amz && headers.client().contains(X_AMZ_SECURITY_TOKEN.as_str()) => {
                headers.remove(&X_AMZ_SECURITY_TOKEN)
            }
            None => {}
        }
        // `Authorization` is not among the signed headers: the client's
        // copy is replaced below, after signing.
        let signed = canonical::write_request(
            canonical,
            method.as_str(),
            target.path(),
            target.query(),
            self.s3,
            headers.iter_picked(is_signed),
            payload_hash,
        );
        let request_hash = hex32(&sha::sha256_in_place(self.keys.backend, canonical, 0));
        let authorization = self.keys.with_day(&date, |day| {
            // The string to sign goes after the canonical request, in
            // the same buffer, for as long as it is hashed.
            let end = canonical.len();
            for part in canonical::string_to_sign_parts(&amz_date, &day.scope_line, &request_hash) {
                canonical.extend_from_slice(part);
            }
            let signature = hex32(&sign_string_to_sign(day, unix, canonical, end));
            canonical.truncate(end);
            let parts: [&[u8]; 4] = [
                &day.authorization_prefix,
                &canonical[signed.clone()],
                b", Signature=",
                &signature,
            ];
            let mut authorization = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
            for part in parts {
                authorization.extend_from_slice(part);
            }
            authorization
        });
        let mut authorization =
            HeaderValue::try_from(authorization).map_err(|_| CredentialError::Unsignable)?;
        authorization.set_sensitive(true);
        headers.set_where(client_authorization, AUTHORIZATION, authorization);
        Ok(signed)
    }

    /// The signer with `backend` hashing (for tests: both are checked
    /// on any CPU).
    #[cfg(test)]
    pub(crate) fn with_backend(mut self, backend: sha::Backend) -> SigV4 {
        self.keys.backend = backend;
        self
    }

    #[cfg(test)]
    pub(crate) fn keys_derived(&self) -> u64 {
        self.keys.derived()
    }
}

/// `X-Amz-Date` of `unix` seconds, as bytes and as a header value, made
/// once per second per thread (the requests a thread signs in that
/// second share the value).
fn amz_date(unix: u64) -> Result<([u8; 16], HeaderValue), CredentialError> {
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<Option<(u64, [u8; 16], HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some((at, text, value)) = last.as_ref() {
            if *at == unix {
                return Ok((*text, value.clone()));
            }
        }
        let text = time::amz_date(unix);
        let value = HeaderValue::from_bytes(&text).map_err(|_| CredentialError::Unsignable)?;
        *last = Some((unix, text, value.clone()));
        Ok((text, value))
    })
}

/// The HMAC of the string to sign, `buf[from..]`, under the day's key.
/// Its first block (the algorithm, `X-Amz-Date`, the start of the scope)
/// changes once a second: the hash's state after it is kept per thread,
/// for the second and the day it was made for, so the requests a thread
/// signs in one second hash it once.
fn sign_string_to_sign(day: &key::Day, unix: u64, buf: &mut Vec<u8>, from: usize) -> [u8; 32] {
    use std::cell::Cell;
    thread_local! {
        static FIRST_BLOCK: Cell<Option<(u64, u64, [u32; 8])>> = const { Cell::new(None) };
    }
    // A scope shorter than 30 bytes leaves less than a block: no state
    // kept.
    let Some(first) = buf.get(from..from + 64) else {
        return day.key.sign_in_place(buf, from);
    };
    // `None` when `ring` hashes (no SHA extensions): it takes the whole
    // string.
    let state = FIRST_BLOCK.with(|kept| match kept.get() {
        Some((id, at, state)) if id == day.id && at == unix => Some(state),
        _ => {
            let state = day.key.after_first_block(first)?;
            kept.set(Some((day.id, unix, state)));
            Some(state)
        }
    });
    match state {
        Some(state) => day.key.sign_rest_in_place(state, buf, from + 64),
        None => day.key.sign_in_place(buf, from),
    }
}

/// Whether a header sent upstream is signed: `host`, `content-type`,
/// `content-md5` and every `x-amz-*`. Told apart by length first: this
/// runs for every field sent.
fn is_signed(name: &[u8]) -> bool {
    match name.len() {
        4 => name.eq_ignore_ascii_case(b"host"),
        11 => name.eq_ignore_ascii_case(b"content-md5") || is_amz(name),
        12 => name.eq_ignore_ascii_case(b"content-type") || is_amz(name),
        _ => is_amz(name),
    }
}

/// Whether `name` is an `x-amz-*` name (any case).
fn is_amz(name: &[u8]) -> bool {
    // Six bytes at once, lowered by setting bit 5: that lowers `A-Z`
    // and keeps `-`; of the bytes a field name may hold (a token), only
    // `X` and `x` then read `x`, and so on (CR would read `-`, but no
    // name holds one).
    const PREFIX: u64 = u64::from_le_bytes(*b"x-amz-\0\0");
    const LOWER: u64 = 0x0000_2020_2020_2020;
    let Some(head) = name.get(..6).filter(|_| name.len() > 6) else {
        return false;
    };
    let mut word = [0u8; 8];
    word[..6].copy_from_slice(head);
    u64::from_le_bytes(word) | LOWER == PREFIX
}

/// What `sidekey sign` prints for a SigV4 route: the request line and
/// the headers sidekey sets, with the signature and the session token
/// redacted.
pub(crate) fn describe_signed(
    method: &Method,
    target: &Target,
    headers: &ForwardHeaders,
) -> String {
    use std::fmt::Write;
    let mut out = format!("{method} {}\n", target.url());
    for (name, value) in headers.iter() {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = String::from_utf8_lossy(value);
        let shown = match name.as_str() {
            "x-amz-security-token" => "[REDACTED]".to_string(),
            "authorization" => match value.find("Signature=") {
                Some(i) => format!("{}Signature=[REDACTED]", &value[..i]),
                None => "[REDACTED]".to_string(),
            },
            _ => value.into_owned(),
        };
        let _ = writeln!(out, "{name}: {shown}");
    }
    out
}
