//! The service's own account of itself, read from its control socket (`status`): which pid
//! serves, in which phase, and the outcome of each restart it attempted. Tests wait on these
//! rather than on the wording of log lines.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::service::{Service, WAIT};

/// The control variable the harness sets for every service it starts (unless a test sets it).
pub const CONTROL_SOCKET_VAR: &str = "HOTRESTART_CONTROL_SOCKET";

/// One `status` reply, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub generation: u64,
    pub pid: u32,
    /// `Serving`, `Quiesced` or `Stopping`.
    pub phase: String,
    /// Each restart this process attempted, oldest first: `handed over to pid …` or
    /// `rolled back: <reason>`.
    pub history: Vec<String>,
}

impl Status {
    /// The reasons of the rollbacks in the history.
    pub fn rollbacks(&self) -> Vec<String> {
        self.history
            .iter()
            .filter_map(|h| h.strip_prefix("rolled back: "))
            .map(str::to_owned)
            .collect()
    }

    /// Parses `generation=… pid=… uptime_s=… phase=… restarts_attempted=… history=[…] …`.
    pub fn parse(line: &str) -> Result<Status, String> {
        let value = |key: &str| -> Result<&str, String> {
            let pat = format!("{key}=");
            let start = line
                .split(' ')
                .find_map(|w| w.strip_prefix(pat.as_str()))
                .ok_or_else(|| format!("no {key}= in {line:?}"))?;
            Ok(start)
        };
        let number = |key: &str| -> Result<u64, String> {
            value(key)?
                .parse()
                .map_err(|_| format!("{key}= is not a number in {line:?}"))
        };
        let history = line
            .find(" history=[")
            .map(|i| parse_string_list(&line[i + " history=".len()..]))
            .ok_or_else(|| format!("no history= in {line:?}"))??;
        Ok(Status {
            generation: number("generation")?,
            pid: number("pid")? as u32,
            phase: value("phase")?.to_owned(),
            history,
        })
    }
}

/// Parses a Rust `Debug` list of strings (`["a", "b \"c\""]`) from the start of `text`.
fn parse_string_list(text: &str) -> Result<Vec<String>, String> {
    let mut chars = text.chars();
    if chars.next() != Some('[') {
        return Err(format!("not a list: {text:?}"));
    }
    let mut out = Vec::new();
    loop {
        match chars.next() {
            Some(']') => return Ok(out),
            Some(',' | ' ') => {}
            Some('"') => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(c) => s.push(c),
                            None => return Err("unterminated escape".into()),
                        },
                        Some(c) => s.push(c),
                        None => return Err(format!("unterminated string in {text:?}")),
                    }
                }
                out.push(s);
            }
            other => return Err(format!("unexpected {other:?} in {text:?}")),
        }
    }
}

impl Service {
    /// The control socket of this service: the harness gives each service one.
    pub fn control_socket(&self) -> PathBuf {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == CONTROL_SOCKET_VAR)
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| self.dir.path().join("control.sock"))
    }

    /// Asks the serving process for its status (answered once it serves: a process in the
    /// middle of a handover answers after it).
    pub fn status(&self) -> Result<Status, String> {
        let mut stream = UnixStream::connect(self.control_socket())
            .map_err(|e| format!("control socket: {e}"))?;
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
            .write_all(b"status\n")
            .map_err(|e| format!("control socket: {e}"))?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .map_err(|e| format!("control socket: {e}"))?;
        Status::parse(line.trim_end())
    }

    /// Waits until the serving process has rolled back `n` restarts and serves again; returns
    /// its status (whose `pid` is the process that rolled back).
    pub fn wait_rollbacks(&self, n: usize) -> Status {
        let start = Instant::now();
        loop {
            if let Ok(status) = self.status() {
                if status.rollbacks().len() >= n && status.phase == "Serving" {
                    return status;
                }
            }
            assert!(
                start.elapsed() < WAIT,
                "no {n} rollback(s) in the status after {WAIT:?}: {:?}; log:\n{}",
                self.status(),
                self.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_parses() {
        let s = Status::parse(
            r#"generation=2 pid=42 uptime_s=1.5 phase=Serving restarts_attempted=2 history=["rolled back: successor pid 7 rejected the handover: field \"x\"", "handed over to pid 9 in 3.1 ms"] main_pid=40"#,
        )
        .unwrap();
        assert_eq!((s.generation, s.pid, s.phase.as_str()), (2, 42, "Serving"));
        assert_eq!(
            s.rollbacks(),
            ["successor pid 7 rejected the handover: field \"x\""]
        );
        assert_eq!(s.history.len(), 2);
        assert!(Status::parse("generation=1 pid=2").is_err());
    }
}
