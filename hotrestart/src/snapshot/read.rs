//! Reading a snapshot: the frame checked as it is read, then fields handed out by name.

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::io::Read;

use serde::de::DeserializeOwned;

use super::{is_blob, BLOB_TYPE, FORMAT_VERSION, HEADER_LEN, MAGIC};
use crate::error::{Error, Result};

enum Value {
    /// postcard bytes.
    Encoded(Vec<u8>),
    /// A `Vec<u8>` field: the length its postcard prefix declared, and the bytes after the
    /// prefix, read straight into their own buffer (which becomes the field's value).
    Blob(u64, Vec<u8>),
    /// A field handed out already.
    Taken,
}

pub(super) struct Entry {
    type_name: String,
    value: Value,
    pub(super) taken: bool,
}

/// A decoded snapshot; hands out fields by name.
pub struct SnapshotReader {
    pub(super) fields: BTreeMap<String, Entry>,
    /// Fields received by pre-copy, already of their own type.
    staged: BTreeMap<String, Box<dyn Any + Send>>,
}

impl std::fmt::Debug for SnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Reads the frame's body from `r`, checking as it goes.
struct FrameReader<'r, R> {
    r: &'r mut R,
    crc: crc32fast::Hasher,
    left: u64,
}

/// Why a frame could not be read from a stream.
pub(crate) enum ReadFailure {
    /// The input ended or failed before the frame did: a peer that went away.
    Cut(Error),
    /// What was read is not a valid frame.
    Corrupt(Error),
}

impl ReadFailure {
    fn cut(reason: String) -> Self {
        ReadFailure::Cut(Error::snapshot(reason))
    }

    fn corrupt(reason: String) -> Self {
        ReadFailure::Corrupt(Error::snapshot(reason))
    }
}

