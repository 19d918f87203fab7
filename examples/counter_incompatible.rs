//! A test-support service: the counter as a later build whose `#[persist] hits` changed type
//! (`AtomicU64` became `Mutex<String>`). Handed the counter's snapshot, it must refuse it, and
//! the counter must keep serving with its live count (`tests/faults.rs`).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

#[derive(Default, hotrestart::State)]
struct Counter {
    #[persist]
    hits: Mutex<String>,
}

#[hotrestart::hot_main(state_file = "counter.state")]
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
    let counter = hot.ready(Counter::default()).await?;
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/hit", post(hit))
        .route("/count", get(count))
        .layer(axum::middleware::map_response(add_pid))
        .with_state(counter);
    hotrestart::http::serve(&hot, listener, app).await?;
    Ok(())
}

async fn hit(State(counter): State<Arc<Counter>>) -> String {
    let mut hits = counter.hits.lock().unwrap();
    hits.push('|');
    hits.len().to_string()
}

async fn count(State(counter): State<Arc<Counter>>) -> String {
    counter.hits.lock().unwrap().len().to_string()
}

async fn add_pid(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("x-pid", HeaderValue::from(std::process::id()));
    response
}
