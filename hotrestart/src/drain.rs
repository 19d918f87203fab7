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

/// Live work, and connections parked for a successor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    live: usize,
    parked: usize,
}

/// Counts live work. The snapshot waits until no work is live: no accept loop running, no
/// connection serving, so nothing can still change `#[persist]` state. Parked connections
/// (idle, waiting to be handed over) do not hold the snapshot back, but a process does not
/// finish draining while one is still parked: it may be given back.
#[derive(Clone)]
pub(crate) struct Tracker {
    count: watch::Sender<Counts>,
    /// Connections closed while still busy because the drain timeout passed.
    cut: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Busy connections already reported (by the handover) that will be cut later.
    reported: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Tracker {
    pub(crate) fn new() -> Self {
        Tracker {
            count: watch::Sender::new(Counts::default()),
            cut: Default::default(),
            reported: Default::default(),
        }
    }

    pub(crate) fn enter(&self) -> WorkGuard {
        self.count.send_modify(|n| n.live += 1);
        WorkGuard {
            count: self.count.clone(),
            parked: false,
        }
    }

    /// Records a connection closed while busy at the drain timeout.
    #[cfg(feature = "http")]
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
    #[cfg(feature = "http")]
    pub(crate) fn take_unreported_cut(&self) -> usize {
        let cut = self.take_cut();
        let reported = self.reported.swap(0, std::sync::atomic::Ordering::Relaxed);
        cut.saturating_sub(reported)
    }

    pub(crate) fn live(&self) -> usize {
        self.count.borrow().live
    }

    /// Waits until no work is live, up to `limit`; returns how much was still live then.
    /// Parked connections are not waited for: this is what the snapshot waits for.
    pub(crate) async fn idle(&self, limit: Duration) -> usize {
        let mut rx = self.count.subscribe();
        let idle = tokio::time::timeout(limit, rx.wait_for(|n| n.live == 0))
            .await
            .is_ok();
        if idle {
            0
        } else {
            self.live()
        }
    }

    /// Waits until no work is live and no connection is parked, up to `limit`; returns how
    /// many were still open then. What a draining process waits for. A parked connection
    /// given back enters as live work before it leaves the parked count, so the two are never
    /// both zero while it is open.
    pub(crate) async fn drained(&self, limit: Duration) -> usize {
        let mut rx = self.count.subscribe();
        let done = tokio::time::timeout(limit, rx.wait_for(|n| n.live + n.parked == 0))
            .await
            .is_ok();
        if done {
            0
        } else {
            let n = *self.count.borrow();
            n.live + n.parked
        }
    }
}

/// One unit of live work; dropping it ends the work.
#[must_use = "the work ends when the guard is dropped"]
pub struct WorkGuard {
    count: watch::Sender<Counts>,
    parked: bool,
}

#[cfg(feature = "http")]
impl WorkGuard {
    /// The same unit, now counted as a parked connection (one update, not two).
    pub(crate) fn into_parked(mut self) -> WorkGuard {
        if !self.parked {
            self.count.send_modify(|n| {
                n.live -= 1;
                n.parked += 1;
            });
            self.parked = true;
        }
        self
    }

    /// The same unit, live again.
    pub(crate) fn into_live(mut self) -> WorkGuard {
        if self.parked {
            self.count.send_modify(|n| {
                n.parked -= 1;
                n.live += 1;
            });
            self.parked = false;
        }
        self
    }
}

impl std::fmt::Debug for WorkGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkGuard")
            .field("parked", &self.parked)
            .finish_non_exhaustive()
    }
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        let parked = self.parked;
        self.count
            .send_modify(|n| if parked { n.parked -= 1 } else { n.live -= 1 });
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

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown").finish_non_exhaustive()
    }
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
