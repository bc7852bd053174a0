//! One token HTTP request → a token and its lifetime.
//!
//! [`TokenFetcher`] is the one trait at the I/O edge: the cache
//! ([`super::cache`]) and the one-time pool ([`super::one_time`]) only call
//! `fetch()`, so they are unit-tested with a fake fetcher and paused time.
//! [`HttpFetcher`] is the real one: a request prepared once at load
//! ([`PreparedRequest`], header values and body already encoded) sent the
//! way proxied requests are ([`Upstreams`]: same TLS roots and `connect_to`,
//! kept-alive connections of the thread the fetch runs on), and a response
//! read by JSON pointers ([`ResponseSpec`]).
//!
//! Errors ([`FetchError`]) name the endpoint's host and what failed (status
//! code, "connection refused", "no token at /token"); never the URL's path
//! or query, a request value, or the response body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Uri};
use http_body_util::{BodyExt, Limited};
use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;

use super::BuildError;
use crate::client::connector::Identity;
use crate::client::pool::{Outgoing, SendError, Upstreams};
use crate::client::ProxyBody;
use crate::config::{EndpointConfig, TokenBody};
use crate::target::encode_query_component;
use crate::wire::headers::ForwardHeaders;

/// Token responses larger than this are refused (a token is a few hundred
/// bytes; a large body is not a token response).
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A token as one request to a token endpoint returned it.
pub struct Fetched {
    pub value: SecretString,
    /// How long it is valid from now; `None` = until the upstream rejects it.
    pub lifetime: Option<Duration>,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("value", &"[REDACTED]")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// Why one token request failed. Every message is safe to log and to show
/// to a client: host names, status codes and error kinds only.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FetchError {
    #[error("cannot connect to the token endpoint {host}: {cause}")]
    Connect { host: String, cause: String },
    #[error("the token endpoint {host} did not answer within {}", humantime::format_duration(*.timeout))]
    Timeout { host: String, timeout: Duration },
    #[error("the token request to {host} failed: {cause}")]
    Request { host: String, cause: String },
    #[error("the token endpoint {host} answered HTTP {status}{}", .oauth_error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Status {
        host: String,
        status: u16,
        /// An RFC 6749 `error` code from the body (`invalid_grant`), when
        /// it is one: a short lowercase word, never free text.
        oauth_error: Option<String>,
    },
    #[error("the token endpoint {host} answered with a body that is not JSON")]
    NotJson { host: String },
    #[error("no token at {pointer} in the response of {host}")]
    NoToken { host: String, pointer: String },
    #[error("the token at {pointer} in the response of {host} cannot be sent (empty or control characters)")]
    BadToken { host: String, pointer: String },
    #[error("the token endpoint {host} returned a token that has already expired")]
    Expired { host: String },
    /// A `source = "exec"` command failed (named by its program, never
    /// its arguments or output).
    #[error("the token command {program} {cause}")]
    Command { program: String, cause: String },
    /// `oauth2_code`: only a new `sidekey authorize` helps (no token
    /// stored, or its refresh token refused with `invalid_grant`).
    #[error("{0}")]
    NeedsAuthorize(String),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Fetched, FetchError>> + Send + 'a>>;

/// Gets one token: one HTTP request in production, a script in tests.
pub trait TokenFetcher: Send + Sync + 'static {
    fn fetch(&self) -> FetchFuture<'_>;
    /// The upstream answered 401 to `value`, a token this fetcher gave
    /// (the shared cache then drops it from Redis, if Redis still holds it).
    fn rejected(&self, _value: &SecretString) {}
}

/// A token request, encoded once at load.
#[derive(Clone)]
pub(crate) struct PreparedRequest {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    /// Credential-bearing values are marked sensitive.
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The client certificate presented to the endpoint.
    pub(crate) identity: Identity,
}

impl std::fmt::Debug for PreparedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedRequest")
            .field("method", &self.method)
            .field("url", &crate::redact::url_without_query(&self.uri))
            .finish_non_exhaustive()
    }
}

impl PreparedRequest {
    pub(crate) fn new(method: Method, uri: Uri) -> PreparedRequest {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        PreparedRequest {
            method,
            uri,
            headers,
            body: Bytes::new(),
            identity: Identity::NONE,
        }
    }

