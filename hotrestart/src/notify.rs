//! systemd's notification protocol (`sd_notify`): `READY=1`, `RELOADING=1`, `MAINPID=`,
//! `STOPPING=1`, sent as datagrams to `$NOTIFY_SOCKET`, or to the supervisor.
//!
//! Under a supervisor (`supervisor/mod.rs`) a generation talks to it alone, over an inherited
//! datagram socketpair: the supervisor follows `MAINPID=` and relays upstream with its own,
//! stable pid. Without one, over a hot restart the old process says `RELOADING=1` (with
//! `MONOTONIC_USEC`), the successor says `MAINPID=<its pid>` and `READY=1`, so systemd follows
//! the new main process (the unit needs `NotifyAccess=all`). A rollback says `READY=1` again;
//! a final exit says `STOPPING=1`. Without either, nothing is sent.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where notifications go: captured (and removed from the environment) at start, passed on to
/// each successor.
#[derive(Debug, Clone)]
pub(crate) enum Notifier {
    Nowhere,
    /// `$NOTIFY_SOCKET`: systemd, followed directly.
    Systemd(std::ffi::OsString),
    /// The supervisor's socketpair, and the supervisor's pid.
    Supervisor(Arc<UnixDatagram>, u32),
}

impl Notifier {
    pub(crate) fn new(socket: Option<std::ffi::OsString>) -> Self {
        match socket.filter(|s| !s.is_empty()) {
            Some(s) => Notifier::Systemd(s),
            None => Notifier::Nowhere,
        }
    }

    /// The supervisor's end given to this generation; its peer is the supervisor, which
    /// created the pair (`SO_PEERCRED` names it).
    pub(crate) fn supervisor(fd: OwnedFd) -> io::Result<Self> {
        let sock = UnixDatagram::from(fd);
        let cred = nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::PeerCredentials)
            .map_err(io::Error::from)?;
        // Never blocks a runtime thread: a supervisor that does not read gets nothing, and a
        // successor that cannot announce itself refuses the handover.
        sock.set_nonblocking(true)?;
        Ok(Notifier::Supervisor(Arc::new(sock), cred.pid() as u32))
    }

    /// The value successors get as `NOTIFY_SOCKET`.
    pub(crate) fn socket(&self) -> Option<&std::ffi::OsString> {
        match self {
            Notifier::Systemd(s) => Some(s),
            _ => None,
        }
    }

    /// The fd successors get as `HOTRESTART_SUPERVISOR_FD`.
    pub(crate) fn supervisor_fd(&self) -> Option<std::os::fd::RawFd> {
        match self {
            Notifier::Supervisor(sock, _) => Some(sock.as_raw_fd()),
            _ => None,
        }
    }

    /// The pid that systemd or the container runtime follows: the supervisor's, else ours.
    pub(crate) fn main_pid(&self) -> u32 {
        match self {
            Notifier::Supervisor(_, pid) => *pid,
            _ => std::process::id(),
        }
    }

    /// Sends one notification; a failure is logged (and returned), never fatal.
    pub(crate) fn send(&self, state: &str) -> bool {
        let sent = match self {
            Notifier::Nowhere => return true,
            Notifier::Systemd(socket) => send_to(socket, state),
            Notifier::Supervisor(sock, _) => send_soon(sock, state.as_bytes()),
        };
        match sent {
            Ok(()) => {
                tracing::debug!("sd_notify {state:?}");
                true
            }
            Err(e) => {
                tracing::warn!("sd_notify {state:?} to {self:?} failed: {e}");
                false
            }
        }
    }

    /// `READY=1` with this process's pid; whether it was sent.
    pub(crate) fn ready(&self) -> bool {
        self.send(&format!("READY=1\nMAINPID={}", std::process::id()))
    }

    pub(crate) fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Tells the supervisor that a successor this process spawned exited (this process reaped
    /// it, so the supervisor cannot). Raw wait status.
    pub(crate) fn successor_exited(&self, pid: u32, status: i32) {
        if let Notifier::Supervisor(..) = self {
            self.send(&format!(
                "{}={pid} {status}",
                crate::sys::NOTIFY_SUCCESSOR_EXITED
            ));
        }
    }

    pub(crate) fn supervised(&self) -> bool {
        matches!(self, Notifier::Supervisor(..))
    }
}

/// One datagram to the supervisor: a full queue (it reads a moment late) is retried for up
/// to 100 ms, then given up.
fn send_soon(sock: &UnixDatagram, bytes: &[u8]) -> io::Result<()> {
    for _ in 0..100 {
        match sock.send(bytes) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            sent => return sent.map(drop),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::WouldBlock,
        "the supervisor has not read its socket for 100 ms",
    ))
}

pub(crate) fn send_to(socket: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), PathBuf::from(socket))?;
    }
    Ok(())
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the local `ts` only.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(Some(path.clone().into()));
        n.ready();
        n.stopping();
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            format!("READY=1\nMAINPID={}", std::process::id())
        );
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn nothing_without_a_socket() {
        Notifier::new(None).ready();
        Notifier::new(Some("".into())).ready();
    }
}
