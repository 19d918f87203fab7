//! Listeners by name: adopt an inherited socket (hot restart, systemd socket activation,
//! `systemfd`) or bind a new one at a first start.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::error::{Error, Result};
use crate::sys::{self, SocketKind};

/// Backlog of the sockets hotrestart binds: connections queue here while no process accepts.
const BACKLOG: u32 = 1024;

/// Sockets by name: those inherited and not yet claimed, and those in use (kept as duplicates,
/// so they can be handed to a successor even if the application dropped its own handle).
#[derive(Default)]
pub(crate) struct Listeners {
    inherited: Vec<(String, OwnedFd)>,
    active: Vec<(String, OwnedFd)>,
}

impl Listeners {
    pub(crate) fn inherit(inherited: Vec<(String, OwnedFd)>) -> Self {
        Listeners {
            inherited,
            active: Vec::new(),
        }
    }

    /// The sockets a successor gets.
    pub(crate) fn active(&self) -> &[(String, OwnedFd)] {
        &self.active
    }

    /// Closes inherited sockets nobody claimed; returns their names.
    pub(crate) fn close_unclaimed(&mut self) -> Vec<String> {
        self.inherited.drain(..).map(|(name, _fd)| name).collect()
    }

    fn take_inherited(&mut self, name: &str) -> Result<Option<OwnedFd>> {
        if self.active.iter().any(|(n, _)| n == name) {
            return Err(listener_error(
                name,
                "is already in use in this process (each name is claimed once)",
            ));
        }
        Ok(self
            .inherited
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| self.inherited.remove(i).1))
    }

    fn activate(&mut self, name: &str, fd: &impl AsFd) -> Result<()> {
        let dup = fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io(format!("listener `{name}`: dup"), e))?;
        self.active.push((name.to_owned(), dup));
        Ok(())
    }

    pub(crate) fn tcp(
        &mut self,
        name: &str,
        addr: impl ToSocketAddrs,
    ) -> Result<tokio::net::TcpListener> {
        let std = match self.take_inherited(name)? {
            Some(fd) => {
                check(name, &fd, "a TCP listening socket", |k| {
                    (k.domain == libc::AF_INET || k.domain == libc::AF_INET6)
                        && k.ty == libc::SOCK_STREAM
                        && k.listening
                })?;
                std::net::TcpListener::from(fd)
            }
            None => bind_tcp(name, addr)?,
        };
        std.set_nonblocking(true)
            .map_err(|e| Error::io(format!("listener `{name}`"), e))?;
        self.activate(name, &std)?;
        tokio::net::TcpListener::from_std(std)
            .map_err(|e| Error::io(format!("listener `{name}`"), e))
    }

    pub(crate) fn unix(&mut self, name: &str, path: &Path) -> Result<tokio::net::UnixListener> {
        let std = match self.take_inherited(name)? {
            Some(fd) => {
                check(name, &fd, "a Unix stream listening socket", |k| {
                    k.domain == libc::AF_UNIX && k.ty == libc::SOCK_STREAM && k.listening
                })?;
                std::os::unix::net::UnixListener::from(fd)
            }
            None => {
                remove_stale_socket(path);
                std::os::unix::net::UnixListener::bind(path).map_err(|e| {
                    listener_error(name, format!("cannot bind {}: {e}", path.display()))
                })?
            }
        };
        std.set_nonblocking(true)
            .map_err(|e| Error::io(format!("listener `{name}`"), e))?;
        self.activate(name, &std)?;
        tokio::net::UnixListener::from_std(std)
            .map_err(|e| Error::io(format!("listener `{name}`"), e))
    }

    pub(crate) fn udp(
        &mut self,
        name: &str,
        addr: impl ToSocketAddrs,
    ) -> Result<tokio::net::UdpSocket> {
        let std = match self.take_inherited(name)? {
            Some(fd) => {
                check(name, &fd, "a UDP socket", |k| {
                    (k.domain == libc::AF_INET || k.domain == libc::AF_INET6)
                        && k.ty == libc::SOCK_DGRAM
                })?;
                std::net::UdpSocket::from(fd)
            }
            None => {
                let addr = resolve(name, addr)?;
                std::net::UdpSocket::bind(addr)
                    .map_err(|e| listener_error(name, format!("cannot bind {addr}: {e}")))?
            }
        };
        std.set_nonblocking(true)
            .map_err(|e| Error::io(format!("listener `{name}`"), e))?;
        self.activate(name, &std)?;
        tokio::net::UdpSocket::from_std(std).map_err(|e| Error::io(format!("listener `{name}`"), e))
    }
}

