//! The old process waiting on its successor: each step of the protocol on the channel runs
//! while the successor's exit and the ready deadline are watched, and a failure becomes the
//! one `Rollback` that says best what happened (the successor's REJECT if it sent one).

use std::time::Duration;

use tokio::net::UnixStream;
use tokio::process::Child;

use crate::handoff::{self, Frame};

use super::precopy;
use super::rollback::{Rollback, Stage};

/// The ready deadline, and the timeout it comes from (for the message).
pub(super) type Window = (tokio::time::Instant, Duration);

/// Runs `step` on the channel, watching the successor's exit and the deadline; a failure is
/// explained (see [`explained`]).
pub(super) async fn step<T>(
    chan: &mut UnixStream,
    child: &mut Child,
    pid: u32,
    stage: Stage,
    window: Window,
    step: impl AsyncFnOnce(&mut UnixStream) -> std::io::Result<T>,
) -> Result<T, Rollback> {
    let (deadline, ready_timeout) = window;
    let why = tokio::select! {
        done = step(&mut *chan) => match done {
            Ok(v) => return Ok(v),
            Err(e) => match stopped(e, pid, stage) {
                Ok(why) => why,
                Err(e) => broken(child, pid, stage, e).await,
            },
        },
        status = child.wait() => Rollback::Exited { pid, stage, status },
        _ = tokio::time::sleep_until(deadline) => Rollback::Timeout { pid, stage, ready_timeout },
    };
    Err(explained(chan, pid, why).await)
}

/// A pre-copy step that stopped for a reason of its own ([`precopy::Stopped`]), or the I/O
/// error it is.
fn stopped(e: std::io::Error, pid: u32, stage: Stage) -> Result<Rollback, std::io::Error> {
    if !e.get_ref().is_some_and(|e| e.is::<precopy::Stopped>()) {
        return Err(e);
    }
    let stopped = e
        .into_inner()
        .and_then(|e| e.downcast::<precopy::Stopped>().ok());
    Ok(match stopped.map(|b| *b) {
        Some(precopy::Stopped::Rejected(reason)) => Rollback::Rejected { pid, reason },
        Some(precopy::Stopped::OutOfTurn(tag)) => Rollback::OutOfTurn { pid, stage, tag },
        Some(precopy::Stopped::Encode(e)) => Rollback::Snapshot(e),
        None => unreachable!("checked above"),
    })
}

/// The successor's next frame, watching its exit and the deadline. Biased: a frame that is
/// already there (a REJECT) says more than the exit that follows it.
pub(super) async fn next_frame(
    chan: &mut UnixStream,
    child: &mut Child,
    pid: u32,
    stage: Stage,
    (deadline, ready_timeout): Window,
) -> Result<Frame, Rollback> {
    tokio::select! {
        biased;
        frame = handoff::read_frame(chan, handoff::MAX_CONTROL) => match frame {
            Ok(frame) => Ok(frame),
            Err(e) => Err(broken(child, pid, stage, e).await),
        },
        status = child.wait() => Err(Rollback::Exited { pid, stage, status }),
        _ = tokio::time::sleep_until(deadline) => Err(Rollback::Timeout { pid, stage, ready_timeout }),
    }
}

/// A frame other than the one awaited: the successor's REJECT, or a frame out of turn.
pub(super) fn unexpected(frame: Frame, pid: u32, stage: Stage) -> Rollback {
    match frame.tag {
        handoff::TAG_REJECT => Rollback::Rejected {
            pid,
            reason: String::from_utf8_lossy(&frame.payload).into_owned(),
        },
        tag => Rollback::OutOfTurn { pid, stage, tag },
    }
}

/// Waits for the frame `stage` awaits from the successor (PREPARED, READY); returns its
/// payload.
pub(super) async fn expect(
    chan: &mut UnixStream,
    child: &mut Child,
    pid: u32,
    stage: Stage,
    window: Window,
) -> Result<Vec<u8>, Rollback> {
    let frame = next_frame(chan, child, pid, stage, window).await?;
    if frame.tag == stage.awaited() {
        Ok(frame.payload)
    } else {
        Err(unexpected(frame, pid, stage))
    }
}

/// Explains a broken channel: usually the successor exited, which says more than EPIPE.
pub(super) async fn broken(
    child: &mut Child,
    pid: u32,
    stage: Stage,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Rollback {
    match tokio::time::timeout(Duration::from_secs(1), child.wait()).await {
        Ok(status) => Rollback::Exited { pid, stage, status },
        Err(_) => Rollback::Broke {
            pid,
            stage,
            source: source.into(),
        },
    }
}

/// `why`, unless the successor said why on the channel: a successor that refuses sends REJECT
/// and exits, possibly while the old process is still writing, and its reason says more than
/// the broken pipe or the exit. Nothing is read when `why` already is the successor's word or
/// this process's own failure.
async fn explained(chan: &mut UnixStream, pid: u32, why: Rollback) -> Rollback {
    if matches!(
        why,
        Rollback::Rejected { .. } | Rollback::OutOfTurn { .. } | Rollback::Snapshot(_)
    ) {
        return why;
    }
    let frame = tokio::time::timeout(
        Duration::from_millis(100),
        handoff::read_frame(chan, handoff::MAX_CONTROL),
    )
    .await;
    match frame {
        Ok(Ok(frame)) if frame.tag == handoff::TAG_REJECT => Rollback::Rejected {
            pid,
            reason: String::from_utf8_lossy(&frame.payload).into_owned(),
        },
        _ => why,
    }
}
