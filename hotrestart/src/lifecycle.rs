//! The lifecycle: start (adopt or bind), ready (restore state), restart (hand over or roll
//! back), exit (drain, hooks, state file). [`Hot`] is the application's handle on it.

use std::any::Any;
use std::ffi::OsString;
use std::future::Future;
use std::net::ToSocketAddrs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};

use crate::conns::{Arrival, Inbox, Outbox, Verdict};
use crate::drain::{Phase, Shutdown, Tracker, WorkGuard};
use crate::error::{Error, Result};
use crate::handoff::{self, Frame};
use crate::hooks::{self, HookContext};
use crate::listeners::{self, Listeners};
use crate::notify::Notifier;
use crate::options::Options;
use crate::snapshot::{self, SnapshotReader, State};
use crate::{state_file, sys};

use crate::handoff::MAX_SNAPSHOT;

/// Most generations alive at once: at a trigger, older generations still draining plus this
/// one plus the successor. With 3, a restart may begin while one older generation drains.
pub const MAX_GENERATIONS: usize = 3;

/// What a successor offers in PREPARED: it takes open connections if it can serve them (and
/// its operator did not turn that off); it announces itself to its supervisor if it has one.
fn capabilities(options: &Options, notifier: &Notifier) -> u8 {
    let connections = if cfg!(feature = "http") && options.hand_over_connections {
        handoff::CAP_CONNECTIONS
    } else {
        0
    };
    let announces = if notifier.supervised() {
        handoff::CAP_ANNOUNCES
    } else {
        0
    };
    connections | announces
}

/// How long handed-over connections wait for a `serve` on their listener before being closed.
const UNCLAIMED_CONNECTIONS: Duration = Duration::from_secs(5);

/// The outcome of a successful hot restart.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Restarted {
    /// The process that handed over (this one, when returned by [`Hot::restart`]).
    pub old_pid: u32,
    /// The process now serving.
    pub new_pid: u32,
    /// The successor's generation (this process's plus one).
    pub generation: u64,
    /// Trigger to READY, the successor's initialisation included.
    pub elapsed: Duration,
    /// Quiesce to READY: how long no process accepted connections (they queued in the kernel).
    pub accept_gap: Duration,
    /// Size of the `#[persist]` snapshot handed over.
    pub state_bytes: usize,
    /// Open HTTP/1.1 connections handed to the successor.
    pub connections: usize,
}

/// Why this process is ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Running,
    HandedOver,
    Terminated,
}

struct ReadyState {
    save: Arc<dyn State>,
    any: Arc<dyn Any + Send + Sync>,
}

/// The outcome, and a unit of live work that keeps this process from exiting before the caller
/// has passed the outcome on (e.g. written it to the control socket).
type RestartReply = oneshot::Sender<(Result<Restarted>, WorkGuard)>;

struct Inner {
    options: Options,
    generation: u64,
    exe: PathBuf,
    args: Vec<OsString>,
    /// `HOTRESTART_*` operator settings, removed from our environment, passed to successors.
    operator_env: Vec<(OsString, OsString)>,
    notifier: Notifier,
    listeners: Mutex<Listeners>,
    adopt_error: Mutex<Option<Error>>,
    notes: Mutex<Vec<String>>,
    predecessor: Mutex<Option<StdUnixStream>>,
    phase: watch::Sender<Phase>,
    work: Tracker,
    ready: OnceLock<ReadyState>,
    ready_tx: watch::Sender<bool>,
    restart_tx: mpsc::Sender<RestartReply>,
    exit: Mutex<Exit>,
    started: Instant,
    /// Older generations, possibly still draining: they count against [`MAX_GENERATIONS`].
    ancestors: Vec<u32>,
    /// One line per restart this process attempted.
    history: Mutex<Vec<String>>,
    /// The pid of the successor being started, while it is not committed (0: none). It stays
    /// our unreaped child meanwhile, so the pid cannot be another process's.
    successor: std::sync::atomic::AtomicU32,
    /// False when a bad state file could not be moved aside: it must then not be overwritten.
    state_file_writable: AtomicBool,
    /// Connections parked for the successor during a handover.
    outbox: Outbox,
    /// Connections received from the previous process, until `http::serve` claims them.
    inbox: Inbox,
}

/// The application's handle on hotrestart: listeners, readiness, restarts, shutdown.
/// Cheap to clone. `#[hot_main]` gives one to `main`.
#[derive(Clone)]
pub struct Hot {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hot")
            .field("generation", &self.inner.generation)
            .field("pid", &std::process::id())
            .field("main_pid", &self.inner.notifier.main_pid())
            .field("phase", &*self.inner.phase.borrow())
            .finish_non_exhaustive()
    }
}

