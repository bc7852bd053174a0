//! Accept loops: every worker thread accepts on the proxy's listeners
//! itself ([`accept_on_workers`]), so that an accepted socket is
//! registered once, in the reactor of the thread that serves it, and no
//! other thread is woken for it. On shutdown each loop drains its
//! connections for at most `drain_timeout`.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::workers::{Load, Workers};

/// Runs one connection: the stream (registered with the runtime it runs
/// on), its peer, a receiver that turns true at shutdown, and the
/// connection's [`ActiveConnection`], for its future to hold.
pub(crate) trait Serve:
    Fn(TcpStream, SocketAddr, watch::Receiver<bool>, ActiveConnection) -> Self::Conn
    + Send
    + Sync
    + 'static
{
    type Conn: std::future::Future<Output = ()> + Send + 'static;
}

impl<F, Fut> Serve for F
where
    F: Fn(TcpStream, SocketAddr, watch::Receiver<bool>, ActiveConnection) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    type Conn = Fut;
}

/// What the accept loops of one listener share.
struct Listener<F> {
    /// Turns on when the listener closes or sidekey shuts down.
    stop: Stop,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
    active: Option<Gauge>,
    /// The drain timeout was reached and said so (once, not per worker).
    drain_warned: AtomicBool,
    serve: F,
}

/// Tells a listener's accept loops to stop accepting: a flag, and each
/// loop's waker. Checking it is a load and a waker comparison, so a loop
/// waiting for its next connection costs little (a watch receiver's wait
/// is re-polled, with its locks, every time the listener has nothing).
struct Stop {
    on: AtomicBool,
    wakers: Vec<Mutex<Option<Waker>>>,
}

impl Stop {
    fn new(loops: usize) -> Stop {
        Stop {
            on: AtomicBool::new(false),
            wakers: (0..loops).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn fire(&self) {
        self.on.store(true, Ordering::SeqCst);
        for waker in &self.wakers {
            if let Some(waker) = lock(waker).take() {
                waker.wake();
            }
        }
    }

    /// Ready once [`Stop::fire`] was called; else `cx` (loop `i`'s) is
    /// woken when it is.
    fn poll(&self, i: usize, cx: &mut Context<'_>) -> Poll<()> {
        if self.on.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        {
            let mut slot = lock(&self.wakers[i]);
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        if self.on.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// A waker slot stays usable after a panic elsewhere.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accepts on `listener` on every worker thread at once (each on its own
/// clone of the socket, registered in its own reactor) until `shutdown`,
/// then lets the connections finish for at most `drain` before closing
/// those still open. `close` (a reload that dropped this listener) stops
/// only the accepting: the connections run on until they end or sidekey
/// shuts down. Returns once every worker's loop has.
pub(crate) async fn accept_on_workers<F: Serve>(
    listener: std::net::TcpListener,
    mut close: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    active: Option<&Gauge>,
    workers: Arc<Workers>,
    serve: F,
) {
    let shared = Arc::new(Listener {
        stop: Stop::new(workers.len()),
        shutdown: shutdown.clone(),
        drain,
        active: active.cloned(),
        drain_warned: AtomicBool::new(false),
        serve,
    });
    let mut loops = Vec::with_capacity(workers.len());
    for worker in 0..workers.len() {
        let listener = match listener.try_clone() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(worker, error = %e, "cannot share a listener with a worker");
                continue;
            }
        };
        let shared = shared.clone();
        let on = workers.clone();
        loops.push(workers.handle(worker).spawn(async move {
            // Registered here, in this worker's reactor.
            match TcpListener::from_std(listener) {
                Ok(listener) => worker_loop(listener, &shared, &on, worker).await,
                Err(e) => tracing::warn!(worker, error = %e, "cannot listen on a worker"),
            }
        }));
    }
    drop(listener);
    closed_or_shutdown(&mut close, &mut shutdown).await;
    shared.stop.fire();
    for accepting in loops {
        let _ = accepting.await;
    }
}

/// One worker's accept loop (see [`accept_on_workers`]). A connection
/// runs on the worker that accepted it, unless another worker holds
/// fewer connections: then it is handed to the least loaded one
/// ([`Workers::pick`]).
async fn worker_loop<F: Serve>(
    listener: TcpListener,
    shared: &Arc<Listener<F>>,
    workers: &Arc<Workers>,
    me: usize,
) {
    let mut connections = JoinSet::new();
    let stopped = |cx: &mut Context<'_>| shared.stop.poll(me, cx);
    accept_until(&listener, stopped, |stream, peer| {
        // The connections that ended since the last one.
        while connections.try_join_next().is_some() {}
        let target = workers.pick(me);
        let active = ActiveConnection::new(shared.active.as_ref(), Some(workers.load(target)));
        if target == me {
            // Boxed: the task then holds a pointer, and tokio's moves of
            // its future (spawning, setting its stage, reading its output)
            // copy 8 bytes, not the connection's whole state.
            connections.spawn(Box::pin((shared.serve)(
                stream,
                peer,
                shared.shutdown.clone(),
                active,
            )));
            return;
        }
        // Moved to the other worker's reactor.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "accepted connection unusable");
                return;
            }
        };
        let shared = shared.clone();
        connections.spawn_on(
            Box::pin(async move {
                if let Ok(stream) = TcpStream::from_std(stream) {
                    (shared.serve)(stream, peer, shared.shutdown.clone(), active).await;
                }
            }),
            workers.handle(target),
        );
    })
    .await;
    drop(listener);
    drain(
        connections,
        shared.shutdown.clone(),
        shared.drain,
        &shared.drain_warned,
    )
    .await;
}

/// Accepts on the admin listener, serving each connection on this
/// (the control) runtime; as [`accept_on_workers`] otherwise.
pub(crate) async fn accept_here<F: Serve>(
    listener: TcpListener,
    mut close: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    drain_for: Duration,
    serve: F,
) {
    let mut connections = JoinSet::new();
    let stop = shutdown.clone();
    let mut signals = pin!(closed_or_shutdown(&mut close, &mut shutdown));
    let stopped = |cx: &mut Context<'_>| signals.as_mut().poll(cx);
    accept_until(&listener, stopped, |stream, peer| {
        while connections.try_join_next().is_some() {}
        connections.spawn(serve(
            stream,
            peer,
            stop.clone(),
            ActiveConnection::new(None, None),
        ));
    })
    .await;
    drop(listener);
    drain(connections, stop, drain_for, &AtomicBool::new(false)).await;
}

/// Accepts until `stopped` is ready, giving each connection to `start`
/// (`TCP_NODELAY` is the server's to set: see `wire::io::WriteHalf`).
/// The listener comes first: `stopped` is polled when it has nothing (and
/// at least every 128 connections, when tokio's budget for the task runs
/// out).
async fn accept_until(
    listener: &TcpListener,
    mut stopped: impl FnMut(&mut Context<'_>) -> Poll<()>,
    mut start: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        // `poll_accept`: its wake-up is the socket's own slot, not a
        // waiter list entry as `accept()`'s is.
        let accepted = poll_fn(|cx| match listener.poll_accept(cx) {
            Poll::Ready(accepted) => Poll::Ready(Some(accepted)),
            Poll::Pending => stopped(cx).map(|()| None),
        })
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, peer))) => start(stream, peer),
            Some(Err(e)) => {
                // E.g. out of file descriptors: back off briefly instead
                // of spinning.
                tracing::warn!(error = %e, "accept failed");
                let mut pause = pin!(tokio::time::sleep(Duration::from_millis(50)));
                let stop = poll_fn(|cx| match stopped(cx) {
                    Poll::Ready(()) => Poll::Ready(true),
                    Poll::Pending => pause.as_mut().poll(cx).map(|()| false),
                })
                .await;
                if stop {
                    return;
                }
            }
        }
    }
}

