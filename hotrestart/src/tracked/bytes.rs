//! [`TrackedBytes`]: a byte buffer that records which pages changed during a pre-copy.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{put_varint, take_varint, Receiver, Tracked};
use crate::error::{Error, Result};

/// The unit of change: a write marks the pages it touches.
pub(crate) const PAGE: usize = 64 << 10;

/// The pre-copy's record: one bit a page, and where the current round is.
#[derive(Default)]
struct Track {
    dirty: Vec<u64>,
    dirty_pages: u64,
    next: usize,
    /// The length the successor was last told.
    sent_len: Option<usize>,
}

impl Track {
    fn mark(&mut self, pages: std::ops::Range<usize>) {
        if self.dirty.len() * 64 < pages.end {
            self.dirty.resize(pages.end.div_ceil(64), 0);
        }
        for p in pages {
            let (w, b) = (p / 64, 1u64 << (p % 64));
            if self.dirty[w] & b == 0 {
                self.dirty[w] |= b;
                self.dirty_pages += 1;
            }
        }
    }

    fn take(&mut self, page: usize) -> bool {
        let (w, b) = (page / 64, 1u64 << (page % 64));
        match self.dirty.get_mut(w) {
            Some(word) if *word & b != 0 => {
                *word &= !b;
                self.dirty_pages -= 1;
                true
            }
            _ => false,
        }
    }
}

/// A byte buffer for `#[persist]` state that a restart copies while the service still serves.
///
/// Reads share a lock (held while a [`BytesRead`] lives); writes take it alone. While a restart pre-copies the state, each write
/// also marks the 64 KiB pages it touches, which the next round sends again. Outside a restart
/// it is a `Vec<u8>` behind a `RwLock` and one atomic flag. Like a `Vec<u8>` field, it is sent
/// from where it is when copied whole (no copy of the buffer is made).
///
/// ```
/// let blob = hotrestart::TrackedBytes::from(vec![0u8; 4]);
/// blob.write(2, b"hi");
/// blob.extend_from_slice(b"!");
/// assert_eq!(&blob.read()[..], b"\0\0hi!");
/// ```
#[derive(Default)]
pub struct TrackedBytes {
    /// Shared with a snapshot being sent: a write then copies it first (`Arc::make_mut`).
    data: RwLock<Arc<Vec<u8>>>,
    tracking: AtomicBool,
    track: Mutex<Track>,
}

impl std::fmt::Debug for TrackedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedBytes")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// The bytes of a [`TrackedBytes`], read-locked while this lives.
pub struct BytesRead<'a>(RwLockReadGuard<'a, Arc<Vec<u8>>>);

impl std::ops::Deref for BytesRead<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

fn pages(range: std::ops::Range<usize>) -> std::ops::Range<usize> {
    if range.is_empty() {
        return 0..0;
    }
    range.start / PAGE..range.end.div_ceil(PAGE)
}

impl From<Vec<u8>> for TrackedBytes {
    fn from(data: Vec<u8>) -> Self {
        TrackedBytes {
            data: RwLock::new(Arc::new(data)),
            ..Default::default()
        }
    }
}

impl TrackedBytes {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes the buffer under the write lock.
    fn data_mut<R>(&self, change: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let mut guard = self.data.write().unwrap_or_else(PoisonError::into_inner);
        change(Arc::make_mut(&mut guard))
    }

    fn track(&self) -> MutexGuard<'_, Track> {
        self.track.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks `range` changed, if a pre-copy runs (checked under the data's write lock).
    fn changed(&self, range: std::ops::Range<usize>) {
        if self.tracking.load(Ordering::Acquire) {
            self.track().mark(pages(range));
        }
    }

    /// The bytes, read-locked.
    pub fn read(&self) -> BytesRead<'_> {
        BytesRead(self.data.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        self.read().to_vec()
    }

    /// Writes `bytes` at `offset`, growing the buffer (with zeros) if it ends before.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        self.data_mut(|data| {
            let end = offset + bytes.len();
            let old_len = data.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[offset..end].copy_from_slice(bytes);
            self.changed(offset.min(old_len)..end);
        })
    }

    /// Appends `bytes`.
    pub fn extend_from_slice(&self, bytes: &[u8]) {
        self.data_mut(|data| {
            let start = data.len();
            data.extend_from_slice(bytes);
            self.changed(start..data.len());
        })
    }

    /// Changes the bytes in `range` in place with `change`.
    pub fn modify<R>(
        &self,
        range: std::ops::Range<usize>,
        change: impl FnOnce(&mut [u8]) -> R,
    ) -> R {
        self.data_mut(|data| {
            let out = change(&mut data[range.clone()]);
            self.changed(range);
            out
        })
    }

    /// Sets the length to `len`, filling new bytes with `value`.
    pub fn resize(&self, len: usize, value: u8) {
        self.data_mut(|data| {
            let old = data.len();
            data.resize(len, value);
            self.changed(old.min(len)..len);
        })
    }

    /// Shortens the buffer to `len` bytes (nothing if it is not longer).
    pub fn truncate(&self, len: usize) {
        self.data_mut(|data| data.truncate(len))
    }

    /// Replaces the whole buffer; returns the old one.
    pub fn replace(&self, bytes: Vec<u8>) -> Vec<u8> {
        self.data_mut(|data| {
            let old = std::mem::replace(data, bytes);
            self.changed(0..data.len());
            old
        })
    }

    /// The buffer as it is now, shared with the snapshot that sends it.
    pub(crate) fn share(&self) -> Arc<Vec<u8>> {
        self.data
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Serialize for TrackedBytes {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.read())
    }
}