/// What the process inherited, read before the runtime starts any thread.
pub(crate) struct Adopted {
    generation: u64,
    listeners: Vec<(String, OwnedFd)>,
    predecessor: Option<StdUnixStream>,
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
                        adopted.listeners = fds;
                    }
                    Err(e) => adopted.error = Some(e),
                }
            }
            Err(_) => match listeners::from_listen_fds(&mut adopted.notes) {
                Ok(fds) => adopted.listeners = fds,
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

    fn operator_value(&self, key: &str) -> Option<&OsString> {
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
    let kind = sys::socket_kind(std::os::fd::AsFd::as_fd(&fd))
        .map_err(|reason| Error::Environment { reason })?;
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
    let kind = sys::socket_kind(std::os::fd::AsFd::as_fd(&owned))
        .map_err(|reason| Error::Environment { reason })?;
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
    fn start(options: Options, adopted: Adopted) -> Hot {
        let (restart_tx, restart_rx) = mpsc::channel(16);
        let inner = Arc::new(Inner {
            options,
            generation: adopted.generation,
            exe: adopted.exe,
            args: adopted.args,
            operator_env: adopted.operator_env,
            notifier: adopted.notifier,
            listeners: Mutex::new(Listeners::inherit(adopted.listeners)),
            adopt_error: Mutex::new(adopted.error),
            notes: Mutex::new(adopted.notes),
            predecessor: Mutex::new(adopted.predecessor),
            phase: watch::Sender::new(Phase::Serving),
            work: Tracker::new(),
            ready: OnceLock::new(),
            ready_tx: watch::Sender::new(false),
            restart_tx,
            exit: Mutex::new(Exit::Running),
            state_file_writable: AtomicBool::new(true),
            started: Instant::now(),
            ancestors: adopted.ancestors,
            history: Mutex::new(Vec::new()),
            successor: Default::default(),
            outbox: Outbox::new(),
            inbox: Inbox::default(),
        });
        // Signal handlers are installed now, so a SIGHUP during start-up is queued, not fatal.
        let signals = Signals::install();
        let supervisor = tokio::spawn(supervise(inner.clone(), signals, restart_rx));
        // The supervisor owns the signal handlers: if it dies (a panic, e.g. in a log writer
        // whose pipe is gone), SIGTERM and SIGHUP would be swallowed and the process could
        // neither restart nor stop. Exit instead: a supervisor (systemd) restarts a dead process.
        tokio::spawn(async move {
            if let Err(e) = supervisor.await {
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

    /// This process's generation: 0 for a first start, +1 at each hot restart.
    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    /// The current timeouts and state file.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    fn adopt_error(&self) -> Result<()> {
        self.flush_notes();
        match self.inner.adopt_error.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn flush_notes(&self) {
        for note in self.inner.notes.lock().unwrap().drain(..) {
            tracing::info!("{note}");
        }
    }

    /// The TCP listener named `name`: inherited after a hot restart or from socket activation,
    /// bound to `addr` at a first start (with `SO_REUSEADDR` and a backlog of 1024).
    pub fn tcp(&self, name: &str, addr: impl ToSocketAddrs) -> Result<tokio::net::TcpListener> {
        self.adopt_error()?;
        self.inner.listeners.lock().unwrap().tcp(name, addr)
    }

    /// The Unix-domain stream listener named `name`, bound at `path` at a first start. The path
    /// is never unlinked on handover.
    pub fn unix(&self, name: &str, path: impl AsRef<Path>) -> Result<tokio::net::UnixListener> {
        self.adopt_error()?;
        self.inner
            .listeners
            .lock()
            .unwrap()
            .unix(name, path.as_ref())
    }

    /// The UDP socket named `name`, bound to `addr` at a first start.
    pub fn udp(&self, name: &str, addr: impl ToSocketAddrs) -> Result<tokio::net::UdpSocket> {
        self.adopt_error()?;
        self.inner.listeners.lock().unwrap().udp(name, addr)
    }

    /// Declares this process initialised and restores its `#[persist]` state into `state`.
    ///
    /// Call it once, after the slow part of start-up (configuration, pools, warm-up) and just
    /// before serving. After a hot restart this is where the previous process quiesces and
    /// hands over its snapshot; the accept gap is the time spent here. At a first start the
    /// state comes from the state file, if one is configured and present. Returns the state,
    /// shared, which is also what the next handover snapshots.
    ///
    /// Fails when the snapshot cannot be restored (e.g. a `#[persist]` field changed type):
    /// the previous process then keeps serving, and this one should exit.
    pub async fn ready<S: State>(&self, mut state: S) -> Result<Arc<S>> {
        self.flush_notes();
        if self.inner.ready.get().is_some() {
            return Err(Error::handoff("Hot::ready was called twice"));
        }
        // Claimed before unclaimed inherited sockets are closed: it is one of them.
        let control = match &self.inner.options.control_socket {
            Some(path) => Some(self.control_listener(path)?),
            None => None,
        };
        let predecessor = self.inner.predecessor.lock().unwrap().take();
        match predecessor {
            Some(chan) => {
                let span = tracing::info_span!("take_over", new_generation = self.inner.generation);
                tracing::Instrument::instrument(self.take_over(chan, &mut state), span).await?
            }
            None => {
                self.cold_restore(&mut state);
                self.close_unclaimed();
                self.inner.notifier.ready();
            }
        }
        let state = Arc::new(state);
        let save: Arc<dyn State> = state.clone();
        let any: Arc<dyn Any + Send + Sync> = state.clone();
        let _ = self.inner.ready.set(ReadyState { save, any });
        self.inner.ready_tx.send_replace(true);
        self.write_pid_file();
        if let Some(control) = control {
            tokio::spawn(crate::control::serve(self.clone(), control));
        }
        if self.inner.options.watch_exe {
            tokio::spawn(watch_exe(self.clone()));
        }
        if self.inner.inbox.len() > 0 {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                tokio::time::sleep(UNCLAIMED_CONNECTIONS).await;
                for (listener, n) in inner.inbox.close_unclaimed() {
                    tracing::warn!(
                        listener,
                        "closed {n} connection(s) handed over by the previous process: no hotrestart::http::serve on that listener claimed them within {UNCLAIMED_CONNECTIONS:?}"
                    );
                }
            });
        }
        tracing::info!(
            generation = self.inner.generation,
            pid = std::process::id(),
            "ready"
        );
        Ok(state)
    }

    async fn take_over<S: State>(&self, chan: StdUnixStream, state: &mut S) -> Result<()> {
        chan.set_nonblocking(true)
            .map_err(|e| Error::io("handoff channel", e))?;
        let mut chan = UnixStream::from_std(chan).map_err(|e| Error::io("handoff channel", e))?;
        let limit = self.inner.options.ready_timeout;
        let started = Instant::now();
        let offered = capabilities(&self.inner.options, &self.inner.notifier);
        // Whether CONNECTIONS frames follow the snapshot: the previous process says so in a
        // PLAN frame before it. One that sends none (an older version, or hand-over turned off
        // there) sends SNAPSHOT right away, and no connections.
        let mut planned = 0u8;
        let header = tokio::time::timeout(limit, async {
            handoff::write_frame(&mut chan, handoff::TAG_PREPARED, &[offered]).await?;
            let header = handoff::read_frame_header(&mut chan, MAX_SNAPSHOT).await?;
            if header.0 != handoff::TAG_PLAN {
                return Ok(header);
            }
            let plan =
                handoff::read_frame_payload(&mut chan, header.1, handoff::MAX_CONTROL).await?;
            planned = plan.first().copied().unwrap_or(0) & offered & handoff::CAP_CONNECTIONS;
            handoff::read_frame_header(&mut chan, MAX_SNAPSHOT).await
        })
        .await;
        let vanished = match header {
            Ok(Ok((handoff::TAG_SNAPSHOT, len))) => {
                let (back, received) =
                    receive_snapshot(chan, len, limit.saturating_sub(started.elapsed())).await?;
                chan = back;
                match received {
                    Received::Snapshot(mut reader) => {
                        if let Err(e) = state.restore(&mut reader) {
                            tracing::error!("refusing the previous process's snapshot: {e}");
                            let _ = handoff::write_frame(
                                &mut chan,
                                handoff::TAG_REJECT,
                                e.to_string().as_bytes(),
                            )
                            .await;
                            return Err(e);
                        }
                        reader.log_ignored();
                        tracing::info!(
                            state_bytes = len,
                            "state received from the previous process"
                        );
                        if planned & handoff::CAP_CONNECTIONS != 0 {
                            if let Err(e) = self.receive_connections(&mut chan).await {
                                tracing::error!("refusing the previous process's connections: {e}");
                                let _ = handoff::write_frame(
                                    &mut chan,
                                    handoff::TAG_REJECT,
                                    e.to_string().as_bytes(),
                                )
                                .await;
                                return Err(e);
                            }
                        }
                        None
                    }
                    Received::Corrupt(e) => {
                        tracing::error!("refusing the previous process's snapshot: {e}");
                        let _ = handoff::write_frame(
                            &mut chan,
                            handoff::TAG_REJECT,
                            e.to_string().as_bytes(),
                        )
                        .await;
                        return Err(e);
                    }
                    Received::Cut(why) => Some(why),
                }
            }
            Ok(Ok((tag, _))) => {
                let e =
                    Error::handoff(format!("expected SNAPSHOT, got {}", handoff::tag_name(tag)));
                let _ =
                    handoff::write_frame(&mut chan, handoff::TAG_REJECT, e.to_string().as_bytes())
                        .await;
                return Err(e);
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no snapshot within {limit:?}")),
        };
        if let Some(why) = vanished {
            tracing::warn!("the previous process went away before handing over its state ({why}): falling back to the state file, else the initial state");
            self.cold_restore(state);
        }
        self.close_unclaimed();
        // Announced before READY reaches the previous process, which may exit right after:
        // whoever follows the service (the supervisor, systemd) learns of this process first.
        self.inner.notifier.ready();
        if let Err(e) = handoff::write_frame(&mut chan, handoff::TAG_READY, &[]).await {
            tracing::warn!("could not report READY to the previous process ({e}); serving anyway");
        }
        Ok(())
    }

    /// Reads the CONNECTIONS frames that follow the snapshot into the inbox.
    async fn receive_connections(&self, chan: &mut UnixStream) -> Result<()> {
        let started = Instant::now();
        let limit = self.inner.options.ready_timeout;
        let mut count = 0usize;
        loop {
            let frame = tokio::time::timeout(limit, handoff::recv_connections(chan))
                .await
                .map_err(|_| Error::handoff(format!("no CONNECTIONS within {limit:?}")))?;
            let (last, batch) = match frame {
                Ok(frame) => frame,
                Err(handoff::ConnectionsError::Refused(why)) => return Err(Error::handoff(why)),
                Err(handoff::ConnectionsError::Gone(why)) => {
                    // The state is restored and the listeners are ours: serve, with the
                    // connections that arrived (the others died with the previous process).
                    tracing::warn!(
                        received = count,
                        "the previous process went away while handing over its connections ({why}): serving those received"
                    );
                    break;
                }
            };
            count += batch.len();
            for (entry, fd) in batch {
                self.inner.inbox.put(
                    entry.key,
                    Arrival {
                        fd,
                        prefix: entry.prefix,
                    },
                );
            }
            if last {
                break;
            }
        }
        if count > 0 {
            tracing::info!(
                connections = count,
                elapsed_ms = millis(started.elapsed()),
                "open connections received from the previous process"
            );
        }
        Ok(())
    }

    /// Connections handed over from the previous process that arrived on the listener known
    /// as `key`; each is given out once.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn claim_connections(&self, key: &str) -> Vec<Arrival> {
        self.inner.inbox.claim(key)
    }

    /// The round of connections parked for a successor.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    fn control_listener(&self, path: &Path) -> Result<tokio::net::UnixListener> {
        use std::os::unix::fs::PermissionsExt;
        let listener = self.unix(crate::control::LISTENER_NAME, path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(format!("control socket {}", path.display()), e))?;
        Ok(listener)
    }

    /// One line for `hotrestart-ctl status`.
    pub(crate) fn status_line(&self) -> String {
        let history = self.inner.history.lock().unwrap().clone();
        format!(
            "generation={} pid={} uptime_s={:.1} phase={:?} restarts_attempted={} history={:?} main_pid={}\n",
            self.inner.generation,
            std::process::id(),
            self.inner.started.elapsed().as_secs_f64(),
            *self.inner.phase.borrow(),
            history.len(),
            history,
            self.inner.notifier.main_pid()
        )
    }

    /// Each generation rewrites the PID file (atomically) once it serves.
    fn write_pid_file(&self) {
        let path = self
            .inner
            .operator_env
            .iter()
            .find(|(k, _)| k == sys::ENV_PID_FILE);
        if let Some((_, path)) = path {
            let pid = format!("{}\n", std::process::id());
            if let Err(e) = state_file::write_atomic_mode(Path::new(path), pid.as_bytes(), 0o644) {
                tracing::warn!("PID file not written: {e}");
            }
        }
    }

    fn close_unclaimed(&self) {
        let names = self.inner.listeners.lock().unwrap().close_unclaimed();
        if !names.is_empty() {
            tracing::info!(?names, "closed inherited sockets that nothing claimed");
        }
    }

    fn cold_restore(&self, state: &mut dyn State) {
        let Some(path) = &self.inner.options.state_file else {
            return;
        };
        let failure = match state_file::read(path) {
            Ok(None) => {
                tracing::info!(path = %path.display(), "no state file: starting with the initial state");
                return;
            }
            Ok(Some(bytes)) => match snapshot::restore(state, bytes) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "state restored from the state file");
                    return;
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        match state_file::set_aside(path) {
            Ok(aside) => tracing::warn!(
                "state file {} is unusable ({failure}): moved to {}; starting with the initial state",
                path.display(),
                aside.display()
            ),
            Err(e) => {
                self.inner.state_file_writable.store(false, Ordering::Relaxed);
                tracing::error!(
                    "state file {} is unusable ({failure}) and could not be moved aside ({e}): starting with the initial state; the file will not be overwritten",
                    path.display()
                )
            }
        }
    }

    /// Triggers a hot restart and waits for its outcome: `Ok` once the successor is READY (this
    /// process then drains and exits), [`Error::RolledBack`] if it failed (this process keeps
    /// serving), [`Error::RestartInProgress`] if one is already running, [`Error::Refused`] if
    /// too many older generations are still draining.
    ///
    /// Do not await it inside a request handler served by [`http::serve`](crate::http::serve):
    /// the handover waits for open connections to finish, that one included, so the snapshot
    /// would only be taken at the drain timeout. Spawn it and answer at once (the `probe`
    /// example's `POST /restart` does so), or use the control socket.
    pub async fn restart(&self) -> Result<Restarted> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .restart_tx
            .send(tx)
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?.0
    }

    /// [`Hot::restart`], plus a guard that keeps this process alive until it is dropped.
    pub(crate) async fn restart_tracked(&self) -> (Result<Restarted>, Option<WorkGuard>) {
        let (tx, rx) = oneshot::channel();
        if self.inner.restart_tx.send(tx).await.is_err() {
            return (Err(Error::ShuttingDown), None);
        }
        match rx.await {
            Ok((outcome, guard)) => (outcome, Some(guard)),
            Err(_) => (Err(Error::ShuttingDown), None),
        }
    }

    /// Resolves when this process stops for good: after a committed handover, or on
    /// SIGTERM/SIGINT. For `axum::serve(..).with_graceful_shutdown(hot.shutdown())`; prefer
    /// [`http::serve`](crate::http::serve), which also pauses accepting during a handover.
    pub fn shutdown(&self) -> Shutdown {
        Shutdown::new(self.inner.phase.subscribe())
    }

    /// Watches the [`Phase`]: custom accept loops stop accepting while it is not `Serving`.
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.inner.phase.subscribe()
    }

    /// Marks one unit of live work (an accept loop, a connection). The snapshot of a handover
    /// waits, up to the drain timeout, until every guard is dropped.
    pub fn track(&self) -> WorkGuard {
        self.inner.work.enter()
    }

    /// Waits for live work to end, up to the drain timeout; returns what is still live.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) async fn inner_work_idle(&self) -> usize {
        self.inner
            .work
            .drained(self.inner.options.drain_timeout)
            .await
    }

    /// Records a connection closed while still busy at the drain timeout.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn connection_cut(&self) {
        self.inner.work.cut_one();
    }

    /// Logs, once, the connections cut at the drain timeout since the last call.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn report_cut(&self, when: &str) {
        let cut = self.inner.work.take_unreported_cut();
        if cut > 0 {
            tracing::warn!(
                cut,
                "{cut} connection(s) still busy at the drain timeout ({:?}) were closed {when}",
                self.inner.options.drain_timeout
            );
        }
    }

    async fn run_body<F, Fut>(&self, body: F) -> Fut::Output
    where
        F: FnOnce(Hot) -> Fut,
        Fut: Future,
    {
        let body = body(self.clone());
        tokio::pin!(body);
        let grace = self.inner.options.drain_timeout + Duration::from_secs(1);
        let overdue = async {
            self.shutdown().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            out = &mut body => out,
            () = overdue => {
                tracing::warn!("main did not return within the drain timeout after shutdown: exiting");
                self.finish().await;
                std::process::exit(0);
            }
        }
    }

    /// After `main`'s body: unless the process handed over, drain, run the hooks and save state.
    async fn finish(&self) {
        let exit = *self.inner.exit.lock().unwrap();
        self.inner.phase.send_replace(Phase::Stopping);
        if exit == Exit::HandedOver {
            let left = self
                .inner
                .work
                .drained(self.inner.options.drain_timeout)
                .await;
            tracing::info!(
                generation = self.inner.generation,
                left,
                "handed over; exiting"
            );
            return;
        }
        let Some(ready) = self.inner.ready.get() else {
            return;
        };
        let left = self
            .inner
            .work
            .drained(self.inner.options.drain_timeout)
            .await;
        if left > 0 {
            tracing::warn!(left, "work still live after the drain timeout");
        }
        hooks::run_all(
            &HookContext {
                state: ready.any.clone(),
            },
            "exit",
        )
        .await;
        let Some(path) = &self.inner.options.state_file else {
            return;
        };
        if !self.inner.state_file_writable.load(Ordering::Relaxed) {
            tracing::error!(path = %path.display(), "not writing the state file: an unusable one is in the way");
            return;
        }
        let saved = snapshot::encode(&*ready.save).and_then(|snap| {
            let parts: Vec<&[u8]> = snap.slices().collect();
            state_file::write_atomic_parts(path, &parts, 0o600).map(|()| snap.len())
        });
        match saved {
            Ok(bytes) => tracing::info!(path = %path.display(), state_bytes = bytes, "state saved"),
            Err(e) => tracing::error!("state not saved: {e}"),
        }
    }
}

struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Signals {
        let install = |kind| signal(kind).expect("installing a signal handler");
        Signals {
            hup: install(SignalKind::hangup()),
            term: install(SignalKind::terminate()),
            int: install(SignalKind::interrupt()),
        }
    }
}

enum Trigger {
    Signal,
    Call(RestartReply),
    Stop(&'static str),
}

async fn next_trigger(signals: &mut Signals, calls: &mut mpsc::Receiver<RestartReply>) -> Trigger {
    tokio::select! {
        _ = signals.hup.recv() => Trigger::Signal,
        Some(reply) = calls.recv() => Trigger::Call(reply),
        _ = signals.term.recv() => Trigger::Stop("SIGTERM"),
        _ = signals.int.recv() => Trigger::Stop("SIGINT"),
    }
}

/// Owns the restart triggers: one restart at a time; triggers during one are coalesced
/// (signals) or refused (calls).
async fn supervise(
    inner: Arc<Inner>,
    mut signals: Signals,
    mut calls: mpsc::Receiver<RestartReply>,
) {
    let mut ready = inner.ready_tx.subscribe();
    let early_stop = tokio::select! {
        _ = ready.wait_for(|r| *r) => None,
        _ = signals.term.recv() => Some("SIGTERM"),
        _ = signals.int.recv() => Some("SIGINT"),
    };
    if let Some(why) = early_stop {
        if inner.predecessor.lock().unwrap().is_some() || inner.generation == 0 {
            stop_before_ready(why);
        }
        // A successor taking over holds state that exists nowhere else once its predecessor
        // has let go: it finishes the take-over (or fails it, and exits), then stops as asked,
        // saving that state.
        tracing::info!("{why} while taking over: stopping once ready");
        let _ = ready.wait_for(|r| *r).await;
        tracing::info!("{why}: draining and exiting");
        stop(&inner, Exit::Terminated);
        return;
    }
    loop {
        let reply = match next_trigger(&mut signals, &mut calls).await {
            Trigger::Signal => {
                tracing::info!(generation = inner.generation, "SIGHUP: hot restart");
                None
            }
            Trigger::Call(reply) => Some(reply),
            Trigger::Stop(why) => {
                tracing::info!("{why}: draining and exiting");
                stop(&inner, Exit::Terminated);
                return;
            }
        };
        let live = inner.live_ancestors();
        if live.len() + 2 > MAX_GENERATIONS {
            let reason = format!(
                "restart refused: {} older generation(s) still draining (pids {live:?}); at most {MAX_GENERATIONS} generations may be alive at once, try again when they have exited",
                live.len()
            );
            tracing::warn!("{reason}");
            if let Some(reply) = reply {
                let _ = reply.send((Err(Error::Refused { reason }), inner.work.enter()));
            }
            continue;
        }
        let restart = tracing::Instrument::instrument(
            restart(&inner),
            tracing::info_span!(
                "restart",
                from_generation = inner.generation,
                old_pid = std::process::id()
            ),
        );
        let mut restart = Box::pin(restart);
        // A stop asked for once the successor may already be serving the connections: the
        // restart's outcome (READY, or a failure within the ready timeout) is awaited first.
        let mut stop_after: Option<&'static str> = None;
        let outcome = loop {
            tokio::select! {
                // An outcome that is already there (READY received) wins over a trigger.
                biased;
                outcome = &mut restart => break outcome,
                trigger = next_trigger(&mut signals, &mut calls) => match trigger {
                    Trigger::Signal => tracing::info!("SIGHUP during a restart: coalesced into the running one"),
                    Trigger::Call(reply) => {
                        tracing::info!("restart requested during a restart: refused");
                        let _ = reply.send((Err(Error::RestartInProgress), inner.work.enter()));
                    }
                    Trigger::Stop(why) if inner.outbox.in_successor_hands() => {
                        tracing::warn!("{why} during a restart whose connections were already sent: finishing the handover first");
                        stop_after = Some(why);
                    }
                    Trigger::Stop(why) => {
                        tracing::warn!("{why} during a restart: abandoning it, draining and exiting");
                        // The successor is killed first, before its channel closes: seeing
                        // the channel end it would fall back to the state file and announce
                        // itself as the serving process. Only then are the parked
                        // connections given back, so no two processes read them.
                        inner.kill_successor();
                        drop(restart);
                        stop(&inner, Exit::Terminated);
                        return;
                    }
                },
            }
        };
        if let Some(why) = stop_after {
            let committed = outcome.is_ok();
            if let Some(reply) = reply {
                let _ = reply.send((outcome, inner.work.enter()));
            }
            if committed {
                tracing::info!("{why}: handed over, exiting");
                stop(&inner, Exit::HandedOver);
            } else {
                tracing::info!("{why}: draining and exiting");
                stop(&inner, Exit::Terminated);
            }
            return;
        }
        let committed = outcome.is_ok();
        if let Some(reply) = reply {
            let _ = reply.send((outcome, inner.work.enter()));
        }
        if committed {
            stop(&inner, Exit::HandedOver);
            return;
        }
    }
}

fn stop_before_ready(why: &str) -> ! {
    tracing::info!("{why} before the service was ready: exiting");
    std::process::exit(0)
}

fn stop(inner: &Inner, exit: Exit) {
    if exit == Exit::Terminated {
        inner.notifier.stopping();
    }
    *inner.exit.lock().unwrap() = exit;
    if exit == Exit::Terminated {
        // A handover abandoned midway: parked connections are served (and drained) here.
        inner.outbox.decide(Verdict::Kept);
    }
    inner.phase.send_replace(Phase::Stopping);
}

/// A spawned successor; killed and reaped unless the handover commits.
struct Successor {
    child: Option<Child>,
    pid: u32,
}

impl Drop for Successor {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }
}

