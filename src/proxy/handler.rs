//! One proxied request: find the route, rewrite the request for the
//! upstream, inject the credential, forward, and clean the response.
//!
//! [`handle`] is the outer function: it times the request and, through
//! `finish`, maps any [`ProxyError`] to its response, counts it and
//! writes the one access log line. The inner functions use `?`:
//! `prepare` checks and routes the request and builds the upstream
//! request without awaiting, `forward` and `attempt` apply the
//! credential and send it (retrying once after a 401 for token routes).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};

use super::host::RequestHost;
use super::tunnel::{self, Tunnel};
use super::{scrub, underscores, upgrade};
use super::{Reply, Runtime, Shared};
use crate::access_log::{Failure, Line};
use crate::client::connector::Identity;
use crate::client::pool::{Outgoing, SendError, UpstreamResponse};
use crate::client::ProxyBody;
use crate::config::{Forwarded, Unmatched};
use crate::credential::{Applied, Credential};
use crate::proxy::error::ProxyError;
use crate::route::Route;
use crate::target::Target;
use crate::wire::deadline::Deadline;
use crate::wire::h1::response::HeadError;
use crate::wire::h1::server::{ClientRequest, Limits};
use crate::wire::headers::{strip_hop_by_hop, ForwardHeaders};
use crate::wire::reply::ReplyHead;
use tokio::sync::watch;

/// Where a connection came in.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    /// Set on a route's dedicated listener: every request goes to it.
    pub(crate) route: Option<Arc<str>>,
    /// Set inside a TLS connection sidekey terminated (a `CONNECT` tunnel,
    /// the TLS listener): the host the client was given a certificate
    /// for. A request for another host gets `421`.
    pub(crate) tls_host: Option<Arc<str>>,
    /// The connection's limits and shutdown signal, for the connections a
    /// tunnel opens inside it.
    pub(crate) limits: Limits,
    pub(crate) stop: watch::Receiver<bool>,
}

/// Handles one request; never fails (errors become JSON responses).
///
/// The request is checked, routed and prepared at once, without awaiting;
/// the future returned holds the prepared request, and the parts that are
/// awaited get it by reference. (Every future of the chain down to the
/// upstream connection is moved into its parent when it starts: what they
/// hold by value is copied at every level, for every request.)
pub(crate) fn handle<'a>(
    shared: &'a Arc<Shared>,
    conn: &ConnInfo,
    req: ClientRequest,
) -> impl Future<Output = Reply> + 'a {
    let start = Instant::now();
    let runtime = shared.runtime.load_full();
    let method = req.method.clone();
    // Logged: the path only, never the query (it may carry credentials).
    let uri = req.uri.clone();
    let mut route: Option<Arc<Route>> = None;
    let mut next = prepare(shared, &runtime, conn, req, &mut route);
    async move {
        let result = match next {
            // By reference: the plan stays where it is.
            Ok(Next::Forward(ref mut plan)) => forward(&runtime, plan).await,
            // Rare, and its future as large as forwarding's: kept out of
            // every request's future.
            Ok(Next::Passthrough(plan)) => Box::pin(passthrough(&runtime, *plan)).await,
            Ok(Next::Opened(reply)) => Ok(*reply),
            Err(e) => Err(e),
        };
        // An upstream's `101` to an upgrade request: the connections are
        // spliced once it is written.
        let idle = runtime.settings.body_idle_timeout;
        let result = result.and_then(|r| upgrade::take_over(r, idle, &shared.metrics));
        finish(shared, start, &method, uri.path(), route, result)
    }
}

/// The reply that opens an accepted `CONNECT` tunnel. An intercepted one
/// serves the requests inside, once TLS is up, like those of any other
/// connection (with the tunnel's host as the only one allowed).
fn open_tunnel(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    runtime: &Arc<Runtime>,
    tunnel: Tunnel,
) -> Reply {
    let shared = shared.clone();
    let conn = conn.clone();
    tunnel.into_reply(runtime.clone(), shared.clone(), move |tls, host| {
        let serve = shared.serve_tunnel;
        serve(shared, tls, host, &conn)
    })
}

