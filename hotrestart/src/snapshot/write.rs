//! Writing a snapshot: fields serialized (or borrowed, for byte vectors) into a frame.

use serde::Serialize;

use std::any::Any;

use super::{FORMAT_VERSION, HEADER_LEN, MAGIC};
use crate::error::{Error, Result};

enum Part<'a> {
    Owned(Vec<u8>),
    Borrowed(&'a [u8]),
    /// A [`TrackedBytes`]'s buffer, shared (a write meanwhile copies it first).
    Shared(std::sync::Arc<Vec<u8>>),
}

impl Part<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Part::Owned(v) => v,
            Part::Borrowed(b) => b,
            Part::Shared(b) => b,
        }
    }
}

/// Collects fields into a snapshot body. Field headers and serde-encoded values are written
/// to owned buffers; `Vec<u8>` values are referenced where they are, so a large blob is never
/// copied before it is sent or written.
#[derive(Default)]
pub struct SnapshotWriter<'a> {
    parts: Vec<Part<'a>>,
    buf: Vec<u8>,
    count: u32,
    /// Fields not to write: pre-copied to the successor already.
    skip: Vec<&'static str>,
}

impl std::fmt::Debug for SnapshotWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("fields", &self.count)
            .finish_non_exhaustive()
    }
}

impl<'a> SnapshotWriter<'a> {
    pub(crate) fn skipping(skip: Vec<&'static str>) -> Self {
        SnapshotWriter {
            skip,
            ..Default::default()
        }
    }

    fn skipped(&self, name: &str) -> bool {
        self.skip.contains(&name)
    }

    /// Writes one field. `T`'s type name is stored with it to detect type changes.
    ///
    /// A `Vec<u8>` (or a [`TrackedBytes`](crate::TrackedBytes)) is not passed through serde one
    /// byte at a time: its bytes (the same as postcard's) are sent from where they are.
    pub fn field<T: Serialize + 'static>(&mut self, name: &str, value: &'a T) -> Result<()> {
        if self.skipped(name) {
            return Ok(());
        }
        let any = value as &dyn Any;
        if let Some(bytes) = any.downcast_ref::<Vec<u8>>() {
            self.blob(name, std::any::type_name::<T>(), Part::Borrowed(bytes));
            return Ok(());
        }
        if let Some(tracked) = any.downcast_ref::<crate::TrackedBytes>() {
            let shared = tracked.share();
            self.blob(name, std::any::type_name::<T>(), Part::Shared(shared));
            return Ok(());
        }
        self.field_as(name, std::any::type_name::<T>(), value)
    }

    fn blob(&mut self, name: &str, type_name: &str, bytes: Part<'a>) {
        put_str(&mut self.buf, name);
        put_str(&mut self.buf, type_name);
        let len = bytes.bytes().len();
        let mut prefix = Vec::with_capacity(10);
        put_varint(&mut prefix, len as u64);
        self.buf
            .extend_from_slice(&((prefix.len() + len) as u64).to_le_bytes());
        self.buf.extend_from_slice(&prefix);
        self.parts.push(Part::Owned(std::mem::take(&mut self.buf)));
        self.parts.push(bytes);
        self.count += 1;
    }

    /// Writes one field under `type_name`, serialized now (the value need not outlive the
    /// call): what `#[derive(State)]` uses for a field behind a lock it must take (a tokio or
    /// parking_lot `Mutex`/`RwLock`), whose guard lives only as long as the call.
    #[doc(hidden)]
    pub fn field_as<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        type_name: &str,
        value: &T,
    ) -> Result<()> {
        if self.skipped(name) {
            return Ok(());
        }
        put_str(&mut self.buf, name);
        put_str(&mut self.buf, type_name);
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&0u64.to_le_bytes());
        let start = self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        self.buf = postcard::to_extend(value, buf).map_err(|e| Error::Field {
            field: name.to_owned(),
            reason: format!("cannot serialize: {e}"),
        })?;
        let len = (self.buf.len() - start) as u64;
        self.buf[len_at..start].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
        Ok(())
    }

    /// Completes the frame: header, checksum and field count computed over the parts in place.
    pub(crate) fn finish(mut self) -> Snapshot<'a> {
        if !self.buf.is_empty() {
            self.parts.push(Part::Owned(std::mem::take(&mut self.buf)));
        }
        let count = self.count.to_le_bytes();
        let body_len = 4 + self
            .parts
            .iter()
            .map(|p| p.bytes().len() as u64)
            .sum::<u64>();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&count);
        for part in &self.parts {
            crc.update(part.bytes());
        }
        let mut head = [0u8; HEADER_LEN + 4];
        head[..8].copy_from_slice(MAGIC);
        head[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        head[12..20].copy_from_slice(&body_len.to_le_bytes());
        head[20..24].copy_from_slice(&crc.finalize().to_le_bytes());
        head[24..].copy_from_slice(&count);
        Snapshot {
            head,
            parts: self.parts,
        }
    }
}

/// A finished snapshot frame, as a list of byte slices (some borrowed from the state).
pub(crate) struct Snapshot<'a> {
    head: [u8; HEADER_LEN + 4],
    parts: Vec<Part<'a>>,
}

impl Snapshot<'_> {
    /// The frame's bytes, in order.
    pub(crate) fn slices(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(&self.head[..]).chain(self.parts.iter().map(Part::bytes))
    }

    pub(crate) fn len(&self) -> usize {
        self.slices().map(<[u8]>::len).sum()
    }

    /// The frame in one buffer (tests, fuzzing).
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for s in self.slices() {
            out.extend_from_slice(s);
        }
        out
    }
}

/// postcard's varint (LEB128): 7 bits a byte, low bits first.
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("field and type names are shorter than 64 KiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}
