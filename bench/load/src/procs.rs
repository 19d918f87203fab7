//! Processes: spawn servers, send signals, reap, read memory.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

fn statuses() -> &'static Mutex<HashMap<i32, i32>> {
    static S: OnceLock<Mutex<HashMap<i32, i32>>> = OnceLock::new();
    S.get_or_init(Default::default)
}

/// Makes this process the reaper of every generation of every server it starts.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments changes only this process's attributes.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
}

/// Raises this process's soft open-file limit to its hard limit.
pub fn raise_nofile() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write only the local `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

pub fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        statuses().lock().unwrap().insert(pid, status);
    }
}

/// Exited, reaped here, or gone (a generation beneath a supervisor is reaped there).
pub fn exited(pid: u32) -> bool {
    reap();
    if statuses().lock().unwrap().contains_key(&(pid as i32)) {
        return true;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')').and_then(|i| stat[i + 2..].chars().next()).is_none_or(|s| s == 'Z')
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill with integer arguments, on a server this benchmark started (or its successor).
    unsafe { libc::kill(pid as i32, sig) };
}

/// Starts `bin` with `env`, logging to `log`. Returns its pid.
pub fn spawn(bin: &Path, env: &[(String, String)], log: &Path) -> u32 {
    let file = fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let child = Command::new(bin)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    child.id()
}

/// Resident set size in bytes, if the process is alive.
pub fn rss(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Live children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        let mut rest = stat[close + 2..].split(' ');
        let state = rest.next().unwrap_or("?");
        let ppid: u32 = rest.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == pid && state != "Z" {
            out.push(child);
        }
    }
    out
}

/// Kills every live process started from `bin`.
pub fn kill_all(bin: &Path) {
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if fs::read_link(entry.path().join("exe")).map(|e| e == bin).unwrap_or(false) {
            signal(pid, libc::SIGKILL);
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    reap();
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hrbench-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}
