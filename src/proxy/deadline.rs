//! How `proxy.request_timeout` bounds an exchange with an upstream.
//!
//! The response head must come within the timeout of the request being
//! sent. While a client's request body streams, each piece of it that
//! arrives moves that deadline on: an upload takes as long as the client
//! needs to send it, but silence for the whole timeout (a stalled client,
//! or an upstream that stopped reading or never answers) ends the
//! exchange with a `504`.

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
    pub fn new() -> Progress {
        Progress {
            base: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// A piece of body just arrived.
    pub fn touch(&self) {
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
    pub fn at(&self) -> Instant {
        let from = match &self.progress {
            Some(p) => self.start.max(p.last()),
            None => self.start,
        };
        from + self.timeout
    }

    /// `work`'s output, or `None` once the deadline has passed first.
    pub async fn bound<F: Future>(&self, work: F) -> Option<F::Output> {
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
pub struct Bounded<'a, F> {
    pub deadline: &'a Deadline,
    pub timer: Pin<&'a mut Sleep>,
    pub work: Pin<&'a mut F>,
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
