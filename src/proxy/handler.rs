//! One proxied request: find the route, rewrite the request for the
//! upstream, inject the credential, forward, and clean the response.
//!
//! [`handle`] is the outer function: it times the request, maps any
//! [`ProxyError`] to its response, counts it and writes the one access log
//! line. [`forward`] is the inner function that uses `?`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::h1::server::ClientRequest;
use super::headers::{strip_hop_by_hop, ForwardHeaders};
use super::host::RequestHost;
use super::pool::{Outgoing, SendError, UpstreamResponse};
use super::reply::{Reply, ReplyHead};
use super::{ProxyBody, Runtime, Shared};
use crate::config::{Forwarded, Unmatched};
use crate::credential::Applied;
use crate::error::ProxyError;
use crate::route::Route;
use crate::target::{scrub_link_header, scrub_url, Target};

/// Where a connection came in.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// Set on a route's dedicated listener: every request goes to it.
    pub route: Option<Arc<str>>,
}

/// Handles one request; never fails (errors become JSON responses).
pub async fn handle(shared: &Shared, conn: &ConnInfo, req: ClientRequest) -> Reply {
    let start = Instant::now();
    let runtime = shared.runtime.load_full();
    let method = req.method.clone();
    // Logged: the path only, never the query (it may carry credentials).
    let uri = req.uri.clone();
    let path = uri.path();
    let mut route: Option<Arc<Route>> = None;
    let result = forward(&runtime, conn, req, &mut route).await;
    let name = route.as_ref().map_or("-", |r| r.name());
    // Read only when the line is logged.
    let latency_ms = || start.elapsed().as_secs_f64() * 1000.0;
    // One access log line per request.
    let response = match result {
        Ok(response) => {
            let status = response.status.as_u16();
            tracing::info!(
                route = name,
                method = %method,
                path = %path,
                status,
                latency_ms = latency_ms(),
                "request"
            );
            response
        }
        Err(err) => {
            let response = Reply::from(err.to_response(route.as_ref().map(|r| r.name())));
            let status = response.status.as_u16();
            tracing::warn!(
                route = name,
                method = %method,
                path = %path,
                status,
                latency_ms = latency_ms(),
                error = err.code(),
                cause = %err,
                "request"
            );
            response
        }
    };
    let status = response.status.as_u16();
    let requests = route
        .as_ref()
        .map_or(&shared.unmatched_requests, |r| &r.requests);
    requests.inc(&shared.metrics, status);
    response
}

/// The host a request is for: the absolute-form URI's, else `Host`'s.
fn request_host(req: &ClientRequest) -> Result<RequestHost, ProxyError> {
    if let Some(authority) = req.uri.authority() {
        return Ok(RequestHost::from_uri(authority));
    }
    let value = req.fields.get_shared("host").ok_or(ProxyError::NoHost)?;
    RequestHost::from_header(value).ok_or(ProxyError::BadRequest(
        "the Host header is not a valid host[:port]",
    ))
}