/// Logs, counts and returns the outcome of a request.
fn finish(
    shared: &Shared,
    start: Instant,
    method: &Method,
    path: &str,
    route: Option<Arc<Route>>,
    result: Result<Reply, ProxyError>,
) -> Reply {
    let name = route.as_ref().map_or("-", |r| r.name());
    // One access log line per request (see crate::access_log).
    let response = match result {
        Ok(response) => {
            crate::access_line!(
                Info,
                Line {
                    route: name,
                    method: method.as_str(),
                    path,
                    status: response.status.as_u16(),
                    latency: Some(start.elapsed()),
                    failure: None,
                }
            );
            response
        }
        Err(err) => {
            let response = err.to_reply(route.as_ref().map(|r| r.name()));
            crate::access_line!(
                Warn,
                Line {
                    route: name,
                    method: method.as_str(),
                    path,
                    status: response.status.as_u16(),
                    latency: Some(start.elapsed()),
                    failure: Some(Failure {
                        code: err.code(),
                        cause: &err,
                    }),
                }
            );
            response
        }
    };
    let status = response.status.as_u16();
    match &route {
        Some(r) => {
            r.requests.inc(&shared.metrics, status);
            r.traffic.answered(status);
        }
        None => shared.unmatched_requests.inc(&shared.metrics, status),
    }
    response
}

/// The host a request is for: the absolute-form URI's, else `Host`'s.
/// RFC 9112 3.2: an HTTP/1.1 request without `Host`, or with an invalid
/// one, is refused even when its target names the host.
fn request_host(req: &ClientRequest) -> Result<RequestHost, ProxyError> {
    let header = match req.fields.get_shared("host") {
        Some(value) => Some(
            RequestHost::from_header(value).ok_or(ProxyError::BadRequest(
                "the Host header is not a valid host[:port]",
            ))?,
        ),
        None if req.version == Version::HTTP_11 => return Err(ProxyError::NoHost),
        None => None,
    };
    match req.uri.authority() {
        // RFC 9110 4.2.1: an http URI with an empty host is invalid.
        Some(authority) if authority.host().is_empty() => {
            Err(ProxyError::BadRequest("the request target's host is empty"))
        }
        Some(authority) => Ok(RequestHost::from_uri(authority)),
        None => header.ok_or(ProxyError::NoHost),
    }
}

/// What to do with a request once it has been checked and routed.
// The large variant is the usual one: boxing it would allocate per request.
#[allow(clippy::large_enum_variant)]
enum Next {
    Forward(Plan),
    /// Boxed: rare, and as large as a plan.
    Passthrough(Box<Passthrough>),
    /// An accepted `CONNECT`: its reply, ready.
    Opened(Box<Reply>),
}

/// A routed request, ready for its credential: the upstream URL and the
/// request to send there (whose `target` is filled in from `target` once
/// the credential has been applied).
struct Plan {
    route: Arc<Route>,
    target: Target,
    out: Outgoing,
}

/// A request for an unconfigured host, forwarded as it came (opt-in).
struct Passthrough {
    https: bool,
    authority: String,
    out: Outgoing,
}

