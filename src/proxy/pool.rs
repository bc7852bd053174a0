//! Forwarding a request upstream over a kept-alive connection of the
//! current worker thread.
//!
//! Each worker thread ([`super::workers`]) keeps its own idle upstream
//! connections in a thread-local map, so a request never takes a lock or
//! wakes another thread to find one: the client connection, its request and
//! the upstream connection's task all run on the same thread. HTTP/1.1
//! connections serve one request at a time and go back to the pool once
//! their response body has been read to the end; an HTTP/2 connection (when
//! the upstream offers `h2` by ALPN) is shared by every request of the
//! thread.
//!
//! The pool belongs to one [`Upstreams`] (one config): after a reload,
//! connections of the previous config are not reused, since `ca_file` or
//! `connect_to` may have changed what they may be used for.

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use thiserror::Error;
use tokio::net::TcpStream;
use tower::Service;

use super::upstream::Dialer;
use super::ProxyBody;

/// At most this many idle HTTP/1.1 connections are kept per upstream and
/// thread; more are closed when their response ends.
const MAX_IDLE_PER_UPSTREAM: usize = 256;

/// Tries per request: those before the last may take pooled connections
/// (a dead one is dropped and the next one tried, as long as nothing of
/// the request was written); the last is always on a new connection.
const MAX_SEND_TRIES: usize = 4;

#[derive(Debug, Error)]
pub enum SendError {
    /// Dialling, TLS handshake or HTTP handshake failed: nothing was sent.
    #[error("{0}")]
    Connect(String),
    /// The request was (maybe partly) sent, but no response came back.
    #[error("{0}")]
    Upstream(String),
    /// The upstream's `host[:port]` is not a valid authority.
    #[error("the upstream host is not a valid host[:port]")]
    BadAuthority,
}

type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

/// How one config's requests reach their upstreams: the TLS connector and
/// which pools are its own.
pub struct Upstreams {
    connector: HttpsConnector<Dialer>,
    owner: Owner,
}

impl Upstreams {
    pub fn new(connector: HttpsConnector<Dialer>, idle_timeout: Duration) -> Upstreams {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Upstreams {
            connector,
            // Tells this config's pooled connections from another's.
            owner: Owner {
                generation: NEXT.fetch_add(1, Ordering::Relaxed),
                idle_timeout,
            },
        }
    }

