//! The control socket: a Unix stream socket (mode 0600, peer uid checked with `SO_PEERCRED`)
//! through which a deploy script or systemd's `ExecReload=` restarts the service and learns the
//! outcome, which a signal cannot report. One command per connection, one line each way:
//!
//! ```text
//! restart  ->  restarted: pid 4242 → pid 4250 in 3.1 ms      (or: failed: <reason>)
//! status   ->  generation=3 pid=4250 uptime_s=12.0 ...
//! ```
//!
//! The socket is a listener like any other: it is handed to each successor, so its path never
//! changes and never disappears. `hotrestart-ctl <socket> restart|status` is the client.

use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::drain::Phase;
use crate::Hot;

/// Name of the control socket among the listeners handed over.
pub(crate) const LISTENER_NAME: &str = "hotrestart-control";

/// Serves control connections while this process serves.
pub(crate) async fn serve(hot: Hot, listener: UnixListener) {
    let mut phase = hot.phase();
    loop {
        let now = *phase.borrow_and_update();
        match now {
            Phase::Stopping => return,
            Phase::Quiesced => {
                if phase.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Phase::Serving => {}
        }
        tokio::select! {
            _ = phase.changed() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(handle(hot.clone(), stream));
                }
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are live locals of the size the kernel is told.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

async fn handle(hot: Hot, stream: UnixStream) {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let (read, mut write) = stream.into_split();
    // Read the command first, so that even a refused client gets its answer, not EPIPE.
    let mut line = String::new();
    let mut read = BufReader::new(read);
    let read_line = tokio::time::timeout(Duration::from_secs(5), read.read_line(&mut line)).await;
    if !matches!(read_line, Ok(Ok(n)) if n > 0) {
        return;
    }
    let allowed = match peer_uid(write.as_ref()) {
        Ok(uid) => uid == me || uid == 0,
        Err(_) => false,
    };
    if !allowed {
        tracing::warn!("control socket: refused a peer with another uid");
        let _ = write
            .write_all(
                format!("{DENIED} the control socket takes commands from its owner only\n")
                    .as_bytes(),
            )
            .await;
        return;
    }
    // Keeps this process alive until the outcome is written (see `Hot::restart_tracked`).
    let mut _keep_alive = None;
    let reply = match line.trim() {
        "restart" => {
            tracing::info!(generation = hot.generation(), "control socket: hot restart");
            let (outcome, guard) = hot.restart_tracked().await;
            _keep_alive = guard;
            match outcome {
                Ok(r) => format!(
                    "{RESTARTED} pid {} → pid {} in {:.1} ms\n",
                    r.old_pid,
                    r.new_pid,
                    r.elapsed.as_secs_f64() * 1e3
                ),
                Err(e) => format!("{FAILED} {e}\n"),
            }
        }
        "status" => hot.status_line(),
        other => format!("unknown command {other:?}: use `restart` or `status`\n"),
    };
    let _ = write.write_all(reply.as_bytes()).await;
}

/// A reply on the control socket, by kind. On the wire it is one line whose first word is the
/// kind (`restarted:`, `failed:`, `denied:`, `unknown command`, or a `generation=` status);
/// [`Reply::text`] is the line as the service wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// `restart` succeeded: `restarted: pid A → pid B in N ms`.
    Restarted(String),
    /// `restart` was refused or rolled back: `failed: <reason>`.
    Failed(String),
    /// The peer is not the service's owner (or root).
    Denied(String),
    /// `status`: `generation=… pid=… uptime_s=… … main_pid=…`.
    Status(String),
    /// A command the service does not know.
    UnknownCommand(String),
    /// The service closed the connection without a reply.
    Empty,
}

impl Reply {
    /// Reads a reply line as the service writes it.
    pub fn parse(text: String) -> Reply {
        if text.is_empty() {
            Reply::Empty
        } else if text.starts_with(RESTARTED) {
            Reply::Restarted(text)
        } else if text.starts_with(FAILED) {
            Reply::Failed(text)
        } else if text.starts_with(DENIED) {
            Reply::Denied(text)
        } else if text.starts_with(STATUS) {
            Reply::Status(text)
        } else {
            Reply::UnknownCommand(text)
        }
    }

    /// The reply as the service wrote it (empty for [`Reply::Empty`]).
    pub fn text(&self) -> &str {
        match self {
            Reply::Restarted(t)
            | Reply::Failed(t)
            | Reply::Denied(t)
            | Reply::Status(t)
            | Reply::UnknownCommand(t) => t,
            Reply::Empty => "",
        }
    }

    /// Whether the command did what was asked.
    pub fn succeeded(&self) -> bool {
        matches!(self, Reply::Restarted(_) | Reply::Status(_))
    }
}

/// The first word of each kind of reply, spelled once.
const RESTARTED: &str = "restarted:";
const FAILED: &str = "failed:";
const DENIED: &str = "denied:";
const STATUS: &str = "generation=";

/// Client side, for `hotrestart-ctl` and for programs that drive a service.
pub fn request(
    socket: &std::path::Path,
    command: &str,
    timeout: Duration,
) -> std::io::Result<Reply> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    // Even if the write fails (the service refused us and closed), its answer may be waiting.
    let _ = stream.write_all(format!("{command}\n").as_bytes());
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(Reply::parse(reply))
}