fn listener_error(name: &str, reason: impl Into<String>) -> Error {
    Error::Listener {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

fn check(name: &str, fd: &OwnedFd, want: &str, ok: impl Fn(&SocketKind) -> bool) -> Result<()> {
    let kind = sys::socket_kind(fd.as_fd())
        .map_err(|reason| listener_error(name, format!("inherited {reason}")))?;
    if !ok(&kind) {
        return Err(listener_error(
            name,
            format!(
                "inherited fd {} is a {}, expected {want}",
                fd.as_raw_fd(),
                kind.describe()
            ),
        ));
    }
    Ok(())
}

fn resolve(name: &str, addr: impl ToSocketAddrs) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| listener_error(name, format!("cannot resolve the address: {e}")))?
        .next()
        .ok_or_else(|| listener_error(name, "the address resolved to nothing"))
}

fn bind_tcp(name: &str, addr: impl ToSocketAddrs) -> Result<std::net::TcpListener> {
    let addr = resolve(name, addr)?;
    let bind = || -> io::Result<std::net::TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(BACKLOG)?;
        listener.into_std()
    };
    bind().map_err(|e| listener_error(name, format!("cannot bind {addr}: {e}")))
}

/// A socket file left by a process that died is removed; a live one (something answers) is kept
/// so that bind reports the conflict.
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.file_type().is_socket() {
        if let Err(e) = std::os::unix::net::UnixStream::connect(path) {
            if e.kind() == io::ErrorKind::ConnectionRefused {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Takes the sockets passed by systemd socket activation (or `systemfd`): `LISTEN_FDS` fds from
/// fd 3, named by `LISTEN_FDNAMES`. `LISTEN_PID`, when set, must be this process.
/// Runs before any log subscriber exists: what it has to say goes into `notes`.
pub(crate) fn from_listen_fds(notes: &mut Vec<String>) -> Result<Vec<(String, OwnedFd)>> {
    let Ok(count) = std::env::var(sys::ENV_LISTEN_FDS) else {
        return Ok(Vec::new());
    };
    if let Ok(pid) = std::env::var(sys::ENV_LISTEN_PID) {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            notes.push(format!(
                "LISTEN_PID={pid} names another process: ignoring LISTEN_FDS={count}"
            ));
            return Ok(Vec::new());
        }
    }
    let count: RawFd = count.trim().parse().map_err(|_| Error::Environment {
        reason: format!("LISTEN_FDS={count:?} is not a number"),
    })?;
    if !(0..=1024).contains(&count) {
        return Err(Error::Environment {
            reason: format!("LISTEN_FDS={count} is out of range"),
        });
    }
    let names: Vec<String> = std::env::var(sys::ENV_LISTEN_FDNAMES)
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut fds = Vec::new();
    for i in 0..count {
        let fd = sys::LISTEN_FDS_START + i;
        if !sys::fd_is_open(fd) {
            return Err(Error::Environment {
                reason: format!("LISTEN_FDS={count} but fd {fd} is not open"),
            });
        }
        sys::set_cloexec(fd, true).map_err(|e| Error::io(format!("fd {fd}"), e))?;
        // SAFETY: fd is open (checked above) and LISTEN_FDS hands its ownership to this process;
        // nothing else in the process refers to it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = names
            .get(i as usize)
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| "unknown".to_owned());
        fds.push((name, owned));
    }
    notes.push(format!(
        "adopted {count} socket(s) from socket activation: {names:?}"
    ));
    Ok(fds)
}
