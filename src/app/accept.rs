//! Accept loops: every worker thread accepts on the proxy's listeners
//! itself ([`accept_on_workers`]), so that an accepted socket is
//! registered once, in the reactor of the thread that serves it, and no
//! other thread is woken for it. On shutdown a listener's connections
//! drain for at most `drain_timeout`.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
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
    active: Option<Gauge>,
    /// The listener's open connections, on every worker.
    open: Arc<Open>,
    serve: F,
}

/// Counts a listener's open connections so that its end can wait for
/// them: an increment and a decrement per connection, where a `JoinSet`
/// of their tasks cost ~700 instructions per connection (an `Arc`'d list
/// entry, a wake-up of it when the task ends, and reaping it). The
/// connections past the drain timeout end with their worker's runtime
/// (`RunningProxy::shutdown` stops the workers right after).
#[derive(Default)]
struct Open {
    count: AtomicUsize,
    /// Set once something waits for `count` to reach 0.
    draining: AtomicBool,
    ended: Notify,
}

impl Open {
    fn enter(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn leave(&self) {
        // SeqCst, with `all_ended`'s: either the last connection sees the
        // waiter's flag, or the waiter sees the count at 0.
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 && self.draining.load(Ordering::SeqCst) {
            // A permit, kept if the waiter is not waiting at this moment.
            self.ended.notify_one();
        }
    }

    /// Resolves once no connection is open (at once if none is).
    async fn all_ended(&self) {
        self.draining.store(true, Ordering::SeqCst);
        while self.count.load(Ordering::SeqCst) > 0 {
            self.ended.notified().await;
        }
    }
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
/// then lets the connections finish for at most `drain_for` (those still
/// open then are closed when the workers stop). `close` (a reload that
/// dropped this listener) stops only the accepting: the connections run
/// on until they end or sidekey shuts down.
pub(crate) async fn accept_on_workers<F: Serve>(
    listener: std::net::TcpListener,
    mut close: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    drain_for: Duration,
    active: Option<&Gauge>,
    workers: Arc<Workers>,
    serve: F,
) {
    let shared = Arc::new(Listener {
        stop: Stop::new(workers.len()),
        shutdown: shutdown.clone(),
        active: active.cloned(),
        open: Arc::new(Open::default()),
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
    // Those still open past the drain timeout end with their workers'
    // runtimes.
    drain(shared.open.all_ended(), shutdown, drain_for).await;
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
    let stopped = |cx: &mut Context<'_>| shared.stop.poll(me, cx);
    accept_until(&listener, stopped, |stream, peer| {
        let target = workers.pick(me);
        let active = ActiveConnection::new(
            shared.active.as_ref(),
            Some(workers.load(target)),
            Some(shared.open.clone()),
        );
        if target == me {
            // Boxed: the task then holds a pointer, and tokio's moves of
            // its future (spawning, setting its stage, reading its output)
            // copy 8 bytes, not the connection's whole state.
            tokio::spawn(Box::pin((shared.serve)(
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
        workers.handle(target).spawn(Box::pin(async move {
            if let Ok(stream) = TcpStream::from_std(stream) {
                (shared.serve)(stream, peer, shared.shutdown.clone(), active).await;
            }
        }));
    })
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
            ActiveConnection::new(None, None, None),
        ));
    })
    .await;
    drop(listener);
    let ended = async { while connections.join_next().await.is_some() {} };
    if !drain(ended, stop, drain_for).await {
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
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

/// After the accepting stopped: waits for `ended` (the connections'
/// end); at shutdown (now or later) for at most `drain`. False (and said
/// in the log) when the timeout cut it short: the connections still open
/// are then closed.
async fn drain(
    ended: impl Future<Output = ()>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) -> bool {
    let mut ended = pin!(ended);
    let stopping = *shutdown.borrow();
    if !stopping {
        tokio::select! {
            () = ended.as_mut() => return true,
            () = closed(&mut shutdown) => {}
        }
    }
    if tokio::time::timeout(drain, ended).await.is_ok() {
        return true;
    }
    tracing::warn!(
        ?drain,
        "drain timeout reached; closing the remaining connections"
    );
    false
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

/// Counts one open client connection in `active_connections`, in its
/// worker's [`Load`] and in its listener's [`Open`] while alive (also
/// when its task is dropped unfinished); nothing for a listener without
/// them (the admin listener).
pub(crate) struct ActiveConnection {
    gauge: Option<Gauge>,
    load: Option<Load>,
    open: Option<Arc<Open>>,
}

impl ActiveConnection {
    fn new(gauge: Option<&Gauge>, load: Option<Load>, open: Option<Arc<Open>>) -> ActiveConnection {
        if let Some(gauge) = gauge {
            gauge.inc();
        }
        if let Some(load) = &load {
            load.inc();
        }
        if let Some(open) = &open {
            open.enter();
        }
        ActiveConnection {
            gauge: gauge.cloned(),
            load,
            open,
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
        if let Some(open) = &self.open {
            open.leave();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_connections_are_waited_for_until_the_last_one_ends() {
        let open = Arc::new(Open::default());
        // None open: done at once.
        open.all_ended().await;

        let a = ActiveConnection::new(None, None, Some(open.clone()));
        let b = ActiveConnection::new(None, None, Some(open.clone()));
        let mut ended = tokio_test::task::spawn(open.all_ended());
        assert!(ended.poll().is_pending());
        drop(a);
        assert!(ended.poll().is_pending(), "one connection is still open");
        drop(b);
        assert!(ended.is_woken(), "the last one wakes the waiter");
        assert!(ended.poll().is_ready());
    }

    #[tokio::test]
    async fn a_connection_ending_on_another_thread_wakes_the_drain() {
        let open = Arc::new(Open::default());
        let conn = ActiveConnection::new(None, None, Some(open.clone()));
        let (started, ready) = tokio::sync::oneshot::channel::<()>();
        let other = std::thread::spawn(move || {
            let _ = ready.blocking_recv();
            drop(conn);
        });
        let waiting = open.all_ended();
        let _ = started.send(());
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the drain ends with the last connection");
        other.join().unwrap();
    }
}
