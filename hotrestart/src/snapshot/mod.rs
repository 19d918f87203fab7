//! The snapshot: a versioned, checksummed frame of `#[persist]` fields keyed by name.
//!
//! ```text
//! magic    8 bytes  "HRSTSNAP"
//! version  u32 LE   FORMAT_VERSION
//! length   u64 LE   length of the body
//! crc32    u32 LE   CRC-32 (IEEE) of the body
//! body     field count u32 LE, then per field:
//!          name (u16 LE length + UTF-8), type name (u16 LE length + UTF-8),
//!          value (u64 LE length + postcard bytes)
//! ```
//!
//! Evolution rules, applied by [`SnapshotReader`]: a field the snapshot lacks keeps the value the
//! program constructed (its default); a field the program no longer has is ignored with a log line;
//! a field whose type name differs is [`Error::TypeChanged`], never silently reinterpreted.

mod fuzz;
mod read;
mod write;

use crate::error::Result;

pub use fuzz::{fuzz_seed, fuzz_snapshot};
pub(crate) use read::ReadFailure;
pub use read::SnapshotReader;
pub(crate) use write::Snapshot;
pub use write::SnapshotWriter;

pub(crate) const MAGIC: &[u8; 8] = b"HRSTSNAP";
/// The snapshot format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
pub(crate) const HEADER_LEN: usize = 8 + 4 + 8 + 4;

/// Application state whose `#[persist]` fields survive restarts. Implemented by
/// `#[derive(hotrestart::State)]`; `()` is the state of a service that persists nothing.
pub trait State: Send + Sync + 'static {
    /// Writes every `#[persist]` field. The writer may keep references to the fields (large
    /// byte vectors are sent from where they are, not copied).
    fn save<'a>(&'a self, w: &mut SnapshotWriter<'a>) -> Result<()>;
    /// Replaces every `#[persist]` field found in the snapshot. Either all fields are
    /// replaced or, on error, none is.
    fn restore(&mut self, r: &mut SnapshotReader) -> Result<()>;
    /// Calls `visit` with every `#[persist]` field that can be copied while it changes
    /// ([`TrackedMap`](crate::TrackedMap), [`TrackedBytes`](crate::TrackedBytes)): the fields a
    /// restart pre-copies. `#[derive(State)]` writes it; by default there are none.
    #[doc(hidden)]
    fn tracked<'a>(&'a self, visit: &mut dyn FnMut(&'static str, &'a dyn crate::tracked::Tracked)) {
        let _ = visit;
    }
}

impl State for () {
    fn save<'a>(&'a self, _: &mut SnapshotWriter<'a>) -> Result<()> {
        Ok(())
    }
    fn restore(&mut self, _: &mut SnapshotReader) -> Result<()> {
        Ok(())
    }
}

/// Type name under which a `Vec<u8>` field is stored (and read back without serde).
const BLOB_TYPE: &str = "alloc::vec::Vec<u8>";
/// Type name of a [`TrackedBytes`](crate::TrackedBytes) field, stored (and read back) as a blob.
fn tracked_blob_type() -> &'static str {
    std::any::type_name::<crate::TrackedBytes>()
}

/// Whether a field of this type is stored as a blob: its bytes after a postcard length.
fn is_blob(type_name: &str) -> bool {
    type_name == BLOB_TYPE || type_name == tracked_blob_type()
}

/// Serializes a state into a snapshot frame that borrows from it.
#[cfg(test)]
pub(crate) fn encode(state: &dyn State) -> Result<Snapshot<'_>> {
    encode_with(state, |_| Ok(()))
}

/// [`encode`], then the library's own fields (`internal`), written after the application's.
pub(crate) fn encode_with<'a>(
    state: &'a dyn State,
    internal: impl FnOnce(&mut SnapshotWriter<'a>) -> Result<()>,
) -> Result<Snapshot<'a>> {
    encode_without(state, &[], internal)
}

/// [`encode_with`], leaving out the fields named in `skip` (pre-copied already).
pub(crate) fn encode_without<'a>(
    state: &'a dyn State,
    skip: &[&'static str],
    internal: impl FnOnce(&mut SnapshotWriter<'a>) -> Result<()>,
) -> Result<Snapshot<'a>> {
    let mut w = SnapshotWriter::skipping(skip.to_vec());
    state.save(&mut w)?;
    internal(&mut w)?;
    Ok(w.finish())
}

/// Decodes `frame` and restores it into `state`, all fields or none, then the library's own
/// fields (`internal`).
pub(crate) fn restore(
    state: &mut dyn State,
    frame: Vec<u8>,
    internal: impl FnOnce(&mut SnapshotReader) -> Result<()>,
) -> Result<()> {
    let mut reader = SnapshotReader::new(frame)?;
    state.restore(&mut reader)?;
    internal(&mut reader)?;
    reader.log_ignored();
    Ok(())
}

#[cfg(test)]
mod tests;
