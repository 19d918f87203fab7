//! Connections of protocols this library does not parse, moved to the successor at a point the
//! protocol chooses: the same mechanism that moves HTTP/1.1 connections between two requests,
//! open to any protocol over TCP.
//!
//! The old process's handler holds a [`Movable`] per connection and waits on
//! [`Movable::signal`] beside its reads. At a hot restart whose successor takes connections it
//! gets [`Signal::HandOver`]: at its next message boundary it calls [`Movable::hand_over`]
//! with the socket, the bytes it has read and not yet parsed, and a small serde state (a
//! session, a sequence number). The successor's handler for the same listener name finds the
//! connection in [`Hot::handed_over`] and goes on serving it: the client keeps its TCP
//! connection. When this process stops instead (SIGTERM, or a successor that does not take
//! connections), the signal is [`Signal::Stop`]: end the connection cleanly.
//!
//! ```no_run
//! use std::io::Cursor;
//! use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
//! use hotrestart::{Hot, Movable, Signal};
//!
//! /// A line protocol: each line is answered; the connection moves at a line boundary.
//! /// `unread` (bytes read by a previous process, not answered) is read before the socket.
//! async fn serve_one(stream: tokio::net::TcpStream, unread: Vec<u8>, mut count: u64, mut movable: Movable) {
//!     let mut reader = BufReader::new(Cursor::new(unread).chain(stream));
//!     let mut line = String::new();
//!     loop {
//!         tokio::select! {
//!             signal = movable.signal() => match signal {
//!                 Signal::HandOver => {
//!                     // Not answered yet, in order: a partly read line (`read_line` keeps
//!                     // what it read when cancelled), the buffer, what is left of `unread`.
//!                     let mut left = std::mem::take(&mut line).into_bytes();
//!                     left.extend_from_slice(reader.buffer());
//!                     let (cursor, stream) = reader.into_inner().into_inner();
//!                     left.extend_from_slice(&cursor.get_ref()[cursor.position() as usize..]);
//!                     match movable.hand_over(stream, &left, &count).await {
//!                         Ok(()) => return, // the successor serves it now
//!                         // Rolled back: serve on here, `left` first.
//!                         Err(stream) => reader = BufReader::new(Cursor::new(left).chain(stream)),
//!                     }
//!                 }
//!                 Signal::Stop => return,
//!             },
//!             read = reader.read_line(&mut line) => {
//!                 if !matches!(read, Ok(n) if n > 0) { return }
//!                 count += 1;
//!                 let _ = reader.get_mut().get_mut().1.write_all(line.as_bytes()).await;
//!                 line.clear();
//!             }
//!         }
//!     }
//! }
//!
//! // Old and new process alike: first the connections handed over, then new ones.
//! # async fn run(hot: Hot, listener: tokio::net::TcpListener) {
//! for moved in hot.handed_over::<u64>("echo") {
//!     tokio::spawn(serve_one(moved.stream, moved.unread, moved.state, hot.movable("echo")));
//! }
//! while let Some((stream, movable)) = hot.accept_movable("echo", &listener).await {
//!     tokio::spawn(serve_one(stream, Vec::new(), 0, movable));
//! }
//! # }
//! ```

use std::os::fd::AsRawFd;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::conns::{Arrival, Parcel, Verdict};
use crate::drain::Phase;
use crate::{Hot, WorkGuard};

/// The most state one connection may carry to the successor.
pub const MAX_CONNECTION_STATE: usize = 64 * 1024;

/// The most unread bytes one connection may carry (a CONNECTIONS frame is at most 16 MiB).
pub const MAX_UNREAD: usize = 1 << 20;

/// What a [`Movable`] connection must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A successor takes connections now: at the next message boundary, call
    /// [`Movable::hand_over`]. The snapshot waits for it (up to the snapshot timeout).
    HandOver,
    /// This process stops serving for good (SIGTERM, or its successor took over without taking
    /// connections): end the connection cleanly.
    Stop,
}