    /// Sends `req` (origin-form URI: `/path?query`) to `authority` over
    /// TLS when `https`, and returns the upstream's response head; the body
    /// streams from the connection, which goes back to this thread's pool
    /// when the body has been read to its end.
    pub async fn send(
        &self,
        https: bool,
        authority: &str,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<PoolBody>, SendError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let pooled = if tries < MAX_SEND_TRIES {
                self.checkout(https, authority)
            } else {
                None
            };
            let (key, mut conn) = match pooled {
                Some(found) => found,
                // Boxed: connecting (TLS and HTTP/2 handshakes) is rare
                // and its future large; inline, every request's future
                // would carry (and copy) it.
                None => Box::pin(self.connect(https, authority)).await?,
            };
            if let Conn::H1(sender) = &mut conn {
                // A pooled connection the upstream closed meanwhile: drop
                // it and take another (the last try is a new connection).
                if let Err(e) = sender.ready().await {
                    if tries < MAX_SEND_TRIES {
                        continue;
                    }
                    return Err(SendError::Upstream(innermost(&e)));
                }
            }
            let sent = match &mut conn {
                Conn::H1(sender) => {
                    if !req.headers().contains_key(HOST) {
                        let host = HeaderValue::from_str(authority)
                            .map_err(|_| SendError::BadAuthority)?;
                        req.headers_mut().insert(HOST, host);
                    }
                    sender.try_send_request(req).await
                }
                Conn::H2(sender) => {
                    // HTTP/2 carries the host as `:authority`.
                    req.headers_mut().remove(HOST);
                    to_absolute_form(&mut req, https, authority)?;
                    sender.try_send_request(req).await
                }
            };
            match sent {
                Ok(response) => return Ok(self.keep(response, https, key, conn)),
                Err(mut e) => match e.take_message() {
                    // Not written: the connection had closed under us (an
                    // idle keep-alive connection the upstream dropped).
                    Some(unsent) if tries < MAX_SEND_TRIES => req = unsent,
                    _ => return Err(SendError::Upstream(innermost(&e.into_error()))),
                },
            }
        }
    }

    /// An idle connection to `authority` of this thread, if one is open.
    fn checkout(&self, https: bool, authority: &str) -> Option<(Key, Conn)> {
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let pool = idle.of(self.owner, https)?;
            let host = pool.get_mut(authority)?;
            let key = &host.key;
            if let Some(h2) = &host.h2 {
                if !h2.is_closed() {
                    host.last_used = Instant::now();
                    return Some((key.clone(), Conn::H2(h2.clone())));
                }
                host.h2 = None;
            }
            let now = Instant::now();
            while let Some((sender, since)) = host.h1.pop() {
                if !sender.is_closed() && now.duration_since(since) < self.owner.idle_timeout {
                    return Some((key.clone(), Conn::H1(sender)));
                }
            }
            None
        })
    }

    /// Dials, handshakes TLS and HTTP (HTTP/2 if the upstream chose `h2`),
    /// and runs the connection on this thread.
    async fn connect(&self, https: bool, authority: &str) -> Result<(Key, Conn), SendError> {
        let scheme = if https { "https" } else { "http" };
        let uri: Uri = format!("{scheme}://{authority}")
            .parse()
            .map_err(|_| SendError::BadAuthority)?;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| SendError::Connect(innermost(e.as_ref())))?;
        let stream: Stream = connector
            .call(uri)
            .await
            .map_err(|e| SendError::Connect(innermost(e.as_ref())))?;
        let key: Key = Arc::from(authority);
        if stream.connected().is_negotiated_h2() {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(stream)
                .await
                .map_err(|e| SendError::Connect(innermost(&e)))?;
            run_on_this_thread(conn);
            let now = Instant::now();
            IDLE.with(|idle| {
                let mut idle = idle.borrow_mut();
                if let Some(pool) = idle.of(self.owner, https) {
                    let host = pool
                        .entry(key.clone())
                        .or_insert_with(|| Host::new(key.clone()));
                    host.h2 = Some(sender.clone());
                    host.last_used = now;
                }
            });
            Ok((key, Conn::H2(sender)))
        } else {
            // Flattened writes, as on the client side (see server.rs).
            let (sender, conn) = http1::Builder::new()
                .writev(false)
                .handshake(stream)
                .await
                .map_err(|e| SendError::Connect(innermost(&e)))?;
            run_on_this_thread(conn);
            Ok((key, Conn::H1(sender)))
        }
    }

    /// Wraps the response body so that an HTTP/1.1 connection goes back to
    /// the pool when the body ends (at once when there is none).
    fn keep(
        &self,
        response: Response<Incoming>,
        https: bool,
        key: Key,
        conn: Conn,
    ) -> Response<PoolBody> {
        let Conn::H1(sender) = conn else {
            return response.map(|inner| PoolBody { inner, back: None });
        };
        let back = Return {
            sender,
            key,
            https,
            owner: self.owner,
        };
        let (parts, inner) = response.into_parts();
        let back = if inner.is_end_stream() {
            back.put();
            None
        } else {
            Some(back)
        };
        Response::from_parts(parts, PoolBody { inner, back })
    }
}

/// Drops the idle connections of this thread that have been idle longer
/// than their config allows, or have closed. Worker threads call it
/// periodically.
pub fn sweep() {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let Idle {
            http,
            https,
            idle_timeout,
            ..
        } = &mut *idle;
        let timeout = *idle_timeout;
        let now = Instant::now();
        for pool in [http, https] {
            pool.retain(|_, host| {
                host.h1.retain(|(sender, since)| {
                    !sender.is_closed() && now.duration_since(*since) < timeout
                });
                if host.h2.as_ref().is_some_and(|h2| {
                    h2.is_closed() || now.duration_since(host.last_used) >= timeout
                }) {
                    host.h2 = None;
                }
                !host.h1.is_empty() || host.h2.is_some()
            });
        }
    });
}

