use super::write::put_str;
use super::*;
use crate::error::Error;
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
    restore(&mut back, frame, |_| Ok(())).unwrap();
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
    restore(&mut v2, frame, |_| Ok(())).unwrap();
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
    match restore(&mut v3, frame, |_| Ok(())) {
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
