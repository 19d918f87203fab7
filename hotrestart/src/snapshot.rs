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

use std::collections::BTreeMap;

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
    /// Writes every `#[persist]` field.
    fn save(&self, w: &mut SnapshotWriter) -> Result<()>;
    /// Replaces every `#[persist]` field found in the snapshot. Either all fields are
    /// replaced or, on error, none is.
    fn restore(&mut self, r: &mut SnapshotReader) -> Result<()>;
}

impl State for () {
    fn save(&self, _: &mut SnapshotWriter) -> Result<()> {
        Ok(())
    }
    fn restore(&mut self, _: &mut SnapshotReader) -> Result<()> {
        Ok(())
    }
}

/// Collects fields into a snapshot body.
pub struct SnapshotWriter {
    body: Vec<u8>,
    count: u32,
}

impl Default for SnapshotWriter {
    fn default() -> Self {
        SnapshotWriter {
            body: 0u32.to_le_bytes().to_vec(),
            count: 0,
        }
    }
}

impl SnapshotWriter {
    /// Writes one field. `T`'s type name is stored with it to detect type changes.
    pub fn field<T: Serialize>(&mut self, name: &str, value: &T) -> Result<()> {
        let type_name = std::any::type_name::<T>();
        put_str(&mut self.body, name);
        put_str(&mut self.body, type_name);
        let len_at = self.body.len();
        self.body.extend_from_slice(&0u64.to_le_bytes());
        let start = self.body.len();
        let body = std::mem::take(&mut self.body);
        self.body = postcard::to_extend(value, body).map_err(|e| Error::Field {
            field: name.to_owned(),
            reason: format!("cannot serialize: {e}"),
        })?;
        let len = (self.body.len() - start) as u64;
        self.body[len_at..start].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
        Ok(())
    }

