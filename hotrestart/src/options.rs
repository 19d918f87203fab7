//! Timeouts and paths, with their defaults and the operators' environment overrides.

use std::path::PathBuf;
use std::time::Duration;

/// Default for [`Options::ready_timeout`]: the successor's whole start-up, spawn to READY.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`Options::drain_timeout`]: how long in-flight work may take to finish.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`Options::snapshot_timeout`]: how long the snapshot waits for requests still
/// computing when the successor is ready to take over. Nothing is accepted meanwhile (new
/// connections queue in the kernel, none is refused), so this is the worst accept gap a slow
/// handler can cause; one second covers ordinary handlers (a database round trip, a call to
/// another service) while keeping that gap under what a client's retry or timeout would notice.
pub const DEFAULT_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(1);

/// How a hotrestart process behaves. Built by `#[hot_main(...)]`; each value can be overridden
/// by the operator through an environment variable, which wins over the macro argument.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Spawn → READY budget of a successor (`HOTRESTART_READY_TIMEOUT`). Default 30s.
    pub ready_timeout: Duration,
    /// How long in-flight work and long-lived connections (WebSockets, event streams, gRPC
    /// streams) may run after this process stops accepting (`HOTRESTART_DRAIN_TIMEOUT`).
    /// Default 10s.
    pub drain_timeout: Duration,
    /// How long the snapshot waits for work that may still change `#[persist]` state: requests
    /// without a response yet, and [`Hot::track`](crate::Hot::track) guards
    /// (`HOTRESTART_SNAPSHOT_TIMEOUT`). Past it the snapshot is taken anyway and one log line
    /// counts what it did not wait for. Long-lived connections never hold it. Default 1s.
    pub snapshot_timeout: Duration,
    /// Where `#[persist]` state is written on a graceful exit and read at a cold start
    /// (`HOTRESTART_STATE_FILE`). Default: none, state lives only across hot restarts.
    pub state_file: Option<PathBuf>,
    /// The control socket (`HOTRESTART_CONTROL_SOCKET`), mode 0600. Default: none.
    pub control_socket: Option<PathBuf>,
    /// Hot-restart when the executable changes on disk, e.g. after `cargo build`
    /// (`HOTRESTART_WATCH_EXE=1`). For development. Default: off.
    pub watch_exe: bool,
    /// The operator's time limit for every hook (`HOTRESTART_HOOK_TIMEOUT`), over each hook's
    /// own `timeout` (default [`DEFAULT_HOOK_TIMEOUT`](crate::DEFAULT_HOOK_TIMEOUT)).
    pub hook_timeout: Option<Duration>,
    /// The operator's TLS handshake timeout for `http::tls::TlsListener`
    /// (`HOTRESTART_TLS_HANDSHAKE_TIMEOUT`; default 10s).
    pub tls_handshake_timeout: Option<Duration>,
    /// Hand idle HTTP/1.1 connections served by [`crate::http::serve`] to the successor
    /// instead of closing them (`HOTRESTART_HAND_OVER_CONNECTIONS=0` turns it off).
    /// Default: on.
    pub hand_over_connections: bool,
    /// Copy [`TrackedMap`](crate::TrackedMap) and [`TrackedBytes`](crate::TrackedBytes) fields
    /// to the successor while this process still serves, so that only what changed meanwhile
    /// is copied after the quiesce (`HOTRESTART_PRECOPY=0` turns it off: they are then copied
    /// whole after the quiesce, a map piece by piece, a byte buffer in the snapshot). Default:
    /// on.
    pub precopy: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ready_timeout: DEFAULT_READY_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            snapshot_timeout: DEFAULT_SNAPSHOT_TIMEOUT,
            state_file: None,
            control_socket: None,
            watch_exe: false,
            hand_over_connections: true,
            precopy: true,
            hook_timeout: None,
            tls_handshake_timeout: None,
        }
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h`: the grammar of `hotrestart-duration`, which the
/// macros use too.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    hotrestart_duration::parse_millis(text).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        // One grammar with the macro: no space between the number and its unit.
        assert!(parse_duration("5 s").is_err());
    }
}
