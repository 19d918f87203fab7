//! Entry points for the fuzz targets and the decoder property tests.

use super::{SnapshotReader, SnapshotWriter, HEADER_LEN, MAGIC};
use crate::error::Result;

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
        let _ = reader.take::<crate::TrackedMap<String, u64>>(name);
        let _ = reader.take::<crate::TrackedBytes>(name);
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
    let tracked: crate::TrackedMap<String, u64> = [("t".to_owned(), 9)].into_iter().collect();
    let blob = crate::TrackedBytes::from(vec![4u8, 5]);
    let mut w = SnapshotWriter::default();
    let fields = (|| -> Result<()> {
        w.field("tracked", &tracked)?;
        w.field("blob", &blob)?;
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
