//! Pre-copy: the old process copies its [`Tracked`] fields to the successor while it still
//! serves, in rounds (everything, then what changed since), and stops accepting only for the
//! last, small delta. The first round goes while the successor initialises, if it answers
//! the request (`HOTRESTART_PRECOPY_EARLY`) with EARLY:
//!
//! ```text
//! old                                        successor
//!   HELLO                             ---->
//!                                     <----  EARLY                (before its slow init)
//!   PRECOPY [(name, type, len)]       ---->  kept as bytes by `receive_early`
//!   PIECE {index, piece} ... (round 1)---->  kept
//!   EARLY_END                         ---->
//!                                            hot.ready: typed and applied
//!                                     <----  PREPARED
//!                                     <----  PRECOPY_ACCEPT [index]
//!   PIECE {index, piece} ...          ---->  applied as they arrive
//!   (round after round, while serving, until what changed is small)
//!   PRECOPY_SYNC                      ---->  (once every piece before it is applied)
//!                                     <----  PRECOPY_SYNC
//!   -- quiesce, hooks --
//!   PIECE ... (the last round)        ---->
//!   PLAN, SNAPSHOT (without the pre-copied fields), CONNECTIONS as before
//! ```
//!
//! A successor that does not answer EARLY (an older version) gets PRECOPY after PREPARED,
//! answers PRECOPY_ACCEPT, and all the rounds from there. One that does not offer
//! `CAP_PRECOPY` gets none of this: the fields travel whole in the snapshot.

use std::time::{Duration, Instant};

use tokio::net::UnixStream;

use crate::error::{Error, Result};
use crate::handoff;
use crate::snapshot::{SnapshotReader, State};
use crate::tracked::{Receiver, Tracked};

/// A piece is cut once it passes this size (a map's part is never split).
const PIECE_BUDGET: usize = 256 << 10;
/// What changed may be left for the last round, after the quiesce, once it is this small.
const CONVERGED: u64 = 256 << 10;
/// At most this many rounds while serving (the first, whole one included).
pub(crate) const MAX_ROUNDS: u32 = 10;

/// The old process's pre-copy: the fields the successor took. Dropping it ends the recording
/// of changes (the restart committed or rolled back).
pub(super) struct PreCopy<'a> {
    fields: Vec<(u16, &'static str, &'a dyn Tracked)>,
    /// Rounds sent while serving.
    pub(super) rounds: u32,
    /// Bytes sent while serving.
    pub(super) bytes: u64,
    /// Of those, bytes sent while the successor still initialised (before PREPARED).
    pub(super) early_bytes: u64,
    /// Time spent sending while serving.
    pub(super) elapsed: Duration,
}

impl Drop for PreCopy<'_> {
    fn drop(&mut self) {
        for (_, _, field) in &self.fields {
            field.stop();
        }
    }
}

/// The state's tracked fields.
pub(super) fn tracked(state: &dyn State) -> Vec<(&'static str, &dyn Tracked)> {
    let mut fields = Vec::new();
    state.tracked(&mut |name, field| fields.push((name, field)));
    fields
}

