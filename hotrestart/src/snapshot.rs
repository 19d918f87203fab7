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

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::io::Read;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

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

enum Part<'a> {
    Owned(Vec<u8>),
    Borrowed(&'a [u8]),
}

impl Part<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Part::Owned(v) => v,
            Part::Borrowed(b) => b,
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
}

impl std::fmt::Debug for SnapshotWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("fields", &self.count)
            .finish_non_exhaustive()
    }
}

impl<'a> SnapshotWriter<'a> {
    /// Writes one field. `T`'s type name is stored with it to detect type changes.
    ///
    /// A `Vec<u8>` is not passed through serde one byte at a time: its bytes (the same as
    /// postcard's) are sent from where they are.
    pub fn field<T: Serialize + 'static>(&mut self, name: &str, value: &'a T) -> Result<()> {
        let type_name = std::any::type_name::<T>();
        put_str(&mut self.buf, name);
        put_str(&mut self.buf, type_name);
        if let Some(bytes) = (value as &dyn Any).downcast_ref::<Vec<u8>>() {
            let mut prefix = Vec::with_capacity(10);
            put_varint(&mut prefix, bytes.len() as u64);
            self.buf
                .extend_from_slice(&((prefix.len() + bytes.len()) as u64).to_le_bytes());
            self.buf.extend_from_slice(&prefix);
            self.parts.push(Part::Owned(std::mem::take(&mut self.buf)));
            self.parts.push(Part::Borrowed(bytes));
        } else {
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
        }
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

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("field and type names are shorter than 64 KiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Serializes a state into a snapshot frame that borrows from it.
pub(crate) fn encode(state: &dyn State) -> Result<Snapshot<'_>> {
    let mut w = SnapshotWriter::default();
    state.save(&mut w)?;
    Ok(w.finish())
}

enum Value {
    /// postcard bytes.
    Encoded(Vec<u8>),
    /// A `Vec<u8>` field: the length its postcard prefix declared, and the bytes after the
    /// prefix, read straight into their own buffer (which becomes the field's value).
    Blob(u64, Vec<u8>),
    /// A field handed out already.
    Taken,
}

struct Entry {
    type_name: String,
    value: Value,
    taken: bool,
}

/// A decoded snapshot; hands out fields by name.
pub struct SnapshotReader {
    fields: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for SnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Reads the frame from `r`, checking as it goes; `Err(reason)`.
struct FrameReader<'r, R> {
    r: &'r mut R,
    crc: crc32fast::Hasher,
    left: u64,
    /// The input ended or failed before the frame did (as opposed to a frame that is wrong).
    cut: bool,
}

/// Why a frame could not be read from a stream.
pub(crate) enum ReadFailure {
    /// The input ended or failed before the frame did: a peer that went away.
    Cut(Error),
    /// What was read is not a valid frame.
    Corrupt(Error),
}

impl<R: Read> FrameReader<'_, R> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, String> {
        if n > self.left {
            return Err(format!(
                "{what} runs past the end of the body ({n} bytes, {} left)",
                self.left
            ));
        }
        // Grows with the bytes that arrive: a lying length cannot make it allocate.
        let mut out = Vec::with_capacity(n.min(1 << 16) as usize);
        let got = (&mut *self.r).take(n).read_to_end(&mut out).map_err(|e| {
            self.cut = true;
            format!("reading {what}: {e}")
        })?;
        if got as u64 != n {
            self.cut = true;
            return Err(format!("truncated: the body ends inside {what}"));
        }
        self.left -= n;
        self.crc.update(&out);
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        Ok(self.bytes(N as u64, what)?.try_into().unwrap())
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let len = u16::from_le_bytes(self.array(what)?);
        String::from_utf8(self.bytes(len.into(), what)?).map_err(|_| format!("{what} is not UTF-8"))
    }
}

impl SnapshotReader {
    /// Checks a whole frame (magic, version, length, checksum) and indexes its fields.
    pub fn new(frame: Vec<u8>) -> Result<Self> {
        let mut bytes = &frame[..];
        let reader = Self::read_from(&mut bytes)?;
        if !bytes.is_empty() {
            return Err(Error::snapshot(format!(
                "{} bytes of trailing data after the snapshot",
                bytes.len()
            )));
        }
        Ok(reader)
    }