    /// The host named in errors and logs.
    pub(crate) fn host(&self) -> String {
        self.uri.host().unwrap_or("?").to_string()
    }

    /// Sets `Authorization: Basic base64(user:password)` (sensitive).
    pub(crate) fn basic(&mut self, user: &str, password: &str) -> Result<(), BuildError> {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let value = sensitive(&format!("Basic {encoded}"))?;
        self.headers.insert(AUTHORIZATION, value);
        Ok(())
    }

    /// Sets a header whose value may be a secret (always marked sensitive).
    pub(crate) fn header(
        &mut self,
        name: HeaderName,
        value: &SecretString,
    ) -> Result<(), BuildError> {
        let value = sensitive(value.expose_secret()).map_err(|_| {
            BuildError::Invalid(format!(
                "auth.token.headers.\"{name}\": not a valid header value"
            ))
        })?;
        self.headers.insert(name, value);
        Ok(())
    }

    /// An `application/x-www-form-urlencoded` body.
    pub(crate) fn form<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        self.body = Bytes::from(form_encode(pairs));
    }

    /// An `application/json` body.
    pub(crate) fn json(&mut self, value: &serde_json::Value) {
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.body = Bytes::from(value.to_string());
    }

    /// The request to send: over TLS or not, to which `host[:port]`, and
    /// what (`Host` is written from the authority).
    fn outgoing(&self) -> Result<(bool, &str, Outgoing), FetchError> {
        let https = match self.uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(FetchError::Internal("a token URL is http or https")),
        };
        let authority = self
            .uri
            .authority()
            .map(|a| a.as_str())
            .ok_or(FetchError::Internal("a token URL has a host"))?;
        let target = self
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        let mut headers = ForwardHeaders::default();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        let out = Outgoing {
            method: self.method.clone(),
            target,
            headers,
            // An empty body is no body (`ProxyBody::full` sees to it).
            body: ProxyBody::full(self.body.clone()),
        };
        Ok((https, authority, out))
    }
}