/// After the accepting stopped: waits for `connections` to end; at
/// shutdown (now or later) for at most `drain`, then closes those still
/// open, saying so unless `warned` (shared by a listener's workers) is
/// set already.
async fn drain(
    mut connections: JoinSet<()>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    warned: &AtomicBool,
) {
    let stopping = *shutdown.borrow();
    if !stopping {
        tokio::select! {
            () = async { while connections.join_next().await.is_some() {} } => return,
            () = closed(&mut shutdown) => {}
        }
    }
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        if !warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                ?drain,
                "drain timeout reached; closing the remaining connections"
            );
        }
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Resolves once the listener closes (a reload dropped it) or sidekey
/// shuts down.
async fn closed_or_shutdown(
    close: &mut watch::Receiver<bool>,
    shutdown: &mut watch::Receiver<bool>,
) {
    tokio::select! {
        () = closed(close) => {}
        () = closed(shutdown) => {}
    }
}

/// Resolves once `signal` turns true (or its sender is gone).
pub(crate) async fn closed(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|on| *on).await;
}

/// Counts one open client connection in `active_connections` and in its
/// worker's [`Load`] while alive (also when its task is aborted); nothing
/// for a listener without them (the admin listener).
pub(crate) struct ActiveConnection {
    gauge: Option<Gauge>,
    load: Option<Load>,
}

impl ActiveConnection {
    fn new(gauge: Option<&Gauge>, load: Option<Load>) -> ActiveConnection {
        if let Some(gauge) = gauge {
            gauge.inc();
        }
        if let Some(load) = &load {
            load.inc();
        }
        ActiveConnection {
            gauge: gauge.cloned(),
            load,
        }
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        if let Some(gauge) = &self.gauge {
            gauge.dec();
        }
        if let Some(load) = &self.load {
            load.dec();
        }
    }
}