/// Checks and routes a request, and builds what is sent upstream (all but
/// the credential). Sets `matched` as soon as the route is known, so that
/// errors from then on name it.
fn prepare(
    shared: &Arc<Shared>,
    runtime: &Arc<Runtime>,
    conn: &ConnInfo,
    req: ClientRequest,
    matched: &mut Option<Arc<Route>>,
) -> Result<Next, ProxyError> {
    if req.method == Method::CONNECT {
        // A route's own listener is not a forward proxy.
        if conn.route.is_some() {
            return Err(ProxyError::Connect);
        }
        // Opened here: the reply's takeover needs the connection's info.
        let tunnel = tunnel::open(runtime, &req)?;
        let reply = open_tunnel(shared, conn, runtime, tunnel);
        return Ok(Next::Opened(Box::new(reply)));
    }
    // The request head was validated as it was parsed
    // (`wire::h1::request`): one Host, a path target, no fragment or
    // userinfo.
    let host = request_host(&req);
    // Read once: `as_str` checks the bytes again on every call.
    let host_name = host.as_ref().map_or("", RequestHost::as_str);
    if let (Some(tls_host), Ok(_)) = (&conn.tls_host, &host) {
        // The same bytes first (the usual case, and a memcmp): the
        // case-blind comparison goes byte by byte.
        if host_name != &**tls_host && !host_name.eq_ignore_ascii_case(tls_host) {
            return Err(ProxyError::Misdirected {
                host: host_name.to_string(),
            });
        }
    }
    let route = match &conn.route {
        // A route's own listener: that route whatever the host, under its
        // `path_prefix` only. Never passed through: the host may well be
        // this listener itself.
        Some(name) => {
            let route = runtime.table.by_name(name);
            if let Some(r) = route.filter(|r| !r.serves_path(req.uri.path())) {
                *matched = Some(r.clone());
                return Err(ProxyError::OutsidePrefix {
                    prefix: r.config.path_prefix.clone().unwrap_or_default(),
                });
            }
            route
        }
        None => runtime.table.find(host_name, req.uri.path()),
    };
    let Some(route) = route.cloned() else {
        if let Err(e) = host {
            return Err(e);
        }
        return match runtime.settings.unmatched {
            Unmatched::Reject => Err(ProxyError::NoRoute {
                host: host_name.to_string(),
            }),
            Unmatched::Passthrough => {
                let mut plan = passthrough_plan(req, host_name, runtime.settings.max_request_body)?;
                underscores::apply(
                    runtime.settings.underscores,
                    &shared.metrics.header_fields_dropped,
                    &mut plan.out.headers,
                    None,
                )?;
                Ok(Next::Passthrough(Box::new(plan)))
            }
        };
    };
    *matched = Some(route.clone());
    // The upstream would echo the injected credential back in its body.
    if req.method == Method::TRACE && !matches!(route.credential, Credential::None) {
        return Err(ProxyError::TraceNotAllowed);
    }
    // `[[route.allow]]`: refused before anything is read or sent.
    if !route.allows(&req.method, req.uri.path()) {
        return Err(ProxyError::NotAllowed);
    }
    let host = match host {
        Ok(_) => host_name,
        // On a dedicated listener the route names the host.
        Err(_) if conn.route.is_some() => "",
        Err(e) => return Err(e),
    };
    let upgrade = req.upgrade();
    let ClientRequest {
        method,
        uri,
        fields,
        body,
        ..
    } = req;
    let body = match runtime.settings.max_request_body {
        0 => ProxyBody::from(body),
        max => ProxyBody::limited(body, max).map_err(|_| ProxyError::BodyTooLarge)?,
    };
    let target = route
        .config
        .target(host, uri.path(), uri.query())
        .ok_or(ProxyError::NoHost)?;
    // The client's fields without hop-by-hop ones (left out as they are
    // written).
    let mut headers = ForwardHeaders::new(fields);
    // Usually the parser found no `_` in the header lines: nothing to do.
    if headers.client().may_have_underscores() {
        underscores::apply(
            runtime.settings.underscores,
            &shared.metrics.header_fields_dropped,
            &mut headers,
            Some(&route),
        )?;
    }
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
    if let Some(protocol) = upgrade {
        headers.ask_upgrade(protocol);
    }
    Ok(Next::Forward(Plan {
        route,
        target,
        out: Outgoing {
            method,
            target: String::new(),
            headers,
            body,
        },
    }))
}