/// One connection of a custom protocol, accepted on a listener known by name in both
/// processes. While it exists it is counted: the snapshot of a handover waits for it to be
/// handed over (up to the snapshot timeout), the drain for it to end.
pub struct Movable {
    hot: Hot,
    key: Arc<str>,
    guard: Option<WorkGuard>,
    phase: watch::Receiver<Phase>,
}

impl std::fmt::Debug for Movable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Movable")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A connection handed over by the previous process (see [`Hot::handed_over`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct Moved<S> {
    /// The same TCP connection the client opened.
    pub stream: tokio::net::TcpStream,
    /// Bytes the previous process had read and not parsed: read these before the socket.
    pub unread: Vec<u8>,
    /// The state it handed over with the connection.
    pub state: S,
}

fn key(listener: &str) -> Arc<str> {
    Arc::from(format!("custom:{listener}"))
}

/// Why a handed-over connection could not be taken.
fn bad_parcel(listener: &str, why: impl std::fmt::Display) {
    tracing::warn!(
        listener,
        "a connection handed over by the previous process is closed: {why}"
    );
}

impl Hot {
    /// Registers a connection of a custom protocol accepted on listener `listener` (the name
    /// given to [`Hot::tcp`]), so that it can be handed to the successor (see [`Movable`]).
    pub fn movable(&self, listener: &str) -> Movable {
        Movable {
            hot: self.clone(),
            key: key(listener),
            guard: Some(self.track()),
            phase: self.phase(),
        }
    }

    /// The connections of listener `listener` that the previous process handed over with
    /// [`Movable::hand_over`], each with its unread bytes and state; each is given out once.
    /// Call it once `ready` has returned, before accepting.
    pub fn handed_over<S: DeserializeOwned>(&self, listener: &str) -> Vec<Moved<S>> {
        let arrivals = self.connections().claim(&key(listener));
        let mut out = Vec::with_capacity(arrivals.len());
        for Arrival { fd, prefix } in arrivals {
            let Some((unread, state)) = split(&prefix) else {
                bad_parcel(listener, "its parcel is malformed");
                continue;
            };
            let state = match postcard::from_bytes::<S>(state) {
                Ok(state) => state,
                Err(e) => {
                    bad_parcel(listener, format_args!("its state does not decode ({e})"));
                    continue;
                }
            };
            let stream = std::net::TcpStream::from(fd);
            let stream = stream
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(stream));
            match stream {
                Ok(stream) => out.push(Moved {
                    stream,
                    unread: unread.to_vec(),
                    state,
                }),
                Err(e) => bad_parcel(listener, e),
            }
        }
        out
    }
}

impl Hot {
    /// Accepts the next connection on `listener` (named `name`, as given to [`Hot::tcp`]) for a
    /// custom protocol, registered as [`Movable`] before it is returned: waits while a
    /// successor takes over (the connection queues in the kernel, and goes to the successor if
    /// the handover commits), and returns `None` once this process stops accepting for good.
    /// `while let Some((stream, movable)) = hot.accept_movable("echo", &listener).await { .. }`
    pub async fn accept_movable(
        &self,
        name: &str,
        listener: &tokio::net::TcpListener,
    ) -> Option<(tokio::net::TcpStream, Movable)> {
        let mut phase = self.phase();
        loop {
            let now = *phase.borrow_and_update();
            match now {
                Phase::Stopping => return None,
                Phase::Quiesced => {
                    if phase.changed().await.is_err() {
                        return None;
                    }
                    continue;
                }
                Phase::Serving => {}
            }
            // Accepting is live work: the snapshot waits until this loop stopped accepting,
            // and a connection accepted is registered before the guard goes.
            let _accepting = self.track();
            tokio::select! {
                biased;
                changed = phase.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => return Some((stream, self.movable(name))),
                    Err(e) => {
                        tracing::warn!(listener = name, "accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
            }
        }
    }
}

/// Holds a parked connection's socket while its task waits for the verdict; dropped early (the
/// task cancelled), gives it to the outbox.
struct Abandon<'h> {
    stream: Option<tokio::net::TcpStream>,
    hot: &'h Hot,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            if let Ok(std) = stream.into_std() {
                self.hot.connections().outbox.abandon(std.into());
            }
        }
    }
}

