//! Open connections handed to the successor with the listeners.
//!
//! At a handover, [`crate::http::serve`] stops each idle HTTP/1 connection between two requests
//! and parks it in the [`Outbox`]: its fd (still owned, and kept open, by the connection's
//! task), the bytes already read from it and not parsed yet, and the identity of the listener
//! it came from. After the snapshot the handover sends the parked fds (SCM_RIGHTS) and bytes to
//! the successor, which files them in its [`Inbox`] until its `serve` on the same listener
//! claims them. The verdict (moved: READY came; kept: the restart rolled back) tells each
//! parked task to close its copy or to serve the connection again itself.

use std::collections::HashMap;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// One parked connection, as the handover sends it.
pub(crate) struct Parcel {
    /// Borrowed: the parked task keeps the socket open until the verdict (a task cancelled
    /// meanwhile gives it to [`Outbox::abandon`], so the number is never reused under it).
    pub(crate) fd: RawFd,
    /// The listener's identity (its local address), the same in both processes.
    pub(crate) key: Arc<str>,
    /// Read from the connection, not parsed yet: the successor reads these first.
    pub(crate) prefix: Vec<u8>,
}

/// What became of a round of parked connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The handover is still running.
    Pending,
    /// The successor said READY: it serves them; close this process's copy.
    Moved,
    /// The restart rolled back: serve them here again.
    Kept,
}

/// The old process's side: connections parked during one handover.
pub(crate) struct Outbox {
    round: Mutex<Round>,
    /// Sockets of parked connections whose task went away after their parcel was taken to be
    /// sent: kept open until the round is decided, so that the fd being sent is still theirs.
    abandoned: Mutex<Vec<OwnedFd>>,
    /// The latest round and its verdict.
    verdict: watch::Sender<(u64, Verdict)>,
}

struct Round {
    id: u64,
    /// Whether connections may still park in it (until [`Outbox::take`]).
    accepting: bool,
    /// Which kinds the successor takes: HTTP connections, custom protocols' connections.
    http: bool,
    custom: bool,
    /// Whether its connections were taken to be sent (the successor may hold them now).
    sent: bool,
    parcels: Vec<Parcel>,
}

/// Where a parked connection waits for its verdict.
pub(crate) struct Ticket {
    round: u64,
    verdict: watch::Receiver<(u64, Verdict)>,
}

impl Ticket {
    /// What became of the round this connection was parked in.
    pub(crate) async fn verdict(mut self) -> Verdict {
        let round = self.round;
        match self
            .verdict
            .wait_for(|(r, v)| *r != round || *v != Verdict::Pending)
            .await
        {
            // A later round exists only if this one was rolled back.
            Ok(latest) if latest.0 == round => latest.1,
            Ok(_) => Verdict::Kept,
            Err(_) => Verdict::Kept,
        }
    }
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Outbox {
            round: Mutex::new(Round {
                id: 0,
                accepting: false,
                http: false,
                custom: false,
                sent: false,
                parcels: Vec::new(),
            }),
            verdict: watch::Sender::new((0, Verdict::Kept)),
            abandoned: Mutex::new(Vec::new()),
        }
    }

    /// Starts a round: connections of the kinds the successor takes may park until
    /// [`Outbox::take`].
    pub(crate) fn open(&self, http: bool, custom: bool) {
        let mut round = self.round.lock().unwrap();
        round.id += 1;
        round.accepting = true;
        round.http = http;
        round.custom = custom;
        round.sent = false;
        round.parcels.clear();
        self.verdict.send_replace((round.id, Verdict::Pending));
    }

    /// Whether connections should park (rather than close) in the current quiescence: a
    /// round is open and its connections have not been taken for sending yet.
    #[cfg(feature = "http")]
    pub(crate) fn is_open(&self) -> bool {
        let round = self.round.lock().unwrap();
        round.accepting && round.http
    }

    /// The same for connections of custom protocols.
    pub(crate) fn is_open_for_custom(&self) -> bool {
        let round = self.round.lock().unwrap();
        round.accepting && round.custom
    }

    /// Parks a connection, if the round still takes them; the ticket tells what became of it.
    /// `None`: too late, the parked connections were already sent; serve it and let it drain.
    pub(crate) fn park(&self, parcel: Parcel) -> Option<Ticket> {
        let mut round = self.round.lock().unwrap();
        if !round.accepting {
            return None;
        }
        round.parcels.push(parcel);
        Some(Ticket {
            round: round.id,
            verdict: self.verdict.subscribe(),
        })
    }

    /// Everything parked in this round, to send; later connections are refused.
    pub(crate) fn take(&self) -> Vec<Parcel> {
        let mut round = self.round.lock().unwrap();
        round.accepting = false;
        round.sent = true;
        std::mem::take(&mut round.parcels)
    }

    /// Whether the current, undecided round's connections were sent: from then on the
    /// successor may be serving them, so the handover must not be abandoned blindly.
    pub(crate) fn in_successor_hands(&self) -> bool {
        let round = self.round.lock().unwrap();
        round.sent && self.verdict.borrow().1 == Verdict::Pending
    }

    /// Ends the round.
    pub(crate) fn decide(&self, verdict: Verdict) {
        let mut round = self.round.lock().unwrap();
        round.accepting = false;
        self.verdict.send_replace((round.id, verdict));
        // What the successor needed of them is sent (or it is dead): closed now.
        self.abandoned.lock().unwrap().clear();
    }

    /// A parked connection's task went away before the verdict: its parcel is withdrawn if it
    /// has not been taken yet (and the socket closed), else the socket is kept open until the
    /// round is decided.
    pub(crate) fn abandon(&self, socket: OwnedFd) {
        use std::os::fd::AsRawFd;
        let mut round = self.round.lock().unwrap();
        if round.accepting {
            let fd = socket.as_raw_fd();
            round.parcels.retain(|p| p.fd != fd);
            return;
        }
        drop(round);
        self.abandoned.lock().unwrap().push(socket);
    }
}

