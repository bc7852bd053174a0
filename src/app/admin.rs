//! The admin listener: `/healthz` (process up), `/readyz` (config loaded,
//! every listener bound, and, with `proxy.ready_requires_tokens`, every
//! token-based route holding a valid token), `/metrics` (Prometheus
//! text), `/status` (each route's credential state and traffic, JSON; see
//! [`super::status`]) and `/` (the same as a page).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use http::{Response, StatusCode};

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::accept::accept_here;
use super::status::model::collect;
use super::status::{page, ProcessInfo};
use crate::client::pool::ReplyBody;
use crate::proxy::{Reply, Shared};
use crate::wire::h1::request::RequestError;
use crate::wire::h1::server::{serve_once_spoken, ClientRequest, Limits};

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    process: Arc<ProcessInfo>,
    close: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) {
    // Not counted in `sidekey_active_connections`: that gauge is the
    // proxy's client connections.
    accept_here(
        listener,
        close,
        shutdown,
        Duration::from_secs(1),
        move |stream, _, stop, active| {
            let shared = shared.clone();
            let process = process.clone();
            async move {
                let _active = active;
                let service = |req| std::future::ready(answer(&shared, &process, req));
                serve_once_spoken(stream, limits(), stop, bad_request, service).await;
            }
        },
    )
    .await;
}

/// The admin listener's client limits (not configurable: its requests are
/// a path and nothing else).
fn limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(10),
        body_idle_timeout: Duration::from_secs(10),
        max_header_bytes: 16 * 1024,
        max_headers: 64,
        // Not counted: `sidekey_body_stalls_total` is the proxy's.
        stalls: Default::default(),
    }
}

fn bad_request(_: &RequestError) -> Reply {
    reply(
        StatusCode::BAD_REQUEST,
        "text/plain",
        "bad request\n".into(),
    )
}

fn answer(shared: &Shared, process: &ProcessInfo, req: ClientRequest) -> Reply {
    let (status, content_type, body) = match req.uri.path() {
        "/" => {
            let status = collect(&shared.runtime.load(), &shared.metrics, process);
            let mut page = response(
                StatusCode::OK,
                "text/html; charset=utf-8",
                page::render(&status),
            );
            if let Ok(csp) = HeaderValue::from_str(page::content_security_policy()) {
                page.headers_mut().insert(CONTENT_SECURITY_POLICY, csp);
            }
            return page.into();
        }
        "/status" => {
            let status = collect(&shared.runtime.load(), &shared.metrics, process);
            match serde_json::to_string(&status) {
                Ok(mut json) => {
                    json.push('\n');
                    (StatusCode::OK, "application/json", json)
                }
                Err(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "cannot encode the status\n".to_string(),
                ),
            }
        }
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
    reply(status, content_type, body)
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    response(status, content_type, body).into()
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<ReplyBody> {
    let mut response = Response::new(ReplyBody::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // What it says changes by the second, and is nobody else's to guess.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
