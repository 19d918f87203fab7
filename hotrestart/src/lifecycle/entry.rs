//! The entry point `#[hot_main]` expands to: options, the supervisor decision, the runtime.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::options::Options;
use crate::sys;

use super::inherit::Adopted;
use super::Hot;

/// How `#[hot_main]` runs `main`. Built by the macro from its arguments.
#[derive(Debug, Clone, Default)]
pub struct MainOptions {
    options: Options,
    current_thread: bool,
    worker_threads: Option<usize>,
    supervisor: Option<bool>,
}

impl MainOptions {
    /// The defaults: those of [`Options`], a multi-thread runtime, the supervisor by
    /// environment.
    pub fn new() -> Self {
        Self::default()
    }
    /// `#[hot_main(ready_timeout = ...)]`.
    pub fn ready_timeout(mut self, d: Duration) -> Self {
        self.options.ready_timeout = d;
        self
    }
    /// `#[hot_main(drain_timeout = ...)]`.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.options.drain_timeout = d;
        self
    }
    /// `#[hot_main(snapshot_timeout = ...)]`.
    pub fn snapshot_timeout(mut self, d: Duration) -> Self {
        self.options.snapshot_timeout = d;
        self
    }
    /// `#[hot_main(state_file = ...)]`.
    pub fn state_file(mut self, path: &'static str) -> Self {
        self.options.state_file = Some(PathBuf::from(path));
        self
    }
    /// `#[hot_main(control_socket = ...)]`.
    pub fn control_socket(mut self, path: &'static str) -> Self {
        self.options.control_socket = Some(PathBuf::from(path));
        self
    }
    /// Development mode: restart when the executable changes on disk.
    pub fn watch_exe(mut self, on: bool) -> Self {
        self.options.watch_exe = on;
        self
    }
    /// `#[hot_main(hand_over_connections = ...)]`.
    pub fn hand_over_connections(mut self, on: bool) -> Self {
        self.options.hand_over_connections = on;
        self
    }
    /// `#[hot_main(supervisor = ...)]`: a main process that stays across restarts; the
    /// default decides by where the process runs (`HOTRESTART_SUPERVISOR` wins over both).
    pub fn supervisor(mut self, on: bool) -> Self {
        self.supervisor = Some(on);
        self
    }
    /// `#[hot_main(flavor = "current_thread")]`.
    pub fn current_thread(mut self) -> Self {
        self.current_thread = true;
        self
    }
    /// `#[hot_main(worker_threads = ...)]`.
    pub fn worker_threads(mut self, n: usize) -> Self {
        self.worker_threads = Some(n);
        self
    }
}

/// Runs `main`'s body under hotrestart: adopts what the predecessor (or systemd) passed,
/// builds the tokio runtime, runs the body, and on the way out drains, runs the hooks and saves
/// the state, unless the process handed over to a successor.
pub fn run_main<F, Fut>(main: MainOptions, body: F) -> Fut::Output
where
    F: FnOnce(Hot) -> Fut,
    Fut: Future,
{
    // Before the runtime exists, and before anything of the user's runs: the first process
    // may become the supervisor, which stays while generations come and go beneath it.
    if crate::supervisor::wanted(main.supervisor) {
        std::process::exit(crate::supervisor::run(main.options.ready_timeout));
    }
    // Before the runtime exists: the process has one thread, so changing the environment is sound.
    let adopted = Adopted::from_env();
    let mut options = main.options;
    for (var, slot) in [
        (sys::ENV_READY_TIMEOUT, &mut options.ready_timeout),
        (sys::ENV_DRAIN_TIMEOUT, &mut options.drain_timeout),
        (sys::ENV_SNAPSHOT_TIMEOUT, &mut options.snapshot_timeout),
    ] {
        if let Some(text) = adopted.operator_value(var) {
            match text.to_str().map(crate::options::parse_duration) {
                Some(Ok(d)) => *slot = d,
                Some(Err(why)) => eprintln!("hotrestart: ignoring {var}={text:?}: {why}"),
                None => eprintln!("hotrestart: ignoring {var}={text:?}: not UTF-8"),
            }
        }
    }
    for (var, slot) in [
        (sys::ENV_HOOK_TIMEOUT, &mut options.hook_timeout),
        (
            sys::ENV_TLS_HANDSHAKE_TIMEOUT,
            &mut options.tls_handshake_timeout,
        ),
    ] {
        if let Some(text) = adopted.operator_value(var) {
            match text.to_str().map(crate::options::parse_duration) {
                Some(Ok(d)) => *slot = Some(d),
                Some(Err(why)) => eprintln!("hotrestart: ignoring {var}={text:?}: {why}"),
                None => eprintln!("hotrestart: ignoring {var}={text:?}: not UTF-8"),
            }
        }
    }
    if let Some(path) = adopted.operator_value(sys::ENV_CONTROL_SOCKET) {
        options.control_socket = if path.is_empty() {
            None
        } else {
            Some(PathBuf::from(path))
        };
    }
    if let Some(flag) = adopted.operator_value(sys::ENV_WATCH_EXE) {
        options.watch_exe = flag == "1" || flag == "true";
    }
    if let Some(flag) = adopted.operator_value(sys::ENV_HAND_OVER_CONNECTIONS) {
        options.hand_over_connections = !(flag == "0" || flag == "false");
    }
    if let Some(flag) = adopted.operator_value(sys::ENV_PRECOPY) {
        options.precopy = !(flag == "0" || flag == "false");
    }
    if let Some(path) = adopted.operator_value(sys::ENV_STATE_FILE) {
        options.state_file = if path.is_empty() {
            None
        } else {
            Some(PathBuf::from(path))
        };
    }
    let mut builder = if main.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if let (false, Some(n)) = (main.current_thread, main.worker_threads) {
        builder.worker_threads(n);
    }
    let runtime = builder
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let out = runtime.block_on(async move {
        let hot = Hot::start(options, adopted);
        let out = hot.run_body(body).await;
        hot.finish().await;
        out
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    out
}

/// Development mode: restarts when the executable's file changes (a new inode, size or mtime)
/// and has stayed unchanged for one more poll, so a build still being written is not started.
pub(super) async fn watch_exe(hot: Hot) {
    use std::os::unix::fs::MetadataExt;
    let path = hot.inner.exe.clone();
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    };
    let mut known = stamp(&path);
    let mut pending = None;
    tracing::info!(exe = %path.display(), "watching the executable: a rebuild hot-restarts the service");
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = stamp(&path);
        if now.is_none() || now == known {
            pending = None;
            continue;
        }
        if pending != Some(now) {
            pending = Some(now);
            continue;
        }
        known = now;
        pending = None;
        tracing::info!("the executable changed on disk: hot restart");
        match hot.restart().await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!("restart after a rebuild failed: {e}; waiting for the next build")
            }
        }
    }
}
