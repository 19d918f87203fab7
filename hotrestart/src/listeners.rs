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
    /// The inherited sockets came from socket activation, whose names may name nothing; a
    /// predecessor's names are always the listeners' own.
    activated: bool,
}

impl Listeners {
    pub(crate) fn inherit(inherited: Vec<(String, OwnedFd)>, activated: bool) -> Self {
        Listeners {
            inherited,
            active: Vec::new(),
            activated,
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

    /// The inherited socket of that name (a name is claimed once per process).
    fn take_named(&mut self, name: &str) -> Result<Option<OwnedFd>> {
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

    /// Whether an inherited socket nobody named is waiting (then an address is worth resolving).
    fn has_unnamed(&self) -> bool {
        self.activated && self.inherited.iter().any(|(n, _)| unnamed(n))
    }

    /// An inherited socket nobody named (systemfd and `systemd-socket-activate` without
    /// `--fdname` pass no name, a socket unit without `FileDescriptorName=` passes its own unit
    /// name) for the listener `name`: the one whose local address is the one asked for (the
    /// same port, and the same IP or either a wildcard); else, if exactly one unnamed socket of
    /// the same kind is left, that one. Never for the control socket.
    fn take_unnamed(&mut self, name: &str, want: Want<'_>) -> Option<OwnedFd> {
        if !self.activated {
            return None;
        }
        let candidates: Vec<usize> = (0..self.inherited.len())
            .filter(|&i| unnamed(&self.inherited[i].0) && want.same_kind(&self.inherited[i].1))
            .collect();
        let (rule, pick) = match candidates
            .iter()
            .find(|&&i| want.same_address(&self.inherited[i].1))
        {
            Some(&i) => ("its local address is the one asked for", i),
            None => match candidates[..] {
                [i] if name != crate::control::LISTENER_NAME => {
                    ("the only unnamed socket of its kind", i)
                }
                _ => return None,
            },
        };
        let (was, fd) = self.inherited.remove(pick);
        tracing::info!(
            listener = name,
            inherited_name = was,
            fd = fd.as_raw_fd(),
            "adopted an inherited socket nobody named: {rule}"
        );
        Some(fd)
    }

    fn activate(&mut self, name: &str, fd: &impl AsFd) -> Result<()> {
        let dup = fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io(format!("listener `{name}`: dup"), e))?;
        self.active.push((name.to_owned(), dup));
        Ok(())
    }

    /// The inherited socket for an IP listener: by name, else (resolving `addr` only then,
    /// so a socket inherited by name asks nothing of the resolver) an unnamed one; with the
    /// addresses if they were resolved.
    fn take_inet(
        &mut self,
        name: &str,
        addr: &impl ToSocketAddrs,
        want: for<'a> fn(&'a [SocketAddr]) -> Want<'a>,
    ) -> Result<(Option<OwnedFd>, Option<Vec<SocketAddr>>)> {
        if let Some(fd) = self.take_named(name)? {
            return Ok((Some(fd), None));
        }
        if !self.has_unnamed() {
            return Ok((None, None));
        }
        let addrs = resolve_all(name, addr)?;
        Ok((self.take_unnamed(name, want(&addrs)), Some(addrs)))
    }

    pub(crate) fn tcp(
        &mut self,
        name: &str,
        addr: impl ToSocketAddrs,
    ) -> Result<tokio::net::TcpListener> {
        let (fd, addrs) = self.take_inet(name, &addr, |a| Want::Tcp(a))?;
        let std = match fd {
            Some(fd) => {
                check(name, &fd, "a TCP listening socket", |k| {
                    (k.domain == libc::AF_INET || k.domain == libc::AF_INET6)
                        && k.ty == libc::SOCK_STREAM
                        && k.listening
                })?;
                std::net::TcpListener::from(fd)
            }
            None => bind_tcp(name, first(addrs, name, &addr)?)?,
        };
        std.set_nonblocking(true)
            .map_err(|e| Error::io(format!("listener `{name}`"), e))?;
        self.activate(name, &std)?;
        tokio::net::TcpListener::from_std(std)
            .map_err(|e| Error::io(format!("listener `{name}`"), e))
    }

    pub(crate) fn unix(&mut self, name: &str, path: &Path) -> Result<tokio::net::UnixListener> {
        let mut fd = self.take_named(name)?;
        if fd.is_none() {
            fd = self.take_unnamed(name, Want::Unix(path));
        }
        let std = match fd {
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
        let (fd, addrs) = self.take_inet(name, &addr, |a| Want::Udp(a))?;
        let std = match fd {
            Some(fd) => {
                check(name, &fd, "a UDP socket", |k| {
                    (k.domain == libc::AF_INET || k.domain == libc::AF_INET6)
                        && k.ty == libc::SOCK_DGRAM
                })?;
                std::net::UdpSocket::from(fd)
            }
            None => {
                let addr = first(addrs, name, &addr)?;
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

/// Every address `addr` resolves to; at least one.
fn resolve_all(name: &str, addr: impl ToSocketAddrs) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| listener_error(name, format!("cannot resolve the address: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(listener_error(name, "the address resolved to nothing"));
    }
    Ok(addrs)
}

/// The name socket activation gives a socket nobody named (`LISTEN_FDNAMES` empty or absent).
const UNNAMED: &str = "unknown";

/// A name that names nothing in particular: none, systemd's `unknown`, a socket unit's own.
fn unnamed(name: &str) -> bool {
    name.is_empty() || name == UNNAMED || name.ends_with(".socket")
}

/// The address to bind: the first one resolved already, else resolved now.
fn first(
    resolved: Option<Vec<SocketAddr>>,
    name: &str,
    addr: &impl ToSocketAddrs,
) -> Result<SocketAddr> {
    match resolved {
        Some(addrs) => Ok(addrs[0]),
        None => Ok(resolve_all(name, addr)?[0]),
    }
}

/// Whether a socket bound to `local` is the one asked for as `wanted`: the same port, and the
/// same IP or either a wildcard (systemd binds `ListenStream=8080` to `[::]:8080`).
fn same_endpoint(local: SocketAddr, wanted: SocketAddr) -> bool {
    local.port() == wanted.port()
        && (local.ip() == wanted.ip()
            || local.ip().is_unspecified()
            || wanted.ip().is_unspecified())
}

/// What a listener asks for, to match an unnamed inherited socket.
#[derive(Clone, Copy)]
enum Want<'a> {
    Tcp(&'a [SocketAddr]),
    Udp(&'a [SocketAddr]),
    Unix(&'a Path),
}

impl Want<'_> {
    fn same_kind(&self, fd: &OwnedFd) -> bool {
        let Ok(k) = sys::socket_kind(fd.as_fd()) else {
            return false;
        };
        let inet = k.domain == libc::AF_INET || k.domain == libc::AF_INET6;
        match self {
            Want::Tcp(_) => inet && k.ty == libc::SOCK_STREAM && k.listening,
            Want::Udp(_) => inet && k.ty == libc::SOCK_DGRAM,
            Want::Unix(_) => k.domain == libc::AF_UNIX && k.ty == libc::SOCK_STREAM && k.listening,
        }
    }

    fn same_address(&self, fd: &OwnedFd) -> bool {
        // A duplicate, owned for the moment of asking the kernel for its local address.
        let Ok(dup) = fd.try_clone() else {
            return false;
        };
        match self {
            Want::Tcp(addrs) | Want::Udp(addrs) => std::net::TcpListener::from(dup)
                .local_addr()
                .is_ok_and(|local| addrs.iter().any(|&w| same_endpoint(local, w))),
            Want::Unix(path) => std::os::unix::net::UnixListener::from(dup)
                .local_addr()
                .is_ok_and(|local| local.as_pathname() == Some(*path)),
        }
    }
}

fn bind_tcp(name: &str, addr: SocketAddr) -> Result<std::net::TcpListener> {
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

#[cfg(test)]
mod tests {
    use super::same_endpoint;

    #[test]
    fn an_unnamed_socket_matches_by_port_and_ip_or_wildcard() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert!(same_endpoint(a("127.0.0.1:8080"), a("127.0.0.1:8080")));
        // systemd's `ListenStream=8080` is `[::]:8080`; the service asks for 0.0.0.0 or 127.0.0.1.
        assert!(same_endpoint(a("[::]:8080"), a("0.0.0.0:8080")));
        assert!(same_endpoint(a("[::]:8080"), a("127.0.0.1:8080")));
        assert!(same_endpoint(a("0.0.0.0:8080"), a("127.0.0.1:8080")));
        // Another port is another socket, whatever the IPs.
        assert!(!same_endpoint(a("[::]:9090"), a("0.0.0.0:8080")));
        assert!(!same_endpoint(a("127.0.0.1:9090"), a("127.0.0.1:8080")));
        assert!(!same_endpoint(a("127.0.0.2:8080"), a("127.0.0.1:8080")));
    }
}
