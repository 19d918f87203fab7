//! Protocol constants and the few fd-level system calls hotrestart needs.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Fd of the handoff channel inherited by a successor.
pub(crate) const ENV_HANDOFF_FD: &str = "HOTRESTART_HANDOFF_FD";
/// Generation number of a successor (the first process is generation 0).
pub(crate) const ENV_GENERATION: &str = "HOTRESTART_GENERATION";
/// Operator override of the ready timeout (`5s`, `250ms`).
pub(crate) const ENV_READY_TIMEOUT: &str = "HOTRESTART_READY_TIMEOUT";
/// Operator override of the drain timeout.
pub(crate) const ENV_DRAIN_TIMEOUT: &str = "HOTRESTART_DRAIN_TIMEOUT";
/// Operator override of the TLS handshake timeout of `http::tls::TlsListener`.
pub(crate) const ENV_TLS_HANDSHAKE_TIMEOUT: &str = "HOTRESTART_TLS_HANDSHAKE_TIMEOUT";
/// Operator override of every hook's time limit.
pub(crate) const ENV_HOOK_TIMEOUT: &str = "HOTRESTART_HOOK_TIMEOUT";
/// Operator override of the snapshot timeout.
pub(crate) const ENV_SNAPSHOT_TIMEOUT: &str = "HOTRESTART_SNAPSHOT_TIMEOUT";
/// Operator override of the state file path.
pub(crate) const ENV_STATE_FILE: &str = "HOTRESTART_STATE_FILE";
/// systemd socket activation.
pub(crate) const ENV_LISTEN_FDS: &str = "LISTEN_FDS";
pub(crate) const ENV_LISTEN_PID: &str = "LISTEN_PID";
pub(crate) const ENV_LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// systemd's notification socket (`sd_notify`).
pub(crate) const ENV_NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// Operator setting: a PID file rewritten by each generation once it is ready.
pub(crate) const ENV_PID_FILE: &str = "HOTRESTART_PID_FILE";
/// Operator setting: path of the control socket.
pub(crate) const ENV_CONTROL_SOCKET: &str = "HOTRESTART_CONTROL_SOCKET";
/// Operator setting: `1` to hot-restart whenever the executable changes on disk (development).
pub(crate) const ENV_WATCH_EXE: &str = "HOTRESTART_WATCH_EXE";
/// Operator setting: `0` to close idle connections at a handover instead of handing them over.
pub(crate) const ENV_HAND_OVER_CONNECTIONS: &str = "HOTRESTART_HAND_OVER_CONNECTIONS";
/// Set by the old process when it has tracked fields to pre-copy: the successor then asks for
/// the first round right after HELLO, while it initialises (EARLY). An older successor ignores it.
pub(crate) const ENV_PRECOPY_EARLY: &str = "HOTRESTART_PRECOPY_EARLY";
/// Operator setting: `0` to copy tracked fields whole in the snapshot instead of pre-copying.
pub(crate) const ENV_PRECOPY: &str = "HOTRESTART_PRECOPY";
/// Operator setting: `1`, `0` or `auto` (default): whether the first process becomes a
/// supervisor that stays while generations come and go (see `supervisor/mod.rs`).
pub(crate) const ENV_SUPERVISOR: &str = "HOTRESTART_SUPERVISOR";
/// Fd of a generation's end of the supervisor's datagram socketpair.
pub(crate) const ENV_SUPERVISOR_FD: &str = "HOTRESTART_SUPERVISOR_FD";
/// Said to the supervisor by a generation whose successor exited while it was its parent:
/// `X_HOTRESTART_EXITED=<pid> <wait status>`.
pub(crate) const NOTIFY_SUCCESSOR_EXITED: &str = "X_HOTRESTART_EXITED";
/// First fd passed by socket activation.
pub(crate) const LISTEN_FDS_START: RawFd = 3;

/// The variables that must not reach the user's own child processes.
pub(crate) const INTERNAL_ENV: &[&str] = &[
    ENV_HANDOFF_FD,
    ENV_GENERATION,
    ENV_LISTEN_FDS,
    ENV_LISTEN_PID,
    ENV_LISTEN_FDNAMES,
    ENV_NOTIFY_SOCKET,
    ENV_SUPERVISOR_FD,
    ENV_PRECOPY_EARLY,
];

pub(crate) fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on an integer fd touches no memory; an invalid fd returns EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `fd` names an open file description.
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// What kind of socket an fd is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketKind {
    pub(crate) domain: i32,
    pub(crate) ty: i32,
    pub(crate) listening: bool,
}

impl SocketKind {
    pub(crate) fn describe(&self) -> String {
        let domain = match self.domain {
            libc::AF_INET => "IPv4",
            libc::AF_INET6 => "IPv6",
            libc::AF_UNIX => "Unix",
            _ => "other-family",
        };
        let ty = match self.ty {
            libc::SOCK_STREAM => "stream",
            libc::SOCK_DGRAM => "datagram",
            libc::SOCK_SEQPACKET => "seqpacket",
            _ => "other-type",
        };
        let listening = if self.listening { " listening" } else { "" };
        format!("{domain} {ty}{listening} socket")
    }
}

fn sockopt_int(fd: RawFd, opt: libc::c_int) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len point to live locals of the sizes the kernel is told.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Why an inherited fd cannot be used as a socket.
#[derive(Debug)]
pub(crate) enum NotASocket {
    /// `fstat` or `getsockopt` failed (a closed fd: `EBADF`).
    Unreadable { fd: RawFd, source: io::Error },
    /// It is open, but something else: a file, a pipe, a terminal.
    Other { fd: RawFd, what: &'static str },
}

impl std::fmt::Display for NotASocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotASocket::Unreadable { fd, source } => write!(f, "fd {fd}: {source}"),
            NotASocket::Other { fd, what } => write!(f, "fd {fd} is {what}, not a socket"),
        }
    }
}

/// Checks that `fd` is a socket and says which kind, or why it is not one.
pub(crate) fn socket_kind(fd: BorrowedFd<'_>) -> Result<SocketKind, NotASocket> {
    let raw = fd.as_raw_fd();
    let unreadable = |source: io::Error| NotASocket::Unreadable { fd: raw, source };
    let stat = nix::sys::stat::fstat(fd).map_err(|e| unreadable(e.into()))?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        let what = match stat.st_mode & libc::S_IFMT {
            libc::S_IFREG => "a regular file",
            libc::S_IFDIR => "a directory",
            libc::S_IFIFO => "a pipe",
            libc::S_IFCHR => "a character device",
            _ => "not a socket",
        };
        return Err(NotASocket::Other { fd: raw, what });
    }
    let domain = sockopt_int(raw, libc::SO_DOMAIN).map_err(unreadable)?;
    let ty = sockopt_int(raw, libc::SO_TYPE).map_err(unreadable)?;
    let listening = sockopt_int(raw, libc::SO_ACCEPTCONN).map_err(unreadable)? != 0;
    Ok(SocketKind {
        domain,
        ty,
        listening,
    })
}

/// A pidfd for `pid`: readable once it exits, and a target for signals that can never reach
/// another process that reused the pid.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` to the process a pidfd names (ESRCH once it has exited: never another).
pub(crate) fn pidfd_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes an fd, a signal number, a null siginfo and flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `pid` runs: it exists and is not a zombie (`/proc/<pid>/stat`).
pub(crate) fn process_runs(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..)?.chars().next());
    matches!(state, Some(s) if s != 'Z')
}