    /// Reads one frame from `r`, field by field: every value goes straight into its own
    /// buffer, so the frame is never held whole; the checksum is checked at the end, before
    /// anything is handed out.
    pub(crate) fn read_from<R: Read>(r: &mut R) -> Result<Self> {
        Self::read_stream(r).map_err(|failure| match failure {
            ReadFailure::Cut(e) | ReadFailure::Corrupt(e) => e,
        })
    }

    /// [`read_from`](Self::read_from), telling a frame cut short from a wrong one.
    pub(crate) fn read_stream<R: Read>(r: &mut R) -> Result<Self, ReadFailure> {
        let corrupt = |reason: String| ReadFailure::Corrupt(Error::snapshot(reason));
        let mut head = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            match r.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ReadFailure::Cut(Error::snapshot(format!(
                        "reading the header: {e}"
                    ))))
                }
            }
        }
        if (MAGIC.len()..HEADER_LEN).contains(&got) && head[..MAGIC.len()] == MAGIC[..] {
            return Err(ReadFailure::Cut(Error::snapshot(format!(
                "truncated header ({got} bytes)"
            ))));
        }
        if head[..MAGIC.len()] != MAGIC[..] {
            return Err(corrupt("not a hotrestart snapshot (bad magic)".into()));
        }
        let version = u32::from_le_bytes(head[8..12].try_into().unwrap());
        if version > FORMAT_VERSION {
            return Err(corrupt(format!(
                "written in format version {version}, this build reads up to {FORMAT_VERSION}"
            )));
        }
        if version == 0 {
            return Err(corrupt("format version 0 does not exist".into()));
        }
        let len = u64::from_le_bytes(head[12..20].try_into().unwrap());
        let crc = u32::from_le_bytes(head[20..24].try_into().unwrap());
        let mut frame = FrameReader {
            r,
            crc: crc32fast::Hasher::new(),
            left: len,
            cut: false,
        };
        let fields = match Self::read_fields(&mut frame) {
            Ok(fields) => fields,
            Err(reason) if frame.cut => return Err(ReadFailure::Cut(Error::snapshot(reason))),
            Err(reason) => return Err(corrupt(reason)),
        };
        if frame.left != 0 {
            return Err(corrupt(format!(
                "{} bytes of trailing data after the last field",
                frame.left
            )));
        }
        if frame.crc.finalize() != crc {
            return Err(corrupt("checksum mismatch (corrupt data)".into()));
        }
        Ok(SnapshotReader { fields })
    }

    fn read_fields<R: Read>(
        frame: &mut FrameReader<'_, R>,
    ) -> Result<BTreeMap<String, Entry>, String> {
        let count = u32::from_le_bytes(frame.array("the field count")?);
        let mut fields = BTreeMap::new();
        for _ in 0..count {
            let name = frame.string("a field name")?;
            let type_name = frame.string("a type name")?;
            let len = u64::from_le_bytes(frame.array("a field length")?);
            let value = if type_name == BLOB_TYPE && len > 0 {
                let mut prefix = Vec::new();
                while prefix.len() < 10
                    && prefix.last().is_none_or(|b| b & 0x80 != 0)
                    && (prefix.len() as u64) < len
                {
                    prefix.extend(frame.bytes(1, "a byte string's length")?);
                }
                let (declared, used) =
                    get_varint(&prefix).ok_or("a byte string's length is not a varint")?;
                Value::Blob(declared, frame.bytes(len - used as u64, "a field value")?)
            } else {
                Value::Encoded(frame.bytes(len, "a field value")?)
            };
            if fields
                .insert(
                    name.clone(),
                    Entry {
                        type_name,
                        value,
                        taken: false,
                    },
                )
                .is_some()
            {
                return Err(format!("field `{name}` appears twice"));
            }
        }
        Ok(fields)
    }

    /// Takes field `name` as a `T`: `Ok(None)` when the snapshot lacks it (the caller keeps its
    /// default), [`Error::TypeChanged`] when it was written as another type.
    pub fn take<T: DeserializeOwned + 'static>(&mut self, name: &str) -> Result<Option<T>> {
        let Some(entry) = self.fields.get_mut(name) else {
            tracing::info!(
                field = name,
                "#[persist] field not in the snapshot: it keeps its initial value"
            );
            return Ok(None);
        };
        let expected = std::any::type_name::<T>();
        if entry.type_name != expected {
            return Err(Error::TypeChanged {
                field: name.to_owned(),
                stored: entry.type_name.clone(),
                expected: expected.to_owned(),
            });
        }
        let field_error = |reason: String| Error::Field {
            field: name.to_owned(),
            reason,
        };
        let value = match std::mem::replace(&mut entry.value, Value::Taken) {
            Value::Blob(declared, bytes) if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() => {
                if declared != bytes.len() as u64 {
                    return Err(field_error(
                        "cannot decode: the byte string's length does not match".into(),
                    ));
                }
                let boxed: Box<dyn Any> = Box::new(bytes);
                *boxed.downcast::<T>().expect("T is Vec<u8>")
            }
            Value::Blob(..) => return Err(field_error("cannot decode: a byte string".into())),
            Value::Encoded(bytes) => {
                let decoded = postcard::from_bytes(&bytes);
                entry.value = Value::Encoded(bytes);
                decoded.map_err(|e| field_error(format!("cannot decode: {e}")))?
            }
            Value::Taken => return Err(field_error("taken twice".into())),
        };
        entry.taken = true;
        Ok(Some(value))
    }

    /// Names of the snapshot's fields that nobody took: removed from the program.
    pub(crate) fn log_ignored(&self) {
        for (name, entry) in &self.fields {
            if !entry.taken {
                tracing::info!(field = %name, "snapshot field is no longer #[persist] in this build: ignored");
            }
        }
    }
}

