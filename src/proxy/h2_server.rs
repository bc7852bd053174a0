//! HTTP/2 from clients: a TLS connection sidekey terminated (a `CONNECT`
//! tunnel, the TLS listener) on which the client chose `h2` by ALPN is
//! served with hyper's HTTP/2 server. Each request goes through
//! [`handler::handle`] like an HTTP/1.1 one: its pseudo-header fields
//! become an origin-form target and a `Host` field, its body streams
//! upstream under the same `body_idle_timeout`, and the [`Reply`] becomes
//! a response without connection-specific fields (RFC 9113 8.2.2).
//!
//! The limits are those of an HTTP/1.1 connection where HTTP/2 has them:
//! `max_header_bytes` bounds the header list (`SETTINGS_MAX_HEADER_LIST_SIZE`),
//! at most [`MAX_CONCURRENT_STREAMS`] requests run at once (one HTTP/1.1
//! connection runs one), flow control keeps hyper's windows (64 KiB per
//! stream and connection initially: a client cannot send more than the
//! upstream has taken), a connection that sends no request within
//! `header_read_timeout` of its handshake, or stops answering pings for
//! as long, is closed, and a response body whose upstream goes silent for
//! `body_idle_timeout` resets its stream. An idle connection that answers
//! pings stays open (hyper has no idle timeout for HTTP/2). At shutdown
//! the server sends GOAWAY and the requests in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;

use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

use super::error::ProxyError;
use super::handler::{self, ConnInfo};
use super::{Reply, Shared};
use crate::client::pool::ReplyBody;
use crate::wire::deadline::IdleTimer;
use crate::wire::h1::fields::RawFields;
use crate::wire::h1::response::HeadError;
use crate::wire::h1::server::{ClientRequest, Limits, RequestBody};
use crate::wire::headers::{end_to_end_names, strip_hop_by_hop};
use crate::wire::reply::ReplyHead;
use crate::wire::BoxError;

