//! A scripted [`TokenFetcher`] for the unit tests of the cache and the pool.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use super::endpoint::{FetchError, FetchFuture, Fetched, TokenFetcher};
use super::Token;

/// A token's value, for assertions.
pub(crate) fn value(t: &Token) -> String {
    t.value.expose_secret().to_string()
}

/// Lets spawned tasks run until they block again.
pub(crate) async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// What one fetch returns.
pub(crate) enum Step {
    Ok(String, Option<Duration>),
    Err(FetchError),
}

impl Step {
    pub(crate) fn ok(value: &str, lifetime: Option<Duration>) -> Step {
        Step::Ok(value.to_string(), lifetime)
    }

    pub(crate) fn err(e: FetchError) -> Step {
        Step::Err(e)
    }
}

/// Holds fetches until opened.
#[derive(Clone)]
pub(crate) struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    pub(crate) fn open(&self) {
        self.0.send_replace(true);
    }

    async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// Returns the pushed steps in call order; when none is left, a new
/// token `auto-N` valid until rejected.
#[derive(Clone, Default)]
pub(crate) struct FakeFetcher {
    steps: Arc<Mutex<VecDeque<Step>>>,
    calls: Arc<AtomicUsize>,
    gate: Arc<Mutex<Option<Gate>>>,
}

impl FakeFetcher {
    pub(crate) fn new() -> FakeFetcher {
        FakeFetcher::default()
    }

    pub(crate) fn push(&self, step: Step) {
        self.steps.lock().unwrap().push_back(step);
    }

    /// Fetches started from now on wait until the returned gate opens.
    pub(crate) fn gate(&self) -> Gate {
        let gate = Gate(Arc::new(watch::channel(false).0));
        *self.gate.lock().unwrap() = Some(gate.clone());
        gate
    }

    /// Drops the steps not taken yet.
    pub(crate) fn clear(&self) {
        self.steps.lock().unwrap().clear();
    }

    /// Fetches started so far.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl TokenFetcher for FakeFetcher {
    fn fetch(&self) -> FetchFuture<'_> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let step = self.steps.lock().unwrap().pop_front();
        let gate = self.gate.lock().unwrap().clone();
        Box::pin(async move {
            if let Some(gate) = gate {
                gate.wait().await;
            }
            match step {
                Some(Step::Ok(value, lifetime)) => Ok(Fetched {
                    value: SecretString::from(value),
                    lifetime,
                }),
                Some(Step::Err(e)) => Err(e),
                None => Ok(Fetched {
                    value: SecretString::from(format!("auto-{n}")),
                    lifetime: None,
                }),
            }
        })
    }
}
