//! HELLO: the first frame, the listening sockets riding on it (SCM_RIGHTS).

use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;

use crate::error::{Error, Result};

use super::fds::{recv_with_fds, send_with_fds, WithFds};
use super::*;

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

pub(super) fn decode_hello(p: &[u8]) -> Result<Hello> {
    let mut p = Payload::new("HELLO", p);
    let generation = p.u64()?;
    let count = usize::from(p.u16()?);
    let mut names = Vec::with_capacity(count.min(MAX_FDS));
    for _ in 0..count {
        let len = usize::from(p.u16()?);
        names.push(p.string(len, "a listener name")?);
    }
    let count = usize::from(p.u16()?);
    if count > MAX_DRAINING {
        return Err(Error::handoff(format!(
            "HELLO names {count} draining generations"
        )));
    }
    let mut draining = Vec::with_capacity(count);
    for _ in 0..count {
        draining.push(p.u32()?);
    }
    p.end()?;
    Ok(Hello {
        generation,
        names,
        draining,
    })
}

/// Checks HELLO's frame header; returns the payload length.
pub(super) fn check_hello_header(head: &[u8; FRAME_HEADER]) -> Result<u64> {
    if head[0] != TAG_HELLO {
        return Err(Error::handoff(format!(
            "expected HELLO, got {}",
            tag_name(head[0])
        )));
    }
    let len = u64::from_le_bytes(head[1..].try_into().unwrap());
    if len > MAX_CONTROL {
        return Err(Error::handoff(format!("HELLO of {len} bytes is too large")));
    }
    Ok(len)
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
    let len = check_hello_header(&head)?;
    let mut payload = vec![0u8; len as usize];
    reader
        .read_exact(&mut payload)
        .map_err(|e| Error::handoff(format!("truncated HELLO: {e}")))?;
    let hello = decode_hello(&payload)?;
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