async fn forward(
    runtime: &Runtime,
    conn: &ConnInfo,
    req: ClientRequest,
    matched: &mut Option<Arc<Route>>,
) -> Result<Reply, ProxyError> {
    if req.method == Method::CONNECT {
        return Err(ProxyError::Connect);
    }
    if req.fields.get_all("host").nth(1).is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if req.uri.path() == "*" || !req.uri.path().starts_with('/') {
        return Err(ProxyError::BadRequest("the request target must be a path"));
    }
    let host = request_host(&req);
    let route = match &conn.route {
        Some(name) => runtime.table.by_name(name),
        None => runtime.table.find(
            host.as_ref().map_or("", RequestHost::as_str),
            req.uri.path(),
        ),
    };
    let Some(route) = route.cloned() else {
        let host = host?;
        let host = host.as_str();
        return match runtime.settings.unmatched {
            Unmatched::Reject => Err(ProxyError::NoRoute {
                host: host.to_string(),
            }),
            Unmatched::Passthrough => passthrough(runtime, req, host).await,
        };
    };
    *matched = Some(route.clone());
    let host = match host {
        Ok(h) => Some(h),
        // On a dedicated listener the route names the host.
        Err(_) if conn.route.is_some() => None,
        Err(e) => return Err(e),
    };
    let host = host.as_ref().map_or("", RequestHost::as_str);
    let ClientRequest {
        method,
        uri,
        fields,
        body,
        ..
    } = req;
    let target = route
        .config
        .target(host, uri.path(), uri.query())
        .ok_or(ProxyError::NoHost)?;
    // The client's fields without hop-by-hop ones (left out as they are
    // written).
    let mut headers = ForwardHeaders::new(fields);
    // The upstream's own Host (built once per route; for a wildcard route
    // without `upstream`, the pool sets it from the request's host).
    match &route.host_header {
        Some(host) => headers.insert(header::HOST, host.clone()),
        None => headers.remove(&header::HOST),
    }
    headers.remove(&header::EXPECT);
    for (name, value) in &route.config.headers {
        if !headers.contains(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    add_forwarded(&mut headers, runtime.settings.forwarded, conn, host);

    // Keep small bodies when a 401 could be retried with a fresh token.
    let len = match route.credential.retries_on_401() {
        true => body_len(&headers).filter(|n| *n <= runtime.settings.retry_body_limit as u64),
        false => None,
    };
    let replay = if len == Some(0) {
        // Nothing to read (and nothing to wait for).
        Ok(Bytes::new())
    } else if len.is_some() {
        let bytes = Limited::new(body, runtime.settings.retry_body_limit)
            .collect()
            .await
            .map_err(|_| ProxyError::BadRequest("the request body could not be read"))?
            .to_bytes();
        Ok(bytes)
    } else {
        Err(ProxyBody::from(body))
    };

    let injected = route.credential.injected_params();
    let bytes = match replay {
        Ok(bytes) => bytes,
        Err(body) => {
            // Streamed body: no retry, but a 401 still invalidates the token.
            let (response, applied) =
                attempt(runtime, &route, &method, target, headers, body).await?;
            if response.status == StatusCode::UNAUTHORIZED {
                route.credential.reject(&applied);
            }
            return clean_response(response, injected);
        }
    };
    // The copies are for the retry; the first attempt takes the originals,
    // whose header map has room for the credential (a fresh clone is
    // exactly full, and inserting into it reallocates).
    let retry = (target.clone(), headers.clone());
    let (response, applied) = attempt(
        runtime,
        &route,
        &method,
        target,
        headers,
        ProxyBody::full(bytes.clone()),
    )
    .await?;
    if response.status == StatusCode::UNAUTHORIZED && route.credential.reject(&applied) {
        tracing::info!(
            route = route.name(),
            "upstream answered 401; retrying once with a fresh token"
        );
        let (target, headers) = retry;
        let (response, _) = attempt(
            runtime,
            &route,
            &method,
            target,
            headers,
            ProxyBody::full(bytes),
        )
        .await?;
        return clean_response(response, injected);
    }
    clean_response(response, injected)
}

/// Applies the credential and sends one request upstream.
async fn attempt(
    runtime: &Runtime,
    route: &Route,
    method: &Method,
    mut target: Target,
    mut headers: ForwardHeaders,
    body: ProxyBody,
) -> Result<(UpstreamResponse, Applied), ProxyError> {
    let applied = route
        .credential
        .apply(&mut target, &mut headers)
        .await
        .map_err(ProxyError::Credential)?;
    let request = Outgoing {
        method: method.clone(),
        target: target.origin_form(),
        headers,
        body,
    };
    let sent = tokio::time::Instant::now();
    let response = send(runtime, target.is_https(), &target.authority, request, sent).await?;
    if let Some(histogram) = &route.upstream_latency {
        histogram.observe(sent.elapsed().as_secs_f64());
    }
    Ok((response, applied))
}

/// Forwards a request for an unconfigured host unchanged (opt-in).
async fn passthrough(
    runtime: &Runtime,
    req: ClientRequest,
    host: &str,
) -> Result<Reply, ProxyError> {
    let authority = match req.uri.authority() {
        Some(a) => a.to_string(),
        None => req
            .fields
            .get("host")
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or(host)
            .to_string(),
    };
    let https = req.uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let mut headers = ForwardHeaders::new(req.fields);
    headers.remove(&header::HOST);
    let request = Outgoing {
        target: req
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string()),
        method: req.method,
        headers,
        body: ProxyBody::from(req.body),
    };
    let response = send(
        runtime,
        https,
        &authority,
        request,
        tokio::time::Instant::now(),
    )
    .await?;
    clean_response(response, &[])
}

/// The body length when it is known and small enough to matter: `Some(0)`
/// for a request with no body, `Some(n)` for `Content-Length: n`, `None`
/// for a chunked body.
fn body_len(headers: &ForwardHeaders) -> Option<u64> {
    if headers.client_value("transfer-encoding").is_some() {
        return None;
    }
    match headers.client_value("content-length") {
        None => Some(0),
        Some(v) => std::str::from_utf8(v).ok()?.parse().ok(),
    }
}

fn add_forwarded(headers: &mut ForwardHeaders, mode: Forwarded, conn: &ConnInfo, host: &str) {
    match mode {
        Forwarded::None => {}
        Forwarded::Via => {
            headers.append(header::VIA, HeaderValue::from_static("1.1 sidekey"));
        }
        Forwarded::XForwarded => {
            let peer = conn.peer.ip().to_string();
            let prior = headers
                .client_value("x-forwarded-for")
                .and_then(|v| std::str::from_utf8(v).ok());
            let xff = match prior {
                Some(prior) => format!("{prior}, {peer}"),
                None => peer,
            };
            if let Ok(v) = HeaderValue::try_from(xff) {
                headers.insert(HeaderName::from_static("x-forwarded-for"), v);
            }
            if let Ok(v) = HeaderValue::try_from(host) {
                headers.insert(HeaderName::from_static("x-forwarded-host"), v);
            }
            headers.insert(
                HeaderName::from_static("x-forwarded-proto"),
                HeaderValue::from_static("http"),
            );
        }
    }
}

/// Sends with the request timeout, mapping failures to [`ProxyError`].
async fn send(
    runtime: &Runtime,
    https: bool,
    authority: &str,
    req: Outgoing,
    now: tokio::time::Instant,
) -> Result<UpstreamResponse, ProxyError> {
    let timeout = runtime.settings.request_timeout;
    match runtime
        .upstreams
        .send(https, authority, req, now, timeout)
        .await
    {
        Ok(response) => Ok(response),
        Err(SendError::Timeout) => Err(ProxyError::UpstreamTimeout(timeout)),
        Err(SendError::Connect(cause)) => Err(ProxyError::UpstreamConnect(cause)),
        Err(SendError::Upstream(cause)) => Err(ProxyError::Upstream(cause)),
        Err(SendError::BadAuthority) => Err(ProxyError::BadRequest(
            "the upstream host cannot be forwarded to",
        )),
        Err(SendError::BadTarget) => Err(ProxyError::BadRequest(
            "the request path cannot be forwarded",
        )),
    }
}

/// Strips hop-by-hop headers and removes injected query parameters from
/// URLs the upstream sends back. An HTTP/1.1 upstream's fields are passed
/// on as they came (the connection leaves out the hop-by-hop ones as it
/// writes them) unless a URL in them needs scrubbing.
fn clean_response(response: UpstreamResponse, injected: &[String]) -> Result<Reply, ProxyError> {
    let UpstreamResponse { status, head, body } = response;
    let scrubbed = [header::LOCATION, header::CONTENT_LOCATION, header::LINK];
    let mut headers = match head {
        ReplyHead::Upstream(raw)
            if injected.is_empty() || !scrubbed.iter().any(|name| raw.contains(name.as_str())) =>
        {
            return Ok(Reply {
                status,
                head: ReplyHead::Upstream(raw),
                body: body.into(),
            });
        }
        ReplyHead::Upstream(raw) => raw
            .to_header_map(0)
            .ok_or(super::h1::response::HeadError::Header)
            .map_err(|e| ProxyError::Upstream(e.to_string()))?,
        ReplyHead::Map(headers) => headers,
    };
    strip_hop_by_hop(&mut headers);
    if !injected.is_empty() {
        for name in scrubbed {
            let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
            if values.is_empty() {
                continue;
            }
            headers.remove(&name);
            for value in values {
                let Ok(text) = value.to_str() else {
                    // Not text: cannot be checked, so not forwarded.
                    continue;
                };
                let scrubbed = if name == header::LINK {
                    scrub_link_header(text, injected)
                } else {
                    scrub_url(text, injected)
                };
                if let Ok(v) = HeaderValue::try_from(scrubbed) {
                    headers.append(&name, v);
                }
            }
        }
    }
    Ok(Reply {
        status,
        head: ReplyHead::Map(headers),
        body: body.into(),
    })
}
