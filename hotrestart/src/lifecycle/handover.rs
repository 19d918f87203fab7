//! The old process's side of a hot restart: spawn the successor, HELLO, wait for PREPARED,
//! quiesce, hooks, PLAN/SNAPSHOT/CONNECTIONS, wait for READY; commit or roll back.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::{Duration, Instant};

use tokio::net::UnixStream;
use tokio::process::Child;

use crate::conns::Verdict;
use crate::drain::Phase;
use crate::error::{Error, Result};
use crate::handoff;
use crate::hooks::{self, HookContext, HookReason, HookWhen};
use crate::snapshot;
use crate::sys;

use super::precopy::{self, PreCopy};
use super::rollback::{Rollback, Stage};
use super::waits::{broken, expect, next_frame, step, unexpected};
use super::{millis, Inner, Restarted};

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
pub(super) async fn restart(inner: &Inner) -> Result<Restarted> {
    let mut attempt = Attempt {
        generation: inner.generation + 1,
        started: Instant::now(),
        successor: None,
        quiesced_at: None,
        chan: None,
        hooks_ran: false,
    };
    let result = attempt.handover(inner).await;
    let Attempt {
        generation,
        started,
        successor,
        quiesced_at,
        chan,
        hooks_ran,
    } = attempt;
    // Committed, or about to be killed and reaped here: not to be killed by pid any more.
    inner.successor.lock().unwrap().take();
    match result {
        Ok(Delivered {
            state_bytes,
            connections,
            announces,
            precopied,
        }) => {
            inner.handover.outbox.decide(Verdict::Moved);
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
                precopy_rounds: precopied.rounds,
                precopy_bytes: precopied.bytes,
            };
            tracing::info!(
                old_pid = restarted.old_pid,
                new_pid = restarted.new_pid,
                generation,
                elapsed_ms = millis(restarted.elapsed),
                accept_gap_ms = millis(restarted.accept_gap),
                state_bytes,
                connections,
                precopy_rounds = precopied.rounds,
                precopy_bytes = precopied.bytes,
                precopy_ms = millis(precopied.elapsed),
                last_delta_bytes = precopied.last_delta,
                precopy_early_bytes = precopied.early,
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
        Err(cause) => {
            let reason = cause.to_string();
            inner.handover.outbox.decide(Verdict::Kept);
            inner
                .history
                .lock()
                .unwrap()
                .push(format!("rolled back: {reason}"));
            // Killed while the channel is still open, so it never sees the channel end (and
            // never falls back to serving on its own); reaped; then this process announces
            // that it serves again. If the successor had announced itself, the supervisor
            // saw it die without being its parent and waits for word: this is it.
            if let Some(mut s) = successor {
                if let Some(mut child) = s.child.take() {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
            drop(chan);
            // This process's state is the live one again: requests are served, not refused.
            inner
                .handover
                .snapshot_taken
                .store(false, std::sync::atomic::Ordering::SeqCst);
            // What the `before_restart` hooks closed is reopened before anything is accepted.
            if hooks_ran {
                if let Some(ready) = inner.ready.get() {
                    hooks::run_all(
                        &HookContext {
                            state: ready.any.clone(),
                            reason: HookReason::Rollback,
                        },
                        HookWhen::OnRollback,
                        inner.options.hook_timeout,
                    )
                    .await;
                }
            }
            inner.notifier.ready();
            inner.phase.send_replace(Phase::Serving);
            tracing::warn!(
                "restart rolled back: {reason}; pid {} keeps serving",
                std::process::id()
            );
            Err(Error::RolledBack { reason })
        }
    }
}

/// The state of one restart, in one place: what it is, since when, the successor it started,
/// and when this process stopped accepting.
struct Attempt {
    generation: u64,
    started: Instant,
    successor: Option<Successor>,
    quiesced_at: Option<Instant>,
    /// The handoff channel: kept open until the successor is dead on a rollback, so that it
    /// never sees the channel end and falls back to serving on its own.
    chan: Option<UnixStream>,
    /// The `#[before_restart]` hooks ran: a rollback runs the `#[on_rollback]` ones.
    hooks_ran: bool,
}

impl Attempt {
    /// The protocol, top to bottom; an `Err` is why it rolls back.
    async fn handover(&mut self, inner: &Inner) -> Result<Delivered, Rollback> {
        let (generation, started) = (self.generation, self.started);
        let ready = inner.ready.get().ok_or(Rollback::NotReady)?;
        inner.notifier.reloading();
        let deadline = tokio::time::Instant::from_std(started + inner.options.ready_timeout);
        let window = (deadline, inner.options.ready_timeout);
        // The tracked fields worth pre-copying (empty ones come, empty, in the snapshot). With
        // pre-copy on, the successor is asked to take the first round while it initialises.
        let mut fields = precopy::tracked(&*ready.save);
        if !inner.options.precopy {
            fields.retain(|(_, f)| f.whole_in_pieces());
        }
        let worth = fields.iter().any(|(_, f)| f.len_hint() > 0);
        let early = inner.options.precopy && worth;
        let (ours, theirs) = StdUnixStream::pair().map_err(Rollback::Channel)?;
        let child = spawn(inner, &theirs, generation, early).map_err(|source| Rollback::Spawn {
            exe: inner.exe.clone(),
            source,
        })?;
        drop(theirs);
        let pid = child.id().unwrap_or(0);
        *inner.successor.lock().unwrap() = Some((pid, sys::pidfd_open(pid as i32).ok()));
        let s = self.successor.insert(Successor {
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
            return Err(broken(child, pid, Stage::Hello, e).await);
        }
        ours.set_nonblocking(true).map_err(Rollback::Channel)?;
        let chan = self
            .chan
            .insert(UnixStream::from_std(ours).map_err(Rollback::Channel)?);

        // A successor of this version answers EARLY and takes the first round while it
        // initialises; an older one ignores the request and answers PREPARED when it is ready.
        let mut precopy: Option<PreCopy> = None;
        let mut prepared = None;
        if early {
            let first = next_frame(chan, child, pid, Stage::Prepared, window).await?;
            match first.tag {
                handoff::TAG_EARLY => {
                    let fields = std::mem::take(&mut fields);
                    let early = async |c: &mut UnixStream| PreCopy::early(c, fields).await;
                    precopy = Some(step(chan, child, pid, Stage::Precopy, window, early).await?);
                }
                handoff::TAG_PREPARED => prepared = Some(first.payload),
                _ => return Err(unexpected(first, pid, Stage::Prepared)),
            }
        }
        let prepared = match prepared {
            Some(payload) => payload,
            None => expect(chan, child, pid, Stage::Prepared, window).await?,
        };
        let capabilities = prepared.first().copied().unwrap_or(0);
        // Connections are handed over if the successor offered to take them; PLAN tells it that
        // CONNECTIONS frames (maybe none) will follow the snapshot.
        let planned = if inner.options.hand_over_connections {
            capabilities & handoff::CAPS_WITH_CONNECTIONS
        } else {
            0
        };
        let hand_connections = planned != 0;
        if hand_connections {
            inner.handover.outbox.open(
                planned & handoff::CAP_CONNECTIONS != 0,
                planned & handoff::CAP_CUSTOM != 0,
            );
        }
        // Tracked fields are copied while this process still serves, round after round (the
        // first one maybe already, while the successor initialised); only what changed after
        // the last one is sent after the quiesce. With pre-copy off they are sent whole after
        // the quiesce: a map piece by piece, the successor decoding one while this process
        // encodes the next (`Tracked::whole_in_pieces`).
        if let Some(p) = &mut precopy {
            // The successor's answer to the early offer, now that it knows its state's types.
            let accepted = async |c: &mut UnixStream| p.accepted(c).await;
            if !step(chan, child, pid, Stage::Precopy, window, accepted).await? {
                precopy = None;
            }
        } else if capabilities & handoff::CAP_PRECOPY != 0 && worth {
            let offer = async |c: &mut UnixStream| PreCopy::offer(c, fields).await;
            precopy = step(chan, child, pid, Stage::Precopy, window, offer).await?;
        }
        let mut precopied = Precopied::default();
        if let (Some(p), true) = (&mut precopy, inner.options.precopy) {
            let rounds = async |c: &mut UnixStream| p.rounds(c).await;
            let left = step(chan, child, pid, Stage::Precopy, window, rounds).await?;
            (precopied.rounds, precopied.bytes, precopied.elapsed) = (p.rounds, p.bytes, p.elapsed);
            precopied.early = p.early_bytes;
            tracing::debug!(
                pid,
                rounds = p.rounds,
                precopy_bytes = p.bytes,
                precopy_ms = millis(p.elapsed),
                left,
                "state pre-copied while serving"
            );
        }
        tracing::debug!(
            pid,
            init_ms = millis(started.elapsed()),
            "successor prepared: quiescing"
        );

        self.quiesced_at = Some(Instant::now());
        inner.phase.send_replace(Phase::Quiesced);
        // What may still change the state: requests without a response yet, `track` guards.
        // Long-lived connections are not waited for: the accept gap must not depend on them.
        let busy = inner
            .handover
            .work
            .idle(inner.options.snapshot_timeout)
            .await;
        inner.handover.work.reported(busy);
        let left = busy + inner.handover.work.take_cut();
        if left > 0 {
            tracing::warn!(
                left,
                "{left} request(s) or tracked task(s) still running at the snapshot timeout ({:?}): the snapshot is taken without waiting for them; what they change from now on is lost",
                inner.options.snapshot_timeout
            );
        }
        self.hooks_ran = true;
        hooks::run_all(
            &HookContext {
                state: ready.any.clone(),
                reason: HookReason::Restart,
            },
            HookWhen::BeforeRestart,
            inner.options.hook_timeout,
        )
        .await;
        inner
            .handover
            .snapshot_taken
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut skip = Vec::new();
        if let Some(p) = &mut precopy {
            let last = async |c: &mut UnixStream| p.last_round(c).await;
            precopied.last_delta = step(chan, child, pid, Stage::Precopy, window, last).await?;
            skip = p.names();
        }
        let encoding = Instant::now();
        let frame = snapshot::encode_without(&*ready.save, &skip, |w| inner.save_internal(w))
            .map_err(Rollback::Snapshot)?;
        let encode_ms = millis(encoding.elapsed());
        let sending = Instant::now();
        if hand_connections {
            if let Err(e) = handoff::write_frame(chan, handoff::TAG_PLAN, &[planned]).await {
                return Err(broken(child, pid, Stage::Plan, e).await);
            }
        }
        let snapshot = async |c: &mut UnixStream| {
            handoff::write_frame_parts(c, handoff::TAG_SNAPSHOT, frame.len(), frame.slices()).await
        };
        step(chan, child, pid, Stage::Snapshot, window, snapshot).await?;
        tracing::debug!(
            state_bytes = frame.len(),
            encode_ms,
            send_ms = millis(sending.elapsed()),
            "snapshot sent"
        );
        let mut connections = 0;
        if hand_connections {
            let parcels = inner.handover.outbox.take();
            connections = parcels.len();
            let send = async |c: &mut UnixStream| handoff::send_connections(c, &parcels).await;
            step(chan, child, pid, Stage::Connections, window, send).await?;
        }
        expect(chan, child, pid, Stage::Ready, window).await?;
        Ok(Delivered {
            state_bytes: frame.len(),
            connections,
            announces: capabilities & handoff::CAP_ANNOUNCES != 0,
            precopied,
        })
    }
}

/// What a committed handover delivered.
struct Delivered {
    state_bytes: usize,
    connections: usize,
    /// The successor announces itself to the supervisor.
    announces: bool,
    precopied: Precopied,
}

/// What pre-copy sent: rounds and bytes while serving, then the last delta after the quiesce.
#[derive(Default)]
struct Precopied {
    rounds: u32,
    bytes: u64,
    elapsed: Duration,
    last_delta: u64,
    /// Bytes sent while the successor still initialised.
    early: u64,
}

fn spawn(
    inner: &Inner,
    theirs: &StdUnixStream,
    generation: u64,
    early: bool,
) -> std::io::Result<Child> {
    let fd = theirs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(&inner.exe);
    cmd.args(&inner.args)
        .env(sys::ENV_HANDOFF_FD, fd.to_string())
        .env(sys::ENV_GENERATION, generation.to_string())
        .envs(inner.operator_env.iter().map(|(k, v)| (k, v)))
        .envs(inner.notifier.socket().map(|s| (sys::ENV_NOTIFY_SOCKET, s)))
        // The generation it is for: a value an older successor passed on (as an operator
        // setting it does not know) names another generation and is not obeyed.
        .envs(early.then(|| (sys::ENV_PRECOPY_EARLY, generation.to_string())))
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
