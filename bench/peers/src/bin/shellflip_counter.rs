//! Peer: the counter service on `shellflip` 2.x (Cloudflare), used as its `restarter`
//! example does: `RestartConfig::try_into_restart_task`, a `LifecycleHandler` that sends
//! state to the new process through shellflip's handover pipe, `receive_from_old_process`
//! in the new process, and a `ShutdownCoordinator` to drain the old one.
//!
//! - Restart: `SIGUSR1` (shellflip's default `restart_signal`). Optionally, with
//!   `SHELLFLIP_SOCKET=/path` set, also `shellflip_counter restart` (the same env set),
//!   which goes through shellflip's restart coordination socket and reports the new pid
//!   or the failure, like the example's `restart` command.
//! - `SIGTERM`/`SIGINT`: drain and exit 0, no restart.
//!
//! shellflip does not inherit listening sockets (its example binds a new port in every
//! generation). Here the listener crosses the restart the way its design allows: the
//! old process clears `FD_CLOEXEC` on the listening fd in `pre_new_process` (so the fork
//! and exec that shellflip runs keeps it open at the same number) and sends the fd number
//! through the handover pipe; the new process checks that the fd is a listener bound to
//! `127.0.0.1:$PORT` before it declares itself ready.
//!
//! The handover pipe also carries the counter: its value when shellflip spawns the new
//! process. Hits that the old process still serves between that moment and the moment
//! it stops accepting are not carried over (the old process logs its final count in its
//! `EXIT` line, so the loss can be measured).

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hotrestart_bench_peers::{addr, app, event, init_logging, terminate_signal, Counter};
use shellflip::lifecycle::{receive_from_old_process, LifecycleHandler, PipeWriter};
use shellflip::{RestartConfig, ShutdownCoordinator, ShutdownSignal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the old process hands to the new one, in this order on the pipe:
/// listener fd (i32), counter (u64), generation (u32).
struct Handover {
    listener_fd: RawFd,
    counter: Counter,
    generation: u32,
}

#[async_trait]
impl LifecycleHandler for Handover {
    async fn pre_new_process(&mut self) {
        // Let the listening socket survive shellflip's exec of the new process.
        if let Err(e) = set_cloexec(self.listener_fd, false) {
            log::error!("cannot clear FD_CLOEXEC on the listener: {e}");
        }
    }

    async fn send_to_new_process(&mut self, mut pipe: PipeWriter) -> io::Result<()> {
        let count = self.counter.load(Ordering::SeqCst);
        pipe.write_i32(self.listener_fd).await?;
        pipe.write_u64(count).await?;
        pipe.write_u32(self.generation + 1).await?;
        pipe.flush().await?;
        event("HANDOVER", format_args!("count={count}"));
        Ok(())
    }

    async fn new_process_failed(&mut self) {
        let _ = set_cloexec(self.listener_fd, true);
        event("RESTART_FAILED", format_args!("old process keeps serving"));
    }
}

fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on an fd this process owns; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::FD_CLOEXEC
        } else {
            flags & !libc::FD_CLOEXEC
        };
        if libc::fcntl(fd, libc::F_SETFD, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The listener, the counter's start value and the generation: inherited through the
/// handover pipe after a restart, fresh at a first start.
async fn listener_and_state(addr: SocketAddr) -> io::Result<(StdTcpListener, u64, u32, bool)> {
    let Some(mut pipe) = receive_from_old_process() else {
        // tokio's bind: SO_REUSEADDR and a backlog of 1024, as in the other peers.
        let fresh = tokio::net::TcpListener::bind(addr).await?.into_std()?;
        return Ok((fresh, 0, 0, false));
    };
    let fd = pipe.read_i32().await?;
    let count = pipe.read_u64().await?;
    let generation = pipe.read_u32().await?;
    // SAFETY: the fd number comes from our previous generation, which cleared
    // FD_CLOEXEC on its listening socket before shellflip exec'd us; it is validated below.
    let listener = unsafe { StdTcpListener::from_raw_fd(fd) };
    // Validate before declaring readiness: a bad handover makes this process fail, and
    // the old one goes on serving.
    let local = listener.local_addr()?;
    if local != addr {
        // Do not close an fd that is not what we expected.
        std::mem::forget(listener);
        return Err(io::Error::other(format!(
            "inherited fd {fd} is bound to {local}, expected {addr}"
        )));
    }
    Ok((listener, count, generation, true))
}

fn drain_timeout_secs() -> u64 {
    std::env::var("PEER_DRAIN_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let socket: Option<PathBuf> = std::env::var_os("SHELLFLIP_SOCKET").map(Into::into);

    if std::env::args().nth(1).as_deref() == Some("restart") {
        let Some(path) = socket else {
            return Err("`restart` needs SHELLFLIP_SOCKET (or send SIGUSR1)".into());
        };
        let conf = RestartConfig {
            enabled: true,
            coordination_socket_path: path,
            ..Default::default()
        };
        let pid = conf.request_restart().await?;
        println!("{pid}");
        return Ok(());
    }

    let addr = addr();
    let (std_listener, start_count, generation, inherited) = listener_and_state(addr).await?;
    std_listener.set_nonblocking(true)?;
    let listener_fd = std_listener.as_raw_fd();
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let counter = Counter::new(start_count.into());

    let restart_conf = RestartConfig {
        enabled: socket.is_some(),
        coordination_socket_path: socket.unwrap_or_default(),
        lifecycle_handler: Box::new(Handover {
            listener_fd,
            counter: counter.clone(),
            generation,
        }),
        // The default (true) makes the restart task fail when a new process fails to
        // start, and the restarter example then shuts the old process down too. false:
        // log it and keep serving, waiting for the next SIGUSR1.
        exit_on_error: false,
        ..Default::default()
    };
    // Spawns shellflip's restart thread and installs the SIGUSR1 handler. Its first poll
    // tells the previous generation (if any) that we are ready.
    let restart_task = restart_conf.try_into_restart_task()?;

    // The server holds a ShutdownHandle: the coordinator's shutdown() tells it to stop
    // (axum graceful shutdown: stop accepting, finish in-flight requests, close idle
    // keep-alive connections) and waits until it has.
    let coordinator = ShutdownCoordinator::new();
    let handle = coordinator.handle();
    let app = app(counter.clone());
    let server = tokio::spawn(async move {
        let mut stop = ShutdownSignal::from(&*handle);
        let res = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.on_shutdown().await })
            .await;
        drop(handle);
        res
    });

    event(
        "READY",
        format_args!(
            "peer=shellflip addr={addr} generation={generation} inherited={inherited} count={start_count}"
        ),
    );

    let reason = tokio::select! {
        res = restart_task => match res {
            Ok(child) => format!("restart new_pid={}", child.id()),
            // Only when restarts became impossible (e.g. the restart thread is gone).
            Err(e) => format!("restart_task_error error={e:?}"),
        },
        sig = terminate_signal() => sig.to_string(),
    };
    event("DRAIN", format_args!("reason={reason}"));
    // ShutdownCoordinator::shutdown_with_timeout, timed here to report whether it drained.
    let started = Instant::now();
    let drained = tokio::time::timeout(
        Duration::from_secs(drain_timeout_secs()),
        coordinator.shutdown(),
    )
    .await
    .is_ok();
    drop(server);
    event(
        "EXIT",
        format_args!(
            "reason={reason} count={} drained={drained} drain_ms={}",
            counter.load(Ordering::SeqCst),
            started.elapsed().as_millis()
        ),
    );
    Ok(())
}
