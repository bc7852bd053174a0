//! `kind = "signed_url"`: Koupon Media's URL signing.
//!
//! `key_param=<key>` and `timestamp_param=<epoch seconds>` are appended after
//! the client's own parameters, then `signature_param=hex(HMAC(secret, URL))`
//! is appended last, where URL is the full upstream URL
//! (`scheme://host[:port]/path?query`) exactly as it will be sent.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;
use sha2::Sha256;

use thiserror::Error;

use crate::config::{AuthConfig, Config, SignAlgorithm, SignedUrlConfig};
use crate::target::{encode_query_component, Target};

/// Why `sidekey sign` could not sign a URL.
#[derive(Debug, Error)]
pub enum SignError {
    #[error("no route named {0:?}")]
    NoRoute(String),
    #[error("route {0:?} is not a signed_url or aws_sigv4 route")]
    NotSigned(String),
    #[error("not a URL or path: {0:?}")]
    BadUrl(String),
    #[error("not an HTTP method: {0:?}")]
    BadMethod(String),
    #[error("the request cannot be signed (its host is not a header value)")]
    Unsignable,
}

/// What `sidekey sign` prints for `route`: for a `signed_url` route the
/// signed URL, for an `aws_sigv4` route the signed request's line and
/// headers (signature and session token redacted). `method` is used by
/// SigV4 only.
pub fn sign(config: &Config, route: &str, method: &str, url: &str) -> Result<String, SignError> {
    let r = config
        .route(route)
        .ok_or_else(|| SignError::NoRoute(route.to_string()))?;
    let AuthConfig::AwsSigV4(aws) = &r.auth else {
        return sign_url(config, route, url);
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|_| SignError::BadUrl(url.to_string()))?;
    let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| SignError::BadMethod(method.to_string()))?;
    let target = r
        .target(uri.host().unwrap_or_default(), uri.path(), uri.query())
        .ok_or_else(|| SignError::BadUrl(url.to_string()))?;
    let signer = super::SigV4::new(aws).map_err(|_| SignError::Unsignable)?;
    let mut headers = crate::wire::headers::ForwardHeaders::default();
    signer
        .apply(&method, &target, &mut headers, None, unix_now())
        .map_err(|_| SignError::Unsignable)?;
    Ok(super::sigv4::describe_signed(&method, &target, &headers))
}

/// The URL as the `signed_url` route `route` would send it, signed now.
/// `url` may be absolute (`http://host/path?q`) or a path (`/path?q`); only
/// its path and query are used, the route's upstream gives the rest.
pub fn sign_url(config: &Config, route: &str, url: &str) -> Result<String, SignError> {
    let r = config
        .route(route)
        .ok_or_else(|| SignError::NoRoute(route.to_string()))?;
    let AuthConfig::SignedUrl(signing) = &r.auth else {
        return Err(SignError::NotSigned(route.to_string()));
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|_| SignError::BadUrl(url.to_string()))?;
    let mut target = r
        .target(uri.host().unwrap_or_default(), uri.path(), uri.query())
        .ok_or_else(|| SignError::BadUrl(url.to_string()))?;
    SignedUrl::new(signing).apply(&mut target, unix_now());
    Ok(target.url())
}

pub struct SignedUrl {
    /// HMAC already keyed with the secret (done once at load); each
    /// signature clones it instead of deriving the key pads again.
    keyed: KeyedMac,
    /// key, timestamp and signature parameter names, in that order.
    params: [String; 3],
    /// `key_param=<key>&timestamp_param=`, encoded once at load: what each
    /// request appends before its timestamp.
    key_and_timestamp: SecretString,
    /// `signature_param=`, encoded.
    signature_prefix: String,
    algorithm: SignAlgorithm,
}

#[derive(Clone)]
enum KeyedMac {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
}

impl KeyedMac {
    fn new(algorithm: SignAlgorithm, secret: &[u8]) -> KeyedMac {
        match algorithm {
            SignAlgorithm::HmacSha1 => KeyedMac::Sha1(keyed(secret)),
            SignAlgorithm::HmacSha256 => KeyedMac::Sha256(keyed(secret)),
        }
    }
}

