//! Why a restart rolled back, and where in the protocol it was: the one line an operator reads
//! (in the log and the control socket's status history).

use std::time::Duration;

use crate::error::Error;
use crate::handoff;

/// Where in the protocol a restart was when it failed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stage {
    Hello,
    Prepared,
    Precopy,
    Plan,
    Snapshot,
    Connections,
    Ready,
}

impl Stage {
    /// The frame the old process waits for at this stage (PREPARED, READY).
    pub(super) fn awaited(self) -> u8 {
        match self {
            Stage::Prepared => handoff::TAG_PREPARED,
            _ => handoff::TAG_READY,
        }
    }
}

impl std::fmt::Display for Stage {
    /// How a log line says when it happened: "before PREPARED", "while receiving the snapshot".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Hello => "before HELLO",
            Stage::Prepared => "before PREPARED",
            Stage::Precopy => "while receiving the pre-copied state",
            Stage::Plan => "before the snapshot",
            Stage::Snapshot => "while receiving the snapshot",
            Stage::Connections => "while receiving the connections",
            Stage::Ready => "before READY",
        })
    }
}

/// Why a restart rolled back: each kind, with what the operator needs to read in the one line
/// it becomes (its `Display`, carried by [`Error::RolledBack`] and the status history).
#[derive(Debug)]
pub(super) enum Rollback {
    /// `restart` before `ready`: there is no state to hand over yet.
    NotReady,
    /// The handoff channel could not be set up.
    Channel(std::io::Error),
    /// The successor's binary could not be started.
    Spawn {
        exe: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The successor exited (or could not be waited for).
    Exited {
        pid: u32,
        stage: Stage,
        status: std::io::Result<std::process::ExitStatus>,
    },
    /// The channel broke while the successor still ran.
    Broke {
        pid: u32,
        stage: Stage,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The successor refused, with its reason.
    Rejected { pid: u32, reason: String },
    /// The successor sent a frame out of turn.
    OutOfTurn { pid: u32, stage: Stage, tag: u8 },
    /// The ready timeout passed.
    Timeout {
        pid: u32,
        stage: Stage,
        ready_timeout: Duration,
    },
    /// The state could not be serialized.
    Snapshot(Error),
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rollback::NotReady => f.write_str("the service is not ready yet"),
            Rollback::Channel(e) => write!(f, "socketpair: {e}"),
            Rollback::Spawn { exe, source } => {
                write!(f, "cannot start {}: {source}", exe.display())
            }
            Rollback::Exited {
                pid,
                stage,
                status: Ok(status),
            } => write!(f, "successor pid {pid} exited ({status}) {stage}"),
            Rollback::Exited {
                pid,
                stage,
                status: Err(e),
            } => write!(
                f,
                "successor pid {pid} could not be waited for ({e}) {stage}"
            ),
            Rollback::Broke { pid, stage, source } => {
                write!(f, "handoff channel of pid {pid} broke {stage}: {source}")
            }
            Rollback::Rejected { pid, reason } => {
                write!(f, "successor pid {pid} rejected the handover: {reason}")
            }
            Rollback::OutOfTurn { pid, stage, tag } => {
                write!(
                    f,
                    "successor pid {pid} sent {} {stage}",
                    handoff::tag_name(*tag)
                )
            }
            Rollback::Timeout {
                pid,
                stage: stage @ (Stage::Precopy | Stage::Snapshot | Stage::Connections),
                ready_timeout,
            } => {
                let noun = match stage {
                    Stage::Precopy => "the pre-copied state",
                    Stage::Snapshot => "the snapshot",
                    _ => "the connections",
                };
                write!(
                    f,
                    "successor pid {pid} did not take {noun} within the ready timeout ({ready_timeout:?})"
                )
            }
            Rollback::Timeout {
                pid,
                stage,
                ready_timeout,
            } => write!(
                f,
                "successor pid {pid} not {} within the ready timeout ({ready_timeout:?})",
                handoff::tag_name(stage.awaited())
            ),
            Rollback::Snapshot(e) => write!(f, "cannot take the snapshot: {e}"),
        }
    }
}
