//! The admin listener: `/healthz` (process up), `/readyz` (config loaded,
//! every listener bound, and, with `proxy.ready_requires_tokens`, every
//! token-based route holding a valid token) and `/metrics` (Prometheus
//! text).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::{ProxyBody, Shared};

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let metrics = shared.metrics.clone();
    crate::proxy::server::accept_loop(
        listener,
        shutdown,
        Duration::from_secs(1),
        &metrics,
        crate::proxy::server::Spawn::Here,
        move |_| {
            let shared = shared.clone();
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let service = service_fn(move |req| answer(shared.clone(), req));
            (builder, service, Duration::from_secs(10))
        },
    )
    .await;
}

async fn answer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" => {
            let runtime = shared.runtime.load();
            let listening = shared.listening.load(Ordering::Acquire);
            let tokens = !runtime.settings.ready_requires_tokens || runtime.tokens_ready();
            match (listening, tokens) {
                (true, true) => (StatusCode::OK, "text/plain", "ready\n".to_string()),
                (false, _) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "listeners not bound\n".to_string(),
                ),
                (true, false) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "a route has no valid token\n".to_string(),
                ),
            }
        }
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.metrics.encode(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}
