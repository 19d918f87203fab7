//! Peer: the counter service on `ecdysis` 1.x (Cloudflare's port of tableflip), used as
//! its `tokio_echo` example does: a `TokioEcdysisBuilder` created with the upgrade
//! signal, exit signals registered with `stop_on_signal`, the listener made through
//! `build_listen_tcp` (so the fd is registered, inherited by the upgraded process, and
//! found again there by its address), `ready()` to tell the parent we took over, and the
//! returned future to learn when to stop.
//!
//! - Upgrade: `SIGHUP` (the signal this binary gives `TokioEcdysisBuilder::new`).
//! - `SIGTERM`/`SIGINT`: ecdysis "stop" (`stop_on_signal`): drain and exit 0.
//!
//! On an upgrade ecdysis fork/execs `argv[0]` with the same arguments and cwd, passes the
//! listening fd, and waits (5 s, fixed in ecdysis) for the new process to call `ready()`.
//! If it does, ecdysis ends the old process's listener stream (`StopOnShutdown::Yes`) and
//! its future resolves; this binary then runs axum's graceful shutdown (in-flight requests
//! finish, idle keep-alive connections are closed) and exits. If the new process exits
//! or times out, ecdysis kills it and the old one goes on serving.
//!
//! The counter is not handed over: every generation starts at 0.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::serve::Listener;
use ecdysis::tokio_ecdysis::{
    ExitMode, SignalKind, StopOnShutdown, StoppableStream, TokioEcdysisBuilder,
};
use hotrestart_bench_peers::{addr, app, event, init_logging, Counter};
use tokio::net::TcpStream;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

/// axum's `Listener` over ecdysis's stoppable listener stream.
struct EcdysisListener {
    stream: StoppableStream<TcpListenerStream>,
    addr: SocketAddr,
}

impl Listener for EcdysisListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.stream.next().await {
                Some(Ok(stream)) => {
                    let peer = stream.peer_addr().unwrap_or(self.addr);
                    return (stream, peer);
                }
                Some(Err(e)) => {
                    // As axum's own TcpListener: per-connection errors are retried at once,
                    // others (EMFILE...) after a pause.
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) {
                        log::error!("accept error: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                // ecdysis stopped the stream (upgrade done, or stop signal): accept no more;
                // the graceful shutdown that follows ends the accept loop.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

fn drain_timeout() -> Duration {
    Duration::from_secs(
        std::env::var("PEER_DRAIN_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let addr = addr();

    let mut builder = TokioEcdysisBuilder::new(SignalKind::hangup())?;
    builder.stop_on_signal(SignalKind::terminate())?;
    builder.stop_on_signal(SignalKind::interrupt())?;
    let inherited = builder.is_child();

    // At a first start the closure binds (SO_REUSEADDR, backlog 1024, as the other peers);
    // after an upgrade ecdysis returns the parent's socket for this address instead.
    let stream = builder.build_listen_tcp(StopOnShutdown::Yes, addr, |socket, addr| {
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    })?;

    let counter = Counter::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = axum::serve(EcdysisListener { stream, addr }, app(counter.clone()))
        .with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        });
    let server = tokio::spawn(async move { serve.await });

    // Tells the parent (if any) that we have taken over; it then stops accepting.
    let (_ecdysis, upgrade_or_stop) = builder.ready()?;
    event(
        "READY",
        format_args!("peer=ecdysis addr={addr} inherited={inherited} count=0"),
    );

    let reason = match upgrade_or_stop.await {
        Ok((ExitMode::Upgrade, why)) => format!("upgrade trigger={why:?}"),
        Ok((mode, why)) => format!("stop mode={mode:?} trigger={why:?}"),
        Err(e) => format!("ecdysis_error error={e:?}"),
    };
    event("DRAIN", format_args!("reason={reason}"));
    let started = Instant::now();
    let _ = stop_tx.send(());
    let drained = tokio::time::timeout(drain_timeout(), server).await.is_ok();
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
