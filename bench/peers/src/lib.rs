//! What the peer binaries share: the counter example's HTTP interface, the port, the
//! log lines the benchmark reads, and the plain SIGTERM/SIGINT shutdown signal.
//!
//! The interface is the one of `examples/counter.rs` in the hotrestart repository:
//! `GET /` → `hello`, `POST /hit` → the incremented counter, `GET /count` → the counter,
//! every response with `x-pid: <pid of the serving process>`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

/// The in-memory counter (not persisted by these peers unless a binary says so).
pub type Counter = Arc<AtomicU64>;

/// `127.0.0.1:$PORT`, default port 3000.
pub fn addr() -> SocketAddr {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The counter example's routes, with the `x-pid` header on every response.
pub fn app(counter: Counter) -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/hit", post(hit))
        .route("/count", get(count))
        .layer(axum::middleware::map_response(add_pid))
        .with_state(counter)
}

async fn hit(State(counter): State<Counter>) -> String {
    (counter.fetch_add(1, Ordering::SeqCst) + 1).to_string()
}

async fn count(State(counter): State<Counter>) -> String {
    counter.load(Ordering::SeqCst).to_string()
}

async fn add_pid(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("x-pid", HeaderValue::from(std::process::id()));
    response
}

/// Logs to stderr (level from `RUST_LOG`, default `info`), so the libraries' own `log`
/// lines (restart started, failed, ...) show up next to ours.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
}

/// One plain line on stderr, `<EVENT> pid=<pid> t_ms=<unix time, ms> <fields>`,
/// independent of `RUST_LOG`: the benchmark greps for `READY pid=` (serving) and
/// `EXIT pid=` (about to exit).
pub fn event(event: &str, fields: std::fmt::Arguments<'_>) {
    let t_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    eprintln!("{event} pid={} t_ms={t_ms} {fields}", std::process::id());
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn terminate_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
