//! The reference service: a counter that survives hot restarts.
//!
//! - `GET /` → `hello`; `POST /hit` → increments the counter, answers its new value;
//!   `GET /count` → the current value. Every response carries `x-pid`.
//! - Listens on `127.0.0.1:$PORT` (default 3000) through the listener named `http`.
//! - `kill -HUP <pid>`: hot restart. `kill -TERM <pid>`: graceful exit, state saved to
//!   `counter.state` (or `$HOTRESTART_STATE_FILE`), restored at the next start.
//! - With `TLS_CERT` and `TLS_KEY` naming PEM files: the same routes over HTTPS too, on
//!   `127.0.0.1:$TLS_PORT` (default 3443) through the listener named `https`; a restart reloads
//!   the certificate, and TLS sessions resume across restarts.

// ANCHOR: all
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

// ANCHOR: state
/// The application state. `#[persist]` fields are handed to the next process.
#[derive(Default, hotrestart::State)]
struct Counter {
    #[persist]
    hits: AtomicU64,
}

// ANCHOR_END: state
// ANCHOR: hook
/// Runs in the old process before its state is handed over, and before a graceful exit.
#[hotrestart::before_restart]
async fn log_hits(counter: &Counter) {
    tracing::info!(
        hits = counter.hits.load(Ordering::SeqCst),
        "before_restart hook ran"
    );
}

// ANCHOR_END: hook
// ANCHOR: main
#[hotrestart::hot_main(state_file = "counter.state")]
async fn main(hot: hotrestart::Hot) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    // Inherited after a hot restart (or from systemd); bound at a first start.
    let listener = hot.tcp("http", ("127.0.0.1", port))?;

    // HTTPS, if configured: the certificate is loaded here, before `ready`, so a restart is a
    // certificate reload, and a successor with a broken one fails before it takes over.
    let https = match (std::env::var_os("TLS_CERT"), std::env::var_os("TLS_KEY")) {
        (Some(cert), Some(key)) => {
            let tls_port: u16 = std::env::var("TLS_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(3443);
            let config = hotrestart::http::tls::server_config(&hot, cert.as_ref(), key.as_ref())?;
            let tcp = hot.tcp("https", ("127.0.0.1", tls_port))?;
            Some(hotrestart::http::tls::TlsListener::new(&hot, tcp, config))
        }
        _ => None,
    };

    // Slow initialisation would go here: the old process keeps serving meanwhile.

    // Restores `hits` from the previous process (or the state file) and declares us ready.
    let counter = hot.ready(Counter::default()).await?;

    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/hit", post(hit))
        .route("/count", get(count))
        .layer(axum::middleware::map_response(add_pid))
        .with_state(counter);
    match https {
        Some(https) => {
            tokio::try_join!(
                hotrestart::http::serve(&hot, listener, app.clone()),
                hotrestart::http::serve(&hot, https, app),
            )?;
        }
        None => hotrestart::http::serve(&hot, listener, app).await?,
    }
    Ok(())
}

// ANCHOR_END: main

async fn hit(State(counter): State<Arc<Counter>>) -> String {
    (counter.hits.fetch_add(1, Ordering::SeqCst) + 1).to_string()
}

async fn count(State(counter): State<Arc<Counter>>) -> String {
    counter.hits.load(Ordering::SeqCst).to_string()
}

async fn add_pid(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("x-pid", HeaderValue::from(std::process::id()));
    response
}
// ANCHOR_END: all
