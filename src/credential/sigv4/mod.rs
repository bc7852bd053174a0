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
//! per day ([`key`]).
//!
//! Never printed: the secret key, the session token, the signature
//! (`Debug` shows the region, service and payload mode only).

pub(crate) mod canonical;
mod key;
#[cfg(test)]
mod tests;
mod time;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST};
use http::Method;
use secrecy::{ExposeSecret, SecretString};

use self::canonical::{CanonicalRequest, ALGORITHM, UNSIGNED_PAYLOAD};
use self::key::KeyCache;
use super::CredentialError;
use crate::config::{AwsSigV4Config, PayloadSigning};
use crate::target::Target;
use crate::wire::headers::ForwardHeaders;

const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
const X_AMZ_CONTENT_SHA256: HeaderName = HeaderName::from_static("x-amz-content-sha256");
const X_AMZ_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");

/// A route's SigV4 signer, built once at load.
pub struct SigV4 {
    access_key_id: SecretString,
    /// The `X-Amz-Security-Token` value, marked sensitive.
    session_token: Option<HeaderValue>,
    region: String,
    service: String,
    /// `/region/service/aws4_request`.
    scope_tail: String,
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

/// What signing produced, step by step (the steps for tests and
/// `sidekey sign`; the handler only keeps the headers).
#[cfg_attr(not(test), allow(dead_code))]
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
            access_key_id: config.access_key_id.clone(),
            session_token,
            region: config.region.clone(),
            service: config.service.clone(),
            scope_tail: canonical::scope_tail(&config.region, &config.service),
            s3: config.service == "s3",
            payload: config.payload,
            max_signed_body: config.max_signed_body,
            keys: KeyCache::new(
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
        self.sign(method, target, headers, body, unix).map(drop)
    }

    pub(crate) fn sign(
        &self,
        method: &Method,
        target: &Target,
        headers: &mut ForwardHeaders,
        body: Option<&[u8]>,
        unix: u64,
    ) -> Result<Signed, CredentialError> {
        let amz_date = time::amz_date(unix);
        let mut date = [0u8; 8];
        date.copy_from_slice(&amz_date[..8]);
        let payload_hash = match self.payload {
            PayloadSigning::Unsigned => HeaderValue::from_static(UNSIGNED_PAYLOAD),
            PayloadSigning::Signed => {
                let hash = canonical::hex32(&canonical::sha256(body.unwrap_or_default()));
                HeaderValue::from_bytes(&hash).map_err(|_| CredentialError::Unsignable)?
            }
        };
        // The handler has usually set `Host` to the upstream's already.
        if headers.added(&HOST).map(HeaderValue::as_bytes) != Some(target.authority.as_bytes()) {
            let host = HeaderValue::from_str(&target.authority)
                .map_err(|_| CredentialError::Unsignable)?;
            headers.insert(HOST, host);
        }
        headers.set_own(
            X_AMZ_DATE,
            HeaderValue::from_bytes(&amz_date).map_err(|_| CredentialError::Unsignable)?,
        );
        headers.set_own(X_AMZ_CONTENT_SHA256, payload_hash.clone());
        match &self.session_token {
            Some(token) => headers.set_own(X_AMZ_SECURITY_TOKEN, token.clone()),
            // Each name left out costs a comparison per forwarded field:
            // only when the client sent one.
            None if headers.client().contains(X_AMZ_SECURITY_TOKEN.as_str()) => {
                headers.remove(&X_AMZ_SECURITY_TOKEN)
            }
            None => {}
        }
        // `Authorization` is not among the signed headers: the client's
        // copy is replaced below, after signing.
        let canonical_request = canonical::request(
            method.as_str(),
            target.path(),
            target.query(),
            self.s3,
            headers.iter().filter(|(name, _)| is_signed(name)),
            payload_hash.to_str().unwrap_or(UNSIGNED_PAYLOAD),
        );
        let request_hash = canonical::hex32(&canonical::sha256(&canonical_request.bytes));
        let scope_tail = self.scope_tail.as_bytes();
        let string_to_sign =
            canonical::string_to_sign_parts(&amz_date, &date, scope_tail, &request_hash);
        let signature = canonical::hex32(&self.keys.sign(&date, &string_to_sign));
        let key_id = self.access_key_id.expose_secret().as_bytes();
        let signed_headers = canonical_request.signed_headers();
        let parts: [&[u8]; 10] = [
            ALGORITHM.as_bytes(),
            b" Credential=",
            key_id,
            b"/",
            &date,
            scope_tail,
            b", SignedHeaders=",
            signed_headers,
            b", Signature=",
            &signature,
        ];
        let mut authorization = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            authorization.extend_from_slice(part);
        }
        let mut authorization =
            HeaderValue::try_from(authorization).map_err(|_| CredentialError::Unsignable)?;
        authorization.set_sensitive(true);
        headers.set_own(AUTHORIZATION, authorization);
        Ok(Signed { canonical_request })
    }

    #[cfg(test)]
    pub(crate) fn keys_derived(&self) -> u64 {
        self.keys.derived()
    }
}

/// Whether a header sent upstream is signed: `host`, `content-type`,
/// `content-md5` and every `x-amz-*`.
fn is_signed(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"host")
        || name.eq_ignore_ascii_case(b"content-type")
        || name.eq_ignore_ascii_case(b"content-md5")
        || (name.len() > 6 && name[..6].eq_ignore_ascii_case(b"x-amz-"))
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
