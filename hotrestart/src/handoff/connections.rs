//! CONNECTIONS: parked connections, their fds in batches of at most 253 per frame.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::conns::Parcel;
use crate::error::{Error, Result};

use super::fds::{recv_with_fds, send_with_fds, WithFds};
use super::*;

/// One connection in a CONNECTIONS frame, as decoded (its fd travels beside it).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ConnEntry {
    pub(crate) key: String,
    pub(crate) prefix: Vec<u8>,
}

pub(super) fn encode_connections(last: bool, batch: &[Parcel]) -> Vec<u8> {
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

pub(super) fn decode_connections(p: &[u8]) -> Result<(bool, Vec<ConnEntry>)> {
    let mut p = Payload::new("CONNECTIONS", p);
    let last = match p.u8()? {
        0 => false,
        1 => true,
        other => {
            return Err(Error::handoff(format!(
                "CONNECTIONS has a bad last flag {other}"
            )))
        }
    };
    let count = p.u32()? as usize;
    if count > MAX_FDS {
        return Err(Error::handoff(format!(
            "CONNECTIONS names {count} connections"
        )));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(p.u16()?);
        let key = p.string(len, "a listener identity")?;
        let len = p.u32()? as usize;
        let prefix = p.take(len)?.to_vec();
        entries.push(ConnEntry { key, prefix });
    }
    p.end()?;
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
    let (last, entries) = decode_connections(&payload).map_err(|e| Refused(e.to_string()))?;
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
