//! Test harness: runs the counter example as real processes on loopback.
//!
//! The test process makes itself a child subreaper, so every generation of the service ends up
//! as its child when its parent exits; one reaper (`reap`) collects exit statuses for all tests
//! of the binary. No test may call `Child::wait`: statuses are read from the reaper only.
#![allow(dead_code)]

pub mod keepalive;
pub mod podman;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(20);

static SUBREAPER: Once = Once::new();

/// Held while a binary is written and while a process is spawned: a fork by another test
/// thread while a binary file is open for writing would make its exec fail with ETXTBSY.
pub static FORK_LOCK: Mutex<()> = Mutex::new(());

fn statuses() -> &'static Mutex<HashMap<i32, i32>> {
    static S: OnceLock<Mutex<HashMap<i32, i32>>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Collects every exited child (ours or reparented to us).
pub fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only into the local `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        statuses().lock().unwrap().insert(pid, status);
    }
}

/// Exit code of `pid` once it has exited (None while it runs). Signals give 128 + signal.
pub fn exit_code(pid: u32) -> Option<i32> {
    reap();
    statuses().lock().unwrap().get(&(pid as i32)).map(|&s| {
        if libc::WIFEXITED(s) {
            libc::WEXITSTATUS(s)
        } else {
            128 + libc::WTERMSIG(s)
        }
    })
}

pub fn wait_exit(pid: u32, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(code) = exit_code(pid) {
            return code;
        }
        assert!(
            start.elapsed() < limit,
            "pid {pid} did not exit within {limit:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Path of a built example.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples; or run `cargo build --examples`",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running counter service: its own directory, binary copy, port, state file and log.
pub struct Service {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub port: u16,
    pub state_file: PathBuf,
    pub log: PathBuf,
    pub first_pid: u32,
    pub env: Vec<(String, String)>,
}

impl Service {
    pub fn start(env: &[(&str, &str)]) -> Service {
        Service::start_example("counter", env)
    }

    /// Starts example `name` from a copy of its binary, waiting until it serves.
    pub fn start_example(name: &str, env: &[(&str, &str)]) -> Service {
        let mut service = Service::prepare(name, env);
        service.first_pid = service.spawn();
        service
    }

    /// Copies example `name` into a new directory, without starting it.
    pub fn prepare(name: &str, env: &[(&str, &str)]) -> Service {
        SUBREAPER.call_once(|| {
            // SAFETY: prctl with integer arguments only changes this process's attributes.
            let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
            assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER failed");
        });
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join(name);
        {
            let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            fs::copy(example(name), &bin).unwrap();
        }
        Service {
            port: free_port(),
            state_file: dir.path().join("counter.state"),
            log: dir.path().join("counter.log"),
            bin,
            dir,
            first_pid: 0,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Starts the binary (again) with the same port, state file and log; waits until it serves.
    pub fn spawn(&self) -> u32 {
        let pid = self.spawn_with(None);
        self.wait_serving();
        pid
    }

    /// Starts the binary without waiting. `fd3`, if given, is passed as fd 3 (socket activation).
    pub fn spawn_with(&self, fd3: Option<std::os::fd::RawFd>) -> u32 {
        let setup: PreExec = match fd3 {
            None => Box::new(|| Ok(())),
            // dup2 leaves the new fd 3 without close-on-exec, so it crosses exec; dup2(3, 3)
            // would keep close-on-exec set: clear the flag instead.
            Some(fd) => Box::new(move || {
                // SAFETY: dup2/fcntl on integer fds touch no memory (async-signal-safe).
                let rc = unsafe {
                    if fd == 3 {
                        libc::fcntl(3, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(fd, 3)
                    }
                };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            }),
        };
        self.spawn_with_setup(setup)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn wait_serving(&self) {
        let start = Instant::now();
        while get(self.addr(), "/").map(|r| r.status) != Ok(200) {
            assert!(
                start.elapsed() < WAIT,
                "service did not start; log:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid serving now (from `x-pid`).
    pub fn pid(&self) -> u32 {
        get(self.addr(), "/").expect("service answers").pid
    }

    pub fn count(&self) -> u64 {
        let r = get(self.addr(), "/count").expect("GET /count");
        assert_eq!(r.status, 200);
        r.body.parse().unwrap()
    }

    pub fn hit(&self) -> u64 {
        let r = request(self.addr(), "POST", "/hit").expect("POST /hit");
        assert_eq!(r.status, 200);
        r.body.parse().unwrap()
    }

    pub fn signal(&self, pid: u32, sig: i32) {
        // SAFETY: kill with integer arguments; `pid` is a process this test started (or its
        // successor, which is our child by subreaping).
        assert_eq!(
            unsafe { libc::kill(pid as i32, sig) },
            0,
            "kill({pid}, {sig})"
        );
    }

    /// Waits until a pid other than `old` answers.
    pub fn wait_new_pid(&self, old: u32) -> u32 {
        let start = Instant::now();
        loop {
            if let Ok(r) = get(self.addr(), "/") {
                if r.pid != old {
                    return r.pid;
                }
            }
            assert!(
                start.elapsed() < WAIT,
                "no new pid after {WAIT:?}; log:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGHUP and wait for the successor; checks that the old process exits 0.
    pub fn hot_restart(&self) -> u32 {
        let old = self.pid();
        self.signal(old, libc::SIGHUP);
        let new = self.wait_new_pid(old);
        assert_eq!(
            wait_exit(old, WAIT),
            0,
            "old generation {old} must exit 0; log:\n{}",
            self.log_text()
        );
        new
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `n` lines containing `needle`.
    pub fn wait_log(&self, needle: &str, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let lines: Vec<String> = self
                .log_text()
                .lines()
                .filter(|l| l.contains(needle))
                .map(str::to_owned)
                .collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                start.elapsed() < WAIT,
                "log never had {n}x {needle:?}:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the binary on disk the way a deploy does: write a new file, `mv` it over.
    pub fn replace_binary(&self, contents: &[u8]) {
        use std::os::unix::fs::PermissionsExt;
        let tmp = self.dir.path().join("binary.new");
        let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        fs::write(&tmp, contents).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
        fs::rename(&tmp, &self.bin).unwrap();
    }

    pub fn restore_binary(&self) {
        let name = self.bin.file_name().unwrap().to_str().unwrap();
        self.replace_binary(&fs::read(example(name)).unwrap());
    }

    /// Live (non-zombie) processes running a binary from this service's directory.
    pub fn live_processes(&self) -> Vec<u32> {
        processes()
            .into_iter()
            .filter(|p| p.state != 'Z' && p.exe.starts_with(self.dir.path()))
            .map(|p| p.pid)
            .collect()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        for pid in self.live_processes() {
            // SAFETY: kill with integer arguments, on a process started from this test's
            // directory.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        thread::sleep(Duration::from_millis(50));
        reap();
    }
}

pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub state: char,
    pub exe: PathBuf,
}

pub fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut rest = stat[close + 2..].split(' ');
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let exe = fs::read_link(entry.path().join("exe")).unwrap_or_default();
        out.push(Proc {
            pid,
            ppid,
            state,
            exe,
        });
    }
    out
}

/// Children of `pid` (with their state letter), zombies included.
pub fn children(pid: u32) -> Vec<(u32, char)> {
    processes()
        .into_iter()
        .filter(|p| p.ppid == pid)
        .map(|p| (p.pid, p.state))
        .collect()
}

/// Children of `pid` that are zombies.
pub fn zombie_children(pid: u32) -> Vec<u32> {
    children(pid)
        .into_iter()
        .filter(|&(_, state)| state == 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

/// Open fds of `pid`: the smallest of several readings, so a connection that is just closing
/// is not counted while a leak (which stays) is.
pub fn fd_count(pid: u32) -> usize {
    (0..8)
        .map(|_| {
            thread::sleep(Duration::from_millis(25));
            fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
        })
        .min()
        .unwrap()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub pid: u32,
    pub body: String,
}

pub fn get(addr: SocketAddr, path: &str) -> Result<Response, String> {
    request(addr, "GET", path)
}

/// One HTTP/1.1 request on a new connection (`Connection: close`), every step bounded.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Result<Response, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    parse_response(&raw)
}

/// A whole response read to the end of its connection, parsed by the one HTTP/1.1 reader
/// of the tests ([`keepalive::read_reply`]).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let reply = keepalive::read_reply(&mut &raw[..])?;
    Ok(Response {
        status: reply.status,
        pid: reply.pid,
        body: reply.body,
    })
}

/// Background load: `POST /hit` in a loop on new connections, until stopped (or a hard cap of
/// requests and time). Counts acknowledged hits and failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, a, f) = (stop.clone(), acked.clone(), failures.clone());
        let thread = thread::spawn(move || {
            let start = Instant::now();
            for _ in 0..200_000 {
                if s.load(Ordering::SeqCst) || start.elapsed() > Duration::from_secs(120) {
                    break;
                }
                match request(addr, "POST", "/hit") {
                    Ok(r) if r.status == 200 => {
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => f.lock().unwrap().push(format!("status {}", r.status)),
                    Err(e) => f.lock().unwrap().push(e),
                }
            }
        });
        Load {
            stop,
            acked,
            failures,
            thread: Some(thread),
        }
    }

    /// Stops the load; returns (acknowledged hits, failures).
    pub fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        (
            self.acked.load(Ordering::SeqCst),
            self.failures.lock().unwrap().clone(),
        )
    }
}

pub const EXIT_AT_ONCE: &[u8] = b"#!/bin/sh\necho 'broken build: exiting' >&2\nexit 3\n";
pub const HANG: &[u8] = b"#!/bin/sh\nexec sleep 600\n";

pub fn is_file(p: &Path) -> bool {
    p.is_file()
}

// ---- Fault injection (tests/faults.rs, tests/storm.rs, tests/state_file.rs) ----

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

    /// Starts the binary without waiting, running `setup` in the child before exec.
    pub fn spawn_with_setup(&self, setup: PreExec) -> u32 {
        use std::os::unix::process::CommandExt;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut command = Command::new(&self.bin);
        // SAFETY: the setups given by the tests only make system calls (setrlimit, signal,
        // prctl, dup2, fcntl), which are async-signal-safe, and allocate nothing.
        unsafe {
            command.pre_exec(setup);
        }
        let child = command
            .current_dir(self.dir.path())
            .env("PORT", self.port.to_string())
            .env("HOTRESTART_STATE_FILE", &self.state_file)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        drop(fork);
        let pid = child.id();
        drop(child); // statuses come from the reaper
        pid
    }

    /// How many log lines contain `needle` now.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The pid of the `n`th successor started (1-based), from the `successor started` lines.
    pub fn successor_pid(&self, n: usize) -> u32 {
        let lines = self.wait_log("successor started", n);
        field(&lines[n - 1], "pid").expect("successor started has pid=")
    }
}

/// The numeric value of `key=` in a log line.
pub fn field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    let pat = format!(" {key}=");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Whether `pid` has neither exited nor been reaped.
pub fn is_alive(pid: u32) -> bool {
    exit_code(pid).is_none() && Path::new(&format!("/proc/{pid}")).exists()
}

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Whether this test runs as root, whom file permissions do not stop.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
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

/// Whether `pid` is gone: reaped (by anyone) or a zombie.
pub fn gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].chars().next())
            .is_some_and(|s| s == 'Z'),
    }
}

/// Waits until `pid` is gone.
pub fn wait_gone(pid: u32, limit: Duration) {
    let start = Instant::now();
    while !gone(pid) {
        assert!(
            start.elapsed() < limit,
            "pid {pid} still runs after {limit:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Whether the real component `tool` is on this machine. A newcomer without it gets a line
/// naming the command that installs it and the test is skipped; under `CI=true` a missing
/// component fails the run instead (`.ci/run` installs them all).
pub fn require(tool: &str, install: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("`{tool}` is missing and CI=true: install it with `{install}`");
    }
    eprintln!("SKIPPED: `{tool}` is not installed; install it with `{install}`");
    false
}

/// Where the test may not go for want of privilege (e.g. `unshare` outside root): skipped,
/// or under `CI=true` a failure.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why} (CI=true: nothing is skipped)");
    }
    eprintln!("SKIPPED: {why}");
}

impl Service {
    /// The count the state file holds: read by a separate, unsupervised process of the same
    /// binary on another port, killed (not stopped) afterwards so it rewrites nothing.
    pub fn saved_count(&self) -> u64 {
        let port = free_port();
        let log = fs::File::create(self.dir.path().join("reader.log")).unwrap();
        let child = {
            let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            Command::new(&self.bin)
                .current_dir(self.dir.path())
                .env("PORT", port.to_string())
                .env("HOTRESTART_STATE_FILE", &self.state_file)
                .env("HOTRESTART_SUPERVISOR", "0")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap()
        };
        let pid = child.id();
        drop(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        let count = loop {
            if let Ok(r) = get(addr, "/count") {
                break r.body.parse().unwrap();
            }
            assert!(
                start.elapsed() < WAIT,
                "the state file reader did not start"
            );
            thread::sleep(Duration::from_millis(20));
        };
        // SAFETY: kill with integer arguments, on the process just started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        wait_exit(pid, WAIT);
        count
    }
}

/// The `hotrestart-ctl` binary of this build.
pub fn ctl() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("hotrestart-ctl");
    assert!(
        path.exists(),
        "{} is missing: `cargo test --workspace` builds it",
        path.display()
    );
    path
}

impl Service {
    /// Starts `program args...` (a wrapper that ends up running this service's binary:
    /// `unshare`, `systemfd`), with the service's port, state file and log; returns its pid
    /// (its status comes from the reaper).
    pub fn spawn_wrapped(&self, program: &str, args: &[&str]) -> u32 {
        let log = fs::File::create(&self.log).unwrap();
        let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let child = Command::new(program)
            .args(args)
            .current_dir(self.dir.path())
            .env("PORT", self.port.to_string())
            .env("HOTRESTART_STATE_FILE", &self.state_file)
            .env("RUST_LOG", "info")
            .env_remove("HOTRESTART_SUPERVISOR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id();
        drop(child); // the status comes from the reaper
        pid
    }
}
