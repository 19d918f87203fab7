//! Accepting, quiescing, draining: the phase every accept loop obeys, and the count of work:
//! what the snapshot waits for (work that may still change `#[persist]` state), and what only
//! the drain waits for (long-lived connections, connections parked for a successor).

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

/// Live work, connections parked for a successor, and long-lived connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    live: usize,
    parked: usize,
    lingering: usize,
}

/// What a [`WorkGuard`] counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// May change `#[persist]` state: the snapshot waits for it (up to the snapshot timeout).
    Live,
    /// A connection parked for the successor: may be given back.
    Parked,
    /// A long-lived connection (WebSocket, event stream, gRPC stream): the process stays
    /// until it ends or the drain timeout passes, but the snapshot never waits for it.
    Lingering,
}

impl Counts {
    fn slot(&mut self, kind: Kind) -> &mut usize {
        match kind {
            Kind::Live => &mut self.live,
            Kind::Parked => &mut self.parked,
            Kind::Lingering => &mut self.lingering,
        }
    }
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

    /// Work the snapshot waits for.
    pub(crate) fn enter(&self) -> WorkGuard {
        self.enter_as(Kind::Live)
    }

    /// A long-lived connection: the drain waits for it, the snapshot does not.
    pub(crate) fn enter_lingering(&self) -> WorkGuard {
        self.enter_as(Kind::Lingering)
    }

    fn enter_as(&self, kind: Kind) -> WorkGuard {
        self.count.send_modify(|n| *n.slot(kind) += 1);
        WorkGuard {
            count: self.count.clone(),
            kind,
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

    /// Waits until no work is live, no connection is parked and no long-lived connection is
    /// open, up to `limit`; returns how many were still open then. What a draining process
    /// waits for. A guard changes kind in one update, so the counts are never all zero while
    /// it exists.
    pub(crate) async fn drained(&self, limit: Duration) -> usize {
        let open = |n: &Counts| n.live + n.parked + n.lingering;
        let mut rx = self.count.subscribe();
        let done = tokio::time::timeout(limit, rx.wait_for(|n| open(n) == 0))
            .await
            .is_ok();
        if done {
            0
        } else {
            open(&self.count.borrow())
        }
    }

    /// Long-lived connections open now.
    pub(crate) fn lingering(&self) -> usize {
        self.count.borrow().lingering
    }
}

/// One unit of work, counted while it exists: what [`Hot::track`](crate::Hot::track) (work the
/// snapshot waits for) and [`Hot::long_lived`](crate::Hot::long_lived) (a connection the drain
/// waits for) return. Dropping it ends the work.
#[must_use = "the work ends when the guard is dropped"]
pub struct WorkGuard {
    count: watch::Sender<Counts>,
    kind: Kind,
}

impl WorkGuard {
    /// The same unit counted as another kind, in one update.
    fn into_kind(mut self, kind: Kind) -> WorkGuard {
        if self.kind != kind {
            let from = self.kind;
            self.count.send_modify(|n| {
                *n.slot(from) -= 1;
                *n.slot(kind) += 1;
            });
            self.kind = kind;
        }
        self
    }

    /// The same unit, now a parked connection.
    pub(crate) fn into_parked(self) -> WorkGuard {
        self.into_kind(Kind::Parked)
    }

    /// The same unit, live again: the snapshot waits for it.
    pub(crate) fn into_live(self) -> WorkGuard {
        self.into_kind(Kind::Live)
    }

    /// The same unit, now a long-lived connection: the snapshot no longer waits for it.
    pub fn into_long_lived(self) -> WorkGuard {
        self.into_kind(Kind::Lingering)
    }
}

impl std::fmt::Debug for WorkGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkGuard")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        let kind = self.kind;
        self.count.send_modify(|n| *n.slot(kind) -= 1);
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
    pub(crate) fn new(mut stopping: watch::Receiver<bool>) -> Self {
        Shutdown {
            inner: Box::pin(async move {
                let _ = stopping.wait_for(|s| *s).await;
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
