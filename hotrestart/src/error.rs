//! The one error type of the public API.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in hotrestart, as a matchable enum. `Debug` prints the message,
/// so `main` returning this error tells the operator what happened in words.
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    Io {
        /// What was being done.
        context: String,
        /// The system's error.
        source: io::Error,
    },
    /// A named listener could not be adopted or bound.
    Listener {
        /// The listener's name, as given to `hot.tcp`, `hot.unix` or `hot.udp`.
        name: String,
        /// Why, in words.
        reason: String,
    },
    /// The environment handed to this process (`LISTEN_FDS`, `HOTRESTART_*`) is malformed.
    Environment {
        /// Why, in words.
        reason: String,
    },
    /// A snapshot could not be decoded: corrupt, truncated, foreign, or from a newer format.
    Snapshot {
        /// Why, in words.
        reason: String,
    },
    /// A `#[persist]` field's type changed between the writer and this build.
    TypeChanged {
        /// The field's name.
        field: String,
        /// The type name the snapshot holds.
        stored: String,
        /// The type name this build has.
        expected: String,
    },
    /// A `#[persist]` field's value could not be (de)serialized.
    Field {
        /// The field's name.
        field: String,
        /// Why, in words.
        reason: String,
    },
    /// The state file could not be read or written.
    StateFile {
        /// The state file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// The handoff with the other generation broke (protocol violation, timeout, early exit).
    Handoff {
        /// Why, in words.
        reason: String,
    },
    /// A restart was triggered while another one was running.
    RestartInProgress,
    /// A restart was refused before it began (e.g. too many generations still alive).
    Refused {
        /// Why, in words.
        reason: String,
    },
    /// A restart was attempted and rolled back; the old process kept serving.
    RolledBack {
        /// Why, in words: the successor's exit, its REJECT, a timeout.
        reason: String,
    },
    /// The process is shutting down and takes no more restarts.
    ShuttingDown,
    /// A TLS certificate or key cannot be used (unreadable, malformed, or not a pair).
    Tls {
        /// The file at fault.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// A `#[before_restart]` or `#[on_rollback]` hook cannot run with this program's state:
    /// found at `Hot::ready`, before the service serves.
    Hook {
        /// The hook's path (`crate::module::function`).
        hook: String,
        /// Why, with the signature to write instead.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
    pub(crate) fn handoff(reason: impl Into<String>) -> Self {
        Error::Handoff {
            reason: reason.into(),
        }
    }
    pub(crate) fn snapshot(reason: impl Into<String>) -> Self {
        Error::Snapshot {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Listener { name, reason } => write!(f, "listener `{name}`: {reason}"),
            Error::Environment { reason } => write!(f, "bad inherited environment: {reason}"),
            Error::Snapshot { reason } => write!(f, "unreadable snapshot: {reason}"),
            Error::TypeChanged { field, stored, expected } => write!(
                f,
                "#[persist] field `{field}` changed type: the snapshot holds `{stored}`, this build expects `{expected}`"
            ),
            Error::Field { field, reason } => write!(f, "#[persist] field `{field}`: {reason}"),
            Error::StateFile { path, reason } => {
                write!(f, "state file {}: {reason}", path.display())
            }
            Error::Handoff { reason } => write!(f, "handoff failed: {reason}"),
            Error::RestartInProgress => f.write_str("a restart is already in progress"),
            Error::Refused { reason } => f.write_str(reason),
            Error::RolledBack { reason } => write!(f, "restart rolled back: {reason}"),
            Error::ShuttingDown => f.write_str("the process is shutting down"),
            Error::Hook { hook, reason } => write!(f, "hook `{hook}`: {reason}"),
            Error::Tls { path, reason } => write!(f, "TLS: {}: {reason}", path.display()),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `Result` with hotrestart's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
