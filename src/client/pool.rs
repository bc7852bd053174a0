//! Forwarding a request upstream over a kept-alive connection of the
//! current worker thread.
//!
//! Each worker thread (see `app::workers`) keeps its own idle upstream
//! connections in a thread-local map, so a request never takes a lock or
//! wakes another thread to find one: the client connection, its request and
//! the upstream connection all run on the same thread. HTTP/1.1
//! connections ([`crate::wire::h1::client`], driven by the request itself) serve one
//! request at a time and go back to the pool once their response body has
//! been read to the end; an HTTP/2 connection (when the upstream offers
//! `h2` by ALPN; hyper's client, in a task of the thread) is shared by
//! every request of the thread.
//!
//! Connections are kept apart by the client certificate they present
//! ([`Identity`]): each identity has its own idle pool, so a route with
//! mutual TLS never gets a connection opened for another route's
//! certificate (or for none), even to the same host.
//!
//! The pool belongs to one [`Upstreams`]: a reload keeps it when the new
//! config connects the same way (`ProxySettings::connects_like`);
//! otherwise connections of the previous config are not reused, since
//! `ca_file` or `connect_to` may have changed what they may be used for.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, HOST, PROXY_AUTHORIZATION};
use http::{Method, Request, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use thiserror::Error;

use super::body::{BodyTooLarge, ProxyBody};
use super::connector::{Connector, Identity, Io};
use super::dial::ConnectError;
use super::idle::{IdlePool, Key, Lent, Owner, Pooled, Shared};
use crate::wire::deadline::{Deadline, Stalled};
use crate::wire::h1::chunked::ChunkError;
use crate::wire::h1::client::{self as h1, H1Error, RequestParts, SendFailure};
use crate::wire::h1::response::ResponseHead;
use crate::wire::h1::server::IncompleteBody;
use crate::wire::headers::ForwardHeaders;
use crate::wire::io::Upgraded;
use crate::wire::reply::ReplyHead;
use crate::wire::BoxError;

/// An HTTP/1.1 upstream connection of the pool.
type H1Conn = h1::Connection<Io>;

/// Tries per request: those before the last may take pooled connections
/// (a dead one is dropped and the next one tried, as long as nothing of
/// the request was written); the last is always on a new connection.
const MAX_SEND_TRIES: usize = 4;

/// Why a request got no response. `Display` gives the cause in a few
/// words, from error kinds and the innermost I/O or TLS error: never a
/// request or token value.
#[derive(Debug, Error)]
pub(crate) enum SendError {
    /// Dialling or the TLS handshake failed: nothing was sent.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The HTTP/2 handshake failed: nothing was sent.
    #[error("the HTTP/2 handshake failed: {}", crate::cause::innermost_cause(.0))]
    H2Handshake(#[source] hyper::Error),
    /// Every connection tried closed before the request was written.
    #[error("the upstream connection closed before the request was written")]
    ClosedUnsent,
    /// The request was (maybe partly) sent on an HTTP/1.1 connection, but
    /// no response came back.
    #[error("{}", crate::cause::innermost_cause(.0))]
    H1(#[source] H1Error),
    /// The same on an HTTP/2 connection.
    #[error("{}", crate::cause::innermost_cause(.0))]
    H2(#[source] hyper::Error),
    /// The upstream's `host[:port]` is not a valid authority.
    #[error("the upstream host is not a valid host[:port]")]
    BadAuthority,
    /// The request target cannot be sent as it is.
    #[error("the request target cannot be forwarded")]
    BadTarget,
    /// No response head by the deadline.
    #[error("no response before the deadline")]
    Timeout,
    /// An upgrade request (WebSocket) for an upstream that speaks
    /// HTTP/2: upgrades are HTTP/1.1's.
    #[error("the upstream speaks HTTP/2, over which sidekey does not forward WebSocket or other HTTP/1.1 upgrades")]
    UpgradeOverH2,
}

impl SendError {
    /// Nothing was sent: the upstream could not be reached.
    pub(crate) fn is_connect(&self) -> bool {
        matches!(
            self,
            SendError::Connect(_) | SendError::H2Handshake(_) | SendError::ClosedUnsent
        )
    }

    /// The client's side failed, not the upstream: its request body could
    /// not be read (it went away, stalled or was malformed) or did not
    /// match its length.
    pub(crate) fn is_request_body(&self) -> bool {
        match self {
            SendError::H1(H1Error::RequestBody(_) | H1Error::RequestBodyLength) => true,
            // hyper reports a failed request body as a user body error,
            // its cause underneath.
            SendError::H2(e) => e.is_user() && self.client_cause().is_some(),
            _ => false,
        }
    }

    /// The client's request body went silent for `body_idle_timeout`.
    pub(crate) fn request_body_stalled(&self) -> bool {
        self.client_cause()
            .is_some_and(|e| e.downcast_ref::<Stalled>().is_some())
    }

    /// The client's request body went over `max_request_body`.
    pub(crate) fn request_body_too_large(&self) -> bool {
        self.client_cause()
            .is_some_and(|e| e.downcast_ref::<BodyTooLarge>().is_some())
    }

    /// The error of the client's side underneath, if that is what failed.
    fn client_cause(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if e.downcast_ref::<Stalled>().is_some()
                || e.downcast_ref::<BodyTooLarge>().is_some()
                || e.downcast_ref::<ChunkError>().is_some()
                || e.downcast_ref::<IncompleteBody>().is_some()
            {
                return Some(e);
            }
            cause = e.source();
        }
        None
    }
}

/// How one config's requests reach their upstreams: the connector and
/// which pools are its own.
pub(crate) struct Upstreams {
    connector: Connector,
    owner: Owner,
}

impl Upstreams {
    /// `max_idle`: idle HTTP/1.1 connections kept per upstream by each
    /// thread.
    pub(crate) fn new(connector: Connector, idle_timeout: Duration, max_idle: usize) -> Upstreams {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Upstreams {
            connector,
            // Tells this config's pooled connections from another's.
            owner: Owner {
                generation: NEXT.fetch_add(1, Ordering::Relaxed),
                idle_timeout,
                max_idle,
            },
        }
    }

    /// Sends `out` to `authority` over TLS when `https`, and returns the
    /// upstream's response head; the body streams from the connection,
    /// which goes back to this thread's pool when the body has been read to
    /// its end. The response head must come within `timeout` of `now`.
    /// `out` is borrowed so that it is not copied into every future down to
    /// the connection's; after an error, its body may have been used.
    pub(crate) async fn send(
        &self,
        https: bool,
        authority: &str,
        identity: Identity,
        out: &mut Outgoing,
        now: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<UpstreamResponse, SendError> {
        let deadline = Deadline::new(now, timeout, out.body.progress().cloned());
        if !out.headers.contains(&HOST) && !all_visible(authority) {
            return Err(SendError::BadAuthority);
        }
        // Built by sidekey from a validated request target and encoded
        // parameters; checked once more since it is written as it is.
        if !out.target.starts_with('/') || !all_visible(&out.target) {
            return Err(SendError::BadTarget);
        }
        // Plain HTTP through the upstream proxy: the request goes to the
        // proxy in absolute form, with its credential (and only there).
        let proxy = self.plain_proxy(https, authority);
        let absolute = match proxy {
            None => None,
            Some(proxy) => {
                out.headers.remove(&PROXY_AUTHORIZATION);
                if let Some(auth) = proxy.authorization() {
                    out.headers.append(PROXY_AUTHORIZATION, auth.clone());
                }
                Some(format!("http://{authority}{}", out.target))
            }
        };
        let mut tries = 0;
        loop {
            tries += 1;
            let pooled = if tries < MAX_SEND_TRIES {
                self.checkout(https, authority, identity, now.into_std())
            } else {
                None
            };
            let (key, conn) = match pooled {
                Some(found) => found,
                // Boxed: connecting (TLS and HTTP/2 handshakes) is rare
                // and its future large; inline, every request's future
                // would carry (and copy) it.
                None => tokio::time::timeout_at(
                    deadline.at(),
                    Box::pin(self.connect(https, authority, identity)),
                )
                .await
                .map_err(|_| SendError::Timeout)??,
            };
            match conn {
                Pooled::H1(mut conn) => match conn
                    .send(
                        RequestParts {
                            method: &out.method,
                            target: absolute.as_deref().unwrap_or(&out.target),
                            headers: &out.headers,
                            host: authority,
                        },
                        &mut out.body,
                        &deadline,
                    )
                    .await
                {
                    // The proxy's own refusal (its credential is wrong or
                    // missing), not the upstream's answer: a 502 naming it,
                    // and the connection is not kept.
                    Ok(head)
                        if head.status == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED
                            && proxy.is_some() =>
                    {
                        return Err(SendError::Connect(ConnectError::ProxyAuthRequired {
                            proxy: proxy
                                .map(super::upstream_proxy::Via::address)
                                .unwrap_or_default(),
                            target: format!("http://{authority}"),
                        }));
                    }
                    Ok(head) => {
                        let back = Return {
                            key,
                            https,
                            identity,
                            owner: self.owner,
                        };
                        return Ok(h1_response(head, conn, back));
                    }
                    // The connection had closed under us (an idle
                    // keep-alive connection the upstream dropped).
                    Err(SendFailure::Unsent) if tries < MAX_SEND_TRIES => {}
                    Err(SendFailure::Unsent) => return Err(SendError::ClosedUnsent),
                    Err(SendFailure::Failed(H1Error::Timeout)) => return Err(SendError::Timeout),
                    Err(SendFailure::Failed(e)) => return Err(SendError::H1(e)),
                },
                Pooled::H2(_) if out.headers.asks_upgrade() => {
                    return Err(SendError::UpgradeOverH2)
                }
                Pooled::H2(sender) => {
                    // Boxed: HTTP/2's futures are large, and inline they
                    // would make every request's future (and every idle
                    // client connection) larger.
                    match Box::pin(send_h2(sender, out, https, authority, &deadline)).await {
                        H2Sent::Response(response) => return Ok(*response),
                        H2Sent::Unsent if tries < MAX_SEND_TRIES => {}
                        H2Sent::Unsent => return Err(SendError::ClosedUnsent),
                        H2Sent::Failed(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// How this config dials (for a blind tunnel).
    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The [`Identity`] presenting `identity`'s certificate (`None`: no
    /// certificate). `None` when this config's connector lacks it.
    pub(crate) fn identity(
        &self,
        identity: Option<&crate::tls::ClientIdentity>,
    ) -> Option<Identity> {
        self.connector.identity(identity)
    }

    /// The upstream proxy, when a plain HTTP request to `authority` goes
    /// through it.
    fn plain_proxy(&self, https: bool, authority: &str) -> Option<&super::upstream_proxy::Via> {
        if https || !self.connector.has_proxy() {
            return None;
        }
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        self.connector.plain_proxy_for(host)
    }

    /// An idle connection to `authority` of this thread, if one is open.
    fn checkout(
        &self,
        https: bool,
        authority: &str,
        identity: Identity,
        now: Instant,
    ) -> Option<(Key, Conn)> {
        with_idle(identity, |idle| {
            idle.checkout(self.owner, https, authority, now)
        })
    }

    /// Dials and handshakes TLS; an upstream that chose `h2` gets an
    /// HTTP/2 connection run on this thread and shared from the pool.
    async fn connect(
        &self,
        https: bool,
        authority: &str,
        identity: Identity,
    ) -> Result<(Key, Conn), SendError> {
        let io = self
            .connector
            .connect(https, authority, identity)
            .await
            .map_err(|e| match e {
                ConnectError::BadAuthority => SendError::BadAuthority,
                e => SendError::Connect(e),
            })?;
        let key: Key = Arc::from(authority);
        if !io.is_h2() {
            return Ok((key, Pooled::H1(H1Conn::new(io))));
        }
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(SendError::H2Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        let now = Instant::now();
        with_idle(identity, |idle| {
            idle.put_h2(self.owner, https, key.clone(), sender.clone(), now)
        });
        Ok((key, Pooled::H2(sender)))
    }
}

/// An upstream's answer: its status and header fields, and its body
/// streaming from the connection (after a `101`, the connection itself:
/// [`ReplyBody::take_switched`]).
pub(crate) struct UpstreamResponse {
    pub status: StatusCode,
    pub head: ReplyHead,
    pub body: ReplyBody,
}

/// The response of an HTTP/1.1 upstream; its connection goes back to the
/// pool when the body ends (at once when there is none). After a `101`
/// the connection is the body, never pooled again.
fn h1_response(head: ResponseHead, conn: Box<H1Conn>, back: Return) -> UpstreamResponse {
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        let protocol = head
            .fields
            .get_shared("upgrade")
            .and_then(|v| HeaderValue::from_maybe_shared(v).ok());
        let (io, buffered) = (*conn).into_switched();
        return UpstreamResponse {
            status: head.status,
            head: ReplyHead::Upstream(head.fields),
            body: ReplyBody(Inner::Switched(Some(Switched {
                io: Upgraded::new(io, buffered),
                protocol,
            }))),
        };
    }
    let mut body = h1::Body::new(&head, conn);
    let back = match body.reusable() {
        Some(conn) => {
            back.put(conn);
            None
        }
        None => Some(back),
    };
    UpstreamResponse {
        status: head.status,
        head: ReplyHead::Upstream(head.fields),
        body: ReplyBody(Inner::H1 { body, back }),
    }
}

/// How often a thread drops its pooled connections that have been idle
/// past `proxy.pool_idle_timeout` (or were closed by the upstream).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Sweeps this thread's idle connections every [`SWEEP_EVERY`] until
/// `stop` completes: the loop of each worker thread, and a task on the
/// control runtime (token requests keep connections there).
pub(crate) async fn sweep_until(stop: impl std::future::Future) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => sweep(),
        }
    }
}

/// Drops the idle connections of this thread that have been idle longer
/// than their config allows, or have closed. Worker threads call it
/// periodically.
pub(crate) fn sweep() {
    let now = Instant::now();
    IDLE.with(|idle| {
        for pool in idle.borrow_mut().iter_mut() {
            pool.sweep(now);
        }
    });
}

/// How a request on an HTTP/2 connection went.
enum H2Sent {
    Response(Box<UpstreamResponse>),
    /// Not sent (the connection was closing): may go on another one, and
    /// the request is back in its `Outgoing`.
    Unsent,
    Failed(SendError),
}

async fn send_h2(
    mut sender: http2::SendRequest<ProxyBody>,
    out: &mut Outgoing,
    https: bool,
    authority: &str,
    deadline: &Deadline,
) -> H2Sent {
    let ready = tokio::time::timeout_at(deadline.at(), sender.ready()).await;
    match ready {
        Err(_) => return H2Sent::Failed(SendError::Timeout),
        Ok(Err(_)) => return H2Sent::Unsent,
        Ok(Ok(())) => {}
    }
    let req = match h2_request(out, https, authority) {
        Ok(req) => req,
        Err(e) => return H2Sent::Failed(e),
    };
    // hyper streams the body in the connection's task; the response head
    // comes back here, within the deadline as the body moves it.
    let sent = deadline.bound(sender.try_send_request(req)).await;
    match sent {
        None => H2Sent::Failed(SendError::Timeout),
        Some(Ok(response)) => {
            let (parts, body) = response.into_parts();
            H2Sent::Response(Box::new(UpstreamResponse {
                status: parts.status,
                head: ReplyHead::Map(parts.headers),
                body: ReplyBody(Inner::H2(body)),
            }))
        }
        Some(Err(mut e)) => match e.take_message() {
            Some(unsent) => {
                // The headers were copied, the body is given back.
                out.body = unsent.into_body();
                H2Sent::Unsent
            }
            None => H2Sent::Failed(SendError::H2(e.into_error())),
        },
    }
}

/// A request on its way upstream.
pub(crate) struct Outgoing {
    pub method: Method,
    /// Origin form: `/path?query`.
    pub target: String,
    pub headers: ForwardHeaders,
    pub body: ProxyBody,
}

/// The HTTP/2 request for `out`: the scheme and authority go into the URI
/// (`:scheme`, `:authority`) instead of `Host`. It takes the body and
/// copies the headers, which stay for a retry with a fresh token.
fn h2_request(
    out: &mut Outgoing,
    https: bool,
    authority: &str,
) -> Result<Request<ProxyBody>, SendError> {
    let scheme = if https { "https" } else { "http" };
    let uri: Uri = format!("{scheme}://{authority}{}", out.target)
        .parse()
        .map_err(|_| SendError::BadTarget)?;
    let mut headers = out.headers.to_header_map();
    headers.remove(HOST);
    let mut req = Request::new(std::mem::replace(&mut out.body, ProxyBody::empty()));
    *req.method_mut() = out.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Whether `s` is all visible ASCII (no space, control or non-ASCII
/// byte). Without an early exit, so that it compiles to a vector loop:
/// signed URLs are long.
fn all_visible(s: &str) -> bool {
    s.bytes()
        .fold(true, |ok, b| ok & (b.wrapping_sub(0x21) < 0x5e))
}

/// A pooled connection of this thread.
type Conn = Pooled<Box<H1Conn>, H2Sender>;

type H2Sender = http2::SendRequest<ProxyBody>;

impl Lent for Box<H1Conn> {
    fn is_closed(&mut self) -> bool {
        H1Conn::is_closed(self)
    }
}

impl Shared for H2Sender {
    fn is_closed(&self) -> bool {
        http2::SendRequest::is_closed(self)
    }
}

thread_local! {
    /// This thread's idle connections. Reached through a thread-local,
    /// not passed along: a connection's task is built on the accepting
    /// thread and must be `Send`, while the pool it uses is the one of the
    /// worker thread it runs on, used without a lock. One pool per
    /// [`Identity`] (by its index): a connection presenting one client
    /// certificate is never lent to a request for another.
    static IDLE: RefCell<Vec<IdlePool<Box<H1Conn>, H2Sender>>> =
        RefCell::new(vec![IdlePool::default()]);
}

/// Runs `f` on this thread's idle pool of `identity`.
fn with_idle<R>(
    identity: Identity,
    f: impl FnOnce(&mut IdlePool<Box<H1Conn>, H2Sender>) -> R,
) -> R {
    IDLE.with(|idle| {
        let mut pools = idle.borrow_mut();
        let i = identity.index();
        if pools.len() <= i {
            pools.resize_with(i + 1, IdlePool::default);
        }
        f(&mut pools[i])
    })
}

/// Where an HTTP/1.1 connection goes back to.
struct Return {
    key: Key,
    https: bool,
    identity: Identity,
    owner: Owner,
}

impl Return {
    fn put(self, conn: Box<H1Conn>) {
        with_idle(self.identity, |idle| {
            idle.put_h1(self.owner, self.https, self.key, conn, Instant::now())
        });
    }
}

/// The body of a reply to a client: an upstream's response body, or one
/// sidekey holds whole (its own answers). An HTTP/1.1 upstream's returns
/// its connection to the pool once read to the end; dropped before that
/// (the client went away), the connection is closed instead.
pub struct ReplyBody(Inner);

enum Inner {
    Full(Option<Bytes>),
    H1 {
        body: h1::Body<Io>,
        back: Option<Return>,
    },
    H2(Incoming),
    /// A `101`'s: no body, the upstream connection that switched.
    Switched(Option<Switched>),
}

/// An upstream connection that switched protocols after its `101`.
pub(crate) struct Switched {
    /// The stream, with what the upstream sent after the `101` head.
    pub(crate) io: Upgraded,
    /// The `101`'s `Upgrade` value: the protocol switched to.
    pub(crate) protocol: Option<HeaderValue>,
}

impl ReplyBody {
    /// All of it at once (an empty one is no body).
    pub fn full(bytes: impl Into<Bytes>) -> ReplyBody {
        let bytes = bytes.into();
        ReplyBody(Inner::Full((!bytes.is_empty()).then_some(bytes)))
    }

    pub fn empty() -> ReplyBody {
        ReplyBody(Inner::Full(None))
    }

    /// The upstream connection of a `101`'s body, once.
    pub(crate) fn take_switched(&mut self) -> Option<Switched> {
        match &mut self.0 {
            Inner::Switched(switched) => switched.take(),
            _ => None,
        }
    }
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::H1 { body, back } => {
                let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
                if body.is_end_stream() {
                    if let Some(conn) = body.reusable() {
                        if let Some(back) = back.take() {
                            back.put(conn);
                        }
                    }
                }
                Poll::Ready(frame)
            }
            Inner::H2(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(BoxError::from))),
            Inner::Switched(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::H1 { body, .. } => body.is_end_stream(),
            Inner::H2(body) => body.is_end_stream(),
            Inner::Switched(_) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::H1 { body, .. } => body.size_hint(),
            Inner::H2(body) => body.size_hint(),
            Inner::Switched(_) => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::all_visible;

    #[test]
    fn only_visible_ascii_is_written_as_it_is() {
        assert!(all_visible("/v1/items?id=42&sig=8547acaa~!*'()"));
        assert!(all_visible(""));
        for bad in ["/a b", "/a\tb", "/a\r\n", "/a\u{7f}", "/caf\u{e9}", "/\0"] {
            assert!(!all_visible(bad), "{bad:?}");
        }
    }
}