/// `k=v&k=v`, each part percent-encoded.
pub(crate) fn form_encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                encode_query_component(k),
                encode_query_component(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn sensitive(value: &str) -> Result<HeaderValue, BuildError> {
    let mut value = HeaderValue::try_from(value)
        .map_err(|_| BuildError::Invalid("a token request header value is not valid".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Where the token and its lifetime are in a JSON response.
#[derive(Debug, Clone)]
pub(crate) struct ResponseSpec {
    /// JSON pointer to the token (`/token`, `/access_token`).
    pub(crate) token_pointer: String,
    /// JSON pointer to a lifetime in seconds (`/expires_in`).
    pub(crate) expires_in_pointer: Option<String>,
    /// Lifetime when the response carries none; `None` = until rejected.
    pub(crate) ttl: Option<Duration>,
}

/// Reads a token response. Pure: unit-tested without a server.
pub(crate) fn parse_response(
    host: &str,
    status: u16,
    body: &[u8],
    spec: &ResponseSpec,
) -> Result<Fetched, FetchError> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        let oauth_error = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(|e| e.as_str())
            .filter(|e| {
                !e.is_empty()
                    && e.len() <= 40
                    && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .map(str::to_string);
        return Err(FetchError::Status {
            host: host.to_string(),
            status,
            oauth_error,
        });
    }
    let json = json.ok_or_else(|| FetchError::NotJson {
        host: host.to_string(),
    })?;
    let token = json
        .pointer(&spec.token_pointer)
        .and_then(|v| v.as_str())
        .ok_or_else(|| FetchError::NoToken {
            host: host.to_string(),
            pointer: spec.token_pointer.clone(),
        })?;
    if token.is_empty() || token.chars().any(char::is_control) {
        return Err(FetchError::BadToken {
            host: host.to_string(),
            pointer: spec.token_pointer.clone(),
        });
    }
    let expires_in = spec
        .expires_in_pointer
        .as_deref()
        .and_then(|p| json.pointer(p))
        .and_then(seconds);
    let lifetime = expires_in.or(spec.ttl);
    if lifetime.is_some_and(|l| l.is_zero()) {
        return Err(FetchError::Expired {
            host: host.to_string(),
        });
    }
    Ok(Fetched {
        value: SecretString::from(token.to_string()),
        lifetime,
    })
}

/// A lifetime in seconds: a JSON number or a numeric string.
fn seconds(value: &serde_json::Value) -> Option<Duration> {
    let secs = match value {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (0.0..1e10)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

/// Sends `req` and reads the whole (bounded) response. Connection, timeout
/// and read failures become [`FetchError`]s that name only the host.
pub(crate) async fn send(
    upstreams: &Upstreams,
    req: &PreparedRequest,
    timeout: Duration,
) -> Result<(u16, Bytes), FetchError> {
    let host = req.host();
    let (https, authority, mut out) = req.outgoing()?;
    let exchange = async {
        let now = tokio::time::Instant::now();
        let response = upstreams
            .send(https, authority, req.identity, &mut out, now, timeout)
            .await
            .map_err(|e| send_error(&host, timeout, e))?;
        let status = response.status.as_u16();
        let body = Limited::new(response.body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| FetchError::Request {
                host: host.clone(),
                cause: if e.is::<http_body_util::LengthLimitError>() {
                    format!("the response is larger than {MAX_RESPONSE_BYTES} bytes")
                } else {
                    "the response body could not be read".to_string()
                },
            })?
            .to_bytes();
        Ok((status, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout { host, timeout }),
    }
}

/// Names a send error by what failed: connecting, or the exchange. Its
/// text is an I/O or TLS cause, which holds no request data.
fn send_error(host: &str, timeout: Duration, e: SendError) -> FetchError {
    let host = host.to_string();
    match e {
        SendError::Timeout => FetchError::Timeout { host, timeout },
        e if e.is_connect() => FetchError::Connect {
            host,
            cause: e.to_string(),
        },
        e => FetchError::Request {
            host,
            cause: e.to_string(),
        },
    }
}

/// The identity of `tls` (none when `None`) in `upstreams`.
pub(crate) fn identity(
    upstreams: &Upstreams,
    tls: Option<&crate::config::ClientTls>,
) -> Result<Identity, BuildError> {
    upstreams
        .identity(tls.map(|t| &*t.identity))
        .ok_or_else(|| BuildError::Invalid("the client certificate is not loaded".into()))
}

/// A token endpoint reached over HTTP(S).
pub(crate) struct HttpFetcher {
    upstreams: Arc<Upstreams>,
    request: PreparedRequest,
    spec: ResponseSpec,
    timeout: Duration,
}

impl HttpFetcher {
    pub(crate) fn new(
        upstreams: Arc<Upstreams>,
        request: PreparedRequest,
        spec: ResponseSpec,
        timeout: Duration,
    ) -> HttpFetcher {
        HttpFetcher {
            upstreams,
            request,
            spec,
            timeout,
        }
    }

    /// The fetcher of an `endpoint` token source.
    pub(crate) fn endpoint(
        upstreams: Arc<Upstreams>,
        config: &EndpointConfig,
    ) -> Result<Self, BuildError> {
        let mut request = PreparedRequest::new(config.method.clone(), config.url.clone());
        request.identity = identity(&upstreams, config.client_tls.as_ref())?;
        if let Some((user, password)) = &config.basic {
            request.basic(user.expose_secret(), password.expose_secret())?;
        }
        match &config.body {
            None => {}
            Some(TokenBody::Json(json)) => request.json(&json.0),
            Some(TokenBody::Form(pairs)) => {
                request.form(pairs.iter().map(|(k, v)| (k.as_str(), v.expose_secret())))
            }
        }
        // Configured headers last: they may override Accept or Content-Type.
        for (name, value) in &config.headers {
            request.header(name.clone(), value)?;
        }
        let spec = ResponseSpec {
            token_pointer: config.token_pointer.clone(),
            expires_in_pointer: config.expires_in_pointer.clone(),
            ttl: config.ttl,
        };
        Ok(HttpFetcher::new(upstreams, request, spec, config.timeout))
    }
}

impl TokenFetcher for HttpFetcher {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let (status, body) = send(&self.upstreams, &self.request, self.timeout).await?;
            parse_response(&self.request.host(), status, &body, &self.spec)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ttl: Option<u64>) -> ResponseSpec {
        ResponseSpec {
            token_pointer: "/token".into(),
            expires_in_pointer: Some("/expires_in".into()),
            ttl: ttl.map(Duration::from_secs),
        }
    }

    #[test]
    fn reads_the_token_at_the_pointer_and_the_lifetime() {
        let f =
            parse_response("h", 200, br#"{"token":"abc","expires_in":30}"#, &spec(None)).unwrap();
        assert_eq!(f.value.expose_secret(), "abc");
        assert_eq!(f.lifetime, Some(Duration::from_secs(30)));
        let f = parse_response(
            "h",
            200,
            br#"{"token":"abc","expires_in":"7"}"#,
            &spec(None),
        )
        .unwrap();
        assert_eq!(f.lifetime, Some(Duration::from_secs(7)));
    }

    #[test]
    fn falls_back_to_ttl_then_to_until_rejected() {
        let f = parse_response("h", 200, br#"{"token":"abc"}"#, &spec(Some(900))).unwrap();
        assert_eq!(f.lifetime, Some(Duration::from_secs(900)));
        let f = parse_response("h", 200, br#"{"token":"abc"}"#, &spec(None)).unwrap();
        assert_eq!(f.lifetime, None);
    }

    #[test]
    fn the_invoca_response() {
        let body = br#"{"token": "bpD8HmLcCxzSiOX01v4XbZr4_s", "id": 1}"#;
        let f = parse_response("invoca.net", 200, body, &spec(None)).unwrap();
        assert_eq!(f.value.expose_secret(), "bpD8HmLcCxzSiOX01v4XbZr4_s");
    }

    #[test]
    fn errors_name_the_cause_never_the_body() {
        let secret_body = br#"{"error":"invalid_client","error_description":"secret s3cr3t wrong","token":"t0k"}"#;
        let e = parse_response("auth.example", 401, secret_body, &spec(None)).unwrap_err();
        let msg = e.to_string();
        assert_eq!(
            msg,
            "the token endpoint auth.example answered HTTP 401 (invalid_client)"
        );
        let e = parse_response("h", 500, b"<html>s3cr3t</html>", &spec(None)).unwrap_err();
        assert_eq!(e.to_string(), "the token endpoint h answered HTTP 500");
        let e = parse_response("h", 200, b"s3cr3t", &spec(None)).unwrap_err();
        assert!(matches!(e, FetchError::NotJson { .. }));
        assert!(!e.to_string().contains("s3cr3t"));
        let e = parse_response("h", 200, br#"{"tok":"s3cr3t"}"#, &spec(None)).unwrap_err();
        assert_eq!(e.to_string(), "no token at /token in the response of h");
        let e = parse_response("h", 200, br#"{"token":"a\nb"}"#, &spec(None)).unwrap_err();
        assert!(matches!(e, FetchError::BadToken { .. }));
        assert!(!e.to_string().contains("a\nb"));
        let e =
            parse_response("h", 200, br#"{"token":"x","expires_in":0}"#, &spec(None)).unwrap_err();
        assert!(matches!(e, FetchError::Expired { .. }));
    }

    #[test]
    fn free_text_in_the_error_field_is_not_repeated() {
        let e = parse_response("h", 400, br#"{"error":"Bad secret: hunter2"}"#, &spec(None))
            .unwrap_err();
        assert_eq!(e.to_string(), "the token endpoint h answered HTTP 400");
    }

    #[test]
    fn form_bodies_are_percent_encoded() {
        assert_eq!(
            form_encode([("grant_type", "client_credentials"), ("scope", "a b&c")]),
            "grant_type=client_credentials&scope=a%20b%26c"
        );
    }

    #[test]
    fn basic_and_headers_are_sensitive() {
        let mut req = PreparedRequest::new(Method::POST, "https://x.example/t".parse().unwrap());
        req.basic("u", "p").unwrap();
        req.header(
            HeaderName::from_static("oauth_key_secret"),
            &SecretString::from("4faeaf752ee40a0f"),
        )
        .unwrap();
        assert_eq!(req.headers[AUTHORIZATION], "Basic dTpw");
        assert!(req.headers[AUTHORIZATION].is_sensitive());
        assert!(req.headers["oauth_key_secret"].is_sensitive());
        let debug = format!("{req:?}");
        assert!(
            !debug.contains("dTpw") && !debug.contains("4faeaf"),
            "{debug}"
        );
    }
}
