//! The lifecycle: start (adopt or bind), ready (restore state), restart (hand over or roll
//! back), exit (drain, hooks, state file). [`Hot`] is the application's handle on it.
//!
//! One role per file: [`inherit`] (what the process was given), [`entry`] (`run_main`),
//! [`trigger`] (the trigger loop), [`handover`] (the old process's side of a restart),
//! [`takeover`] (the successor's side); this file holds the handle, [`Hot`], and its state.

use std::any::Any;
use std::ffi::OsString;
use std::future::Future;
use std::net::ToSocketAddrs;

use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::conns::Handover;
use crate::drain::{Phase, Shutdown, WorkGuard};
use crate::error::{Error, Result};
use crate::hooks::{self, HookContext};
use crate::listeners::Listeners;
use crate::notify::Notifier;
use crate::options::Options;
use crate::snapshot::{self, State};
use crate::{state_file, sys};

mod entry;
mod handover;
mod inherit;
pub(crate) mod precopy;
mod rollback;
mod takeover;
mod trigger;
mod waits;

use entry::watch_exe;
pub use entry::{run_main, MainOptions};
use takeover::UNCLAIMED_CONNECTIONS;

/// Most generations alive at once: at a trigger, older generations still draining plus this
/// one plus the successor. With 3, a restart may begin while one older generation drains.
pub const MAX_GENERATIONS: usize = 3;

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
    /// Rounds of pre-copy sent while this process still served (0: none was made).
    pub precopy_rounds: u32,
    /// Bytes of pre-copy sent while this process still served.
    pub precopy_bytes: u64,
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
    /// The reader of the predecessor's channel during start-up (the first pre-copy round),
    /// when the predecessor asked for it: `ready` takes the channel back from it.
    early: Mutex<Option<(tokio::task::JoinHandle<precopy::Early>, oneshot::Sender<()>)>>,
    /// The previous generation's pid: this process's parent until it exits.
    predecessor_pid: Option<u32>,
    phase: watch::Sender<Phase>,
    /// Set once, with `phase` becoming [`Phase::Stopping`]: what long-lived connections wait
    /// for. A channel of its own, so that a quiescence (a phase change they do not care about)
    /// does not wake a thousand of them inside the accept gap.
    stopping: watch::Sender<bool>,
    ready: OnceLock<ReadyState>,
    ready_tx: watch::Sender<bool>,
    restart_tx: mpsc::Sender<RestartReply>,
    exit: Mutex<Exit>,
    started: Instant,
    /// Older generations, possibly still draining: they count against [`MAX_GENERATIONS`].
    ancestors: Vec<u32>,
    /// One line per restart this process attempted.
    history: Mutex<Vec<String>>,
    /// The successor being started, while it is not committed: a SIGTERM that abandons the
    /// restart kills it through its pidfd (never a process that reused its pid), or by pid
    /// where pidfds are missing (it is an unreaped child then).
    successor: Mutex<Option<(u32, Option<std::os::fd::OwnedFd>)>>,
    /// False when a bad state file could not be moved aside: it must then not be overwritten.
    state_file_writable: AtomicBool,
    /// The seam with the serving layers: parked and received connections, live work.
    handover: Handover,
    /// The session-ticket keys of `http::tls`: handed over and saved with the state.
    #[cfg(feature = "tls")]
    tickets: Arc<crate::http::tls::TicketKeys>,
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

/// The snapshot field that carries `http::tls`'s ticket keys (not a Rust identifier: it cannot
/// collide with a `#[persist]` field).
#[cfg(feature = "tls")]
const TLS_TICKET_KEYS: &str = "__hotrestart.tls_ticket_keys";
#[cfg(feature = "tls")]
const TLS_TICKET_KEYS_TYPE: &str = "hotrestart::http::tls::Keys";

impl Inner {
    /// The library's own fields, written into every snapshot after the application's.
    pub(super) fn save_internal(&self, _w: &mut crate::snapshot::SnapshotWriter<'_>) -> Result<()> {
        #[cfg(feature = "tls")]
        _w.field_as(
            TLS_TICKET_KEYS,
            TLS_TICKET_KEYS_TYPE,
            &self.tickets.export(),
        )?;
        Ok(())
    }

