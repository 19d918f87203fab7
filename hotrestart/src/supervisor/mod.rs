//! The main process that never changes.
//!
//! Container runtimes, systemd and shells follow one process. A hot restart replaces the
//! serving process, so without help the process they started exits at the first restart: a
//! container ends (and the kernel kills the successor with it), systemd treats the successor
//! as an alien `MAINPID=` it cannot wait for, a shell gets its prompt back. So, before the
//! runtime starts, the first process becomes this small supervisor — no tokio, no user code —
//! and runs the generations beneath it, as HAProxy's master-worker mode does:
//!
//! ```text
//! container runtime / systemd / shell
//! └── supervisor (stable pid)      follows the current generation, forwards signals to it,
//!     │                            reaps every child (and, as PID 1, every orphan), relays
//!     │                            READY / RELOADING / STOPPING upstream, exits with the
//!     │                            status of the last generation
//!     ├── generation N    (draining, exits when done)
//!     └── generation N+1  (serving)
//! ```
//!
//! Generations hand over to each other exactly as without a supervisor; the supervisor only
//! listens. Each generation gets one end of a datagram socketpair (`HOTRESTART_SUPERVISOR_FD`)
//! and speaks the `sd_notify` language on it: `READY=1\nMAINPID=<pid>` when it serves (also
//! after a rollback), `RELOADING=1`, `STOPPING=1`, and `X_HOTRESTART_EXITED=<pid> <status>`
//! when a successor it spawned exits while it still is that successor's parent.
//!
//! **Never mistaking a handover for an exit.** The old generation exits soon after its
//! successor's READY, maybe before the supervisor has read anything. The order is fixed by
//! construction: a successor queues its `MAINPID=` on the supervisor's socket *before* it
//! sends READY to the old process, and an old process that rolls back queues its own
//! `MAINPID=` *before* it kills the successor. So when the current generation is seen to exit,
//! every announcement that could have replaced it is already in the socket's queue: the
//! supervisor reads the queue to the end before it decides that the service ended.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::sys;

mod decide;
mod start;

pub(crate) use decide::wanted;

/// Signals the supervisor forwards to the current generation.
const FORWARDED: [Signal; 6] = [
    Signal::SIGHUP,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];
/// How long the exit status of a current generation that is not the supervisor's child (its
/// predecessor, still draining, is its parent) may take to be reported.
const STATUS_GRACE: Duration = Duration::from_secs(5);
/// What the supervisor remembers of one generation.
struct Generation {
    pid: i32,
    /// Readable once the process has exited; `None` where `pidfd_open` is unavailable.
    pidfd: Option<OwnedFd>,
    /// Seen exited: its pidfd stays readable for good, so it is polled no more.
    gone: std::cell::Cell<bool>,
}

impl Generation {
    fn new(pid: i32) -> Generation {
        Generation {
            pid,
            pidfd: sys::pidfd_open(pid).ok(),
            gone: std::cell::Cell::new(false),
        }
    }

    /// Exited, whoever reaped it.
    fn exited(&self) -> bool {
        if self.gone.get() {
            return true;
        }
        let exited = match &self.pidfd {
            Some(fd) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
            }
            None => !sys::process_runs(self.pid),
        };
        self.gone.set(exited);
        exited
    }
}

/// The current generation's end, as the supervisor learns it.
enum Ending {
    /// Still serving, or replaced.
    No,
    /// Exited with this wait status.
    Status(i32),
    /// Exited; its status is awaited from its parent until this instant.
    Awaiting(Instant),
}

struct Supervisor {
    me: u32,
    sock: UnixDatagram,
    signals: SignalFd,
    upstream: Option<OsString>,
    /// The pid of the generation that serves; always one of `alive`.
    current: i32,
    /// Every generation not yet seen to exit (the current one included).
    alive: Vec<Generation>,
    /// Wait statuses: of children reaped here, and reported by a generation's parent.
    statuses: HashMap<i32, i32>,
    /// The current generation said READY: signals other than a stop may be forwarded.
    ready: bool,
    /// SIGHUP held until the current generation is ready (a generation still starting up
    /// has no handler yet: the signal would kill it).
    held_hup: bool,
    /// A stop was asked for: each new current generation gets it too.
    stop: Option<Signal>,
    told_upstream_ready: bool,
    /// Since when the exit status of the current generation (by pid) is awaited.
    awaiting: Option<(i32, Instant)>,
    /// A restart began (`RELOADING=1`) and no generation said READY since.
    reloading: Option<Instant>,
    /// How long a successor may take to announce itself.
    ready_timeout: Duration,
}

