//! What a process is given when it starts: by its predecessor (HELLO over the handoff
//! channel), by socket activation (`LISTEN_FDS`), by its supervisor (`HOTRESTART_SUPERVISOR_FD`),
//! and the operator's `HOTRESTART_*` settings. Read before the runtime starts any thread.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use crate::conns::Handover;
use crate::drain::Phase;
use crate::error::{Error, Result};
use crate::handoff::{self};
use crate::listeners::{self, Listeners};
use crate::notify::Notifier;
use crate::options::Options;
use crate::sys;

use super::trigger::{run_triggers, Signals};
use super::{Exit, Hot, Inner};

/// What the process inherited, read before the runtime starts any thread.
pub(crate) struct Adopted {
    generation: u64,
    listeners: Vec<(String, OwnedFd)>,
    predecessor: Option<StdUnixStream>,
    /// The previous generation, this process's parent at start.
    predecessor_pid: Option<u32>,
    /// The predecessor asked for the first pre-copy round during this process's start-up.
    early: bool,
    /// The listeners came from socket activation.
    activated: bool,
    error: Option<Error>,
    /// Said before any log subscriber could exist; logged at the first use of `Hot`.
    notes: Vec<String>,
    /// Older generations that were still alive when this one was started.
    ancestors: Vec<u32>,
    notifier: Notifier,
    operator_env: Vec<(OsString, OsString)>,
    exe: PathBuf,
    args: Vec<OsString>,
}

impl Adopted {
    /// What a successor of generation `generation` adopts when its predecessor is this very
    /// process: the in-process handover tests play the old side on the other end of `chan`.
    #[cfg(test)]
    pub(super) fn successor_in_process(
        generation: u64,
        chan: StdUnixStream,
        listeners: Vec<(String, OwnedFd)>,
    ) -> Adopted {
        Adopted {
            generation,
            listeners,
            predecessor: Some(chan),
            predecessor_pid: Some(std::process::id()),
            early: false,
            activated: false,
            error: None,
            notes: Vec::new(),
            ancestors: Vec::new(),
            notifier: Notifier::new(None),
            operator_env: Vec::new(),
            exe: PathBuf::from("/nonexistent"),
            args: Vec::new(),
        }
    }