impl<'de> Deserialize<'de> for TrackedBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = TrackedBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> std::result::Result<TrackedBytes, E> {
                Ok(v.to_vec().into())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> std::result::Result<TrackedBytes, E> {
                Ok(v.into())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<TrackedBytes, A::Error> {
                let mut v = Vec::with_capacity(super::presize::<u8>(seq.size_hint().unwrap_or(0)));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(v.into())
            }
        }
        d.deserialize_byte_buf(BytesVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Pre-copy. A piece is the buffer's length (varint), then `(page index varint, page bytes)`
// runs; a page's length follows from the buffer's (64 KiB, or less for the last).

impl Tracked for TrackedBytes {
    fn tracked_type(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    fn len_hint(&self) -> u64 {
        self.len() as u64
    }

    fn start(&self) {
        // Under the data lock: a write either comes before (and is in the pages marked
        // here) or sees the flag and marks its own pages.
        let data = self.data.write().unwrap_or_else(PoisonError::into_inner);
        let mut track = self.track();
        *track = Track::default();
        track.mark(pages(0..data.len()));
        self.tracking.store(true, Ordering::Release);
    }

    fn piece(&self, out: &mut Vec<u8>, budget: usize) -> Result<bool> {
        let data = self.read();
        let mut track = self.track();
        let len = data.len();
        let page_count = len.div_ceil(PAGE);
        put_varint(out, len as u64);
        let start = out.len();
        while track.next < page_count && out.len() - start < budget.max(1) {
            let p = track.next;
            track.next += 1;
            if track.take(p) {
                put_varint(out, p as u64);
                out.extend_from_slice(&data[p * PAGE..len.min((p + 1) * PAGE)]);
            }
        }
        track.sent_len = Some(len);
        // Marks past the end (a truncated buffer) are dropped.
        if track.next >= page_count {
            for p in page_count..track.dirty.len() * 64 {
                track.take(p);
            }
        }
        Ok(track.next < page_count)
    }

    fn pending(&self) -> u64 {
        if !self.tracking.load(Ordering::Acquire) {
            return 0;
        }
        let len = self.len();
        let track = self.track();
        let resized = u64::from(track.sent_len != Some(len));
        (track.dirty_pages * PAGE as u64).max(resized)
    }

    fn next_round(&self) {
        self.track().next = 0;
    }

    fn stop(&self) {
        let _data = self.data.write().unwrap_or_else(PoisonError::into_inner);
        self.tracking.store(false, Ordering::Release);
        *self.track() = Track::default();
    }

    fn receiver(&self, _len_hint: u64) -> Box<dyn Receiver> {
        Box::new(BytesReceiver {
            data: Vec::new(),
            len: 0,
        })
    }

    fn whole_in_pieces(&self) -> bool {
        false
    }
}

struct BytesReceiver {
    data: Vec<u8>,
    /// The length the old process last declared.
    len: usize,
}

impl Receiver for BytesReceiver {
    fn apply(&mut self, mut piece: &[u8]) -> Result<()> {
        let corrupt = |what: &str| Error::snapshot(format!("a pre-copied byte buffer {what}"));
        let len = take_varint(&mut piece).ok_or_else(|| corrupt("has no length"))?;
        self.len = usize::try_from(len).map_err(|_| corrupt("is longer than memory"))?;
        self.data.truncate(self.len);
        while !piece.is_empty() {
            let page = take_varint(&mut piece).ok_or_else(|| corrupt("has a bad page index"))?;
            let start = usize::try_from(page)
                .ok()
                .and_then(|p| p.checked_mul(PAGE))
                .filter(|&s| s < self.len)
                .ok_or_else(|| corrupt("has a page past its length"))?;
            // Pages arrive in order, first round from the start: a page past what arrived
            // would leave a gap (and make this allocate for bytes that never came).
            if start > self.data.len() {
                return Err(corrupt("skips a page"));
            }
            let n = PAGE.min(self.len - start);
            if piece.len() < n {
                return Err(corrupt("ends inside a page"));
            }
            if start == self.data.len() {
                self.data.extend_from_slice(&piece[..n]);
            } else {
                if self.data.len() < start + n {
                    self.data.resize(start + n, 0);
                }
                self.data[start..start + n].copy_from_slice(&piece[..n]);
            }
            piece = &piece[n..];
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Box<dyn Any + Send>> {
        if self.data.len() != self.len {
            return Err(Error::snapshot(format!(
                "a pre-copied byte buffer ended with {} of its {} bytes",
                self.data.len(),
                self.len
            )));
        }
        Ok(Box::new(TrackedBytes::from(self.data)))
    }
}
