//! Worker threads: one single-threaded Tokio runtime per core.
//!
//! Every worker accepts on the proxy's listeners itself (see
//! [`super::accept`]) and serves what it accepts: the connection, its
//! requests and the upstream connections they use ([`crate::client::pool`])
//! stay on that one thread: no work stealing, no wake-ups of another thread
//! per connection or request, no shared pool lock. Each worker's open
//! connections are counted ([`Load`]) so that one that won the race for a
//! burst of connections hands the excess to the others. Token sources stay shared across workers: a cache hit
//! is a lock-free read, and their background fetches and mints run on the
//! control runtime (see `token::Background`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::client::pool;

/// One worker's count of open client connections (a clone per
/// connection, see [`super::accept::ActiveConnection`]).
#[derive(Clone, Default)]
pub(crate) struct Load(Arc<AtomicUsize>);

impl Load {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The running worker threads of one proxy. Dropping it stops them; the
/// tasks still on them (connections past the drain timeout, pooled
/// upstream connections) are dropped with their runtimes.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    /// Each worker's open client connections.
    loads: Vec<Load>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` (at least one) worker threads.
    pub(crate) fn start(n: usize) -> std::io::Result<Workers> {
        let n = n.max(1);
        let mut workers = Workers {
            handles: Vec::with_capacity(n),
            loads: Vec::with_capacity(n),
            stops: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            workers.loads.push(Load::default());
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

    /// How many workers run.
    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// The runtime of worker `i`.
    pub(crate) fn handle(&self, i: usize) -> &Handle {
        &self.handles[i]
    }

    /// The open connections of worker `i`.
    pub(crate) fn load(&self, i: usize) -> Load {
        self.loads[i].clone()
    }

    /// Where a connection that worker `me` accepted runs: on `me`, unless
    /// another worker holds fewer connections, which then gets it (handing
    /// it over costs a cross-thread wake-up, once per connection).
    ///
    /// Exact balance, not "within a few": with every core busy, the worker
    /// holding the most connections bounds throughput. Letting a worker
    /// keep up to 4 connections more than the other (64 keep-alive
    /// clients split 34 / 30) cost ~8% of the req/s at 64 connections
    /// with a TLS upstream, and gained nothing for a new connection per
    /// request (`bench/compare.sh`, median of 9 alternating reps, three
    /// runs each).
    pub(crate) fn pick(&self, me: usize) -> usize {
        let mine = self.loads[me].get();
        if mine == 0 {
            return me;
        }
        let (least, fewest) = self
            .loads
            .iter()
            .map(Load::get)
            .enumerate()
            .min_by_key(|&(_, n)| n)
            .unwrap_or((me, mine));
        if mine > fewest {
            least
        } else {
            me
        }
    }

    /// The open connections of every worker, in order.
    #[cfg(test)]
    pub(crate) fn loads(&self) -> Vec<usize> {
        self.loads.iter().map(Load::get).collect()
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
