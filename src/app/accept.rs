//! The accept loop every listener runs: hands each connection to a
//! runtime, and on shutdown drains them for at most `drain_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::workers::Workers;

/// Where accepted connections run.
pub(crate) enum Spawn {
    /// On the runtime that accepts them (the admin listener).
    Here,
    /// On the proxy's worker threads, round robin.
    Workers(Arc<Workers>),
}

/// Accepts connections until `shutdown`, then lets them finish for at
/// most `drain` before closing those still open. `serve` runs each
/// connection (on the runtime `spawn` picks: the std stream becomes a
/// Tokio one there) and gets a receiver that turns true at shutdown, and
/// the connection's [`ActiveConnection`], for its future to hold.
/// `close` (a reload that dropped this listener) stops only the
/// accepting: the connections run on until they end or sidekey shuts down.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    mut close: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    active: Option<&Gauge>,
    spawn: Spawn,
    serve: F,
) where
    F: Fn(std::net::TcpStream, SocketAddr, watch::Receiver<bool>, ActiveConnection) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // Connection tasks, so that those still open when the drain timeout
    // ends can be closed.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // E.g. out of file descriptors: back off briefly
                        // instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // Moved to the worker's runtime (its I/O driver) below.
                let stream = match stream.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "accepted connection unusable");
                        continue;
                    }
                };
                // The connection's own future is the task (not wrapped in
                // another async block, which would hold it twice).
                let task = serve(stream, peer, shutdown.clone(), ActiveConnection::new(active));
                match &spawn {
                    Spawn::Here => connections.spawn(task),
                    Spawn::Workers(workers) => connections.spawn_on(task, workers.next()),
                };
                while connections.try_join_next().is_some() {}
            }
            _ = shutdown.changed() => break,
            () = closed(&mut close) => break,
        }
    }
    drop(listener);
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
        tracing::warn!(
            ?drain,
            "drain timeout reached; closing the remaining connections"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Resolves once `signal` turns true (or its sender is gone).
pub(crate) async fn closed(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|on| *on).await;
}

/// Counts one open client connection in `active_connections` while alive
/// (also when its task is aborted); nothing for a listener without the
/// gauge.
pub(crate) struct ActiveConnection(Option<Gauge>);

impl ActiveConnection {
    fn new(gauge: Option<&Gauge>) -> ActiveConnection {
        if let Some(gauge) = gauge {
            gauge.inc();
        }
        ActiveConnection(gauge.cloned())
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        if let Some(gauge) = &self.0 {
            gauge.dec();
        }
    }
}