async fn forward(runtime: &Runtime, plan: &mut Plan) -> Result<Reply, ProxyError> {
    let Plan { route, target, out } = plan;
    let route = &**route;
    // A credential that signs the body (SigV4, `payload = "signed"`)
    // gets it whole, read before anything goes upstream.
    if let Some(limit) = route.credential.signed_body_limit() {
        let bytes = read_signed_body(runtime, out, limit).await?;
        out.body = ProxyBody::full(bytes.clone());
        let (response, _) = attempt(runtime, route, target, out, Some(&bytes)).await?;
        return clean_response(response, Some((&route.credential, out)));
    }
    // Keep small bodies when a 401 could be retried with a fresh token.
    let len = match route.credential.retries_on_401() {
        // Known when the body's framing gives it (none, or Content-Length);
        // a chunked body streams.
        true => out
            .body
            .size_hint()
            .exact()
            .filter(|n| *n <= runtime.settings.retry_body_limit as u64),
        false => None,
    };
    let Some(len) = len else {
        // Streamed body: no retry, but a 401 still invalidates the token.
        let (response, applied) = attempt(runtime, route, target, out, None).await?;
        if response.status == StatusCode::UNAUTHORIZED {
            route.credential.reject(&applied);
        }
        return clean_response(response, Some((&route.credential, out)));
    };
    let bytes = if len == 0 {
        // Nothing to read (and nothing to wait for).
        Bytes::new()
    } else {
        // Read before anything goes upstream, so bounded here: a client
        // silent for `request_timeout` in its body gets the 504 it would
        // get while streaming (see `deadline`).
        let timeout = runtime.settings.request_timeout;
        let deadline = Deadline::new(
            tokio::time::Instant::now(),
            timeout,
            out.body.progress().cloned(),
        );
        let body = std::mem::replace(&mut out.body, ProxyBody::empty());
        deadline
            .bound(Limited::new(body, runtime.settings.retry_body_limit).collect())
            .await
            .ok_or(ProxyError::UpstreamTimeout(timeout))?
            .map_err(|_| ProxyError::BadRequest("the request body could not be read"))?
            .to_bytes()
    };
    // A retry applies the credential again, which replaces what the first
    // attempt injected: the same headers, and the target whose origin form
    // the first attempt handed to the connection.
    out.body = ProxyBody::full(bytes.clone());
    let (response, applied) = attempt(runtime, route, target, out, None).await?;
    if response.status == StatusCode::UNAUTHORIZED && route.credential.reject(&applied) {
        tracing::info!(
            route = route.name(),
            "upstream answered 401; retrying once with a fresh token"
        );
        route.traffic.retried();
        drop(response);
        target.restore_origin_form(std::mem::take(&mut out.target));
        out.body = ProxyBody::full(bytes);
        let (response, _) = attempt(runtime, route, target, out, None).await?;
        return clean_response(response, Some((&route.credential, out)));
    }
    clean_response(response, Some((&route.credential, out)))
}

/// Reads the whole request body for a credential that signs it: at most
/// `limit` bytes are kept; a longer body is `413` (refused at once when
/// its `Content-Length` says so), with nothing sent upstream.
async fn read_signed_body(
    runtime: &Runtime,
    out: &mut Outgoing,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    let too_large = ProxyError::SignedBodyTooLarge { limit };
    match out.body.size_hint().exact() {
        Some(0) => return Ok(Bytes::new()),
        Some(n) if n > limit as u64 => return Err(too_large),
        _ => {}
    }
    // Bounded like any body read before forwarding (see `forward`).
    let timeout = runtime.settings.request_timeout;
    let deadline = Deadline::new(
        tokio::time::Instant::now(),
        timeout,
        out.body.progress().cloned(),
    );
    let body = std::mem::replace(&mut out.body, ProxyBody::empty());
    let collected = deadline
        .bound(Limited::new(body, limit).collect())
        .await
        .ok_or(ProxyError::UpstreamTimeout(timeout))?;
    match collected {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large),
        Err(_) => Err(ProxyError::BadRequest("the request body could not be read")),
    }
}

