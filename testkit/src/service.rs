//! A service under test: its own directory, binary copy, pre-bound listener, state file and
//! log; started, signalled, restarted and read from outside, as an operator would.

use std::fs;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use crate::faults::PreExec;
use crate::http::{get, request};
use crate::procs::*;

pub const WAIT: Duration = Duration::from_secs(20);

static SUBREAPER: Once = Once::new();

/// Held while a binary is written and while a process is spawned: a fork by another test
/// thread while a binary file is open for writing would make its exec fail with ETXTBSY.
pub static FORK_LOCK: Mutex<()> = Mutex::new(());

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

/// A port free now, for a component that binds sockets itself (systemfd). It can be taken by
/// another socket before that bind: a service's own port is pre-bound ([`Service::listener`]).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running counter service: its own directory, binary copy, port, state file and log.
///
/// Its listening socket is bound here, once, and passed to every process started from the test
/// as fd 3 (`LISTEN_FDS=1`, `LISTEN_FDNAMES=http`), the way systemd passes a socket unit's: the
/// port never goes free between two starts, so no other socket (a load client's ephemeral
/// port) can take it.
pub struct Service {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub port: u16,
    /// The listening socket passed as fd 3; `None` once [`Service::release_port`] gave the
    /// port to a component that binds it itself.
    pub listener: Option<std::net::TcpListener>,
    /// More listening sockets, by name, passed after it (fd 4, 5, ...): see
    /// [`Service::add_listener`].
    pub extra_listeners: Vec<(String, std::net::TcpListener)>,
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
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let control = dir.path().join("control.sock").to_str().unwrap().to_owned();
        Service {
            port: listener.local_addr().unwrap().port(),
            listener: Some(listener),
            extra_listeners: Vec::new(),
            state_file: dir.path().join("counter.state"),
            log: dir.path().join("counter.log"),
            bin,
            dir,
            first_pid: 0,
            // Every service has a control socket: tests read its status.
            env: std::iter::once((crate::control::CONTROL_SOCKET_VAR.to_owned(), control))
                .chain(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
                .collect(),
        }
    }

    /// Starts the binary (again) with the same port, state file and log; waits until it serves.
    pub fn spawn(&self) -> u32 {
        let pid = self.spawn_with(None);
        self.wait_serving();
        pid
    }

    /// Starts the binary without waiting. `fd3`, if given, is passed as fd 3 instead of the
    /// service's listener, with no `LISTEN_*` variables (the test sets those it wants).
    pub fn spawn_with(&self, fd3: Option<RawFd>) -> u32 {
        match fd3 {
            None => self.spawn_with_setup(Box::new(|| Ok(()))),
            Some(fd) => self.launch(Command::new(&self.bin), vec![fd], Box::new(|| Ok(()))),
        }
    }

    /// Gives the port up, for a component that binds it itself (a container's service, systemd's
    /// socket unit, systemfd): from here to its bind, another socket could take it.
    pub fn release_port(&mut self) -> u16 {
        self.listener = None;
        self.port
    }

