//! The handoff channel between a process and its successor: a Unix socketpair carrying
//! length-prefixed frames, the first of which also carries the listening sockets (SCM_RIGHTS).
//!
//! ```text
//! old (generation N)                        successor (generation N+1)
//!   HELLO {generation, names} + fds  ---->
//!                                    <----  EARLY               (asked by the environment:
//!   PRECOPY, PIECE ..., EARLY_END    ---->   the first pre-copy round during its init)
//!                                    <----  PREPARED            (its slow init is done)
//!                                           (payload: capabilities, see CAP_CONNECTIONS)
//!   PRECOPY [(field, type, length)]  ---->  (if no EARLY came, it offered CAP_PRECOPY and
//!                                    <----  PRECOPY_ACCEPT [index]   a tracked field is not
//!                                           empty; after EARLY, only the ACCEPT)
//!   PIECE {index, piece} ...         ---->  (rounds while serving: lifecycle/precopy.rs)
//!   PRECOPY_SYNC                     <--->
//!   quiesce, park idle connections, hooks
//!   PIECE {index, piece} ...         ---->  (the last round)
//!   PLAN {CAP_CONNECTIONS|CAP_CUSTOM} ---> (only if the successor offered, and hand-over is on)
//!   SNAPSHOT {frame}                 ---->
//!   CONNECTIONS {batch} + fds        ---->  (only after PLAN; at most 253 fds per frame,
//!   ... the last one flagged last)          the last one flagged)
//!
//! Versions that predate PLAN and CONNECTIONS interoperate: an older old process ignores the
//! PREPARED payload and sends SNAPSHOT without PLAN (so no connections are expected); an older
//! successor offers nothing, so it gets neither.
//!                                    <----  READY | REJECT {reason}
//! ```
//!
//! A frame is `tag: u8, length: u64 LE, payload`.

mod connections;
mod fds;
mod fuzz;
mod hello;

pub(crate) use connections::{recv_connections, send_connections, ConnectionsError};
pub use fuzz::fuzz_channel;
pub(crate) use hello::{recv_hello, send_hello};

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::error::{Error, Result};

pub(crate) const TAG_HELLO: u8 = 1;
pub(crate) const TAG_PREPARED: u8 = 2;
pub(crate) const TAG_SNAPSHOT: u8 = 3;
pub(crate) const TAG_READY: u8 = 4;
pub(crate) const TAG_REJECT: u8 = 5;
pub(crate) const TAG_CONNECTIONS: u8 = 6;
pub(crate) const TAG_PLAN: u8 = 7;
/// Old → successor, before the quiesce: the tracked fields it can pre-copy.
pub(crate) const TAG_PRECOPY: u8 = 8;
/// Successor → old: the offered fields it takes.
pub(crate) const TAG_PRECOPY_ACCEPT: u8 = 9;
/// Old → successor: one piece of a pre-copied field.
pub(crate) const TAG_PIECE: u8 = 10;
/// Both ways, after the rounds sent while serving: "tell me once you applied all of them";
/// the successor's answer, so that the quiesce does not wait for a backlog of pieces.
pub(crate) const TAG_PRECOPY_SYNC: u8 = 11;
/// Successor → old, right after HELLO (only if the old process asked for it, by
/// `HOTRESTART_PRECOPY_EARLY`): "send the first round now, while I initialise".
pub(crate) const TAG_EARLY: u8 = 12;
/// Old → successor: the first round sent while it initialises is complete.
pub(crate) const TAG_EARLY_END: u8 = 13;

/// PREPARED payload bit: "send me your idle connections after the snapshot".
pub(crate) const CAP_CONNECTIONS: u8 = 1;
/// PREPARED/PLAN capability bit: the successor takes connections of custom protocols
/// ([`crate::Movable`]), claimed by listener name.
pub(crate) const CAP_CUSTOM: u8 = 4;
/// Every capability that means CONNECTIONS frames follow the snapshot.
pub(crate) const CAPS_WITH_CONNECTIONS: u8 = CAP_CONNECTIONS | CAP_CUSTOM;
/// PREPARED payload bit: "I announce myself to the supervisor". A successor of a version
/// without a supervisor does not; its predecessor announces it at the commit instead.
pub(crate) const CAP_ANNOUNCES: u8 = 2;
/// PREPARED payload bit: "pre-copy your tracked fields to me before you quiesce".
pub(crate) const CAP_PRECOPY: u8 = 8;
/// Largest CONNECTIONS frame.
pub(crate) const MAX_CONNECTIONS_FRAME: u64 = 16 << 20;
/// A batch is cut once its payload passes this size (each connection's unparsed bytes are at
/// most hyper's read buffer, 400 KiB).
const BATCH_BYTES: usize = 1 << 20;

/// Largest control frame (anything but a snapshot).
pub(crate) const MAX_CONTROL: u64 = 64 * 1024;
/// Largest SNAPSHOT a successor accepts (16 GiB; the lifecycle's own limit has the same value).
pub(crate) const MAX_SNAPSHOT: u64 = 16 << 30;
/// Most fds one HELLO can carry (the kernel's SCM_MAX_FD).
pub(crate) const MAX_FDS: usize = 253;
/// How long a successor waits for its HELLO before giving up.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

const FRAME_HEADER: usize = 9;

/// A decoded frame.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) tag: u8,
    pub(crate) payload: Vec<u8>,
}