impl<R: Read> FrameReader<'_, R> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, ReadFailure> {
        if n > self.left {
            return Err(ReadFailure::corrupt(format!(
                "{what} runs past the end of the body ({n} bytes, {} left)",
                self.left
            )));
        }
        // Grows with the bytes that arrive: a lying length cannot make it allocate.
        let mut out = Vec::with_capacity(n.min(1 << 16) as usize);
        let got = (&mut *self.r)
            .take(n)
            .read_to_end(&mut out)
            .map_err(|e| ReadFailure::cut(format!("reading {what}: {e}")))?;
        if got as u64 != n {
            return Err(ReadFailure::cut(format!(
                "truncated: the body ends inside {what}"
            )));
        }
        self.left -= n;
        self.crc.update(&out);
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ReadFailure> {
        Ok(self.bytes(N as u64, what)?.try_into().unwrap())
    }

    fn string(&mut self, what: &str) -> Result<String, ReadFailure> {
        let len = u16::from_le_bytes(self.array(what)?);
        String::from_utf8(self.bytes(len.into(), what)?)
            .map_err(|_| ReadFailure::corrupt(format!("{what} is not UTF-8")))
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
        let corrupt = ReadFailure::corrupt;
        let mut head = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            match r.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadFailure::cut(format!("reading the header: {e}"))),
            }
        }
        if (MAGIC.len()..HEADER_LEN).contains(&got) && head[..MAGIC.len()] == MAGIC[..] {
            return Err(ReadFailure::cut(format!("truncated header ({got} bytes)")));
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
        };
        let fields = Self::read_fields(&mut frame)?;
        if frame.left != 0 {
            return Err(corrupt(format!(
                "{} bytes of trailing data after the last field",
                frame.left
            )));
        }
        if frame.crc.finalize() != crc {
            return Err(corrupt("checksum mismatch (corrupt data)".into()));
        }
        Ok(SnapshotReader {
            fields,
            staged: BTreeMap::new(),
        })
    }

    fn read_fields<R: Read>(
        frame: &mut FrameReader<'_, R>,
    ) -> Result<BTreeMap<String, Entry>, ReadFailure> {
        let count = u32::from_le_bytes(frame.array("the field count")?);
        let mut fields = BTreeMap::new();
        for _ in 0..count {
            let name = frame.string("a field name")?;
            let type_name = frame.string("a type name")?;
            let len = u64::from_le_bytes(frame.array("a field length")?);
            let value = if is_blob(&type_name) && len > 0 {
                let mut prefix = Vec::new();
                while prefix.len() < 10
                    && prefix.last().is_none_or(|b| b & 0x80 != 0)
                    && (prefix.len() as u64) < len
                {
                    prefix.extend(frame.bytes(1, "a byte string's length")?);
                }
                let (declared, used) = get_varint(&prefix).ok_or_else(|| {
                    ReadFailure::corrupt("a byte string's length is not a varint".into())
                })?;
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
                return Err(ReadFailure::corrupt(format!(
                    "field `{name}` appears twice"
                )));
            }
        }
        Ok(fields)
    }

    /// Takes field `name` as a `T`: `Ok(None)` when the snapshot lacks it (the caller keeps its
    /// default), [`Error::TypeChanged`] when it was written as another type.
    pub fn take<T: DeserializeOwned + 'static>(&mut self, name: &str) -> Result<Option<T>> {
        self.take_as(name, std::any::type_name::<T>())
    }

    /// Takes field `name`, written under `expected` (the field's own type name), as a `T`:
    /// what `#[derive(State)]` uses for a field behind a lock, whose inner value is decoded.
    #[doc(hidden)]
    pub fn take_as<T: DeserializeOwned + 'static>(
        &mut self,
        name: &str,
        expected: &str,
    ) -> Result<Option<T>> {
        if let Some(staged) = self.staged.remove(name) {
            let value: Box<dyn Any> = staged;
            return match value.downcast::<T>() {
                Ok(value) => Ok(Some(*value)),
                Err(_) => Err(Error::Field {
                    field: name.to_owned(),
                    reason: "pre-copied as another type".into(),
                }),
            };
        }
        let Some(entry) = self.fields.get_mut(name) else {
            tracing::info!(
                field = name,
                "#[persist] field not in the snapshot: it keeps its initial value"
            );
            return Ok(None);
        };
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
            Value::Blob(declared, bytes)
                if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() && expected == BLOB_TYPE =>
            {
                if declared != bytes.len() as u64 {
                    return Err(field_error(
                        "cannot decode: the byte string's length does not match".into(),
                    ));
                }
                let boxed: Box<dyn Any> = Box::new(bytes);
                *boxed.downcast::<T>().expect("T is Vec<u8>")
            }
            Value::Blob(declared, bytes)
                if TypeId::of::<T>() == TypeId::of::<crate::TrackedBytes>()
                    && expected == super::tracked_blob_type() =>
            {
                if declared != bytes.len() as u64 {
                    return Err(field_error(
                        "cannot decode: the byte string's length does not match".into(),
                    ));
                }
                let boxed: Box<dyn Any> = Box::new(crate::TrackedBytes::from(bytes));
                *boxed.downcast::<T>().expect("T is TrackedBytes")
            }
            Value::Blob(..) => return Err(field_error("cannot decode: a byte string".into())),
            Value::Encoded(bytes) => {
                let decoded =
                    crate::tracked::with_input_len(bytes.len(), || postcard::from_bytes(&bytes));
                entry.value = Value::Encoded(bytes);
                decoded.map_err(|e| field_error(format!("cannot decode: {e}")))?
            }
            Value::Taken => return Err(field_error("taken twice".into())),
        };
        entry.taken = true;
        Ok(Some(value))
    }

    /// Adds a field received by pre-copy: [`take`](Self::take) hands it out before the
    /// snapshot's own fields.
    pub(crate) fn stage(&mut self, name: &str, value: Box<dyn Any + Send>) {
        self.staged.insert(name.to_owned(), value);
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