/// Drives an upstream connection in a task of the current (worker) runtime,
/// beside the requests that use it.
fn run_on_this_thread<C>(conn: C)
where
    C: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
}

/// HTTP/2 takes the scheme and authority into the request URI (its
/// `:scheme` and `:authority`); HTTP/1.1 sends them as `Host`.
fn to_absolute_form(
    req: &mut Request<ProxyBody>,
    https: bool,
    authority: &str,
) -> Result<(), SendError> {
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(if https { Scheme::HTTPS } else { Scheme::HTTP });
    parts.authority = Some(Authority::try_from(authority).map_err(|_| SendError::BadAuthority)?);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| SendError::BadAuthority)?;
    Ok(())
}

/// Describes an error by its innermost cause (see
/// [`crate::error::innermost_cause`]).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    crate::error::innermost_cause(e).to_string()
}

/// The pool key: the upstream's `host[:port]`, shared by its entries.
type Key = Arc<str>;

enum Conn {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

struct Host {
    key: Key,
    /// Idle HTTP/1.1 connections and since when; the most recent last.
    h1: Vec<(http1::SendRequest<ProxyBody>, Instant)>,
    h2: Option<http2::SendRequest<ProxyBody>>,
    last_used: Instant,
}

impl Host {
    fn new(key: Key) -> Host {
        Host {
            key,
            h1: Vec::new(),
            h2: None,
            last_used: Instant::now(),
        }
    }
}

/// Which config a pool entry belongs to.
#[derive(Clone, Copy)]
struct Owner {
    generation: u64,
    idle_timeout: Duration,
}

/// One thread's idle connections, for one config at a time.
struct Idle {
    generation: u64,
    idle_timeout: Duration,
    http: HashMap<Key, Host>,
    https: HashMap<Key, Host>,
}

impl Idle {
    /// The pool of `generation`, emptied first if it held another's.
    fn of(&mut self, owner: Owner, https: bool) -> Option<&mut HashMap<Key, Host>> {
        let Owner {
            generation,
            idle_timeout,
        } = owner;
        if self.generation != generation {
            // Only a newer config takes the pool over; a request of an
            // older one (still in flight after a reload) keeps off it.
            if generation < self.generation {
                return None;
            }
            self.generation = generation;
            self.idle_timeout = idle_timeout;
            self.http.clear();
            self.https.clear();
        }
        Some(if https {
            &mut self.https
        } else {
            &mut self.http
        })
    }
}

thread_local! {
    static IDLE: RefCell<Idle> = RefCell::new(Idle {
        generation: 0,
        idle_timeout: Duration::ZERO,
        http: HashMap::new(),
        https: HashMap::new(),
    });
}

/// An HTTP/1.1 connection on its way back to the pool.
struct Return {
    sender: http1::SendRequest<ProxyBody>,
    key: Key,
    https: bool,
    owner: Owner,
}

impl Return {
    fn put(self) {
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            if let Some(pool) = idle.of(self.owner, self.https) {
                let key = self.key;
                let host = pool.entry(key.clone()).or_insert_with(|| Host::new(key));
                if host.h1.len() < MAX_IDLE_PER_UPSTREAM {
                    host.h1.push((self.sender, Instant::now()));
                }
            }
        });
    }
}

pin_project_lite::pin_project! {
    /// A response body from upstream; returns its connection to the pool
    /// once read to the end. Dropped before that (the client went away),
    /// the connection is closed instead.
    pub struct PoolBody {
        #[pin]
        inner: Incoming,
        back: Option<Return>,
    }
}

impl Body for PoolBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        let ended = match &frame {
            None => true,
            Some(Ok(_)) => this.inner.is_end_stream(),
            Some(Err(_)) => {
                this.back.take();
                false
            }
        };
        if ended {
            if let Some(back) = this.back.take() {
                back.put();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