impl<'a> PreCopy<'a> {
    /// Offers the tracked fields; `None` if the successor takes none of them.
    pub(super) async fn offer(
        chan: &mut UnixStream,
        fields: Vec<(&'static str, &'a dyn Tracked)>,
    ) -> std::io::Result<Option<PreCopy<'a>>> {
        send_offer(chan, &fields).await?;
        let accepted = read_accept(chan).await?;
        let taken: Vec<_> = fields
            .into_iter()
            .enumerate()
            .filter(|(i, _)| accepted.contains(&(*i as u16)))
            .map(|(i, (name, field))| (i as u16, name, field))
            .collect();
        if taken.is_empty() {
            return Ok(None);
        }
        for (_, _, field) in &taken {
            field.start();
        }
        Ok(Some(PreCopy {
            fields: taken,
            rounds: 0,
            bytes: 0,
            early_bytes: 0,
            elapsed: Duration::ZERO,
        }))
    }

    /// The fields the snapshot leaves out.
    pub(super) fn names(&self) -> Vec<&'static str> {
        self.fields.iter().map(|(_, name, _)| *name).collect()
    }

    /// Rounds while serving: the first sends everything; each next one what changed since,
    /// until that is small ([`CONVERGED`]), [`MAX_ROUNDS`] are spent, or a round left as much
    /// to send as the one before (writes come as fast as they are copied).
    pub(super) async fn rounds(&mut self, chan: &mut UnixStream) -> std::io::Result<u64> {
        let started = Instant::now();
        let mut before = u64::MAX;
        loop {
            if self.rounds > 0 {
                for (_, _, field) in &self.fields {
                    field.next_round();
                }
            }
            self.bytes += self.round(chan).await?;
            self.rounds += 1;
            let pending = self.pending();
            if pending <= CONVERGED || self.rounds >= MAX_ROUNDS || pending >= before {
                // Wait until the successor has applied what it was sent, so that the accept
                // gap holds the last round only, not a backlog of pieces in the channel.
                handoff::write_frame(chan, handoff::TAG_PRECOPY_SYNC, &[]).await?;
                answer(chan, handoff::TAG_PRECOPY_SYNC).await?;
                self.elapsed += started.elapsed();
                return Ok(self.pending());
            }
            before = pending;
        }
    }

    /// The first round while the successor initialises (it said EARLY after HELLO): the offer,
    /// every field whole, then EARLY_END. Which fields it takes it says after PREPARED
    /// ([`accepted`](Self::accepted)); until then each is recorded.
    pub(super) async fn early(
        chan: &mut UnixStream,
        fields: Vec<(&'static str, &'a dyn Tracked)>,
    ) -> std::io::Result<PreCopy<'a>> {
        let started = Instant::now();
        send_offer(chan, &fields).await?;
        for (_, field) in &fields {
            field.start();
        }
        let mut p = PreCopy {
            fields: fields
                .into_iter()
                .enumerate()
                .map(|(i, (name, field))| (i as u16, name, field))
                .collect(),
            rounds: 0,
            bytes: 0,
            early_bytes: 0,
            elapsed: Duration::ZERO,
        };
        p.bytes = p.round(chan).await?;
        p.rounds = 1;
        p.early_bytes = p.bytes;
        handoff::write_frame(chan, handoff::TAG_EARLY_END, &[]).await?;
        p.elapsed = started.elapsed();
        Ok(p)
    }

    /// After PREPARED, the successor's PRECOPY_ACCEPT to the early offer: the fields it did
    /// not take stop being recorded (they go in the snapshot). `false` if it took none.
    pub(super) async fn accepted(&mut self, chan: &mut UnixStream) -> std::io::Result<bool> {
        let accepted = read_accept(chan).await?;
        self.fields.retain(|(i, _, field)| {
            let taken = accepted.contains(i);
            if !taken {
                field.stop();
            }
            taken
        });
        Ok(!self.fields.is_empty())
    }

    /// The last round, after the quiesce: everything that changed since it was sent; or,
    /// if no round was sent while serving (pre-copy off), everything.
    pub(super) async fn last_round(&mut self, chan: &mut UnixStream) -> std::io::Result<u64> {
        if self.rounds > 0 {
            for (_, _, field) in &self.fields {
                field.next_round();
            }
        }
        self.round(chan).await
    }

    fn pending(&self) -> u64 {
        self.fields.iter().map(|(_, _, f)| f.pending()).sum()
    }

    /// One round of every field, piece by piece; returns the bytes sent.
    async fn round(&self, chan: &mut UnixStream) -> std::io::Result<u64> {
        let mut sent = 0u64;
        let mut buf = Vec::with_capacity(PIECE_BUDGET + (64 << 10));
        for (index, name, field) in &self.fields {
            loop {
                buf.clear();
                buf.extend_from_slice(&index.to_le_bytes());
                let more = field.piece(&mut buf, PIECE_BUDGET).map_err(|e| {
                    let e = match e {
                        Error::Field { reason, .. } => Error::Field {
                            field: (*name).to_owned(),
                            reason,
                        },
                        other => other,
                    };
                    std::io::Error::other(Stopped::Encode(e))
                })?;
                if buf.len() > 2 {
                    handoff::write_frame(chan, handoff::TAG_PIECE, &buf).await?;
                    sent += buf.len() as u64;
                }
                if !more {
                    break;
                }
                // Encoding is CPU work on a worker the service also serves on: let it in.
                tokio::task::yield_now().await;
            }
        }
        Ok(sent)
    }
}

/// PRECOPY: (field, type name, length) of each tracked field.
async fn send_offer(
    chan: &mut UnixStream,
    fields: &[(&'static str, &dyn Tracked)],
) -> std::io::Result<()> {
    let offer: Vec<(&str, &str, u64)> = fields
        .iter()
        .map(|(name, f)| (*name, f.tracked_type(), f.len_hint()))
        .collect();
    let payload = postcard::to_stdvec(&offer).map_err(std::io::Error::other)?;
    handoff::write_frame(chan, handoff::TAG_PRECOPY, &payload).await
}

/// PRECOPY_ACCEPT: the indices of the offered fields the successor takes.
async fn read_accept(chan: &mut UnixStream) -> std::io::Result<Vec<u16>> {
    let answer = answer(chan, handoff::TAG_PRECOPY_ACCEPT).await?;
    postcard::from_bytes(&answer).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("PRECOPY_ACCEPT: {e}"),
        )
    })
}

