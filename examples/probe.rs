//! A test-support service: like the counter, but it reports on its own process so the
//! integration tests can check what hotrestart leaves to the application.
//!
//! - `GET /` → `hello` with `x-pid`.
//! - `PROBE_CHILD_ENV=<path>`: once ready, runs `env` as a child process and writes its output
//!   to `<path>.<generation>`: what the application's own children see.
//! - `PROBE_INIT_MS=<n>`: sleeps `n` ms of "slow initialisation" before `hot.ready`.

use std::time::Duration;

use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

#[hotrestart::hot_main(ready_timeout = "10s", drain_timeout = "2s")]
async fn main(hot: hotrestart::Hot) -> Result<(), Box<dyn std::error::Error>> {
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
    let app =
        Router::new()
            .route("/", get(|| async { "hello" }))
            .layer(axum::middleware::map_response(
                |mut r: Response| async move {
                    r.headers_mut()
                        .insert("x-pid", HeaderValue::from(std::process::id()));
                    r
                },
            ));
    hotrestart::http::serve(&hot, listener, app).await?;
    Ok(())
}