    /// A command for this service's binary with its directory, port, state file and listener
    /// (fd 3), for a test that sets up the rest itself (stdio, a terminal); the caller spawns
    /// it under [`FORK_LOCK`].
    pub fn command(&self) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(&self.bin);
        command
            .current_dir(self.dir.path())
            .env("PORT", self.port.to_string())
            .env("HOTRESTART_STATE_FILE", &self.state_file);
        let fds = self.listener_fds(&mut command);
        // SAFETY: the closure only calls fcntl/dup2 (async-signal-safe).
        unsafe {
            command.pre_exec(move || pass_from_fd3(&fds));
        }
        command
    }

    /// Binds one more listening socket, passed as the next fd with the name `name` in
    /// `LISTEN_FDNAMES` (a service with two listeners: `streams`' `echo`); returns its port.
    pub fn add_listener(&mut self, name: &str) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        self.extra_listeners.push((name.to_owned(), listener));
        port
    }

    /// Environment and fds 3.. for a process of this service: the listeners (if still held)
    /// with `LISTEN_FDS` and `LISTEN_FDNAMES`, then the service's own variables (which win).
    fn listener_fds(&self, command: &mut Command) -> Vec<RawFd> {
        let Some(http) = self.listener.as_ref() else {
            return Vec::new();
        };
        let mut fds = vec![http.as_raw_fd()];
        let mut names = vec!["http".to_owned()];
        for (name, listener) in &self.extra_listeners {
            fds.push(listener.as_raw_fd());
            names.push(name.clone());
        }
        command
            .env("LISTEN_FDS", fds.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env_remove("LISTEN_PID");
        fds
    }

    /// Spawns `command` (this service's binary, or a wrapper that ends up running it) with the
    /// service's directory, port, state file and log, `fds` as fds 3.., and `setup` run
    /// between fork and exec; returns its pid (its status comes from the reaper).
    fn launch(&self, mut command: Command, fds: Vec<RawFd>, mut setup: PreExec) -> u32 {
        use std::os::unix::process::CommandExt;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the closure and the setups given by the tests only make system calls (dup2,
        // fcntl, setrlimit, signal, prctl), which are async-signal-safe, and allocate nothing.
        unsafe {
            command.pre_exec(move || {
                pass_from_fd3(&fds)?;
                setup()
            });
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

/// The numeric value of `key=` in a log line.
pub fn field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    let pat = format!(" {key}=");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl Service {
    /// The count the state file holds: read by a separate, unsupervised process of the same
    /// binary on another port, killed (not stopped) afterwards so it rewrites nothing.
    pub fn saved_count(&self) -> u64 {
        use std::os::unix::process::CommandExt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fd = listener.as_raw_fd();
        let log = fs::File::create(self.dir.path().join("reader.log")).unwrap();
        let child = {
            let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let mut command = Command::new(&self.bin);
            // SAFETY: the closure only calls dup2/fcntl (async-signal-safe).
            unsafe {
                command.pre_exec(move || pass_from_fd3(&[fd]));
            }
            command
                .current_dir(self.dir.path())
                .env("PORT", port.to_string())
                .env("LISTEN_FDS", "1")
                .env("LISTEN_FDNAMES", "http")
                .env("HOTRESTART_STATE_FILE", &self.state_file)
                .env("HOTRESTART_SUPERVISOR", "0")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap()
        };
        drop(listener);
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
        let mut command = Command::new(program);
        command.args(args).env_remove("HOTRESTART_SUPERVISOR");
        let fds = self.listener_fds(&mut command);
        self.launch(command, fds, Box::new(|| Ok(())))
    }
}

impl Service {
    /// Starts the binary without waiting, running `setup` in the child before exec.
    pub fn spawn_with_setup(&self, setup: PreExec) -> u32 {
        let mut command = Command::new(&self.bin);
        let fds = self.listener_fds(&mut command);
        self.launch(command, fds, setup)
    }

    /// How many log lines contain `needle` now.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The successor `parent` started: its live child running this service's binary
    /// (`/proc`), waited for.
    pub fn successor_of(&self, parent: u32) -> u32 {
        let start = Instant::now();
        loop {
            let child = processes()
                .into_iter()
                .find(|p| p.ppid == parent && p.state != 'Z' && p.exe.starts_with(self.dir.path()));
            if let Some(child) = child {
                return child.pid;
            }
            assert!(
                start.elapsed() < WAIT,
                "pid {parent} started no successor; log:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Makes `fds` the child's fds 3, 4, ..., open across exec. Each is first copied above the
/// targets (so that moving one never overwrites another still to move), then dup2'd into
/// place, which leaves it without close-on-exec. Called between fork and exec: system calls
/// only, no allocation.
fn pass_from_fd3(fds: &[RawFd]) -> std::io::Result<()> {
    const ABOVE: RawFd = 64;
    let mut high = [0 as RawFd; 8];
    assert!(fds.len() <= high.len());
    for (slot, &fd) in high.iter_mut().zip(fds) {
        // SAFETY: fcntl on integer fds touches no memory (async-signal-safe).
        *slot = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, ABOVE) };
        if *slot < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (i, &fd) in high[..fds.len()].iter().enumerate() {
        // SAFETY: dup2/close on integer fds touch no memory (async-signal-safe).
        unsafe {
            if libc::dup2(fd, 3 + i as RawFd) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
        }
    }
    Ok(())
}