    /// Reads and removes every hotrestart and socket-activation variable. Must run while the
    /// process has a single thread.
    pub(crate) fn from_env() -> Adopted {
        let exe = std::env::current_exe()
            .unwrap_or_else(|_| PathBuf::from(std::env::args_os().next().unwrap_or_default()));
        let args = std::env::args_os().skip(1).collect();
        let mut adopted = Adopted {
            generation: 0,
            listeners: Vec::new(),
            predecessor: None,
            predecessor_pid: None,
            early: false,
            activated: false,
            error: None,
            notes: Vec::new(),
            ancestors: Vec::new(),
            notifier: Notifier::new(std::env::var_os(sys::ENV_NOTIFY_SOCKET)),
            operator_env: Vec::new(),
            exe,
            args,
        };
        if let Ok(fd) = std::env::var(sys::ENV_SUPERVISOR_FD) {
            match adopt_supervisor(&fd) {
                Ok(notifier) => adopted.notifier = notifier,
                Err(e) => adopted.error = Some(e),
            }
        }
        match std::env::var(sys::ENV_HANDOFF_FD) {
            Ok(fd) => {
                match adopt_handoff(&fd) {
                    Ok((generation, chan, fds, draining)) => {
                        adopted.ancestors = draining;
                        adopted.notes.push(format!("generation {generation}: adopted {} socket(s) from the previous process", fds.len()));
                        adopted.generation = generation;
                        adopted.predecessor = Some(chan);
                        // Obeyed only if it names this generation (see `handover::spawn`).
                        adopted.early = std::env::var(sys::ENV_PRECOPY_EARLY)
                            .is_ok_and(|g| g == generation.to_string());
                        // It spawned this process: while it lives it is the parent.
                        adopted.predecessor_pid = Some(nix::unistd::getppid().as_raw() as u32);
                        adopted.listeners = fds;
                    }
                    Err(e) => adopted.error = Some(e),
                }
            }
            Err(_) => match listeners::from_listen_fds(&mut adopted.notes) {
                Ok(fds) => {
                    adopted.activated = !fds.is_empty();
                    adopted.listeners = fds;
                }
                Err(e) => adopted.error = Some(e),
            },
        }
        for (key, value) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("HOTRESTART_"))
                && !sys::INTERNAL_ENV.iter().any(|v| key == *v)
            {
                adopted.operator_env.push((key, value));
            }
        }
        let remove: Vec<OsString> = adopted
            .operator_env
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        for key in sys::INTERNAL_ENV.iter().map(OsString::from).chain(remove) {
            std::env::remove_var(key);
        }
        adopted
    }

    pub(super) fn operator_value(&self, key: &str) -> Option<&OsString> {
        self.operator_env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// The supervisor's socketpair end (`HOTRESTART_SUPERVISOR_FD`): checked, then notifications
/// go there instead of `NOTIFY_SOCKET`.
fn adopt_supervisor(text: &str) -> Result<Notifier> {
    let fd = inherited_fd(sys::ENV_SUPERVISOR_FD, text)?;
    let kind = sys::socket_kind(std::os::fd::AsFd::as_fd(&fd)).map_err(|e| Error::Environment {
        reason: e.to_string(),
    })?;
    if kind.domain != libc::AF_UNIX || kind.ty != libc::SOCK_DGRAM {
        return Err(Error::Environment {
            reason: format!(
                "{}: fd {text} is a {}, expected a Unix datagram socket",
                sys::ENV_SUPERVISOR_FD,
                kind.describe()
            ),
        });
    }
    Notifier::supervisor(fd).map_err(|e| Error::io("supervisor socket", e))
}

/// An fd named by an internal variable: a number, at least 3, open; made close-on-exec.
fn inherited_fd(var: &str, text: &str) -> Result<OwnedFd> {
    let fd: i32 = text.trim().parse().map_err(|_| Error::Environment {
        reason: format!("{var}={text:?} is not an fd number"),
    })?;
    if fd < 3 || !sys::fd_is_open(fd) {
        return Err(Error::Environment {
            reason: format!("{var}={fd} is not an open fd"),
        });
    }
    sys::set_cloexec(fd, true).map_err(|e| Error::io(var.to_owned(), e))?;
    // SAFETY: the fd is open (checked above) and was handed to this process, by its
    // predecessor or its supervisor, for exactly this purpose; nothing else refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What HELLO brings: generation, channel, named sockets, older generations still draining.
type Handoff = (u64, StdUnixStream, Vec<(String, OwnedFd)>, Vec<u32>);

fn adopt_handoff(text: &str) -> Result<Handoff> {
    let owned = inherited_fd(sys::ENV_HANDOFF_FD, text)?;
    let fd = owned.as_raw_fd();
    let kind =
        sys::socket_kind(std::os::fd::AsFd::as_fd(&owned)).map_err(|e| Error::Environment {
            reason: e.to_string(),
        })?;
    if kind.domain != libc::AF_UNIX || kind.ty != libc::SOCK_STREAM {
        return Err(Error::Environment {
            reason: format!("handoff fd {fd} is a {}", kind.describe()),
        });
    }
    let chan = StdUnixStream::from(owned);
    let (hello, fds) = handoff::recv_hello(&chan)?;
    Ok((
        hello.generation,
        chan,
        hello.names.into_iter().zip(fds).collect(),
        hello.draining,
    ))
}

impl Hot {
    pub(super) fn start(options: Options, adopted: Adopted) -> Hot {
        let (restart_tx, restart_rx) = mpsc::channel(16);
        let handover = Handover::new(options.drain_timeout);
        let inner = Arc::new(Inner {
            options,
            generation: adopted.generation,
            exe: adopted.exe,
            args: adopted.args,
            operator_env: adopted.operator_env,
            notifier: adopted.notifier,
            listeners: Mutex::new(Listeners::inherit(adopted.listeners, adopted.activated)),
            adopt_error: Mutex::new(adopted.error),
            notes: Mutex::new(adopted.notes),
            predecessor: Mutex::new(None),
            early: Mutex::new(None),
            predecessor_pid: adopted.predecessor_pid,
            phase: watch::Sender::new(Phase::Serving),
            stopping: watch::Sender::new(false),
            ready: OnceLock::new(),
            ready_tx: watch::Sender::new(false),
            restart_tx,
            exit: Mutex::new(Exit::Running),
            state_file_writable: AtomicBool::new(true),
            started: Instant::now(),
            ancestors: adopted.ancestors,
            history: Mutex::new(Vec::new()),
            successor: Mutex::new(None),
            handover,
            #[cfg(feature = "tls")]
            tickets: Arc::new(crate::http::tls::TicketKeys::new()),
        });
        // The predecessor's channel: read from now on (the first pre-copy round, while the
        // application initialises) if the predecessor asked for it; else kept for `ready`.
        if let Some(chan) = adopted.predecessor {
            if adopted.early {
                // The same fd (no copy): the channel is the one fd `HOTRESTART_HANDOFF_FD` named.
                let reader = chan
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::UnixStream::from_std(chan));
                match reader {
                    Ok(reader) => {
                        let (hand_back, handed) = tokio::sync::oneshot::channel();
                        let task = tokio::spawn(super::precopy::receive_early(reader, handed));
                        *inner.early.lock().unwrap() = Some((task, hand_back));
                    }
                    Err(e) => {
                        *inner.adopt_error.lock().unwrap() = Some(Error::io("handoff channel", e));
                    }
                }
            } else {
                *inner.predecessor.lock().unwrap() = Some(chan);
            }
        }
        // Signal handlers are installed now, so a SIGHUP during start-up is queued, not fatal.
        let signals = Signals::install();
        let triggers = tokio::spawn(run_triggers(inner.clone(), signals, restart_rx));
        // The trigger task owns the signal handlers: if it dies (a panic, e.g. in a log writer
        // whose pipe is gone), SIGTERM and SIGHUP would be swallowed and the process could
        // neither restart nor stop. Exit instead: systemd (or the main process, which then ends
        // with this status) restarts a dead service.
        tokio::spawn(async move {
            if let Err(e) = triggers.await {
                if e.is_panic() {
                    let _ = std::io::Write::write_all(
                        &mut std::io::stderr(),
                        b"hotrestart: the supervisor task panicked; exiting\n",
                    );
                    std::process::exit(70);
                }
            }
        });
        Hot { inner }
    }
}