fn keyed<M: hmac::digest::KeyInit>(secret: &[u8]) -> M {
    // HMAC accepts keys of any length, so this cannot fail.
    M::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

impl std::fmt::Debug for SignedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedUrl")
            .field("params", &self.params)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl SignedUrl {
    pub fn new(config: &SignedUrlConfig) -> SignedUrl {
        let key_and_timestamp = format!(
            "{}={}&{}=",
            encode_query_component(&config.key_param),
            encode_query_component(config.key.expose_secret()),
            encode_query_component(&config.timestamp_param),
        );
        SignedUrl {
            keyed: KeyedMac::new(config.algorithm, config.secret.expose_secret().as_bytes()),
            params: [
                config.key_param.clone(),
                config.timestamp_param.clone(),
                config.signature_param.clone(),
            ],
            key_and_timestamp: SecretString::from(key_and_timestamp),
            signature_prefix: format!("{}=", encode_query_component(&config.signature_param)),
            algorithm: config.algorithm,
        }
    }

    /// The names of the three parameters this route injects.
    pub(crate) fn params(&self) -> &[String] {
        &self.params
    }

    /// The signature parameter's name (its value is scrubbed from
    /// responses).
    pub(crate) fn signature_param(&self) -> &[String] {
        &self.params[2..]
    }

    /// Signs `target` as of `timestamp` (epoch seconds): its parameters
    /// are appended to the query in place, and the URL is fed to the HMAC
    /// in its parts, without building it.
    pub fn apply(&self, target: &mut Target, timestamp: u64) {
        target.remove_params(&self.params);
        // Room for '&', the key and timestamp (at most 20 digits), '&' and
        // the signature: at most one allocation.
        target.reserve(
            self.key_and_timestamp.expose_secret().len()
                + 20
                + self.signature_prefix.len()
                + 2
                + MAX_HEX,
        );
        let mut digits = itoa::Buffer::new();
        target.append_encoded(&[
            self.key_and_timestamp.expose_secret(),
            digits.format(timestamp),
        ]);
        let scheme = target.scheme.as_str();
        let url = [scheme, "://", &target.authority, target.origin_form()];
        let mut hex = [0u8; MAX_HEX];
        let signature = self.keyed.sign_hex(&url, &mut hex);
        target.append_encoded(&[&self.signature_prefix, signature]);
    }

    /// hex(HMAC(secret, message)).
    #[cfg(test)]
    pub(crate) fn sign(&self, message: &str) -> String {
        let mut hex = [0u8; MAX_HEX];
        self.keyed.sign_hex(&[message], &mut hex).to_string()
    }
}

/// The longest signature in hex: HMAC-SHA256's.
const MAX_HEX: usize = 64;

impl KeyedMac {
    /// hex(HMAC(secret, the concatenation of `parts`)), written into `out`.
    fn sign_hex<'a>(&self, parts: &[&str], out: &'a mut [u8; MAX_HEX]) -> &'a str {
        match self {
            KeyedMac::Sha1(mac) => hmac_hex(mac.clone(), parts, out),
            KeyedMac::Sha256(mac) => hmac_hex(mac.clone(), parts, out),
        }
    }
}

fn hmac_hex<'a, M: Mac>(mut mac: M, parts: &[&str], out: &'a mut [u8; MAX_HEX]) -> &'a str {
    for part in parts {
        mac.update(part.as_bytes());
    }
    // SHA-1 and SHA-256 digests are 20 and 32 bytes: `out` has room.
    super::hex::encode_into(&mac.finalize().into_bytes(), out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::uri::Scheme;

    const KEY: &str = "6348256714038520009a57d1d2-5188-457b-854b-86aafea65fc5";
    const SECRET: &str = "4623B7B8-18A6-4B2C-B2C1-18157F5C4AFE";

    fn koupon(algorithm: SignAlgorithm) -> SignedUrl {
        SignedUrl::new(&SignedUrlConfig {
            key: SecretString::from(KEY),
            secret: SecretString::from(SECRET),
            key_param: "identifier".into(),
            timestamp_param: "timestamp".into(),
            signature_param: "authSignature".into(),
            algorithm,
        })
    }

    fn target(authority: &str, path: &str, query: &str) -> Target {
        Target::new(Scheme::HTTP, authority.into(), path, query)
    }

    #[test]
    fn koupon_document_procedure() {
        // The document's URL and secret; its openssl command gives 8547acaa...
        // (the document's printed efe13eb5... cannot be reproduced).
        let mut t = target("consumer.kouponmedia.com", "/v2/consumer", "");
        koupon(SignAlgorithm::HmacSha1).apply(&mut t, 1400606387);
        assert_eq!(
            t.url(),
            format!(
                "http://consumer.kouponmedia.com/v2/consumer?identifier={KEY}&timestamp=1400606387&authSignature=8547acaa441306a5718ea82e11697debee68d2ea"
            )
        );
    }

    #[test]
    fn signs_after_the_clients_parameters_and_replaces_client_copies() {
        let s = koupon(SignAlgorithm::HmacSha1);
        let mut t = target(
            "consumer.kouponmedia.com:8080",
            "/base/v2/offers",
            "zip=10001&authSignature=forged&q=a%20b&zip=10002&timestamp=1",
        );
        s.apply(&mut t, 1700000000);
        let (signed, signature) = t.query().rsplit_once("&authSignature=").unwrap();
        assert_eq!(
            signed,
            format!("zip=10001&q=a%20b&zip=10002&identifier={KEY}&timestamp=1700000000")
        );
        let url = format!("http://consumer.kouponmedia.com:8080/base/v2/offers?{signed}");
        assert_eq!(signature, s.sign(&url));
        assert_eq!(signature.len(), 40);
    }

    #[test]
    fn sha256_variant() {
        let s = koupon(SignAlgorithm::HmacSha256);
        // Independent value: `printf %s "abc" | openssl dgst -sha256 -hmac "$SECRET"`.
        assert_eq!(
            s.sign("abc"),
            "160411197ca995e94ade184d40731e60fc3a194efdf1500cc1d30c7e309c1a64"
        );
    }

    #[test]
    fn debug_hides_key_and_secret() {
        let printed = format!("{:?}", koupon(SignAlgorithm::HmacSha1));
        assert!(
            !printed.contains(KEY) && !printed.contains(SECRET),
            "{printed}"
        );
    }
}