/// The most requests one HTTP/2 connection runs at once
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`); more wait in the client.
pub(crate) const MAX_CONCURRENT_STREAMS: u32 = 100;

/// Serves the HTTP/2 connection `io` until the client ends it, it fails,
/// or `stop` turns true (then gracefully: GOAWAY, and the streams in
/// flight finish).
pub(crate) async fn serve<S>(
    shared: Arc<Shared>,
    io: S,
    conn: ConnInfo,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let limits = &conn.limits;
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    // A client that sends no request within `header_read_timeout` of the
    // handshake (not even the HTTP/2 preface, before which hyper sends no
    // pings) is closed, as an HTTP/1.1 one would be.
    let header_read_timeout = limits.header_read_timeout;
    let asked = Arc::new(AtomicBool::new(false));
    // Not polled once a request came (this loop runs at every wake-up of
    // the connection's task, several per request).
    let mut sleep = std::pin::pin!(tokio::time::sleep(header_read_timeout));
    let first_request = std::future::poll_fn(|cx| {
        if asked.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        sleep.as_mut().poll(cx)
    });
    let conn = Arc::new(conn);
    let seen = asked.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        answer(&shared, &conn, req)
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let mut probe = stop.clone();
    let waiting_stop = async {
        if stop.wait_for(|s| *s).await.is_err() {
            // No more shutdown signal: run until the client is done.
            std::future::pending::<()>().await;
        }
    };
    let mut waiting_stop = std::pin::pin!(waiting_stop);
    // The wait for `stop` is polled again only when the signal changed
    // or the task's waker did: once registered, it keeps the waker, and
    // each poll of it takes the signal's lock, at every wake-up of the
    // connection's task (several per request).
    let mut registered: Option<std::task::Waker> = None;
    let stopped = std::future::poll_fn(|cx| {
        let changed = probe.has_changed().unwrap_or(true);
        if !changed && registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        probe.mark_unchanged();
        registered = Some(cx.waker().clone());
        waiting_stop.as_mut().poll(cx)
    });
    let mut stopped = std::pin::pin!(stopped);
    let mut first_request = std::pin::pin!(first_request);
    let mut waiting = true;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            () = &mut stopped => {
                connection.as_mut().graceful_shutdown();
                break connection.await;
            }
            () = &mut first_request, if waiting => {
                waiting = false;
                if !asked.load(Ordering::Relaxed) {
                    tracing::debug!("HTTP/2 client sent no request within header_read_timeout; closed");
                    // GOAWAY if the preface came; hyper waits for it
                    // before acting on that, so bounded.
                    connection.as_mut().graceful_shutdown();
                    let closed = tokio::time::timeout(header_read_timeout, connection).await;
                    break closed.unwrap_or(Ok(()));
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP/2 connection ended");
    }
}

/// The future of one HTTP/2 response.
type Answer = Pin<Box<dyn Future<Output = Result<Response<H2ReplyBody>, Infallible>> + Send>>;

/// One HTTP/2 request, answered as an HTTP/1.1 one would be. Checked and
/// converted at once; the future returned is small (hyper moves it into
/// the stream's task), the handler's own is boxed as on HTTP/1.1.
fn answer(shared: &Arc<Shared>, conn: &Arc<ConnInfo>, req: Request<Incoming>) -> Answer {
    // CONNECT (and extended CONNECT) inside HTTP/2 would need a stream
    // takeover: refused, like CONNECT on a route's own listener.
    if req.method() == Method::CONNECT {
        let refused = refuse(
            shared,
            conn,
            req.method(),
            req.uri().path(),
            ProxyError::Connect,
        );
        return Box::pin(std::future::ready(Ok(refused)));
    }
    let req = match client_request(req, &conn.limits) {
        Ok(req) => req,
        Err((method, path, e)) => {
            let refused = refuse(shared, conn, &method, path.as_str(), e);
            return Box::pin(std::future::ready(Ok(refused)));
        }
    };
    let (shared, conn) = (shared.clone(), conn.clone());
    Box::pin(async move {
        let reply = Box::pin(handler::handle(&shared, &conn, req)).await;
        if reply.upgrade.is_some() {
            // Not reached: a CONNECT is refused above, and HTTP/2 has no
            // Upgrade.
            return Ok(response(ProxyError::Connect.to_reply(None), &conn.limits));
        }
        Ok(response(reply, &conn.limits))
    })
}

/// The answer to a request refused before it reached the handler, logged
/// and counted as the handler does with the requests it refuses.
fn refuse(
    shared: &Shared,
    conn: &ConnInfo,
    method: &Method,
    path: &str,
    err: ProxyError,
) -> Response<H2ReplyBody> {
    let reply = err.to_reply(None);
    let status = reply.status.as_u16();
    crate::access_line!(
        Warn,
        crate::access_log::Line {
            route: "-",
            method: method.as_str(),
            path,
            status,
            latency: None,
            failure: Some(crate::access_log::Failure {
                code: err.code(),
                cause: &err,
            }),
        }
    );
    shared.unmatched_requests.inc(&shared.metrics, status);
    response(reply, &conn.limits)
}

/// The HTTP/2 request as the handler takes it: an origin-form target, and
/// `:authority` as the `Host` field (RFC 9113 8.3.1: a `Host` field that
/// disagrees with it is refused). A request refused here comes back with its method and path, for the
/// access log.
fn client_request(
    req: Request<Incoming>,
    limits: &Limits,
) -> Result<ClientRequest, (Method, String, ProxyError)> {
    let (parts, body) = req.into_parts();
    let authority = parts.uri.authority().map(|a| a.as_str());
    let fields = match RawFields::from_h2(authority, &parts.headers) {
        Ok(fields) => fields,
        Err(why) => {
            let path = parts.uri.path().to_string();
            return Err((parts.method, path, ProxyError::BadRequest(why)));
        }
    };
    let uri = match parts.uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from(PathAndQuery::from_static("/")),
    };
    Ok(ClientRequest {
        method: parts.method,
        uri,
        version: parts.version,
        fields,
        body: RequestBody::h2(body, limits),
    })
}

/// A reply as an HTTP/2 response: its fields without the hop-by-hop and
/// connection-specific ones (forbidden in HTTP/2).
fn response(reply: Reply, limits: &Limits) -> Response<H2ReplyBody> {
    let Reply {
        status, head, body, ..
    } = reply;
    let headers = match head {
        ReplyHead::Map(mut headers) => {
            strip_hop_by_hop(&mut headers);
            headers
        }
        // Built without the hop-by-hop fields rather than built and then
        // stripped of them: this runs for every response.
        ReplyHead::Upstream(raw) => match raw.to_header_map_where(end_to_end_names(&raw)) {
            Some(headers) => headers,
            None => {
                let reply = ProxyError::UpstreamHead(HeadError::Header).to_reply(None);
                return response(reply, limits);
            }
        },
    };
    let mut response = Response::new(H2ReplyBody {
        body,
        idle: IdleTimer::new(limits.body_idle_timeout),
        stalls: limits.stalls.upstream.clone(),
    });
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A reply's body on its way to an HTTP/2 client: its source (the
/// upstream) may stay silent for `body_idle_timeout` at most, then the
/// stream is reset. (A client that stops reading is HTTP/2 flow
/// control's business: the body is not polled then.)
pub(crate) struct H2ReplyBody {
    body: ReplyBody,
    idle: IdleTimer,
    stalls: Counter,
}

impl Body for H2ReplyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.idle.disarm();
                Poll::Ready(frame)
            }
            Poll::Pending => match this.idle.poll_expired(cx) {
                Poll::Ready(stalled) => {
                    this.stalls.inc();
                    Poll::Ready(Some(Err(stalled.into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;
    use http::StatusCode;

    #[test]
    fn a_reply_loses_its_connection_fields() {
        let raw = RawFields::parse(
            b"Content-Type: text/plain\r\nConnection: close, x-hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\nProxy-Connection: close\r\nX-End: 2\r\n\r\n",
        )
        .unwrap();
        let reply = Reply {
            status: StatusCode::OK,
            head: ReplyHead::Upstream(raw),
            body: ReplyBody::empty(),
            close: false,
            upgrade: None,
        };
        let limits = Limits {
            header_read_timeout: std::time::Duration::from_secs(1),
            body_idle_timeout: std::time::Duration::from_secs(1),
            max_header_bytes: 1024,
            max_headers: 10,
            stalls: Default::default(),
        };
        let response = response(reply, &limits);
        let names: Vec<&str> = response.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-type", "x-end"]);
        assert_eq!(
            response.headers().get("x-end"),
            Some(&HeaderValue::from_static("2"))
        );
    }
}
