//! [`ProxyError`]: every way a proxied request can fail, and the one place
//! that maps each to a status code and a JSON body.
//!
//! Bodies name the route and the cause, never a credential: causes are
//! built from error kinds and config names, not from request or token
//! values.

use std::time::Duration;

use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use thiserror::Error;

use crate::client::pool::{ReplyBody, SendError};
use crate::credential::CredentialError;
use crate::proxy::Reply;
use crate::token::TokenError;
use crate::wire::h1::request::RequestError;
use crate::wire::h1::response::HeadError;

#[derive(Debug, Error)]
pub(crate) enum ProxyError {
    #[error("no route for host {host:?}; sidekey only forwards to configured hosts")]
    NoRoute { host: String },
    #[error("the request names no host (send an absolute http:// URL or a Host header)")]
    NoHost,
    /// On a route's own listener, a path outside its `path_prefix`.
    #[error("this listener serves only paths under {prefix:?}")]
    OutsidePrefix { prefix: String },
    #[error(
        "CONNECT (an https:// URL through the proxy) needs [proxy.intercept] with a local CA (see `sidekey ca init`); or send plain http:// URLs to sidekey, which adds the credentials and upgrades to TLS itself"
    )]
    Connect,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("{0}")]
    HeadTooLarge(String),
    #[error("no credential available: {0}")]
    Credential(#[source] CredentialError),
    #[error("cannot connect to the upstream: {0}")]
    UpstreamConnect(#[source] SendError),
    #[error("the upstream did not answer within {0:?}")]
    UpstreamTimeout(Duration),
    #[error("the upstream request failed: {0}")]
    Upstream(#[source] SendError),
    #[error("the upstream's response head cannot be forwarded: {0}")]
    UpstreamHead(#[source] HeadError),
    /// The client's request body failed: malformed (a bad chunk), or
    /// silent for `body_idle_timeout`.
    #[error("{}", if *.stalled { "the request body stalled: nothing arrived for body_idle_timeout" } else { "the request body is malformed or incomplete" })]
    RequestBody {
        stalled: bool,
        #[source]
        cause: SendError,
    },
    /// The request body is (or declares itself) larger than
    /// `max_request_body`.
    #[error("the request body is larger than max_request_body")]
    BodyTooLarge,
    /// Inside a TLS connection sidekey terminated for one host, a request
    /// for another (RFC 9110 15.5.20).
    #[error("this connection is for another host than {host:?}")]
    Misdirected { host: String },
    /// `TRACE` on a route that adds a credential: the upstream would
    /// echo it back.
    #[error("TRACE is not forwarded on a route that adds a credential (it would echo the credential back)")]
    TraceNotAllowed,
    /// The route's `[[route.allow]]` rules do not let the request through.
    #[error("the route's allow rules do not allow this method and path; nothing was forwarded")]
    NotAllowed,
    /// `payload = "signed"`: the body is longer than `max_signed_body`.
    #[error("the request body is larger than this route signs (max_signed_body = {limit} bytes); nothing was forwarded")]
    SignedBodyTooLarge { limit: usize },
}

impl ProxyError {
    /// The status code the client gets.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } | ProxyError::OutsidePrefix { .. } => StatusCode::FORBIDDEN,
            ProxyError::NoHost | ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::Connect => StatusCode::NOT_IMPLEMENTED,
            ProxyError::Credential(CredentialError::Token(TokenError::Unavailable { .. }))
            | ProxyError::Credential(CredentialError::Token(TokenError::NotConfigured(_))) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Credential(CredentialError::InvalidToken) => StatusCode::BAD_GATEWAY,
            ProxyError::Credential(CredentialError::Unsignable) => StatusCode::BAD_REQUEST,
            ProxyError::NotAllowed => StatusCode::FORBIDDEN,
            ProxyError::SignedBodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UpstreamConnect(_)
            | ProxyError::Upstream(_)
            | ProxyError::UpstreamHead(_) => StatusCode::BAD_GATEWAY,
            ProxyError::RequestBody { stalled: true, .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::RequestBody { stalled: false, .. } => StatusCode::BAD_REQUEST,
            ProxyError::TraceNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A short machine-readable code for the JSON body and logs.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. } | ProxyError::OutsidePrefix { .. } => "no_route",
            ProxyError::NoHost => "no_host",
            ProxyError::Connect => "connect_not_supported",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::HeadTooLarge(_) => "request_head_too_large",
            ProxyError::Credential(_) => "credential_unavailable",
            ProxyError::UpstreamConnect(_) => "upstream_unreachable",
            ProxyError::UpstreamTimeout(_) => "upstream_timeout",
            ProxyError::Upstream(_) | ProxyError::UpstreamHead(_) => "upstream_error",
            ProxyError::RequestBody { stalled: true, .. } => "request_body_timeout",
            ProxyError::RequestBody { stalled: false, .. } => "bad_request_body",
            ProxyError::TraceNotAllowed => "method_not_allowed",
            ProxyError::NotAllowed => "not_allowed",
            ProxyError::SignedBodyTooLarge { .. } => "payload_too_large",
            ProxyError::BodyTooLarge => "request_body_too_large",
            ProxyError::Misdirected { .. } => "misdirected_request",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ProxyError::Credential(CredentialError::Token(TokenError::Unavailable {
                retry_after,
                ..
            })) => Some(*retry_after),
            ProxyError::Credential(CredentialError::Token(TokenError::NotConfigured(_))) => {
                Some(60)
            }
            _ => None,
        }
    }

    /// The response sent to the client for this error on `route`.
    pub(crate) fn to_response(&self, route: Option<&str>) -> Response<ReplyBody> {
        let mut body = serde_json::json!({
            "error": self.code(),
            "route": route,
            "message": self.to_string(),
        });
        if let ProxyError::NoRoute { host } = self {
            body["host"] = serde_json::Value::String(host.clone());
        }
        let mut response = Response::new(ReplyBody::full(body.to_string()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("x-sidekey-error", HeaderValue::from_static(self.code()));
        if response_status_closes(self.status()) {
            // The request could not be framed or trusted: do not read
            // another one from the same connection.
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(secs) = self.retry_after() {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl ProxyError {
    /// [`ProxyError::to_response`] as a [`Reply`], which ends the
    /// connection when the response says `Connection: close`.
    pub(crate) fn to_reply(&self, route: Option<&str>) -> Reply {
        let mut reply = Reply::from(self.to_response(route));
        reply.close = response_status_closes(self.status());
        reply
    }
}

/// The answer to a request head that cannot be served.
pub(crate) fn bad_request(e: &RequestError) -> Reply {
    let err = match e {
        RequestError::TooLarge | RequestError::TooManyHeaders => {
            ProxyError::HeadTooLarge(e.to_string())
        }
        RequestError::Parse(_) => ProxyError::BadRequest("the request head could not be parsed"),
        RequestError::Invalid(what) => ProxyError::BadRequest(what),
    };
    err.to_reply(None)
}

fn response_status_closes(status: StatusCode) -> bool {
    status == StatusCode::BAD_REQUEST || status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn one_mapping_from_error_to_status_and_body() {
        let cases: Vec<(ProxyError, u16, &str)> = vec![
            (
                ProxyError::NoRoute {
                    host: "evil.example".into(),
                },
                403,
                "no_route",
            ),
            (ProxyError::NoHost, 400, "no_host"),
            (ProxyError::Connect, 501, "connect_not_supported"),
            (
                ProxyError::BadRequest("duplicate Host header"),
                400,
                "bad_request",
            ),
            (
                ProxyError::Credential(CredentialError::Token(TokenError::Unavailable {
                    cause: "token endpoint answered 500".into(),
                    retry_after: 5,
                })),
                503,
                "credential_unavailable",
            ),
            (
                ProxyError::UpstreamConnect(SendError::Connect(
                    crate::client::dial::ConnectError::DialTimeout,
                )),
                502,
                "upstream_unreachable",
            ),
            (
                ProxyError::UpstreamTimeout(Duration::from_secs(60)),
                504,
                "upstream_timeout",
            ),
            (
                ProxyError::Upstream(SendError::H1(
                    crate::wire::h1::client::H1Error::ClosedBeforeHead,
                )),
                502,
                "upstream_error",
            ),
            (
                ProxyError::RequestBody {
                    stalled: false,
                    cause: SendError::H1(crate::wire::h1::client::H1Error::RequestBodyLength),
                },
                400,
                "bad_request_body",
            ),
            (
                ProxyError::RequestBody {
                    stalled: true,
                    cause: SendError::H1(crate::wire::h1::client::H1Error::RequestBodyLength),
                },
                408,
                "request_body_timeout",
            ),
            (ProxyError::TraceNotAllowed, 405, "method_not_allowed"),
            (ProxyError::NotAllowed, 403, "not_allowed"),
            (
                ProxyError::SignedBodyTooLarge { limit: 1024 },
                413,
                "payload_too_large",
            ),
        ];
        for (err, status, code) in cases {
            let response = err.to_response(Some("copilot"));
            assert_eq!(response.status().as_u16(), status, "{err}");
            let retry = response.headers().get(RETRY_AFTER).cloned();
            let closes = response
                .headers()
                .get(http::header::CONNECTION)
                .is_some_and(|v| v == "close");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["error"], code);
            assert_eq!(json["route"], "copilot");
            assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
            if status == 503 {
                assert_eq!(retry.unwrap(), "5");
            }
            assert_eq!(
                closes,
                status == 400,
                "{code}: Connection: close only on 400"
            );
        }
    }
}
