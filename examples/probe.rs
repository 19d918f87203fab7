//! A test-support service: like the counter, but it reports on its own process and exercises
//! the other listener kinds, so the integration tests can check what hotrestart does for them.
//!
//! - `GET /` → `hello` with `x-pid`.
//! - `POST /restart` → triggers `Hot::restart` in the background and answers 202 at once (a
//!   handler must not await its own process's restart: the restart waits for open
//!   connections, this one included). The outcome is logged.
//! - `PROBE_UNIX=<path>`: also serves the same routes on a Unix socket named `admin`.
//! - `PROBE_UDP=1`: a UDP socket named `dns` on `127.0.0.1:$PORT` answers each datagram with
//!   `<pid>`: shows a custom loop that follows `hot.phase()`.
//! - `PROBE_CHILD_ENV=<path>`: once ready, runs `env` as a child process and writes its output
//!   to `<path>.<generation>`: what the application's own children see.
//! - `PROBE_CHILD_FDS=<path>`: once ready, runs `ls -l /proc/self/fd` as a child process and
//!   writes its output to `<path>.<generation>`: the fds the application's children inherit.
//! - `PROBE_INIT_MS=<n>`: sleeps `n` ms of "slow initialisation" before `hot.ready`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use hotrestart::{Hot, Phase};

#[hotrestart::hot_main(ready_timeout = "10s", drain_timeout = "2s")]
async fn main(hot: Hot) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = hot.tcp("http", ("127.0.0.1", port))?;
    let unix = match std::env::var_os("PROBE_UNIX") {
        Some(path) => Some(hot.unix("admin", path)?),
        None => None,
    };
    let udp = match std::env::var_os("PROBE_UDP") {
        Some(_) => Some(hot.udp("dns", ("127.0.0.1", port))?),
        None => None,
    };
    if let Some(ms) = std::env::var("PROBE_INIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    hot.ready(()).await?;
    if let Some(path) = std::env::var_os("PROBE_CHILD_ENV") {
        let out = tokio::process::Command::new("env").output().await?;
        let mut path = path;
        path.push(format!(".{}", hot.generation()));
        std::fs::write(path, out.stdout)?;
    }
    if let Some(path) = std::env::var_os("PROBE_CHILD_FDS") {
        let out = tokio::process::Command::new("ls")
            .args(["-l", "/proc/self/fd"])
            .output()
            .await?;
        let mut path = path;
        path.push(format!(".{}", hot.generation()));
        std::fs::write(path, out.stdout)?;
    }
    let restarter = hot.clone();
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route(
            "/restart",
            post(move || {
                let hot = restarter.clone();
                async move {
                    tokio::spawn(async move {
                        match hot.restart().await {
                            Ok(r) => tracing::info!(
                                "api restart: pid {} -> pid {}",
                                r.old_pid,
                                r.new_pid
                            ),
                            Err(e) => tracing::warn!("api restart failed: {e}"),
                        }
                    });
                    StatusCode::ACCEPTED
                }
            }),
        )
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                r.headers_mut()
                    .insert("x-pid", HeaderValue::from(std::process::id()));
                r
            },
        ));
    let tcp = hotrestart::http::serve(&hot, listener, app.clone());
    let unix = async {
        match unix {
            Some(unix) => hotrestart::http::serve(&hot, unix, app.clone()).await,
            None => Ok(()),
        }
    };
    let (tcp, unix, ()) = tokio::join!(tcp, unix, udp_echo(&hot, udp));
    tcp?;
    unix?;
    Ok(())
}

// ANCHOR: udp
/// Answers each datagram with this process's pid, only while the phase is `Serving`: during a
/// handover, datagrams wait in the socket's buffer for whichever process serves next.
async fn udp_echo(hot: &Hot, socket: Option<tokio::net::UdpSocket>) {
    let Some(socket) = socket else { return };
    let mut phase = hot.phase();
    let mut buf = [0u8; 1500];
    loop {
        let now = *phase.borrow_and_update();
        match now {
            Phase::Stopping => return,
            Phase::Quiesced => {
                let _ = phase.changed().await;
                continue;
            }
            Phase::Serving => {}
        }
        let _serving = hot.track();
        tokio::select! {
            _ = phase.changed() => {}
            received = socket.recv_from(&mut buf) => {
                if let Ok((_, peer)) = received {
                    let _ = socket.send_to(std::process::id().to_string().as_bytes(), peer).await;
                }
            }
        }
    }
}
// ANCHOR_END: udp