pub(crate) fn tag_name(tag: u8) -> &'static str {
    match tag {
        TAG_HELLO => "HELLO",
        TAG_PREPARED => "PREPARED",
        TAG_SNAPSHOT => "SNAPSHOT",
        TAG_READY => "READY",
        TAG_REJECT => "REJECT",
        TAG_CONNECTIONS => "CONNECTIONS",
        TAG_PLAN => "PLAN",
        TAG_PRECOPY => "PRECOPY",
        TAG_PRECOPY_ACCEPT => "PRECOPY_ACCEPT",
        TAG_PIECE => "PIECE",
        TAG_PRECOPY_SYNC => "PRECOPY_SYNC",
        TAG_EARLY => "EARLY",
        TAG_EARLY_END => "EARLY_END",
        _ => "unknown",
    }
}

fn header(tag: u8, len: u64) -> [u8; FRAME_HEADER] {
    let mut h = [0u8; FRAME_HEADER];
    h[0] = tag;
    h[1..].copy_from_slice(&len.to_le_bytes());
    h
}

/// Writes one frame.
pub(crate) async fn write_frame(chan: &mut UnixStream, tag: u8, payload: &[u8]) -> io::Result<()> {
    chan.write_all(&header(tag, payload.len() as u64)).await?;
    chan.write_all(payload).await?;
    chan.flush().await
}

/// Writes one frame whose payload is given as slices, without joining them.
pub(crate) async fn write_frame_parts<'a>(
    chan: &mut UnixStream,
    tag: u8,
    len: usize,
    parts: impl Iterator<Item = &'a [u8]>,
) -> io::Result<()> {
    chan.write_all(&header(tag, len as u64)).await?;
    for part in parts {
        chan.write_all(part).await?;
    }
    chan.flush().await
}

/// Reads one frame's header: its tag and payload length (at most `limit`).
pub(crate) async fn read_frame_header<R>(chan: &mut R, limit: u64) -> io::Result<(u8, u64)>
where
    R: AsyncRead + Unpin,
{
    let mut h = [0u8; FRAME_HEADER];
    chan.read_exact(&mut h).await?;
    parse_header(&h, limit)
}

/// Reads the payload of a frame whose header was read, `len` bytes (at most `limit`); the
/// buffer grows with the bytes that actually arrive, so a hostile length prefix cannot make
/// it allocate.
pub(crate) async fn read_frame_payload<R>(chan: &mut R, len: u64, limit: u64) -> io::Result<Vec<u8>>
where
    R: AsyncRead + Unpin,
{
    check_length(FRAME_UNKNOWN, len, limit)?;
    read_payload(chan, FRAME_UNKNOWN, len).await
}

/// Reads one frame. `limit` bounds the payload.
pub(crate) async fn read_frame<R>(chan: &mut R, limit: u64) -> io::Result<Frame>
where
    R: AsyncRead + Unpin,
{
    let (tag, len) = read_frame_header(chan, limit).await?;
    let payload = read_payload(chan, tag, len).await?;
    Ok(Frame { tag, payload })
}

/// No tag known: the payload of a frame whose header was read elsewhere.
const FRAME_UNKNOWN: u8 = 0;

/// Splits a frame header into tag and payload length, refusing a length over `limit`.
fn parse_header(h: &[u8; FRAME_HEADER], limit: u64) -> io::Result<(u8, u64)> {
    let tag = h[0];
    let len = u64::from_le_bytes(h[1..].try_into().unwrap());
    check_length(tag, len, limit)?;
    Ok((tag, len))
}

/// The one length check of every frame reader.
fn check_length(tag: u8, len: u64, limit: u64) -> io::Result<()> {
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}frame of {len} bytes exceeds the limit of {limit}",
                frame_word(tag)
            ),
        ));
    }
    Ok(())
}

/// The one truncation check of every frame reader: `len` bytes, growing with what arrives.
async fn read_payload<R>(chan: &mut R, tag: u8, len: u64) -> io::Result<Vec<u8>>
where
    R: AsyncRead + Unpin,
{
    let mut payload = Vec::with_capacity(len.min(1 << 20) as usize);
    let read = chan.take(len).read_to_end(&mut payload).await?;
    if read as u64 != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{}frame truncated: the channel closed after {read} of {len} bytes",
                frame_word(tag)
            ),
        ));
    }
    Ok(payload)
}

/// `"SNAPSHOT "` for a message, nothing when the tag is not known.
fn frame_word(tag: u8) -> String {
    if tag == FRAME_UNKNOWN {
        String::new()
    } else {
        format!("{} ", tag_name(tag))
    }
}

/// A cursor over one frame's payload: every read is checked against its end, so a decoder
/// reads fields in order and never indexes past what arrived.
pub(super) struct Payload<'a> {
    frame: &'static str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Payload<'a> {
    pub(super) fn new(frame: &'static str, bytes: &'a [u8]) -> Self {
        Payload {
            frame,
            bytes,
            pos: 0,
        }
    }

    /// The next `n` bytes, or "<FRAME> is truncated".
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| Error::handoff(format!("{} is truncated", self.frame)))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(super) fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self) -> Result<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// `len` bytes of UTF-8; `what` names the field in the error.
    pub(super) fn string(&mut self, len: usize, what: &str) -> Result<String> {
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| Error::handoff(format!("{what} is not UTF-8")))
    }

    /// Checks that nothing follows the last field.
    pub(super) fn end(&self) -> Result<()> {
        if self.pos != self.bytes.len() {
            return Err(Error::handoff(format!(
                "trailing bytes after {}",
                self.frame
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