    /// Reads them back, if the snapshot has them (a predecessor without TLS has none).
    pub(super) fn restore_internal(&self, _r: &mut crate::snapshot::SnapshotReader) -> Result<()> {
        // Best effort: keys that do not decode (another layout) cost resumed sessions, not the
        // handover or the application's state.
        #[cfg(feature = "tls")]
        match _r.take_as(TLS_TICKET_KEYS, TLS_TICKET_KEYS_TYPE) {
            Ok(Some(keys)) => self.tickets.import(keys),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "TLS session-ticket keys not restored ({e}): clients will do full handshakes"
            ),
        }
        Ok(())
    }

    /// This process stops serving for good: the phase, then the signal long-lived
    /// connections wait for.
    pub(super) fn stop(&self) {
        self.phase.send_replace(Phase::Stopping);
        self.stopping.send_replace(true);
    }
}

impl Hot {
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
        // A hook that takes another type than `S` would silently not run at every restart:
        // refused now, before this process serves (a successor exits, its predecessor rolls
        // back).
        hooks::check_state_type::<S>()?;
        if self.inner.ready.get().is_some() {
            return Err(Error::handoff("Hot::ready was called twice"));
        }
        // Claimed before unclaimed inherited sockets are closed: it is one of them.
        let control = match &self.inner.options.control_socket {
            Some(path) => Some(self.control_listener(path)?),
            None => None,
        };
        let early = self.inner.early.lock().unwrap().take();
        let predecessor = match early {
            // The rest of the first round, if it is still coming, is read by the take-over.
            Some((reader, hand_back)) => {
                let _ = hand_back.send(());
                Some(
                    reader
                        .await
                        .map_err(|e| Error::handoff(format!("the start-up reader failed: {e}")))?,
                )
            }
            None => match self.inner.predecessor.lock().unwrap().take() {
                Some(chan) => Some(precopy::Early::nothing(chan)?),
                None => None,
            },
        };
        match predecessor {
            Some(handoff) => {
                let span = tracing::info_span!("take_over", new_generation = self.inner.generation);
                tracing::Instrument::instrument(self.take_over(handoff, &mut state), span).await?
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
        if self.inner.handover.inbox.len() > 0 {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                tokio::time::sleep(UNCLAIMED_CONNECTIONS).await;
                for (listener, n, unread_bytes) in inner.handover.inbox.close_unclaimed() {
                    tracing::warn!(
                        listener,
                        unread_bytes,
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
    /// The seam a serving layer (`http::serve`, custom protocols' [`crate::Movable`]) works
    /// through.
    pub(crate) fn connections(&self) -> &Handover {
        &self.inner.handover
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
            "generation={} pid={} uptime_s={:.1} phase={:?} restarts_attempted={} history={:?} main_pid={} long_lived={}\n",
            self.inner.generation,
            std::process::id(),
            self.inner.started.elapsed().as_secs_f64(),
            *self.inner.phase.borrow(),
            history.len(),
            history,
            self.inner.notifier.main_pid(),
            self.inner.handover.work.lingering()
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
            Ok(Some(bytes)) => {
                match snapshot::restore(state, bytes, |r| self.inner.restore_internal(r)) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "state restored from the state file");
                        return;
                    }
                    Err(e) => e,
                }
            }
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

    /// The session-ticket keys of this process, for `rustls::ServerConfig::ticketer`:
    /// [`http::tls::server_config`](crate::http::tls::server_config) installs them.
    #[cfg(feature = "tls")]
    pub(crate) fn ticket_keys(&self) -> Arc<dyn tokio_rustls::rustls::server::ProducesTickets> {
        self.inner.tickets.clone()
    }

    /// Resolves when this process stops for good: after a committed handover, or on
    /// SIGTERM/SIGINT. For `axum::serve(..).with_graceful_shutdown(hot.shutdown())`; prefer
    /// [`http::serve`](crate::http::serve), which also pauses accepting during a handover.
    pub fn shutdown(&self) -> Shutdown {
        Shutdown::new(self.inner.stopping.subscribe())
    }

    /// What [`Shutdown`] and long-lived connections watch: true once this process stops.
    #[cfg(feature = "http")]
    pub(crate) fn stopping_signal(&self) -> watch::Receiver<bool> {
        self.inner.stopping.subscribe()
    }

    /// Watches the [`Phase`]: custom accept loops stop accepting while it is not `Serving`.
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.inner.phase.subscribe()
    }

    /// Marks one unit of work that may change `#[persist]` state (an accept loop, a request
    /// being computed). The snapshot of a handover waits, up to the snapshot timeout, until
    /// every such guard is dropped; the drain waits for it too. Hold it for a request, not for
    /// a connection: a connection that stays open belongs to [`Hot::long_lived`].
    pub fn track(&self) -> WorkGuard {
        self.inner.handover.work.enter()
    }

    /// Marks one long-lived connection (a WebSocket, an event stream, a custom protocol's
    /// connection): this process stays, once it stops accepting, until every such guard is
    /// dropped or the drain timeout passes, but the snapshot never waits for it — the accept
    /// gap does not depend on the longest connection. End the connection cleanly when
    /// [`Hot::shutdown`] resolves (a WebSocket close frame 1012, the end of an event stream).
    pub fn long_lived(&self) -> WorkGuard {
        self.inner.handover.work.enter_lingering()
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
        self.inner.stop();
        if exit == Exit::HandedOver {
            let left = self.inner.handover.work_idle().await;
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
        let left = self.inner.handover.work_idle().await;
        if left > 0 {
            tracing::warn!(left, "work still live after the drain timeout");
        }
        hooks::run_all(
            &HookContext {
                state: ready.any.clone(),
                reason: hooks::HookReason::Exit,
            },
            hooks::HookWhen::BeforeRestart,
            self.inner.options.hook_timeout,
        )
        .await;
        let Some(path) = &self.inner.options.state_file else {
            return;
        };
        if !self.inner.state_file_writable.load(Ordering::Relaxed) {
            tracing::error!(path = %path.display(), "not writing the state file: an unusable one is in the way");
            return;
        }
        let saved =
            snapshot::encode_with(&*ready.save, |w| self.inner.save_internal(w)).and_then(|snap| {
                let parts: Vec<&[u8]> = snap.slices().collect();
                state_file::write_atomic_parts(path, &parts, 0o600).map(|()| snap.len())
            });
        match saved {
            Ok(bytes) => tracing::info!(path = %path.display(), state_bytes = bytes, "state saved"),
            Err(e) => tracing::error!("state not saved: {e}"),
        }
    }
}

impl Inner {
    /// SIGKILLs the successor of the restart in progress, if there is one, and waits (up to
    /// a second) until it is dead, so that nothing it says can come after what follows.
    fn kill_successor(&self) {
        let Some((pid, pidfd)) = self.successor.lock().unwrap().take() else {
            return;
        };
        match &pidfd {
            Some(fd) => {
                let fd = std::os::fd::AsFd::as_fd(fd);
                let _ = sys::pidfd_signal(fd, libc::SIGKILL);
                let mut polled = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
                let _ = nix::poll::poll(&mut polled, nix::poll::PollTimeout::from(1000u16));
            }
            None => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Older generations still running (not exited, not zombies, and still our executable, so a
    /// recycled pid does not count).
    fn live_ancestors(&self) -> Vec<u32> {
        let exe = self.exe.to_string_lossy().into_owned();
        self.ancestors
            .iter()
            .copied()
            .filter(|&pid| {
                let ours = std::fs::read_link(format!("/proc/{pid}/exe"))
                    .map(|p| p.to_string_lossy().starts_with(&exe))
                    .unwrap_or(false);
                sys::process_runs(pid as i32) && ours
            })
            .collect()
    }
}

/// A duration in milliseconds, to the microsecond, for log fields.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests;