/// Applies the credential to `target` and `out`, and sends `out` upstream.
async fn attempt(
    runtime: &Runtime,
    route: &Route,
    target: &mut Target,
    out: &mut Outgoing,
    body: Option<&[u8]>,
) -> Result<(UpstreamResponse, Applied), ProxyError> {
    let applied = route
        .credential
        .apply(&out.method, target, &mut out.headers, body)
        .await
        .map_err(ProxyError::Credential)?;
    out.target = target.take_origin_form();
    let sent = tokio::time::Instant::now();
    let timeout = runtime.settings.request_timeout;
    let response = runtime
        .upstreams
        .send(
            target.is_https(),
            &target.authority,
            route.identity,
            out,
            sent,
            timeout,
        )
        .await
        .map_err(|e| send_error(e, timeout))?;
    let elapsed = sent.elapsed();
    if let Some(histogram) = &route.upstream_latency {
        histogram.observe(elapsed.as_secs_f64());
    }
    route.traffic.latency(elapsed);
    Ok((response, applied))
}

/// The upstream request for an unconfigured host: as the client sent it,
/// to the host it named.
fn passthrough_plan(
    req: ClientRequest,
    host: &str,
    max_body: u64,
) -> Result<Passthrough, ProxyError> {
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
    let body = ProxyBody::limited(req.body, max_body).map_err(|_| ProxyError::BodyTooLarge)?;
    Ok(Passthrough {
        https,
        authority,
        out: Outgoing {
            target: req
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string()),
            method: req.method,
            headers,
            body,
        },
    })
}

/// Forwards a request for an unconfigured host unchanged.
async fn passthrough(runtime: &Runtime, mut plan: Passthrough) -> Result<Reply, ProxyError> {
    let timeout = runtime.settings.request_timeout;
    let response = runtime
        .upstreams
        .send(
            plan.https,
            &plan.authority,
            Identity::NONE,
            &mut plan.out,
            tokio::time::Instant::now(),
            timeout,
        )
        .await
        .map_err(|e| send_error(e, timeout))?;
    clean_response(response, None)
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

/// What a failed upstream exchange means for the client.
fn send_error(e: SendError, timeout: std::time::Duration) -> ProxyError {
    match e {
        SendError::Timeout => ProxyError::UpstreamTimeout(timeout),
        SendError::BadAuthority => {
            ProxyError::BadRequest("the upstream host cannot be forwarded to")
        }
        SendError::BadTarget => ProxyError::BadRequest("the request path cannot be forwarded"),
        e if e.request_body_too_large() => ProxyError::BodyTooLarge,
        e if e.is_request_body() => {
            let stalled = e.request_body_stalled();
            ProxyError::RequestBody { stalled, cause: e }
        }
        e if e.is_connect() => ProxyError::UpstreamConnect(e),
        e => ProxyError::Upstream(e),
    }
}

/// Strips hop-by-hop headers and removes what the route injected (`sent`:
/// its credential and the request it went into) from the URLs the
/// upstream sends back ([`scrub`]): the injected parameters, the values
/// of the secret ones found in the origin form sent, and a `header`
/// credential's token (which an upstream could copy into a URL).
/// An HTTP/1.1 upstream's fields are passed on as they came (the
/// connection leaves out the hop-by-hop ones as it writes them) unless a
/// URL in them needs scrubbing.
fn clean_response(
    response: UpstreamResponse,
    sent: Option<(&Credential, &Outgoing)>,
) -> Result<Reply, ProxyError> {
    let UpstreamResponse { status, head, body } = response;
    let sent = sent.filter(|(credential, _)| credential.scrubs_responses());
    let mut headers = match head {
        ReplyHead::Upstream(raw)
            if sent.is_none() || !raw.iter().any(|(name, _)| scrub::is_url_field(name)) =>
        {
            return Ok(Reply {
                status,
                head: ReplyHead::Upstream(raw),
                body,
                close: false,
                upgrade: None,
            });
        }
        ReplyHead::Upstream(raw) => raw
            .to_header_map(0)
            .ok_or(ProxyError::UpstreamHead(HeadError::Header))?,
        ReplyHead::Map(headers) => headers,
    };
    strip_hop_by_hop(&mut headers);
    if let Some((credential, out)) = sent {
        scrub::scrub(
            &mut headers,
            credential.injected_params(),
            credential.secret_params(),
            &out.target,
            credential.header_token(&out.headers),
        );
    }
    Ok(Reply {
        status,
        head: ReplyHead::Map(headers),
        body,
        close: false,
        upgrade: None,
    })
}
