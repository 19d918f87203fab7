//! The handoff channel between a process and its successor: a Unix socketpair carrying
//! length-prefixed frames, the first of which also carries the listening sockets (SCM_RIGHTS).
//!
//! ```text
//! old (generation N)                        successor (generation N+1)
//!   HELLO {generation, names} + fds  ---->
//!                                    <----  PREPARED            (its slow init is done)
//!                                           (payload: capabilities, see CAP_CONNECTIONS)
//!   quiesce, park idle connections, hooks
//!   PLAN {CAP_CONNECTIONS}           ---->  (only if the successor offered, and hand-over is on)
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

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::conns::Parcel;
use crate::error::{Error, Result};

pub(crate) const TAG_HELLO: u8 = 1;
pub(crate) const TAG_PREPARED: u8 = 2;
pub(crate) const TAG_SNAPSHOT: u8 = 3;
pub(crate) const TAG_READY: u8 = 4;
pub(crate) const TAG_REJECT: u8 = 5;
pub(crate) const TAG_CONNECTIONS: u8 = 6;
pub(crate) const TAG_PLAN: u8 = 7;

/// PREPARED payload bit: "send me your idle connections after the snapshot".
pub(crate) const CAP_CONNECTIONS: u8 = 1;
/// PREPARED payload bit: "I announce myself to the supervisor". A successor of a version
/// without a supervisor does not; its predecessor announces it at the commit instead.
pub(crate) const CAP_ANNOUNCES: u8 = 2;
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

/// What a successor learns first.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) generation: u64,
    pub(crate) names: Vec<String>,
    /// Older generations still alive when the handover began (the sender first): they drain,
    /// and count against the cap on live generations.
    pub(crate) draining: Vec<u32>,
}

/// Most older generations a HELLO can name.
pub(crate) const MAX_DRAINING: usize = 64;

pub(crate) fn encode_hello(hello: &Hello) -> Vec<u8> {
    let mut p = hello.generation.to_le_bytes().to_vec();
    p.extend_from_slice(&(hello.names.len() as u16).to_le_bytes());
    for name in &hello.names {
        p.extend_from_slice(&(name.len() as u16).to_le_bytes());
        p.extend_from_slice(name.as_bytes());
    }
    p.extend_from_slice(&(hello.draining.len() as u16).to_le_bytes());
    for pid in &hello.draining {
        p.extend_from_slice(&pid.to_le_bytes());
    }
    p
}

pub(crate) fn decode_hello(p: &[u8]) -> Result<Hello, String> {
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= p.len())
            .ok_or("HELLO is truncated")?;
        let out = &p[pos..end];
        pos = end;
        Ok(out)
    };
    let generation = u64::from_le_bytes(take(8)?.try_into().unwrap());
    let count = u16::from_le_bytes(take(2)?.try_into().unwrap()) as usize;
    let mut names = Vec::with_capacity(count.min(MAX_FDS));
    for _ in 0..count {
        let len = u16::from_le_bytes(take(2)?.try_into().unwrap()) as usize;
        let name =
            String::from_utf8(take(len)?.to_vec()).map_err(|_| "a listener name is not UTF-8")?;
        names.push(name);
    }
    let count = u16::from_le_bytes(take(2)?.try_into().unwrap()) as usize;
    if count > MAX_DRAINING {
        return Err(format!("HELLO names {count} draining generations"));
    }
    let mut draining = Vec::with_capacity(count);
    for _ in 0..count {
        draining.push(u32::from_le_bytes(take(4)?.try_into().unwrap()));
    }
    if pos != p.len() {
        return Err("trailing bytes after HELLO".into());
    }
    Ok(Hello {
        generation,
        names,
        draining,
    })
}

/// Checks HELLO's frame header; returns the payload length.
fn check_hello_header(head: &[u8; FRAME_HEADER]) -> Result<u64, String> {
    if head[0] != TAG_HELLO {
        return Err(format!("expected HELLO, got {}", tag_name(head[0])));
    }
    let len = u64::from_le_bytes(head[1..].try_into().unwrap());
    if len > MAX_CONTROL {
        return Err(format!("HELLO of {len} bytes is too large"));
    }
    Ok(len)
}

