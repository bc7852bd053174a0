//! How `proxy.request_timeout` bounds an exchange with an upstream.
//!
//! The response head must come within the timeout of the request being
//! sent. While a client's request body streams, each piece of it that
//! arrives moves that deadline on: an upload takes as long as the client
//! needs to send it, but silence for the whole timeout (a stalled client,
//! or an upstream that stopped reading or never answers) ends the
//! exchange with a `504`.
//!
//! [`IdleTimer`] bounds the other phases, by `proxy.body_idle_timeout`:
//! the silence of a body that streams (a client's request body, an
//! upstream's response body) and of a client that stops reading what is
//! written to it.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// When a client's streamed request body last moved. One per client
/// connection that sends a body, shared with the exchanges it feeds.
#[derive(Debug)]
pub struct Progress {
    base: Instant,
    /// Microseconds from `base` to the last piece of body.
    last: AtomicU64,
}

impl Progress {
    pub(crate) fn new() -> Progress {
        Progress {
            base: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// A piece of body just arrived.
    pub(crate) fn touch(&self) {
        let micros = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last.store(micros, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_micros(self.last.load(Ordering::Relaxed))
    }
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::new()
    }
}

/// A body phase that stayed silent for the whole `body_idle_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no progress for {0:?} while a body streamed")]
pub struct Stalled(pub Duration);

/// Bounds the silence of a streaming phase: armed only while the work it
/// bounds is pending (a phase that never waits never touches the timer),
/// and fires once `timeout` has passed without the work making progress.
pub(crate) struct IdleTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    pub(crate) fn new(timeout: Duration) -> IdleTimer {
        IdleTimer {
            timeout,
            sleep: None,
            armed: false,
        }
    }

    /// The work made progress: the next wait starts a new period.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }

    /// The work is pending: starts the period if it has not started, and
    /// tells whether it has ended (`Ready`) or not (`Pending`, with `cx`
    /// woken when it does).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Stalled> {
        if !self.armed {
            // Read the clock only when a period starts.
            let at = Instant::now() + self.timeout;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(at),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            self.armed = true;
        }
        let Some(sleep) = self.sleep.as_mut() else {
            return Poll::Pending;
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Stalled(self.timeout)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Runs `work`, failing with [`Stalled`] if it stays pending for the
    /// whole timeout.
    pub(crate) async fn bound<F: Future>(&mut self, work: F) -> Result<F::Output, Stalled> {
        let mut work = pin!(work);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                self.disarm();
                return Poll::Ready(Ok(out));
            }
            self.poll_expired(cx).map(Err)
        })
        .await
    }
}

/// The deadline of one exchange: `timeout` after it started, or after its
/// request body last moved, whichever is later.
#[derive(Clone, Debug)]
pub struct Deadline {
    start: Instant,
    timeout: Duration,
    progress: Option<Arc<Progress>>,
}

impl Deadline {
    pub fn new(start: Instant, timeout: Duration, progress: Option<Arc<Progress>>) -> Deadline {
        Deadline {
            start,
            timeout,
            progress,
        }
    }

    /// The instant it falls due, as of now.
    pub(crate) fn at(&self) -> Instant {
        let from = match &self.progress {
            Some(p) => self.start.max(p.last()),
            None => self.start,
        };
        from + self.timeout
    }

    /// `work`'s output, or `None` once the deadline has passed first.
    pub(crate) async fn bound<F: Future>(&self, work: F) -> Option<F::Output> {
        let timer = pin!(tokio::time::sleep_until(self.at()));
        let work = pin!(work);
        Bounded {
            deadline: self,
            timer,
            work,
        }
        .await
    }
}

/// Runs `work` until `deadline`; `None` if the deadline came first.
///
/// The deadline may move later while `work` runs: when `timer` fires
/// before it (the body moved meanwhile), it is set again. `timer` may also
/// be a connection's one timer, still set for an earlier request's
/// (earlier) deadline: it is moved on only when it fires, instead of being
/// armed anew for every request. A future of its own rather than an
/// `async fn`: it borrows `work` where it is, instead of holding (and
/// copying) another copy of it.
pub(crate) struct Bounded<'a, F> {
    pub(crate) deadline: &'a Deadline,
    pub(crate) timer: Pin<&'a mut Sleep>,
    pub(crate) work: Pin<&'a mut F>,
}

impl<F: Future> Future for Bounded<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(out) = this.work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        loop {
            std::task::ready!(this.timer.as_mut().poll(cx));
            let at = this.deadline.at();
            if Instant::now() >= at {
                return Poll::Ready(None);
            }
            this.timer.as_mut().reset(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn body_progress_moves_the_deadline_on() {
        let progress = Arc::new(Progress::new());
        let start = Instant::now();
        let deadline = Deadline::new(start, Duration::from_secs(1), Some(progress.clone()));
        assert_eq!(deadline.at(), start + Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(800)).await;
        progress.touch();
        assert_eq!(deadline.at(), start + Duration::from_millis(1800));
        // Work that keeps the body moving outlives the first deadline...
        let moving = deadline.bound(async {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                progress.touch();
            }
        });
        assert!(moving.await.is_some());
        // ... and silence for the whole timeout ends it.
        let silent = deadline.bound(tokio::time::sleep(Duration::from_secs(5)));
        assert!(silent.await.is_none());
        assert_eq!(Instant::now(), progress.last() + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_body_it_is_fixed() {
        let start = Instant::now();
        let deadline = Deadline::new(start, Duration::from_secs(1), None);
        assert!(deadline
            .bound(tokio::time::sleep(Duration::from_secs(2)))
            .await
            .is_none());
        assert_eq!(Instant::now(), start + Duration::from_secs(1));
    }
}