/// Runs the supervisor and returns its exit code. Only called from `run_main`, while the
/// process has a single thread.
pub(crate) fn run(ready_timeout: Duration) -> i32 {
    // The operator's override, as the generations read it.
    let ready_timeout = std::env::var(sys::ENV_READY_TIMEOUT)
        .ok()
        .and_then(|t| crate::options::parse_duration(&t).ok())
        .unwrap_or(ready_timeout);
    match start::start(ready_timeout) {
        Ok(mut s) => s.run(),
        Err(e) => {
            say(format_args!("cannot start generation 0: {e}"));
            1
        }
    }
}

/// One line to stderr; a closed stderr (a terminal gone, a broken log pipe) is ignored, never
/// fatal: the supervisor must outlive its audience.
fn say(what: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let line = format!("hotrestart supervisor[{}]: {what}\n", std::process::id());
    let _ = std::io::stderr().write_all(line.as_bytes());
}
impl Supervisor {
    fn run(&mut self) -> i32 {
        loop {
            let status = match self.ending() {
                Ending::No => None,
                Ending::Status(status) => Some(status),
                Ending::Awaiting(until) if Instant::now() >= until => {
                    say(format_args!(
                        "generation pid {} exited and its exit status was not reported within {STATUS_GRACE:?}: exiting with status 1",
                        self.current
                    ));
                    Some(256) // exit code 1
                }
                Ending::Awaiting(_) => None,
            };
            if let Some(status) = status {
                match self.finish(status) {
                    Some(code) => return code,
                    None => continue, // a generation announced itself meanwhile: it serves on
                }
            }
            self.wait_for_events(Duration::from_millis(200));
        }
    }