/// Sends `bytes` with `fds` attached (SCM_RIGHTS) in one `sendmsg`: the fds ride on its first
/// bytes. Returns how many bytes went; the caller writes the rest.
fn send_with_fds(chan: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let cmsgs = [nix::sys::socket::ControlMessage::ScmRights(fds)];
    let cmsgs: &[_] = if fds.is_empty() { &[] } else { &cmsgs };
    nix::sys::socket::sendmsg::<()>(
        chan,
        &[IoSlice::new(bytes)],
        cmsgs,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)
}

/// What one `recvmsg` brought.
struct WithFds {
    bytes: usize,
    fds: Vec<OwnedFd>,
    /// Some fds were not installed (MSG_CTRUNC: no room in our fd table). Those that were
    /// cannot be listed (nix refuses a truncated buffer): the caller refuses the handover and
    /// this process exits, which closes them.
    truncated: bool,
}

/// Reads into `buf` and takes the fds that came with those bytes (close-on-exec).
fn recv_with_fds(chan: RawFd, buf: &mut [u8]) -> io::Result<WithFds> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = nix::sys::socket::recvmsg::<()>(
        chan,
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    if msg.flags.contains(nix::sys::socket::MsgFlags::MSG_CTRUNC) {
        return Ok(WithFds {
            bytes: msg.bytes,
            fds: Vec::new(),
            truncated: true,
        });
    }
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(received) = cmsg {
            for fd in received {
                // SAFETY: the kernel just installed this fd in our table for us (SCM_RIGHTS);
                // nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok(WithFds {
        bytes: msg.bytes,
        fds,
        truncated: false,
    })
}

/// Parent side: sends HELLO with the listening sockets attached.
pub(crate) fn send_hello(
    chan: &StdUnixStream,
    generation: u64,
    listeners: &[(String, OwnedFd)],
    draining: &[u32],
) -> Result<()> {
    if listeners.len() > MAX_FDS {
        return Err(Error::handoff(format!(
            "{} listeners; at most {MAX_FDS} can be handed over",
            listeners.len()
        )));
    }
    let hello = Hello {
        generation,
        names: listeners.iter().map(|(n, _)| n.clone()).collect(),
        draining: draining.iter().copied().take(MAX_DRAINING).collect(),
    };
    let payload = encode_hello(&hello);
    let mut frame = header(TAG_HELLO, payload.len() as u64).to_vec();
    frame.extend_from_slice(&payload);
    let fds: Vec<RawFd> = listeners.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let sent =
        send_with_fds(chan.as_raw_fd(), &frame, &fds).map_err(|e| Error::io("sending HELLO", e))?;
    // The socket buffer of a fresh socketpair holds far more than a HELLO; send any rest.
    io::Write::write_all(&mut &*chan, &frame[sent..]).map_err(|e| Error::io("sending HELLO", e))?;
    Ok(())
}

/// Successor side: receives HELLO and the sockets, blocking up to [`HELLO_TIMEOUT`].
pub(crate) fn recv_hello(chan: &StdUnixStream) -> Result<(Hello, Vec<OwnedFd>)> {
    chan.set_read_timeout(Some(HELLO_TIMEOUT))
        .map_err(|e| Error::io("handoff channel", e))?;
    let mut head = [0u8; FRAME_HEADER];
    let WithFds {
        bytes: got,
        fds,
        truncated,
    } = recv_with_fds(chan.as_raw_fd(), &mut head)
        .map_err(|e| Error::handoff(format!("no HELLO from the previous process: {e}")))?;
    if truncated {
        return Err(Error::handoff("HELLO's fds were truncated"));
    }
    if got == 0 {
        return Err(Error::handoff(
            "the previous process closed the channel before HELLO",
        ));
    }
    let mut reader = chan;
    reader
        .read_exact(&mut head[got..])
        .map_err(|e| Error::handoff(format!("truncated HELLO: {e}")))?;
    let len = check_hello_header(&head).map_err(Error::handoff)?;
    let mut payload = vec![0u8; len as usize];
    reader
        .read_exact(&mut payload)
        .map_err(|e| Error::handoff(format!("truncated HELLO: {e}")))?;
    let hello = decode_hello(&payload).map_err(Error::handoff)?;
    if hello.names.len() != fds.len() {
        return Err(Error::handoff(format!(
            "HELLO names {} listeners but carries {} fds",
            hello.names.len(),
            fds.len()
        )));
    }
    chan.set_read_timeout(None)
        .map_err(|e| Error::io("handoff channel", e))?;
    Ok((hello, fds))
}

