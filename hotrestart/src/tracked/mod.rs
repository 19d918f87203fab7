//! Persisted containers that know what changed, so that a restart can copy them while the old
//! process still serves (pre-copy, as a VM's live migration copies its memory) and stop
//! accepting only for the last, small delta.
//!
//! The old process copies a [`Tracked`] field in *rounds*: the first round sends all of it, in
//! pieces, while writes go on; each later round sends only what changed since its part was
//! sent. Changes are recorded from the moment a part is copied, under the same lock, so that
//! every write is either in the copy of its part or in a later round, never in neither. After
//! the quiesce (when nothing writes any more) the last round is sent, and the snapshot carries
//! only the fields that are not tracked.

mod bytes;
mod map;

use std::any::Any;
use std::cell::Cell;

use crate::error::Result;

pub use bytes::{BytesRead, TrackedBytes};
pub use map::TrackedMap;

/// A `#[persist]` field that can be copied while it changes. Implemented by [`TrackedMap`] and
/// [`TrackedBytes`]; `#[derive(State)]` finds the fields that implement it.
#[doc(hidden)]
pub trait Tracked: Send + Sync {
    /// The type's name, which the successor's field must share to take the copy.
    fn tracked_type(&self) -> &'static str;
    /// How many entries (or bytes) there are now: the receiver's size hint.
    fn len_hint(&self) -> u64;
    /// Starts a pre-copy: the first round will send everything, and changes are recorded from
    /// the moment each part is sent.
    fn start(&self);
    /// Appends the next piece of the current round to `out` (about `budget` bytes, at least
    /// one part); returns `false` once the round has nothing more to send.
    fn piece(&self, out: &mut Vec<u8>, budget: usize) -> Result<bool>;
    /// About how many bytes the next round would send (what changed since it was sent).
    fn pending(&self) -> u64;
    /// Begins the next round: what changed since each part was sent.
    fn next_round(&self);
    /// Ends the pre-copy (committed or rolled back): stops recording, forgets what was.
    fn stop(&self);
    /// An empty value of the same type, which the successor fills with the pieces.
    fn receiver(&self, len_hint: u64) -> Box<dyn Receiver>;
    /// Whether a whole copy after the quiesce (pre-copy off) is better sent in pieces, each
    /// decoded while the next is encoded, than in the snapshot: yes for a map, whose cost is
    /// decoding; no for a byte buffer, which the snapshot sends from where it is.
    fn whole_in_pieces(&self) -> bool {
        true
    }
}

/// The successor's side of one tracked field: pieces applied as they arrive.
#[doc(hidden)]
pub trait Receiver: Send {
    /// Applies one piece; an error means the piece is corrupt.
    fn apply(&mut self, piece: &[u8]) -> Result<()>;
    /// The received value, of the field's own type.
    fn finish(self: Box<Self>) -> Result<Box<dyn Any + Send>>;
}

thread_local! {
    /// The length of the input a value is being decoded from, when the snapshot reader knows
    /// it: a map pre-sizes from its declared length only up to what input that long can hold.
    static INPUT_LEN: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs `decode` with the length of its input known to the containers it builds.
pub(crate) fn with_input_len<R>(len: usize, decode: impl FnOnce() -> R) -> R {
    let before = INPUT_LEN.with(|c| c.replace(Some(len)));
    let out = decode();
    INPUT_LEN.with(|c| c.set(before));
    out
}

/// How many values of `T` a declared length may pre-size: no more than three times the input's
/// length would hold in memory, so that a lying length costs at most a small multiple of the
/// input; without a known input, serde's cautious 1 MiB.
pub(crate) fn presize<T>(declared: usize) -> usize {
    let size = std::mem::size_of::<T>().max(1);
    match INPUT_LEN.with(Cell::get) {
        Some(len) => declared.min(len.saturating_mul(3) / size),
        None => declared.min((1 << 20) / size),
    }
}

/// The byte and page index encoding of pieces: postcard's varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a varint from the front of `input`.
pub(crate) fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for (i, &b) in input.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            *input = &input[i + 1..];
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests;
