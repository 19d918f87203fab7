//! Timeouts and paths, with their defaults and the operators' environment overrides.

use std::path::PathBuf;
use std::time::Duration;

/// Default for [`Options::ready_timeout`]: the successor's whole start-up, spawn to READY.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`Options::drain_timeout`]: how long in-flight work may take to finish.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How a hotrestart process behaves. Built by `#[hot_main(...)]`; each value can be overridden
/// by the operator through an environment variable, which wins over the macro argument.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Spawn → READY budget of a successor (`HOTRESTART_READY_TIMEOUT`). Default 30s.
    pub ready_timeout: Duration,
    /// How long in-flight work may run after this process stops accepting
    /// (`HOTRESTART_DRAIN_TIMEOUT`). Default 10s.
    pub drain_timeout: Duration,
    /// Where `#[persist]` state is written on a graceful exit and read at a cold start
    /// (`HOTRESTART_STATE_FILE`). Default: none, state lives only across hot restarts.
    pub state_file: Option<PathBuf>,
    /// The control socket (`HOTRESTART_CONTROL_SOCKET`), mode 0600. Default: none.
    pub control_socket: Option<PathBuf>,
    /// Hot-restart when the executable changes on disk, e.g. after `cargo build`
    /// (`HOTRESTART_WATCH_EXE=1`). For development. Default: off.
    pub watch_exe: bool,
    /// Hand idle HTTP/1.1 connections served by [`crate::http::serve`] to the successor
    /// instead of closing them (`HOTRESTART_HAND_OVER_CONNECTIONS=0` turns it off).
    /// Default: on.
    pub hand_over_connections: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ready_timeout: DEFAULT_READY_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            state_file: None,
            control_socket: None,
            watch_exe: false,
            hand_over_connections: true,
        }
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h` (an integer and a unit).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("expected a whole number and a unit, like `5s` or `250ms`, got `{text}`")
    })?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use ms, s, m or h"
            ))
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
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
    }
}