/// Reads a postcard varint of at most 10 bytes; returns it and the bytes it took.
fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut n = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((n, i + 1));
        }
    }
    None
}

/// Decodes `frame` and restores it into `state`, all fields or none.
pub(crate) fn restore(state: &mut dyn State, frame: Vec<u8>) -> Result<()> {
    let mut reader = SnapshotReader::new(frame)?;
    state.restore(&mut reader)?;
    reader.log_ignored();
    Ok(())
}

/// Decodes `bytes` as a snapshot, for fuzzing and property tests: as they are, then with the
/// header's length and checksum made to match, so that the fields behind the checksum are
/// reached too; every field is taken as each of the types a `#[persist]` field commonly has.
/// Whatever the bytes, it must return: no panic, no hang, no allocation beyond a small multiple
/// of `bytes.len()`.
#[doc(hidden)]
pub fn fuzz_snapshot(bytes: &[u8]) {
    decode_every_field(bytes.to_vec());
    if bytes.len() >= HEADER_LEN {
        let mut fixed = bytes.to_vec();
        let body_len = (fixed.len() - HEADER_LEN) as u64;
        let crc = crc32fast::hash(&fixed[HEADER_LEN..]);
        fixed[..8].copy_from_slice(MAGIC);
        fixed[12..20].copy_from_slice(&body_len.to_le_bytes());
        fixed[20..24].copy_from_slice(&crc.to_le_bytes());
        decode_every_field(fixed);
    }
}

fn decode_every_field(frame: Vec<u8>) {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex;
    let Ok(mut reader) = SnapshotReader::new(frame) else {
        return;
    };
    let names: Vec<String> = reader.fields.keys().cloned().collect();
    for name in &names {
        let _ = reader.take::<u64>(name);
        let _ = reader.take::<AtomicU64>(name);
        let _ = reader.take::<String>(name);
        let _ = reader.take::<Vec<u8>>(name);
        let _ = reader.take::<Vec<String>>(name);
        let _ = reader.take::<Mutex<String>>(name);
        let _ = reader.take::<Mutex<HashMap<String, u64>>>(name);
        let _ = reader.take::<Option<(u32, bool, f64)>>(name);
    }
}