/// `unread length (u32 LE), unread, state`.
fn split(prefix: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(prefix.get(..4)?.try_into().ok()?) as usize;
    let rest = &prefix[4..];
    (len <= rest.len()).then(|| rest.split_at(len))
}

impl Movable {
    /// Waits for what the connection must do next. Between handovers it never resolves; if a
    /// handover's successor does not take connections, the connection stops holding the
    /// snapshot and waits on (a rollback, or [`Signal::Stop`]).
    pub async fn signal(&mut self) -> Signal {
        loop {
            let now = *self.phase.borrow_and_update();
            match now {
                Phase::Stopping => return Signal::Stop,
                Phase::Quiesced if self.hot.connections().outbox.is_open_for_custom() => {
                    return Signal::HandOver
                }
                Phase::Quiesced => self.set_long_lived(true),
                Phase::Serving => self.set_long_lived(false),
            }
            if self.phase.changed().await.is_err() {
                return Signal::Stop;
            }
        }
    }

    fn set_long_lived(&mut self, long_lived: bool) {
        if let Some(guard) = self.guard.take() {
            self.guard = Some(if long_lived {
                guard.into_long_lived()
            } else {
                guard.into_live()
            });
        }
    }

    /// Hands the connection to the successor with `unread` (bytes read and not parsed, which
    /// the successor reads first) and `state` (at most [`MAX_CONNECTION_STATE`] bytes
    /// serialized). `Ok`: the successor serves it, this process's copy is closed. `Err` gives
    /// the stream back to serve on here: the restart rolled back, it came too late, or the
    /// state is too large or does not serialize (logged).
    pub async fn hand_over<S: Serialize>(
        &mut self,
        stream: tokio::net::TcpStream,
        unread: &[u8],
        state: &S,
    ) -> Result<(), tokio::net::TcpStream> {
        let state = match postcard::to_allocvec(state) {
            Ok(bytes) if bytes.len() <= MAX_CONNECTION_STATE => bytes,
            Ok(bytes) => {
                tracing::warn!(
                    bytes = bytes.len(),
                    "a connection's state is larger than {MAX_CONNECTION_STATE} bytes: it stays here"
                );
                return Err(stream);
            }
            Err(e) => {
                tracing::warn!("a connection's state does not serialize ({e}): it stays here");
                return Err(stream);
            }
        };
        if unread.len() > MAX_UNREAD {
            tracing::warn!(
                bytes = unread.len(),
                "a connection's unread bytes are more than {MAX_UNREAD}: it stays here"
            );
            return Err(stream);
        }
        let unread_len = unread.len() as u32;

        let mut prefix = Vec::with_capacity(4 + unread.len() + state.len());
        prefix.extend_from_slice(&unread_len.to_le_bytes());
        prefix.extend_from_slice(unread);
        prefix.extend_from_slice(&state);
        let Some(ticket) = self.hot.connections().outbox.park(Parcel {
            fd: stream.as_raw_fd(),
            key: self.key.clone(),
            prefix,
        }) else {
            return Err(stream);
        };
        // Parked: no longer holding the snapshot, still holding the drain (it may come back).
        if let Some(guard) = self.guard.take() {
            self.guard = Some(guard.into_parked());
        }
        // Cancel safety: if this future is dropped while parked (a `select!`, an aborted
        // task), the socket goes to the outbox instead of closing, so the fd being sent is
        // still this connection, not whatever reused its number.
        let mut parked = Abandon {
            stream: Some(stream),
            hot: &self.hot,
        };
        let verdict = ticket.verdict().await;
        let stream = parked.stream.take().expect("held until the verdict");
        drop(parked);
        match verdict {
            Verdict::Moved => {
                // The successor serves it: nothing here to wait for any more.
                self.guard = None;
                Ok(())
            }
            Verdict::Kept | Verdict::Pending => {
                // Served here again only once the rollback is over: the successor is dead
                // (it no longer reads this socket) and the `on_rollback` hooks have run.
                let _ = self.phase.wait_for(|p| *p != Phase::Quiesced).await;
                self.set_long_lived(false);
                Err(stream)
            }
        }
    }
}