/// One hot restart: spawn, HELLO, wait for PREPARED, quiesce, hooks, SNAPSHOT, wait for READY.
/// Any failure kills the successor, resumes accepting, and logs one line.
async fn restart(inner: &Inner) -> Result<Restarted> {
    let started = Instant::now();
    let generation = inner.generation + 1;
    let mut successor = None;
    let mut quiesced_at = None;
    let result = handover(inner, generation, started, &mut successor, &mut quiesced_at).await;
    // Committed, or about to be killed and reaped here: not to be killed by pid any more.
    inner.successor.store(0, Ordering::Relaxed);
    match result {
        Ok(Delivered {
            state_bytes,
            connections,
            announces,
        }) => {
            inner.outbox.decide(Verdict::Moved);
            let pid = successor.as_ref().map_or(0, |s: &Successor| s.pid);
            if inner.notifier.supervised() && !announces {
                // A successor of a version without a supervisor: announced for it, before this
                // process exits (so in the supervisor's queue before that exit).
                inner.notifier.send(&format!("READY=1\nMAINPID={pid}"));
            }
            if let Some(mut s) = successor {
                // Disarmed: it lives on as the serving process. This process is its parent
                // until it exits, so a supervisor cannot reap it meanwhile: it is told.
                if let Some(mut child) = s.child.take() {
                    if inner.notifier.supervised() {
                        let notifier = inner.notifier.clone();
                        tokio::spawn(async move {
                            use std::os::unix::process::ExitStatusExt;
                            if let Ok(status) = child.wait().await {
                                notifier.successor_exited(pid, status.into_raw());
                            }
                        });
                    }
                }
            }
            let restarted = Restarted {
                old_pid: std::process::id(),
                new_pid: pid,
                generation,
                elapsed: started.elapsed(),
                accept_gap: quiesced_at.map_or(Duration::ZERO, |q: Instant| q.elapsed()),
                state_bytes,
                connections,
            };
            tracing::info!(
                old_pid = restarted.old_pid,
                new_pid = restarted.new_pid,
                generation,
                elapsed_ms = millis(restarted.elapsed),
                accept_gap_ms = millis(restarted.accept_gap),
                state_bytes,
                connections,
                "handed over to pid {}",
                restarted.new_pid
            );
            inner.history.lock().unwrap().push(format!(
                "handed over to pid {} in {:.1} ms",
                restarted.new_pid,
                restarted.elapsed.as_secs_f64() * 1e3
            ));
            Ok(restarted)
        }
        Err(reason) => {
            inner.outbox.decide(Verdict::Kept);
            inner
                .history
                .lock()
                .unwrap()
                .push(format!("rolled back: {reason}"));
            // Announced before the successor is killed: it may have announced itself already,
            // and whoever follows the service must learn that this process serves again
            // before it can see the successor gone.
            inner.notifier.ready();
            if let Some(mut s) = successor {
                if let Some(mut child) = s.child.take() {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
            inner.phase.send_replace(Phase::Serving);
            tracing::warn!(
                "restart rolled back: {reason}; pid {} keeps serving",
                std::process::id()
            );
            Err(Error::RolledBack { reason })
        }
    }
}

async fn handover(
    inner: &Inner,
    generation: u64,
    started: Instant,
    successor: &mut Option<Successor>,
    quiesced_at: &mut Option<Instant>,
) -> Result<Delivered, String> {
    let ready = inner.ready.get().ok_or("the service is not ready yet")?;
    inner.notifier.reloading();
    let deadline = tokio::time::Instant::from_std(started + inner.options.ready_timeout);
    let (ours, theirs) = StdUnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let child = spawn(inner, &theirs, generation)
        .map_err(|e| format!("cannot start {}: {e}", inner.exe.display()))?;
    drop(theirs);
    let pid = child.id().unwrap_or(0);
    inner.successor.store(pid, Ordering::Relaxed);
    let s = successor.insert(Successor {
        child: Some(child),
        pid,
    });
    tracing::info!(pid, generation, "successor started");
    let child = s.child.as_mut().expect("armed");
    let hello = {
        let listeners = inner.listeners.lock().unwrap();
        let mut draining = vec![std::process::id()];
        draining.extend(inner.live_ancestors());
        handoff::send_hello(&ours, generation, listeners.active(), &draining)
    };
    if let Err(e) = hello {
        return Err(broken(child, pid, "before HELLO", e).await);
    }
    ours.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut chan = UnixStream::from_std(ours).map_err(|e| e.to_string())?;

    let capabilities = expect(
        &mut chan,
        child,
        pid,
        deadline,
        inner.options.ready_timeout,
        handoff::TAG_PREPARED,
    )
    .await?
    .first()
    .copied()
    .unwrap_or(0);
    // Connections are handed over if the successor offered to take them; PLAN tells it that
    // CONNECTIONS frames (maybe none) will follow the snapshot.
    let hand_connections =
        inner.options.hand_over_connections && capabilities & handoff::CAP_CONNECTIONS != 0;
    if hand_connections {
        inner.outbox.open();
    }
    tracing::debug!(
        pid,
        init_ms = millis(started.elapsed()),
        "successor prepared: quiescing"
    );

    *quiesced_at = Some(Instant::now());
    inner.phase.send_replace(Phase::Quiesced);
    let busy = inner.work.idle(inner.options.drain_timeout).await;
    inner.work.reported(busy);
    let left = busy + inner.work.take_cut();
    if left > 0 {
        tracing::warn!(
            left,
            "{left} connection(s) still busy at the drain timeout ({:?}): the snapshot is taken without waiting for them; what they change from now on is lost",
            inner.options.drain_timeout
        );
    }
    hooks::run_all(
        &HookContext {
            state: ready.any.clone(),
        },
        "restart",
    )
    .await;
    let frame =
        snapshot::encode(&*ready.save).map_err(|e| format!("cannot take the snapshot: {e}"))?;
    if hand_connections {
        if let Err(e) =
            handoff::write_frame(&mut chan, handoff::TAG_PLAN, &[handoff::CAP_CONNECTIONS]).await
        {
            return Err(broken(child, pid, "before the snapshot", e).await);
        }
    }
    deliver(&mut chan, child, pid, deadline, Delivery::Snapshot(&frame)).await?;
    let mut connections = 0;
    if hand_connections {
        let parcels = inner.outbox.take();
        connections = parcels.len();
        deliver(
            &mut chan,
            child,
            pid,
            deadline,
            Delivery::Connections(&parcels),
        )
        .await?;
    }
    expect(
        &mut chan,
        child,
        pid,
        deadline,
        inner.options.ready_timeout,
        handoff::TAG_READY,
    )
    .await?;
    Ok(Delivered {
        state_bytes: frame.len(),
        connections,
        announces: capabilities & handoff::CAP_ANNOUNCES != 0,
    })
}

/// What a committed handover delivered.
struct Delivered {
    state_bytes: usize,
    connections: usize,
    /// The successor announces itself to the supervisor.
    announces: bool,
}

fn spawn(inner: &Inner, theirs: &StdUnixStream, generation: u64) -> std::io::Result<Child> {
    let fd = theirs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(&inner.exe);
    cmd.args(&inner.args)
        .env(sys::ENV_HANDOFF_FD, fd.to_string())
        .env(sys::ENV_GENERATION, generation.to_string())
        .envs(inner.operator_env.iter().map(|(k, v)| (k, v)))
        .envs(inner.notifier.socket().map(|s| (sys::ENV_NOTIFY_SOCKET, s)))
        .kill_on_drop(false);
    let supervisor = inner.notifier.supervisor_fd();
    if let Some(fd) = supervisor {
        cmd.env(sys::ENV_SUPERVISOR_FD, fd.to_string());
    }
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl, which is
    // async-signal-safe; it lets exactly the successor's end of the socketpair (and the
    // supervisor's socket, under one) cross exec.
    unsafe {
        cmd.pre_exec(move || {
            sys::set_cloexec(fd, false)?;
            supervisor.map_or(Ok(()), |s| sys::set_cloexec(s, false))
        });
    }
    cmd.spawn()
}

fn exited(pid: u32, status: std::io::Result<std::process::ExitStatus>, when: &str) -> String {
    match status {
        Ok(status) => format!("successor pid {pid} exited ({status}) {when}"),
        Err(e) => format!("successor pid {pid} could not be waited for ({e}) {when}"),
    }
}

/// Explains a broken channel: usually the successor exited, which says more than EPIPE.
async fn broken(child: &mut Child, pid: u32, when: &str, e: impl std::fmt::Display) -> String {
    match tokio::time::timeout(Duration::from_secs(1), child.wait()).await {
        Ok(status) => exited(pid, status, when),
        Err(_) => format!("handoff channel of pid {pid} broke {when}: {e}"),
    }
}

/// What the old process streams to the successor after quiescing.
enum Delivery<'a> {
    Snapshot(&'a snapshot::Snapshot<'a>),
    Connections(&'a [crate::conns::Parcel]),
}

/// Sends `what`, watching the successor's exit and the deadline; a failure is explained by the
/// successor's REJECT if it sent one.
async fn deliver(
    chan: &mut UnixStream,
    child: &mut Child,
    pid: u32,
    deadline: tokio::time::Instant,
    what: Delivery<'_>,
) -> Result<(), String> {
    let (noun, when) = match what {
        Delivery::Snapshot(_) => ("the snapshot", "while receiving the snapshot"),
        Delivery::Connections(_) => ("the connections", "while receiving the connections"),
    };
    let sending = async {
        match what {
            Delivery::Snapshot(frame) => {
                handoff::write_frame_parts(chan, handoff::TAG_SNAPSHOT, frame.len(), frame.slices())
                    .await
            }
            Delivery::Connections(parcels) => handoff::send_connections(chan, parcels).await,
        }
    };
    let why = tokio::select! {
        sent = sending => match sent {
            Ok(()) => return Ok(()),
            Err(e) => broken(child, pid, when, e).await,
        },
        status = child.wait() => exited(pid, status, when),
        _ = tokio::time::sleep_until(deadline) => {
            return Err(format!("successor pid {pid} did not take {noun} within the ready timeout"))
        }
    };
    Err(rejected_or(chan, pid, why).await)
}

/// A successor that refuses sends REJECT and exits, possibly while the old process is still
/// writing: its reason, if it is on the channel, says more than the broken pipe or the exit.
async fn rejected_or(chan: &mut UnixStream, pid: u32, otherwise: String) -> String {
    let frame = tokio::time::timeout(
        Duration::from_millis(100),
        handoff::read_frame(chan, handoff::MAX_CONTROL),
    )
    .await;
    match frame {
        Ok(Ok(Frame {
            tag: handoff::TAG_REJECT,
            payload,
        })) => format!(
            "successor pid {pid} rejected the handover: {}",
            String::from_utf8_lossy(&payload)
        ),
        _ => otherwise,
    }
}

/// Waits for `want` from the successor, watching its exit and the deadline.
async fn expect(
    chan: &mut UnixStream,
    child: &mut Child,
    pid: u32,
    deadline: tokio::time::Instant,
    ready_timeout: Duration,
    want: u8,
) -> Result<Vec<u8>, String> {
    let what = handoff::tag_name(want);
    let when = format!("before {what}");
    tokio::select! {
        // A frame that is already there (REJECT) says more than the exit that follows it.
        biased;
        frame = handoff::read_frame(chan, handoff::MAX_CONTROL) => match frame {
            Ok(Frame { tag, payload }) if tag == want => Ok(payload),
            Ok(Frame { tag: handoff::TAG_REJECT, payload }) => Err(format!(
                "successor pid {pid} rejected the handover: {}",
                String::from_utf8_lossy(&payload)
            )),
            Ok(Frame { tag, .. }) => Err(format!("successor pid {pid} sent {} {when}", handoff::tag_name(tag))),
            Err(e) => Err(broken(child, pid, &when, e).await),
        },
        status = child.wait() => Err(exited(pid, status, &when)),
        _ = tokio::time::sleep_until(deadline) => Err(format!(
            "successor pid {pid} not {what} within the ready timeout ({ready_timeout:?})"
        )),
    }
}

/// How `#[hot_main]` runs `main`. Built by the macro from its arguments.
#[derive(Debug, Clone, Default)]
pub struct MainOptions {
    options: Options,
    current_thread: bool,
    worker_threads: Option<usize>,
    supervisor: Option<bool>,
}

impl MainOptions {
    /// The defaults: those of [`Options`], a multi-thread runtime, the supervisor by
    /// environment.
    pub fn new() -> Self {
        Self::default()
    }
    /// `#[hot_main(ready_timeout = ...)]`.
    pub fn ready_timeout(mut self, d: Duration) -> Self {
        self.options.ready_timeout = d;
        self
    }
    /// `#[hot_main(drain_timeout = ...)]`.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.options.drain_timeout = d;
        self
    }
    /// `#[hot_main(state_file = ...)]`.
    pub fn state_file(mut self, path: &'static str) -> Self {
        self.options.state_file = Some(PathBuf::from(path));
        self
    }
    /// `#[hot_main(control_socket = ...)]`.
    pub fn control_socket(mut self, path: &'static str) -> Self {
        self.options.control_socket = Some(PathBuf::from(path));
        self
    }
    /// Development mode: restart when the executable changes on disk.
    pub fn watch_exe(mut self, on: bool) -> Self {
        self.options.watch_exe = on;
        self
    }
    /// `#[hot_main(hand_over_connections = ...)]`.
    pub fn hand_over_connections(mut self, on: bool) -> Self {
        self.options.hand_over_connections = on;
        self
    }
    /// `#[hot_main(supervisor = ...)]`: a main process that stays across restarts; the
    /// default decides by where the process runs (`HOTRESTART_SUPERVISOR` wins over both).
    pub fn supervisor(mut self, on: bool) -> Self {
        self.supervisor = Some(on);
        self
    }
    /// `#[hot_main(flavor = "current_thread")]`.
    pub fn current_thread(mut self) -> Self {
        self.current_thread = true;
        self
    }
    /// `#[hot_main(worker_threads = ...)]`.
    pub fn worker_threads(mut self, n: usize) -> Self {
        self.worker_threads = Some(n);
        self
    }
}

/// Runs `main`'s body under hotrestart: adopts what the predecessor (or systemd) passed,
/// builds the tokio runtime, runs the body, and on the way out drains, runs the hooks and saves
/// the state, unless the process handed over to a successor.
pub fn run_main<F, Fut>(main: MainOptions, body: F) -> Fut::Output
where
    F: FnOnce(Hot) -> Fut,
    Fut: Future,
{
    // Before the runtime exists, and before anything of the user's runs: the first process
    // may become the supervisor, which stays while generations come and go beneath it.
    if crate::supervisor::wanted(main.supervisor) {
        std::process::exit(crate::supervisor::run());
    }
    // Before the runtime exists: the process has one thread, so changing the environment is sound.
    let adopted = Adopted::from_env();
    let mut options = main.options;
    for (var, slot) in [
        (sys::ENV_READY_TIMEOUT, &mut options.ready_timeout),
        (sys::ENV_DRAIN_TIMEOUT, &mut options.drain_timeout),
    ] {
        if let Some(text) = adopted.operator_value(var) {
            match text.to_str().map(crate::options::parse_duration) {
                Some(Ok(d)) => *slot = d,
                _ => eprintln!(
                    "hotrestart: ignoring {var}={text:?}: expected a duration like 5s or 250ms"
                ),
            }
        }
    }
    if let Some(path) = adopted.operator_value(sys::ENV_CONTROL_SOCKET) {
        options.control_socket = if path.is_empty() {
            None
        } else {
            Some(PathBuf::from(path))
        };
    }
    if let Some(flag) = adopted.operator_value(sys::ENV_WATCH_EXE) {
        options.watch_exe = flag == "1" || flag == "true";
    }
    if let Some(flag) = adopted.operator_value(sys::ENV_HAND_OVER_CONNECTIONS) {
        options.hand_over_connections = !(flag == "0" || flag == "false");
    }
    if let Some(path) = adopted.operator_value(sys::ENV_STATE_FILE) {
        options.state_file = if path.is_empty() {
            None
        } else {
            Some(PathBuf::from(path))
        };
    }
    let mut builder = if main.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if let (false, Some(n)) = (main.current_thread, main.worker_threads) {
        builder.worker_threads(n);
    }
    let runtime = builder
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let out = runtime.block_on(async move {
        let hot = Hot::start(options, adopted);
        let out = hot.run_body(body).await;
        hot.finish().await;
        out
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    out
}

/// Development mode: restarts when the executable's file changes (a new inode, size or mtime)
/// and has stayed unchanged for one more poll, so a build still being written is not started.
async fn watch_exe(hot: Hot) {
    use std::os::unix::fs::MetadataExt;
    let path = hot.inner.exe.clone();
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    };
    let mut known = stamp(&path);
    let mut pending = None;
    tracing::info!(exe = %path.display(), "watching the executable: a rebuild hot-restarts the service");
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = stamp(&path);
        if now.is_none() || now == known {
            pending = None;
            continue;
        }
        if pending != Some(now) {
            pending = Some(now);
            continue;
        }
        known = now;
        pending = None;
        tracing::info!("the executable changed on disk: hot restart");
        match hot.restart().await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!("restart after a rebuild failed: {e}; waiting for the next build")
            }
        }
    }
}