/// A snapshot holding a field of each type [`fuzz_snapshot`] tries: seeds for a fuzz corpus.
#[doc(hidden)]
pub fn fuzz_seed() -> Vec<u8> {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex;
    let map: HashMap<String, u64> = [("a".to_owned(), 1), ("bb".to_owned(), u64::MAX)].into();
    let (n, hits, text, bytes) = (
        7u64,
        AtomicU64::new(300),
        "text".to_owned(),
        vec![1u8, 2, 3],
    );
    let list = vec!["x".to_owned(), "yz".to_owned()];
    let (ballast, sessions, tuple) = (
        Mutex::new("abc".to_owned()),
        Mutex::new(map),
        Some((5u32, true, 1.5f64)),
    );
    let mut w = SnapshotWriter::default();
    let fields = (|| -> Result<()> {
        w.field("n", &n)?;
        w.field("hits", &hits)?;
        w.field("s", &text)?;
        w.field("bytes", &bytes)?;
        w.field("list", &list)?;
        w.field("ballast", &ballast)?;
        w.field("sessions", &sessions)?;
        w.field("tuple", &tuple)
    })();
    fields.expect("the seed fields serialize");
    w.finish().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    // Hand-written impls of what #[derive(State)] generates, so the rules are tested
    // without the macro.
    #[derive(Default)]
    struct V1 {
        hits: AtomicU64,
        names: Mutex<HashMap<String, u32>>,
        legacy: String,
    }
    impl State for V1 {
        fn save<'a>(&'a self, w: &mut SnapshotWriter<'a>) -> Result<()> {
            w.field("hits", &self.hits)?;
            w.field("names", &self.names)?;
            w.field("legacy", &self.legacy)
        }
        fn restore(&mut self, r: &mut SnapshotReader) -> Result<()> {
            let hits = r.take::<AtomicU64>("hits")?;
            let names = r.take::<Mutex<HashMap<String, u32>>>("names")?;
            let legacy = r.take::<String>("legacy")?;
            if let Some(v) = hits {
                self.hits = v;
            }
            if let Some(v) = names {
                self.names = v;
            }
            if let Some(v) = legacy {
                self.legacy = v;
            }
            Ok(())
        }
    }

    /// V2 drops `legacy`, adds `added`, keeps `hits`.
    #[derive(Default)]
    struct V2 {
        hits: AtomicU64,
        added: Vec<u8>,
    }
    impl State for V2 {
        fn save<'a>(&'a self, w: &mut SnapshotWriter<'a>) -> Result<()> {
            w.field("hits", &self.hits)?;
            w.field("added", &self.added)
        }
        fn restore(&mut self, r: &mut SnapshotReader) -> Result<()> {
            let hits = r.take::<AtomicU64>("hits")?;
            let added = r.take::<Vec<u8>>("added")?;
            if let Some(v) = hits {
                self.hits = v;
            }
            if let Some(v) = added {
                self.added = v;
            }
            Ok(())
        }
    }

    /// V3 changes `hits` to a String.
    #[derive(Default)]
    struct V3 {
        hits: String,
        other: u8,
    }
    impl State for V3 {
        fn save<'a>(&'a self, w: &mut SnapshotWriter<'a>) -> Result<()> {
            w.field("hits", &self.hits)
        }
        fn restore(&mut self, r: &mut SnapshotReader) -> Result<()> {
            let other = r.take::<u8>("other")?;
            let hits = r.take::<String>("hits")?;
            if let Some(v) = other {
                self.other = v;
            }
            if let Some(v) = hits {
                self.hits = v;
            }
            Ok(())
        }
    }

    fn v1() -> V1 {
        let s = V1::default();
        s.hits.store(42, Ordering::Relaxed);
        s.names.lock().unwrap().insert("a".into(), 1);
        V1 {
            legacy: "old".into(),
            ..s
        }
    }

    #[test]
    fn byte_vectors_take_the_fast_path_with_postcards_bytes() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let blob: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut w = SnapshotWriter::default();
            w.field("blob", &blob).unwrap();
            let frame = w.finish().to_vec();
            // The value bytes are exactly what postcard writes for a Vec<u8>.
            let expected = postcard::to_allocvec(&blob).unwrap();
            assert!(frame.ends_with(&expected), "len {len}");
            let mut r = SnapshotReader::new(frame).unwrap();
            assert_eq!(r.take::<Vec<u8>>("blob").unwrap(), Some(blob.clone()));
            // And postcard's own decoder agrees.
            let mut w = SnapshotWriter::default();
            w.field("blob", &blob).unwrap();
            let frame = w.finish().to_vec();
            assert_eq!(
                postcard::from_bytes::<Vec<u8>>(&frame[frame.len() - expected.len()..]).unwrap(),
                blob
            );
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let frame = encode(&v1()).unwrap().to_vec();
        let mut back = V1::default();
        restore(&mut back, frame).unwrap();
        assert_eq!(back.hits.load(Ordering::Relaxed), 42);
        assert_eq!(back.names.lock().unwrap().get("a"), Some(&1));
        assert_eq!(back.legacy, "old");
    }

    #[test]
    fn new_field_takes_its_default() {
        let frame = encode(&v1()).unwrap().to_vec();
        let mut v2 = V2 {
            added: vec![7],
            ..Default::default()
        };
        restore(&mut v2, frame).unwrap();
        assert_eq!(v2.hits.load(Ordering::Relaxed), 42);
        assert_eq!(
            v2.added,
            vec![7],
            "a field the snapshot lacks keeps its constructed value"
        );
    }

    #[test]
    fn removed_field_is_ignored() {
        // v1 has `names` and `legacy`, which V2 no longer has: restoring must succeed.
        let frame = encode(&v1()).unwrap().to_vec();
        let mut reader = SnapshotReader::new(frame).unwrap();
        let mut v2 = V2::default();
        v2.restore(&mut reader).unwrap();
        let ignored: Vec<_> = reader
            .fields
            .iter()
            .filter(|(_, e)| !e.taken)
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(ignored, ["legacy", "names"]);
    }

    #[test]
    fn changed_type_is_an_error_and_restores_nothing() {
        let frame = encode(&v1()).unwrap().to_vec();
        let mut v3 = V3 {
            hits: "untouched".into(),
            other: 0,
        };
        match restore(&mut v3, frame) {
            Err(Error::TypeChanged {
                field,
                stored,
                expected,
            }) => {
                assert_eq!(field, "hits");
                assert_eq!(stored, "core::sync::atomic::AtomicU64");
                assert_eq!(expected, "alloc::string::String");
            }
            other => panic!("expected TypeChanged, got {:?}", other.err()),
        }
        assert_eq!(v3.hits, "untouched");
    }

    #[test]
    fn corrupt_truncated_foreign_and_newer_frames_are_refused() {
        let frame = encode(&v1()).unwrap().to_vec();
        let mut flipped = frame.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x10;
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("bit flip", flipped, "checksum"),
            ("truncated", frame[..frame.len() - 3].to_vec(), "truncated"),
            ("empty", Vec::new(), "magic"),
            ("foreign", b"{\"hits\": 3}".to_vec(), "magic"),
            (
                "newer",
                {
                    let mut f = frame.clone();
                    f[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
                    f
                },
                "format version 2",
            ),
        ];
        for (what, bytes, needle) in cases {
            let err = SnapshotReader::new(bytes)
                .err()
                .unwrap_or_else(|| panic!("{what} accepted"));
            assert!(err.to_string().contains(needle), "{what}: {err}");
        }
    }

    #[test]
    fn hostile_field_length_is_refused_without_allocating() {
        let mut body = Vec::new();
        body.extend_from_slice(&1u32.to_le_bytes());
        put_str(&mut body, "x");
        put_str(&mut body, "u8");
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut frame = MAGIC.to_vec();
        frame.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        frame.extend_from_slice(&(body.len() as u64).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        let err = SnapshotReader::new(frame).err().unwrap();
        assert!(err.to_string().contains("past the end"), "{err}");
    }
}
