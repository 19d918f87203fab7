//! systemd's notification protocol (`sd_notify`): `READY=1`, `RELOADING=1`, `MAINPID=`,
//! `STOPPING=1`, sent as datagrams to `$NOTIFY_SOCKET`. Without that variable nothing is sent.
//!
//! Over a hot restart the old process says `RELOADING=1` (with `MONOTONIC_USEC`), the successor
//! says `MAINPID=<its pid>` and `READY=1`, so systemd follows the new main process (the unit
//! needs `NotifyAccess=all`). A rollback says `READY=1` again; a final exit says `STOPPING=1`.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// Where notifications go: captured (and removed from the environment) at start, passed on to
/// each successor.
#[derive(Debug, Clone)]
pub(crate) struct Notifier {
    socket: Option<std::ffi::OsString>,
}

impl Notifier {
    pub(crate) fn new(socket: Option<std::ffi::OsString>) -> Self {
        Notifier {
            socket: socket.filter(|s| !s.is_empty()),
        }
    }

    /// The value successors get as `NOTIFY_SOCKET`.
    pub(crate) fn socket(&self) -> Option<&std::ffi::OsString> {
        self.socket.as_ref()
    }

    /// Sends one notification; a failure is logged, never fatal.
    pub(crate) fn send(&self, state: &str) {
        let Some(socket) = &self.socket else { return };
        if let Err(e) = send_to(socket, state) {
            tracing::warn!("sd_notify {state:?} to {socket:?} failed: {e}");
        } else {
            tracing::debug!("sd_notify {state:?}");
        }
    }

    pub(crate) fn ready(&self) {
        self.send(&format!("READY=1\nMAINPID={}", std::process::id()));
    }

    pub(crate) fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1");
    }
}

fn send_to(socket: &std::ffi::OsStr, state: &str) -> io::Result<()> {
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
