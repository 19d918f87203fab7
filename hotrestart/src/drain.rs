//! Accepting, quiescing, draining: the phase every accept loop obeys, and the count of work
//! (accept loops and connections) that must end before a snapshot is taken.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;

/// What accept loops must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accept and serve.
    Serving,
    /// A successor is taking over: stop accepting (keep the sockets), finish open connections.
    /// May return to [`Phase::Serving`] if the restart rolls back.
    Quiesced,
    /// This process is done: stop accepting for good and drain.
    Stopping,
}

/// Counts live work. The snapshot waits until the count is zero: no accept loop running, no
/// connection open, so nothing can still change `#[persist]` state.
#[derive(Clone)]
pub(crate) struct Tracker {
    count: watch::Sender<usize>,
    /// Connections closed while still busy because the drain timeout passed.
    cut: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Busy connections already reported (by the handover) that will be cut later.
    reported: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Tracker {
    pub(crate) fn new() -> Self {
        Tracker {
            count: watch::Sender::new(0),
            cut: Default::default(),
            reported: Default::default(),
        }
    }

    pub(crate) fn enter(&self) -> WorkGuard {
        self.count.send_modify(|n| *n += 1);
        WorkGuard {
            count: self.count.clone(),
        }
    }

    /// Records a connection closed while busy at the drain timeout.
    pub(crate) fn cut_one(&self) {
        self.cut.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many were cut since the last call.
    pub(crate) fn take_cut(&self) -> usize {
        self.cut.swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes `n` busy connections as reported already: their cut is not reported again.
    pub(crate) fn reported(&self, n: usize) {
        self.reported
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Cut connections not reported yet.
    pub(crate) fn take_unreported_cut(&self) -> usize {
        let cut = self.take_cut();
        let reported = self.reported.swap(0, std::sync::atomic::Ordering::Relaxed);
        cut.saturating_sub(reported)
    }

    pub(crate) fn live(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until no work is live, up to `limit`; returns how much was still live then.
    pub(crate) async fn idle(&self, limit: Duration) -> usize {
        let mut rx = self.count.subscribe();
        let idle = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0))
            .await
            .is_ok();
        if idle {
            0
        } else {
            self.live()
        }
    }
}

/// One unit of live work; dropping it ends the work.
#[must_use = "the work ends when the guard is dropped"]
pub struct WorkGuard {
    count: watch::Sender<usize>,
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        self.count.send_modify(|n| *n -= 1);
    }
}

/// Resolves when this process stops for good (handover committed, or SIGTERM/SIGINT).
/// Hand it to `axum::serve(...).with_graceful_shutdown(...)` or any graceful-shutdown API.
///
/// # Cancel safety
/// Dropping it has no effect; a new one can be taken from [`Hot::shutdown`](crate::Hot::shutdown).
pub struct Shutdown {
    inner: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Shutdown {
    pub(crate) fn new(mut phase: watch::Receiver<Phase>) -> Self {
        Shutdown {
            inner: Box::pin(async move {
                let _ = phase.wait_for(|p| *p == Phase::Stopping).await;
            }),
        }
    }
}

impl Future for Shutdown {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.as_mut().poll(cx)
    }
}
