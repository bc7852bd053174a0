//! Worker threads: one single-threaded Tokio runtime per core.
//!
//! Listeners accept on the main runtime and hand each connection to a
//! worker, round robin. From then on the connection, its requests and the
//! upstream connections they use ([`crate::client::pool`]) stay on that one
//! thread: no work stealing, no wake-ups of another thread per request, no
//! shared pool lock. Token sources stay shared across workers: a cache hit
//! is a lock-free read, and their background fetches and mints run on the
//! control runtime (see `token::Background`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::client::pool;

/// The running worker threads of one proxy. Dropping it stops them; the
/// tasks still on them (connections past the drain timeout, pooled
/// upstream connections) are dropped with their runtimes.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` (at least one) worker threads.
    pub(crate) fn start(n: usize) -> std::io::Result<Workers> {
        let n = n.max(1);
        let mut workers = Workers {
            handles: Vec::with_capacity(n),
            next: AtomicUsize::new(0),
            stops: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            workers.stops.push(stop);
            let thread = std::thread::Builder::new()
                .name(format!("sidekey-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(pool::sweep_until(stopped));
                    // Dropping the runtime here, on its own thread, drops
                    // the tasks left on it.
                    drop(runtime);
                })?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// The runtime of the next worker, round robin.
    pub(crate) fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// Stops every worker and waits for their threads to end.
    pub(crate) async fn stop(mut self) {
        self.stops.clear();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}