/// One connection in a CONNECTIONS frame, as decoded (its fd travels beside it).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ConnEntry {
    pub(crate) key: String,
    pub(crate) prefix: Vec<u8>,
}

fn encode_connections(last: bool, batch: &[Parcel]) -> Vec<u8> {
    let size: usize = batch.iter().map(|p| 6 + p.key.len() + p.prefix.len()).sum();
    let mut p = Vec::with_capacity(5 + size);
    p.push(last as u8);
    p.extend_from_slice(&(batch.len() as u32).to_le_bytes());
    for parcel in batch {
        p.extend_from_slice(&(parcel.key.len() as u16).to_le_bytes());
        p.extend_from_slice(parcel.key.as_bytes());
        p.extend_from_slice(&(parcel.prefix.len() as u32).to_le_bytes());
        p.extend_from_slice(&parcel.prefix);
    }
    p
}

pub(crate) fn decode_connections(p: &[u8]) -> Result<(bool, Vec<ConnEntry>), String> {
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= p.len())
            .ok_or("CONNECTIONS is truncated")?;
        let out = &p[pos..end];
        pos = end;
        Ok(out)
    };
    let last = match take(1)?[0] {
        0 => false,
        1 => true,
        other => return Err(format!("CONNECTIONS has a bad last flag {other}")),
    };
    let count = u32::from_le_bytes(take(4)?.try_into().unwrap()) as usize;
    if count > MAX_FDS {
        return Err(format!("CONNECTIONS names {count} connections"));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u16::from_le_bytes(take(2)?.try_into().unwrap()) as usize;
        let key = String::from_utf8(take(len)?.to_vec())
            .map_err(|_| "a listener identity is not UTF-8")?;
        let len = u32::from_le_bytes(take(4)?.try_into().unwrap()) as usize;
        let prefix = take(len)?.to_vec();
        entries.push(ConnEntry { key, prefix });
    }
    if pos != p.len() {
        return Err("trailing bytes after CONNECTIONS".into());
    }
    Ok((last, entries))
}

/// Old process: sends the parked connections, at most [`MAX_FDS`] per frame, the last frame
/// flagged (an empty one if there are none). Each frame is one `sendmsg` with its fds, so the
/// fds ride on the frame's first bytes.
pub(crate) async fn send_connections(chan: &mut UnixStream, parcels: &[Parcel]) -> io::Result<()> {
    let raw = chan.as_raw_fd();
    let mut rest = parcels;
    loop {
        let mut n = 0;
        let mut bytes = 0;
        while n < rest.len()
            && n < MAX_FDS
            && (n == 0 || bytes + rest[n].prefix.len() <= BATCH_BYTES)
        {
            bytes += rest[n].prefix.len();
            n += 1;
        }
        let (batch, after) = rest.split_at(n);
        let last = after.is_empty();
        let payload = encode_connections(last, batch);
        let mut frame = header(TAG_CONNECTIONS, payload.len() as u64).to_vec();
        frame.extend_from_slice(&payload);
        let fds: Vec<RawFd> = batch.iter().map(|p| p.fd).collect();
        let sent = chan
            .async_io(tokio::io::Interest::WRITABLE, || {
                send_with_fds(raw, &frame, &fds)
            })
            .await?;
        chan.write_all(&frame[sent..]).await?;
        rest = after;
        if last {
            break;
        }
    }
    chan.flush().await
}

/// Why CONNECTIONS could not be read.
#[derive(Debug)]
pub(crate) enum ConnectionsError {
    /// The channel ended: the previous process is gone.
    Gone(String),
    /// The frame is wrong, or cannot be taken whole: refuse the handover.
    Refused(String),
}