    /// Finishes the frame: header plus body.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.body[..4].copy_from_slice(&self.count.to_le_bytes());
        let mut out = Vec::with_capacity(HEADER_LEN + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&self.body).to_le_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("field and type names are shorter than 64 KiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Serializes a state into a complete snapshot frame.
pub(crate) fn encode(state: &dyn State) -> Result<Vec<u8>> {
    let mut w = SnapshotWriter::default();
    state.save(&mut w)?;
    Ok(w.finish())
}

struct Entry {
    type_name: String,
    value: std::ops::Range<usize>,
    taken: bool,
}

/// A decoded snapshot; hands out fields by name.
pub struct SnapshotReader {
    frame: Vec<u8>,
    fields: BTreeMap<String, Entry>,
}

impl SnapshotReader {
    /// Checks the frame (magic, version, length, checksum) and indexes its fields.
    pub fn new(frame: Vec<u8>) -> Result<Self> {
        if frame.len() < MAGIC.len() || &frame[..MAGIC.len()] != MAGIC {
            return Err(Error::snapshot("not a hotrestart snapshot (bad magic)"));
        }
        if frame.len() < HEADER_LEN {
            return Err(Error::snapshot(format!(
                "truncated header ({} bytes)",
                frame.len()
            )));
        }
        let version = u32::from_le_bytes(frame[8..12].try_into().unwrap());
        if version > FORMAT_VERSION {
            return Err(Error::snapshot(format!(
                "written in format version {version}, this build reads up to {FORMAT_VERSION}"
            )));
        }
        if version == 0 {
            return Err(Error::snapshot("format version 0 does not exist"));
        }
        let len = u64::from_le_bytes(frame[12..20].try_into().unwrap());
        let crc = u32::from_le_bytes(frame[20..24].try_into().unwrap());
        let available = (frame.len() - HEADER_LEN) as u64;
        if len != available {
            return Err(Error::snapshot(format!(
                "body is {available} bytes, the header says {len} (truncated or trailing data)"
            )));
        }
        let body = &frame[HEADER_LEN..];
        if crc32fast::hash(body) != crc {
            return Err(Error::snapshot("checksum mismatch (corrupt data)"));
        }
        let fields = index_fields(body).map_err(Error::snapshot)?;
        Ok(SnapshotReader { frame, fields })
    }

    /// Takes field `name` as a `T`: `Ok(None)` when the snapshot lacks it (the caller keeps its
    /// default), [`Error::TypeChanged`] when it was written as another type.
    pub fn take<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>> {
        let Some(entry) = self.fields.get_mut(name) else {
            tracing::info!(
                field = name,
                "#[persist] field not in the snapshot: it keeps its initial value"
            );
            return Ok(None);
        };
        entry.taken = true;
        let expected = std::any::type_name::<T>();
        if entry.type_name != expected {
            return Err(Error::TypeChanged {
                field: name.to_owned(),
                stored: entry.type_name.clone(),
                expected: expected.to_owned(),
            });
        }
        let bytes = &self.frame[HEADER_LEN + entry.value.start..HEADER_LEN + entry.value.end];
        let value = postcard::from_bytes(bytes).map_err(|e| Error::Field {
            field: name.to_owned(),
            reason: format!("cannot decode: {e}"),
        })?;
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

fn index_fields(body: &[u8]) -> Result<BTreeMap<String, Entry>, String> {
    let mut pos = 0usize;
    let count = read_u32(body, &mut pos)?;
    let mut fields = BTreeMap::new();
    for _ in 0..count {
        let name = read_str(body, &mut pos)?;
        let type_name = read_str(body, &mut pos)?;
        let len = read_u64(body, &mut pos)?;
        let len = usize::try_from(len).map_err(|_| "field length overflows".to_owned())?;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= body.len())
            .ok_or("field value runs past the end")?;
        if fields
            .insert(
                name.clone(),
                Entry {
                    type_name,
                    value: pos..end,
                    taken: false,
                },
            )
            .is_some()
        {
            return Err(format!("field `{name}` appears twice"));
        }
        pos = end;
    }
    if pos != body.len() {
        return Err(format!(
            "{} bytes of trailing data after the last field",
            body.len() - pos
        ));
    }
    Ok(fields)
}

fn take_bytes<'a>(body: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], String> {
    let end = pos
        .checked_add(n)
        .filter(|&e| e <= body.len())
        .ok_or("unexpected end of snapshot body")?;
    let out = &body[*pos..end];
    *pos = end;
    Ok(out)
}

fn read_u32(body: &[u8], pos: &mut usize) -> Result<u32, String> {
    Ok(u32::from_le_bytes(
        take_bytes(body, pos, 4)?.try_into().unwrap(),
    ))
}

fn read_u64(body: &[u8], pos: &mut usize) -> Result<u64, String> {
    Ok(u64::from_le_bytes(
        take_bytes(body, pos, 8)?.try_into().unwrap(),
    ))
}

fn read_str(body: &[u8], pos: &mut usize) -> Result<String, String> {
    let len = u16::from_le_bytes(take_bytes(body, pos, 2)?.try_into().unwrap()) as usize;
    let bytes = take_bytes(body, pos, len)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| "a name is not UTF-8".to_owned())
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
    let mut w = SnapshotWriter::default();
    let map: HashMap<String, u64> = [("a".to_owned(), 1), ("bb".to_owned(), u64::MAX)].into();
    let fields = (|| -> Result<()> {
        w.field("n", &7u64)?;
        w.field("hits", &AtomicU64::new(300))?;
        w.field("s", &"text".to_owned())?;
        w.field("bytes", &vec![1u8, 2, 3])?;
        w.field("list", &vec!["x".to_owned(), "yz".to_owned()])?;
        w.field("ballast", &Mutex::new("abc".to_owned()))?;
        w.field("sessions", &Mutex::new(map))?;
        w.field("tuple", &Some((5u32, true, 1.5f64)))
    })();
    fields.expect("the seed fields serialize");
    w.finish()
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
        fn save(&self, w: &mut SnapshotWriter) -> Result<()> {
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
        fn save(&self, w: &mut SnapshotWriter) -> Result<()> {
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
        fn save(&self, w: &mut SnapshotWriter) -> Result<()> {
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
    fn round_trip_keeps_every_field() {
        let frame = encode(&v1()).unwrap();
        let mut back = V1::default();
        restore(&mut back, frame).unwrap();
        assert_eq!(back.hits.load(Ordering::Relaxed), 42);
        assert_eq!(back.names.lock().unwrap().get("a"), Some(&1));
        assert_eq!(back.legacy, "old");
    }

    #[test]
    fn new_field_takes_its_default() {
        let frame = encode(&v1()).unwrap();
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
        let frame = encode(&v1()).unwrap();
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
        let frame = encode(&v1()).unwrap();
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
        let frame = encode(&v1()).unwrap();
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
