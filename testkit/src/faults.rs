//! Fault injection: the `faulty` example, broken binaries, and setups run between fork and
//! exec (limits, dropped capabilities).

use std::fs;
use std::path::Path;

use crate::service::Service;

pub const EXIT_AT_ONCE: &[u8] = b"#!/bin/sh\necho 'broken build: exiting' >&2\nexit 3\n";
pub const HANG: &[u8] = b"#!/bin/sh\nexec sleep 600\n";

pub fn is_file(p: &Path) -> bool {
    p.is_file()
}

/// Runs in the forked child between fork and exec.
pub type PreExec = Box<dyn FnMut() -> std::io::Result<()> + Send + Sync>;

impl Service {
    /// Prepares the `faulty` example with its plan file (`<dir>/plan`, empty: no fault).
    pub fn prepare_faulty(env: &[(&str, &str)]) -> Service {
        let mut svc = Service::prepare("faulty", env);
        let plan = svc.dir.path().join("plan");
        fs::write(&plan, "").unwrap();
        svc.env
            .push(("FAULTY_PLAN".into(), plan.to_str().unwrap().to_owned()));
        svc
    }

    /// Starts the `faulty` example, waiting until it serves.
    pub fn start_faulty(env: &[(&str, &str)]) -> Service {
        let mut svc = Service::prepare_faulty(env);
        svc.first_pid = svc.spawn();
        svc
    }

    /// Arms the faults of the `faulty` example (see its docs), replacing the previous plan.
    pub fn plan(&self, words: &str) {
        fs::write(self.dir.path().join("plan"), words).unwrap();
    }
}

/// A `PreExec` that makes file permissions apply to root too: drops `CAP_DAC_OVERRIDE` and
/// `CAP_DAC_READ_SEARCH` from the bounding set, so the exec'd program (and its successors)
/// never has them.
pub fn without_permission_override() -> PreExec {
    Box::new(|| {
        // linux/capability.h: CAP_DAC_OVERRIDE = 1, CAP_DAC_READ_SEARCH = 2.
        for cap in [1, 2] {
            // SAFETY: prctl with integer arguments changes only this (forked) process.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    })
}

/// A `PreExec` that simulates a full disk: a write that would make a file larger than `bytes`
/// fails (`EFBIG`, the process ignoring `SIGXFSZ`), as a write on a full filesystem fails with
/// `ENOSPC` part-way through.
pub fn file_size_limit(bytes: u64) -> PreExec {
    Box::new(move || {
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: bytes,
        };
        // SAFETY: setrlimit reads the local `limit`; signal installs SIG_IGN. Both are
        // async-signal-safe and change only this (forked) process.
        unsafe {
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
        Ok(())
    })
}

impl Service {
    /// Opens `GET /stream/{secs}` of the `faulty` example (a line every 100 ms: a response of
    /// no known length) and reads its first bytes, which it returns with the open connection.
    pub fn open_stream(&self, secs: u64) -> (std::net::TcpStream, Vec<u8>) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.addr()).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .unwrap();
        write!(stream, "GET /stream/{secs} HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
        let mut first = vec![0u8; 4096];
        let n = stream.read(&mut first).unwrap();
        first.truncate(n);
        assert!(
            String::from_utf8_lossy(&first).contains("200 OK"),
            "{:?}",
            String::from_utf8_lossy(&first)
        );
        (stream, first)
    }
}