/// Successor: reads one CONNECTIONS frame and its fds. Returns whether it was the last, and
/// each connection with its fd.
pub(crate) async fn recv_connections(
    chan: &mut UnixStream,
) -> Result<(bool, Vec<(ConnEntry, OwnedFd)>), ConnectionsError> {
    use ConnectionsError::{Gone, Refused};
    let raw = chan.as_raw_fd();
    let mut head = [0u8; FRAME_HEADER];
    let WithFds {
        bytes: got,
        fds,
        truncated,
    } = chan
        .async_io(tokio::io::Interest::READABLE, || {
            recv_with_fds(raw, &mut head)
        })
        .await
        .map_err(|e| Gone(format!("reading CONNECTIONS: {e}")))?;
    if got == 0 {
        return Err(Gone(
            "the previous process closed the channel before CONNECTIONS".into(),
        ));
    }
    chan.read_exact(&mut head[got..])
        .await
        .map_err(|e| Gone(format!("truncated CONNECTIONS: {e}")))?;
    let (tag, len) =
        parse_header(&head, MAX_CONNECTIONS_FRAME).map_err(|e| Refused(e.to_string()))?;
    if tag != TAG_CONNECTIONS {
        return Err(Refused(format!(
            "expected CONNECTIONS, got {}",
            tag_name(tag)
        )));
    }
    let mut payload = Vec::with_capacity(len.min(1 << 20) as usize);
    let read = (&mut *chan)
        .take(len)
        .read_to_end(&mut payload)
        .await
        .map_err(|e| Gone(format!("truncated CONNECTIONS: {e}")))?;
    if read as u64 != len {
        return Err(Gone(format!(
            "CONNECTIONS truncated at {read} of {len} bytes"
        )));
    }
    let (last, entries) = decode_connections(&payload).map_err(Refused)?;
    if truncated {
        return Err(Refused(format!(
            "no room for the {} handed-over connections in this process's fd table (MSG_CTRUNC): raise its open-file limit (ulimit -n, LimitNOFILE=)",
            entries.len()
        )));
    }
    if entries.len() != fds.len() {
        return Err(Refused(format!(
            "CONNECTIONS names {} connections but carries {} fds",
            entries.len(),
            fds.len()
        )));
    }
    Ok((last, entries.into_iter().zip(fds).collect()))
}

/// Decodes `bytes` the way both ends read the channel, for fuzzing and property tests: first
/// as a HELLO (header and payload, as the successor reads it before anything else), then as a
/// stream of frames read by the successor (SNAPSHOT allowed up to 16 GiB) and by the old
/// process (control frames only), each payload decoded by its tag. Whatever the bytes, it must
/// return: no panic, no hang, no allocation beyond a small multiple of `bytes.len()`.
#[doc(hidden)]
pub fn fuzz_channel(bytes: &[u8]) {
    if let Some(head) = bytes.get(..FRAME_HEADER) {
        let head: &[u8; FRAME_HEADER] = head.try_into().unwrap();
        if let Ok(len) = check_hello_header(head) {
            let rest = &bytes[FRAME_HEADER..];
            if let Some(payload) = usize::try_from(len).ok().and_then(|n| rest.get(..n)) {
                let _ = decode_hello(payload);
            }
        }
    }
    for limit in [MAX_SNAPSHOT, MAX_CONTROL] {
        let mut reader = bytes;
        // Reading from a slice never waits: each poll completes.
        while let Some(Ok(frame)) = poll_now(read_frame(&mut reader, limit)) {
            match frame.tag {
                TAG_HELLO => {
                    let _ = decode_hello(&frame.payload);
                }
                TAG_SNAPSHOT => crate::snapshot::fuzz_snapshot(&frame.payload),
                TAG_CONNECTIONS => {
                    let _ = decode_connections(&frame.payload);
                }
                TAG_REJECT => {
                    let _ = String::from_utf8_lossy(&frame.payload);
                }
                _ => {}
            }
        }
    }
}