/// One connection received from the previous process.
pub(crate) struct Arrival {
    pub(crate) fd: OwnedFd,
    pub(crate) prefix: Vec<u8>,
}

/// The successor's side: connections received, by listener identity, until claimed.
#[derive(Default)]
pub(crate) struct Inbox {
    by_key: Mutex<HashMap<String, Vec<Arrival>>>,
}

impl Inbox {
    pub(crate) fn put(&self, key: String, arrival: Arrival) {
        self.by_key
            .lock()
            .unwrap()
            .entry(key)
            .or_default()
            .push(arrival);
    }

    pub(crate) fn claim(&self, key: &str) -> Vec<Arrival> {
        self.by_key.lock().unwrap().remove(key).unwrap_or_default()
    }

    /// Closes what nobody claimed; returns, by listener, how many connections and how many
    /// bytes read from them but never parsed.
    pub(crate) fn close_unclaimed(&self) -> Vec<(String, usize, usize)> {
        let left = std::mem::take(&mut *self.by_key.lock().unwrap());
        left.into_iter()
            .map(|(key, arrivals)| {
                let n = arrivals.len();
                let unread = arrivals
                    .into_iter()
                    .map(|Arrival { fd, prefix }| {
                        drop(fd);
                        prefix.len()
                    })
                    .sum();
                (key, n, unread)
            })
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.lock().unwrap().values().map(Vec::len).sum()
    }
}

/// The seam between the lifecycle and a serving layer (`http::serve`, and next custom
/// protocols): what the layer is handed to move its connections and account for its work,
/// and all it needs of the lifecycle's state. Cheap to clone; `Hot::connections` gives one.
#[derive(Clone)]
pub(crate) struct Handover(Arc<HandoverState>);

/// The state behind a [`Handover`], which the lifecycle reads directly.
pub(crate) struct HandoverState {
    /// Connections parked for the successor during a handover.
    pub(crate) outbox: Outbox,
    /// Connections received from the previous process, until a serving layer claims them.
    pub(crate) inbox: Inbox,
    /// Live work: the snapshot waits for it, the drain too.
    pub(crate) work: crate::drain::Tracker,
    /// Set when a handover takes its snapshot, cleared by a rollback: a request that starts
    /// in this process from then on (an HTTP/2 stream that raced the GOAWAY, a request after
    /// a long-lived response) would change a state that is no longer handed over, so it is
    /// refused with a status its client retries.
    pub(crate) snapshot_taken: std::sync::atomic::AtomicBool,
    /// Requests refused so (by the HTTP layer: unused without the `http` feature).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) refused_late: std::sync::atomic::AtomicUsize,
    drain_timeout: std::time::Duration,
}

impl Handover {
    pub(crate) fn new(drain_timeout: std::time::Duration) -> Self {
        Handover(Arc::new(HandoverState {
            outbox: Outbox::new(),
            inbox: Inbox::default(),
            work: crate::drain::Tracker::new(),
            snapshot_taken: Default::default(),
            refused_late: Default::default(),
            drain_timeout,
        }))
    }

    /// Waits for live work to end, up to the drain timeout; returns what is still live.
    pub(crate) async fn work_idle(&self) -> usize {
        self.work.drained(self.drain_timeout).await
    }
}

impl std::ops::Deref for Handover {
    type Target = HandoverState;
    fn deref(&self) -> &HandoverState {
        &self.0
    }
}

impl Handover {
    /// Connections handed over from the previous process that arrived on the listener known
    /// as `key`; each is given out once.
    pub(crate) fn claim(&self, key: &str) -> Vec<Arrival> {
        self.inbox.claim(key)
    }
}

/// What only the HTTP serving layer asks.
#[cfg(feature = "http")]
impl Handover {
    /// Records a connection closed while still busy at the drain timeout.
    pub(crate) fn connection_cut(&self) {
        self.work.cut_one();
    }

    /// Logs, once, the connections cut at the drain timeout since the last call.
    pub(crate) fn report_cut(&self, when: &str) {
        let cut = self.work.take_unreported_cut();
        if cut > 0 {
            tracing::warn!(
                cut,
                "{cut} connection(s) still busy at the drain timeout ({:?}) were closed {when}",
                self.drain_timeout
            );
        }
    }
}
