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
use crate::handoff::{self, Frame};
use crate::hooks::{self, HookContext};
use crate::snapshot;
use crate::sys;

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
    };
    let result = attempt.handover(inner).await;
    let Attempt {
        generation,
        started,
        successor,
        quiesced_at,
        chan,
    } = attempt;
    // Committed, or about to be killed and reaped here: not to be killed by pid any more.
    inner.successor.lock().unwrap().take();
    match result {
        Ok(Delivered {
            state_bytes,
            connections,
            announces,
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
}

impl Attempt {
    /// The protocol, top to bottom; an `Err` is the one-line reason for the rollback.
    async fn handover(&mut self, inner: &Inner) -> Result<Delivered, String> {
        let (generation, started) = (self.generation, self.started);
        let ready = inner.ready.get().ok_or("the service is not ready yet")?;
        inner.notifier.reloading();
        let deadline = tokio::time::Instant::from_std(started + inner.options.ready_timeout);
        let (ours, theirs) = StdUnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let child = spawn(inner, &theirs, generation)
            .map_err(|e| format!("cannot start {}: {e}", inner.exe.display()))?;
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
            return Err(broken(child, pid, "before HELLO", e).await);
        }
        ours.set_nonblocking(true).map_err(|e| e.to_string())?;
        let chan = self
            .chan
            .insert(UnixStream::from_std(ours).map_err(|e| e.to_string())?);

        let capabilities = expect(
            chan,
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
            inner.handover.outbox.open();
        }
        tracing::debug!(
            pid,
            init_ms = millis(started.elapsed()),
            "successor prepared: quiescing"
        );

        self.quiesced_at = Some(Instant::now());
        inner.phase.send_replace(Phase::Quiesced);
        let busy = inner.handover.work.idle(inner.options.drain_timeout).await;
        inner.handover.work.reported(busy);
        let left = busy + inner.handover.work.take_cut();
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
                handoff::write_frame(chan, handoff::TAG_PLAN, &[handoff::CAP_CONNECTIONS]).await
            {
                return Err(broken(child, pid, "before the snapshot", e).await);
            }
        }
        deliver(chan, child, pid, deadline, Delivery::Snapshot(&frame)).await?;
        let mut connections = 0;
        if hand_connections {
            let parcels = inner.handover.outbox.take();
            connections = parcels.len();
            deliver(chan, child, pid, deadline, Delivery::Connections(&parcels)).await?;
        }
        expect(
            chan,
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