/// Polls `fut` once; `None` if it is not ready (never, for reads from a slice).
fn poll_now<F: std::future::Future>(fut: F) -> Option<F::Output> {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: std::sync::Arc<Self>) {}
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Noop));
    let mut cx = std::task::Context::from_waker(&waker);
    let fut = std::pin::pin!(fut);
    match fut.poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip_and_garbage() {
        let hello = Hello {
            generation: 7,
            names: vec!["http".into(), "admin".into()],
            draining: vec![41, 42],
        };
        let bytes = encode_hello(&hello);
        assert_eq!(decode_hello(&bytes).unwrap(), hello);
        for cut in 0..bytes.len() {
            assert!(
                decode_hello(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode_hello(&long).is_err());
    }

    #[test]
    fn hello_carries_fds_over_a_socketpair() {
        let (a, b) = StdUnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fd: OwnedFd = listener.into();
        send_hello(&a, 3, &[("http".to_owned(), fd)], &[7]).unwrap();
        let (hello, fds) = recv_hello(&b).unwrap();
        assert_eq!(
            hello,
            Hello {
                generation: 3,
                names: vec!["http".into()],
                draining: vec![7],
            }
        );
        let got = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(got.local_addr().unwrap(), addr);
    }

    #[tokio::test]
    async fn frames_refuse_oversized_lengths() {
        let (a, b) = StdUnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let (mut a, mut b) = (
            UnixStream::from_std(a).unwrap(),
            UnixStream::from_std(b).unwrap(),
        );
        a.write_all(&header(TAG_SNAPSHOT, u64::MAX)).await.unwrap();
        let err = read_frame(&mut b, MAX_CONTROL).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        write_frame(&mut a, TAG_READY, b"").await.unwrap();
    }

    #[test]
    fn connections_round_trip_and_garbage() {
        let parcels = [
            Parcel {
                fd: -1,
                key: "tcp:127.0.0.1:3000".into(),
                prefix: b"GET / HT".to_vec(),
            },
            Parcel {
                fd: -1,
                key: "unix:/run/app.sock".into(),
                prefix: Vec::new(),
            },
        ];
        let p = encode_connections(true, &parcels);
        let (last, entries) = decode_connections(&p).unwrap();
        assert!(last);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].key, "tcp:127.0.0.1:3000");
        assert_eq!(entries[0].prefix, b"GET / HT");
        assert_eq!(entries[1].prefix, b"");
        for cut in 0..p.len() {
            assert!(decode_connections(&p[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = p.clone();
        bad[0] = 7;
        assert!(decode_connections(&bad).is_err());
        let mut many = encode_connections(false, &[]);
        many[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_connections(&many).is_err());
    }

    /// 300 real sockets (more than one frame can carry) and two 700 KB prefixes (more than one
    /// batch's bytes) cross a socketpair; each received fd is the very socket that was sent.
    #[tokio::test]
    async fn connections_cross_a_socketpair_in_batches() {
        use std::io::Write;
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (a, b);
        let pairs: Vec<(StdUnixStream, StdUnixStream)> =
            (0..300).map(|_| StdUnixStream::pair().unwrap()).collect();
        let prefix = |i: usize| vec![i as u8; if i < 2 { 700_000 } else { i % 7 }];
        let parcels: Vec<Parcel> = pairs
            .iter()
            .enumerate()
            .map(|(i, (ours, _))| Parcel {
                fd: ours.as_raw_fd(),
                key: format!("tcp:{i}").into(),
                prefix: prefix(i),
            })
            .collect();
        let send = async { send_connections(&mut a, &parcels).await.unwrap() };
        let receive = async {
            let (mut all, mut frames) = (Vec::new(), 0);
            loop {
                let (last, batch) = recv_connections(&mut b).await.unwrap();
                frames += 1;
                all.extend(batch);
                if last {
                    break (all, frames);
                }
            }
        };
        let ((), (got, frames)) = tokio::join!(send, receive);
        assert!(frames >= 3, "{frames} frames");
        assert_eq!(got.len(), 300);
        for (i, (entry, fd)) in got.into_iter().enumerate() {
            assert_eq!(entry.key, format!("tcp:{i}"));
            assert_eq!(entry.prefix, prefix(i));
            let sent = StdUnixStream::from(fd);
            (&sent).write_all(&[i as u8]).unwrap();
            let mut byte = [0u8];
            (&pairs[i].1).read_exact(&mut byte).unwrap();
            assert_eq!(byte[0], i as u8);
        }
    }
}