/// Why the old process's side stopped, other than the channel: carried inside the
/// `io::Error` its work on the channel returns, so that the rollback says what happened.
#[derive(Debug)]
pub(super) enum Stopped {
    /// The successor answered REJECT, with its reason.
    Rejected(String),
    /// The successor sent another frame than the one awaited.
    OutOfTurn(u8),
    /// A field could not be encoded.
    Encode(Error),
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stopped::Rejected(reason) => write!(f, "rejected: {reason}"),
            Stopped::OutOfTurn(tag) => write!(f, "sent {}", handoff::tag_name(*tag)),
            Stopped::Encode(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Stopped {}

/// Reads the successor's answer, which must be a `tag` frame; returns its payload.
async fn answer(chan: &mut UnixStream, tag: u8) -> std::io::Result<Vec<u8>> {
    let frame = handoff::read_frame(chan, handoff::MAX_CONTROL).await?;
    if frame.tag == handoff::TAG_REJECT {
        let reason = String::from_utf8_lossy(&frame.payload).into_owned();
        return Err(std::io::Error::other(Stopped::Rejected(reason)));
    }
    if frame.tag != tag {
        return Err(std::io::Error::other(Stopped::OutOfTurn(frame.tag)));
    }
    Ok(frame.payload)
}

/// The successor's side: a receiver for each field it took, filled as the pieces arrive.
#[derive(Default)]
pub(super) struct Receiving {
    fields: Vec<(u16, &'static str, Box<dyn Receiver>)>,
    /// How many fields were offered.
    offered: usize,
    pieces: u64,
    bytes: u64,
}

impl Receiving {
    /// Answers a PRECOPY offer: takes each field this build has under the same type.
    pub(super) async fn offered<S: State>(
        &mut self,
        state: &S,
        payload: &[u8],
        chan: &mut UnixStream,
    ) -> std::result::Result<(), Refused> {
        let accepted = self
            .accept_offer(state, payload)
            .map_err(Refused::Corrupt)?;
        send_accept(chan, &accepted)
            .await
            .map_err(|e| Refused::Cut(e.to_string()))
    }

    /// Takes the offered fields this build has under the same type (a receiver for each);
    /// returns their indices, for PRECOPY_ACCEPT.
    pub(super) fn accept_offer<S: State>(&mut self, state: &S, payload: &[u8]) -> Result<Vec<u16>> {
        let offer = decode_offer(payload)?;
        self.offered = offer.len();
        let ours = tracked(state);
        for (i, (name, type_name, len)) in offer.iter().enumerate() {
            let Some((name, field)) = ours.iter().find(|(n, _)| n == name) else {
                continue;
            };
            // A field whose type changed is not taken: it comes whole in the snapshot,
            // where the type change is reported as it always is.
            if field.tracked_type() == type_name {
                self.fields.push((i as u16, name, field.receiver(*len)));
            }
        }
        Ok(self.fields.iter().map(|(i, ..)| *i).collect())
    }

    /// Applies a PIECE that came while this process initialised: one of a field it did not
    /// take (another type here) is dropped.
    pub(super) fn early_piece(&mut self, payload: &[u8]) -> Result<()> {
        let index = payload
            .first_chunk::<2>()
            .map(|i| u16::from_le_bytes(*i))
            .filter(|&i| usize::from(i) < self.offered)
            .ok_or_else(|| Error::handoff("a PIECE of the first round for no offered field"))?;
        if self.fields.iter().any(|(f, ..)| *f == index) {
            self.piece(payload)?;
        }
        Ok(())
    }

    /// Applies one PIECE.
    pub(super) fn piece(&mut self, payload: &[u8]) -> Result<()> {
        let (index, piece) = payload
            .split_first_chunk::<2>()
            .ok_or_else(|| Error::handoff("a PIECE frame without a field"))?;
        let index = u16::from_le_bytes(*index);
        let (_, name, receiver) = self
            .fields
            .iter_mut()
            .find(|(i, ..)| *i == index)
            .ok_or_else(|| Error::handoff(format!("a PIECE for field {index}, not taken")))?;
        receiver.apply(piece).map_err(|e| Error::Field {
            field: (*name).to_owned(),
            reason: e.to_string(),
        })?;
        self.pieces += 1;
        self.bytes += payload.len() as u64;
        Ok(())
    }

    /// Hands the received fields to the snapshot reader, which gives them to the state.
    pub(super) fn stage(self, reader: &mut SnapshotReader) -> Result<()> {
        if !self.fields.is_empty() {
            tracing::info!(
                fields = self.fields.len(),
                pieces = self.pieces,
                precopy_bytes = self.bytes,
                "state pre-copied from the previous process"
            );
        }
        for (_, name, receiver) in self.fields {
            let value = receiver.finish().map_err(|e| Error::Field {
                field: name.to_owned(),
                reason: e.to_string(),
            })?;
            reader.stage(name, value);
        }
        Ok(())
    }
}

/// PRECOPY_ACCEPT with `accepted`.
pub(super) async fn send_accept(chan: &mut UnixStream, accepted: &[u16]) -> std::io::Result<()> {
    let answer = postcard::to_stdvec(accepted).expect("a list of numbers serializes");
    handoff::write_frame(chan, handoff::TAG_PRECOPY_ACCEPT, &answer).await
}

/// What came on the channel while the successor initialised: the early round's frames, until
/// EARLY_END (or the channel's end, `cut`).
pub(crate) struct Early {
    pub(super) chan: UnixStream,
    pub(super) frames: Vec<handoff::Frame>,
    pub(super) cut: Option<String>,
    /// What came is not the first round: the successor refuses the handover.
    pub(super) corrupt: Option<String>,
    /// EARLY_END came (or nothing was asked for); else the rest of the first round is still
    /// to be read, now that the state exists.
    pub(super) ended: bool,
}

impl Early {
    /// A channel nothing was read from during start-up (the predecessor did not ask for it).
    pub(crate) fn nothing(chan: std::os::unix::net::UnixStream) -> Result<Early> {
        chan.set_nonblocking(true)
            .map_err(|e| Error::io("handoff channel", e))?;
        let chan = UnixStream::from_std(chan).map_err(|e| Error::io("handoff channel", e))?;
        Ok(Early {
            chan,
            frames: Vec::new(),
            cut: None,
            corrupt: None,
            ended: true,
        })
    }
}

/// The successor's reader while it initialises: says EARLY, then keeps the early round's
/// frames (their bytes, not yet typed: the state is built later) until EARLY_END, or until
/// `hand_back` fires (`hot.ready` was called: the state exists, the rest is applied as it
/// arrives). It stops only between two frames.
pub(crate) async fn receive_early(
    mut chan: UnixStream,
    mut hand_back: tokio::sync::oneshot::Receiver<()>,
) -> Early {
    let mut frames = Vec::new();
    let mut ended = false;
    let mut corrupt = None;
    let mut kept = 0usize;
    let cut = async {
        handoff::write_frame(&mut chan, handoff::TAG_EARLY, &[])
            .await
            .map_err(|e| e.to_string())?;
        loop {
            // Waiting for readability is cancel-safe; a frame, once begun, is read whole.
            tokio::select! {
                biased;
                _ = &mut hand_back => return Ok(()),
                readable = chan.readable() => readable.map_err(|e| e.to_string())?,
            }
            let frame = handoff::read_frame(&mut chan, handoff::MAX_SNAPSHOT)
                .await
                .map_err(|e| e.to_string())?;
            match frame.tag {
                handoff::TAG_EARLY_END => {
                    ended = true;
                    return Ok(());
                }
                handoff::TAG_PRECOPY | handoff::TAG_PIECE => {
                    kept += frame.payload.len();
                    frames.push(frame);
                }
                tag => {
                    corrupt = Some(format!(
                        "{} while this process initialised",
                        handoff::tag_name(tag)
                    ));
                    return Ok(());
                }
            }
            // Enough kept: the rest waits in the channel (the old process's writes wait with
            // it) until `hot.ready` reads it, typed.
            if kept >= EARLY_KEPT {
                let _ = (&mut hand_back).await;
                return Ok(());
            }
        }
    }
    .await
    .err();
    Early {
        chan,
        frames,
        cut,
        corrupt,
        ended,
    }
}

/// The most bytes of the first round the successor keeps untyped during its start-up.
const EARLY_KEPT: usize = 64 << 20;

/// A PRECOPY frame's payload: (field, type name, length) per tracked field.
pub(crate) fn decode_offer(payload: &[u8]) -> Result<Vec<(String, String, u64)>> {
    postcard::from_bytes(payload).map_err(|e| Error::handoff(format!("PRECOPY: {e}")))
}

/// Why the successor stopped reading the pre-copy.
pub(super) enum Refused {
    /// What arrived is wrong: refuse the handover.
    Corrupt(Error),
    /// The channel ended.
    Cut(String),
}

#[cfg(test)]
#[path = "precopy_tests.rs"]
mod tests;