impl Inner {
    /// SIGKILLs the successor of the restart in progress, if there is one.
    fn kill_successor(&self) {
        let pid = self.successor.swap(0, Ordering::Relaxed);
        if pid != 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Older generations still running (not exited, not zombies, and still our executable, so a
    /// recycled pid does not count).
    fn live_ancestors(&self) -> Vec<u32> {
        let exe = self.exe.to_string_lossy().into_owned();
        self.ancestors
            .iter()
            .copied()
            .filter(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let state = stat.rfind(')').and_then(|i| stat[i + 2..].chars().next());
                let ours = std::fs::read_link(format!("/proc/{pid}/exe"))
                    .map(|p| p.to_string_lossy().starts_with(&exe))
                    .unwrap_or(false);
                matches!(state, Some(s) if s != 'Z') && ours
            })
            .collect()
    }
}

enum Received {
    Snapshot(SnapshotReader),
    /// The data is wrong: the successor must refuse it.
    Corrupt(Error),
    /// The channel ended or stalled: the previous process is gone or hung.
    Cut(String),
}

/// Snapshots up to this size are read whole and decoded in place: cheaper than a blocking thread.
const SMALL_SNAPSHOT: u64 = 256 << 10;

/// Reads a snapshot of `len` bytes from the channel. A small one is read whole; a large one is
/// read field by field on a blocking thread (the decoder is synchronous; no frame-sized buffer
/// is ever allocated). Gives the channel back.
async fn receive_snapshot(
    mut chan: UnixStream,
    len: u64,
    limit: Duration,
) -> Result<(UnixStream, Received)> {
    if len <= SMALL_SNAPSHOT {
        use tokio::io::AsyncReadExt;
        let mut frame = vec![0u8; len as usize];
        let received = match tokio::time::timeout(limit, chan.read_exact(&mut frame)).await {
            Ok(Ok(_)) => match SnapshotReader::new(frame) {
                Ok(reader) => Received::Snapshot(reader),
                Err(e) => Received::Corrupt(e),
            },
            Ok(Err(e)) => Received::Cut(format!("SNAPSHOT frame truncated: {e}")),
            Err(_) => Received::Cut(format!("SNAPSHOT frame not received within {limit:?}")),
        };
        return Ok((chan, received));
    }
    let std = chan
        .into_std()
        .map_err(|e| Error::io("handoff channel", e))?;
    std.set_nonblocking(false)
        .map_err(|e| Error::io("handoff channel", e))?;
    std.set_read_timeout(Some(limit.max(Duration::from_millis(1))))
        .map_err(|e| Error::io("handoff channel", e))?;
    let (std, received) = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut frame = (&std).take(len);
        let parsed = SnapshotReader::read_from(&mut frame);
        let left = frame.limit();
        let received = match parsed {
            Ok(reader) if left == 0 => Received::Snapshot(reader),
            Ok(_) => Received::Corrupt(Error::snapshot(format!("{left} bytes left in the SNAPSHOT frame after the snapshot"))),
            Err(Error::Snapshot { reason }) if reason.starts_with("truncated") || reason.starts_with("reading") => {
                Received::Cut(format!("SNAPSHOT frame truncated: the channel closed after {} of {len} bytes ({reason})", len - left))
            }
            Err(e) => Received::Corrupt(e),
        };
        (std, received)
    })
    .await
    .map_err(|e| Error::handoff(format!("snapshot reader: {e}")))?;
    std.set_nonblocking(true)
        .map_err(|e| Error::io("handoff channel", e))?;
    let chan = UnixStream::from_std(std).map_err(|e| Error::io("handoff channel", e))?;
    Ok((chan, received))
}

/// A duration in milliseconds, to the microsecond, for log fields.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
