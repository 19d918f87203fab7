//! One `sendmsg`/`recvmsg` with file descriptors attached (SCM_RIGHTS).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::MAX_FDS;

/// Runs `call` again while it fails with `EINTR`. A blocking socket call with a timeout
/// (`SO_RCVTIMEO`, as the HELLO read has) is interrupted even without a signal handler when the
/// process is stopped and continued (SIGSTOP/SIGCONT: a debugger, job control), and is never
/// restarted by the kernel (signal(7)).
fn retrying<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Sends `bytes` with `fds` attached (SCM_RIGHTS) in one `sendmsg`: the fds ride on its first
/// bytes. Returns how many bytes went; the caller writes the rest.
pub(super) fn send_with_fds(chan: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    retrying(|| send_once(chan, bytes, fds))
}

fn send_once(chan: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
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
pub(super) struct WithFds {
    pub(super) bytes: usize,
    pub(super) fds: Vec<OwnedFd>,
    /// Some fds were not installed (MSG_CTRUNC: no room in our fd table). Those that were
    /// cannot be listed (nix refuses a truncated buffer): the caller refuses the handover and
    /// this process exits, which closes them.
    pub(super) truncated: bool,
}

/// Reads into `buf` and takes the fds that came with those bytes (close-on-exec).
pub(super) fn recv_with_fds(chan: RawFd, buf: &mut [u8]) -> io::Result<WithFds> {
    retrying(|| recv_once(chan, buf))
}

fn recv_once(chan: RawFd, buf: &mut [u8]) -> io::Result<WithFds> {
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