    /// Blocks until a signal, a message or the current generation's exit, or `limit`.
    fn wait_for_events(&mut self, limit: Duration) {
        {
            let mut fds = vec![
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.sock.as_fd(), PollFlags::POLLIN),
            ];
            // Generations still running: an exited one's pidfd would wake poll at once.
            for g in self.alive.iter().filter(|g| !g.gone.get()) {
                if let Some(fd) = &g.pidfd {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                }
            }
            let timeout = PollTimeout::try_from(limit).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    say(format_args!("poll failed: {e}"));
                    std::thread::sleep(limit);
                }
            }
        }
        // Messages first: a signal goes to the newest current generation.
        self.read_messages();
        self.read_signals();
    }

    /// Whether the current generation has ended without a successor. Every queued message
    /// is read first: a successor's announcement precedes its predecessor's exit.
    fn ending(&mut self) -> Ending {
        self.reap();
        self.prune();
        if !self.current_exited() {
            return Ending::No;
        }
        self.read_messages();
        if !self.current_exited() {
            return Ending::No; // replaced by an announced successor
        }
        if let Some(&status) = self.statuses.get(&self.current) {
            return Ending::Status(status);
        }
        // Not our child: its parent (the previous generation, draining) reaps it and reports
        // the status, or rolls back and announces itself.
        let pid = self.current;
        let since = match self.awaiting {
            Some((p, at)) if p == pid => at,
            _ => self.awaiting.insert((pid, Instant::now())).1,
        };
        Ending::Awaiting(since + STATUS_GRACE)
    }

    /// Collects every exited child: generations and, as PID 1 or subreaper, orphans.
    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes only into the local `status`.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if self.alive.iter().any(|g| g.pid == pid) {
                self.statuses.insert(pid, status);
            }
        }
    }

    fn current_exited(&self) -> bool {
        self.alive
            .iter()
            .find(|g| g.pid == self.current)
            .is_none_or(Generation::exited)
    }

    /// Forgets generations that exited, other than the current one.
    fn prune(&mut self) {
        let current = self.current;
        self.alive.retain(|g| g.pid == current || !g.exited());
        let alive = &self.alive;
        self.statuses
            .retain(|pid, _| alive.iter().any(|g| g.pid == *pid));
    }

    fn read_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match sig {
                Signal::SIGCHLD => self.reap(),
                Signal::SIGHUP if !self.ready => {
                    if !self.held_hup {
                        say(format_args!(
                            "SIGHUP before generation pid {} is ready: held until it is",
                            self.current
                        ));
                    }
                    self.held_hup = true;
                }
                Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => {
                    self.stop = Some(sig);
                    self.forward(sig);
                }
                _ => self.forward(sig),
            }
        }
    }

    /// Passes `sig` to the serving generation, through its pidfd where there is one (never to
    /// a process that reused the pid of one that exited).
    fn forward(&self, sig: Signal) {
        let pidfd = self
            .alive
            .iter()
            .find(|g| g.pid == self.current)
            .and_then(|g| g.pidfd.as_ref());
        let sent = match pidfd {
            Some(fd) => sys::pidfd_signal(fd.as_fd(), sig as i32).map_err(|e| e.to_string()),
            None => nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.current), sig)
                .map_err(|e| e.to_string()),
        };
        match sent {
            Ok(()) => say(format_args!("{sig:?} → generation pid {}", self.current)),
            Err(e) => say(format_args!(
                "{sig:?} could not be passed to generation pid {}: {e}",
                self.current
            )),
        }
    }

    fn read_messages(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.message(&text);
        }
    }

    fn message(&mut self, text: &str) {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        };
        if let Some(report) = field(sys::NOTIFY_SUCCESSOR_EXITED) {
            let mut parts = report.split_whitespace().map(str::parse::<i32>);
            if let (Some(Ok(pid)), Some(Ok(status))) = (parts.next(), parts.next()) {
                self.statuses.insert(pid, status);
            }
        }
        if field("READY") == Some("1") {
            let pid = field("MAINPID").and_then(|p| p.parse::<i32>().ok());
            if let Some(pid) = pid.filter(|&p| p != self.current) {
                say(format_args!(
                    "generation pid {pid} serves (was pid {})",
                    self.current
                ));
                self.current = pid;
                if !self.alive.iter().any(|g| g.pid == pid) {
                    self.alive.push(Generation::new(pid));
                }
                if let Some(sig) = self.stop {
                    // A stop that reached the old generation during its handover.
                    self.forward(sig);
                }
            }
            self.ready = true;
            self.reloading = None;
            self.upstream(if self.told_upstream_ready {
                "READY=1".to_owned()
            } else {
                format!("READY=1\nMAINPID={}", self.me)
            });
            self.told_upstream_ready = true;
            if std::mem::take(&mut self.held_hup) && self.stop.is_none() {
                self.forward(Signal::SIGHUP);
            }
        } else if field("RELOADING") == Some("1") {
            self.reloading = Some(Instant::now());
            self.upstream(text.to_owned());
        } else if field("STOPPING") == Some("1") {
            self.upstream("STOPPING=1".to_owned());
        }
    }

    fn upstream(&self, state: String) {
        if let Some(socket) = &self.upstream {
            if let Err(e) = crate::notify::send_to(socket, &state) {
                say(format_args!("sd_notify {state:?} failed: {e}"));
            }
        }
    }

    /// The service ended: wait for the generations still draining, then hand back the
    /// status of the last one.
    /// `None` if a generation announced itself while the others drained: the service goes on.
    fn finish(&mut self, status: i32) -> Option<i32> {
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            1
        };
        let how = if libc::WIFSIGNALED(status) {
            format!("was killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("exited with status {code}")
        };
        say(format_args!(
            "generation pid {} {how} without a successor: the service ends",
            self.current
        ));
        let ended = self.current;
        loop {
            self.reap();
            if self.current != ended && !self.current_exited() {
                say(format_args!(
                    "generation pid {} serves: the service goes on",
                    self.current
                ));
                self.awaiting = None;
                return None;
            }
            self.alive.retain(|g| !g.exited());
            // A generation killed in the middle of a handover leaves its successor here (it
            // was re-parented): that one may still take over, from the state file, and
            // announce itself; it gets the ready timeout to do so.
            let successor_may_come = self
                .reloading
                .is_some_and(|since| since.elapsed() < self.ready_timeout + Duration::from_secs(1))
                && !children(self.me).is_empty();
            if self.alive.is_empty() && !successor_may_come {
                break;
            }
            // Older generations finish their drain (bounded by their drain timeout).
            self.wait_for_events(Duration::from_millis(200));
        }
        self.end_orphans();
        say(format_args!("exiting with status {code}"));
        Some(code)
    }

    /// Children left that are not generations (orphans re-parented here): asked to stop, and
    /// killed after 2 s, so that nothing outlives the main process.
    fn end_orphans(&mut self) {
        let me = self.me;
        let children = || children(me);
        let left = children();
        if left.is_empty() {
            return;
        }
        say(format_args!(
            "stopping the processes left beneath it: {left:?}"
        ));
        for &pid in &left {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !children().is_empty() {
            std::thread::sleep(Duration::from_millis(20));
            self.reap();
        }
        for pid in children() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
        self.reap();
    }
}

/// The live children of `pid` (`/proc/<pid>/task/<tid>/children`; the supervisor has one
/// thread, so one file), zombies left out.
fn children(pid: u32) -> Vec<i32> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    text.split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|&p| sys::process_runs(p))
        .collect()
}
