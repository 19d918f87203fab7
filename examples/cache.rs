//! The fourth reference service: a key-value cache whose map is pre-copied at a restart.
//!
//! - `PUT /kv/{key}` (body: the value) → `200` once stored; `GET /kv/{key}` → `200` with the
//!   value, or `404`; `DELETE /kv/{key}` → `200` with the value removed, or `404`.
//! - `POST /fill?n=N&bytes=B` → stores keys `fill-0` … `fill-{N-1}`, each a `B`-byte value
//!   (the key's number in decimal, repeated), `200` when done.
//! - `GET /len` → the number of entries; `GET /` → `hello`. Every response carries `x-pid`.
//! - Listens on `127.0.0.1:$PORT` (default 3000) through the listener named `http`.
//! - `INIT_DELAY_MS=N`: a slow initialisation of N ms before `hot.ready` (a cache warm-up, a
//!   pool): the first pre-copy round runs meanwhile.
//! - `kill -HUP <pid>`: hot restart. `kill -TERM <pid>`: graceful exit, the map saved to
//!   `cache.state` (or `$HOTRESTART_STATE_FILE`), restored at the next start.
//!
//! The map is a [`hotrestart::TrackedMap`]: at a restart it is copied to the successor while
//! this process still serves, and only the entries written meanwhile are copied after it stops
//! accepting, so the accept gap does not grow with the map (`HOTRESTART_PRECOPY=0` copies it
//! whole after the quiesce instead, to compare).

// ANCHOR: all
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;

// ANCHOR: state
#[derive(Default, hotrestart::State)]
struct Cache {
    /// Pre-copied at a restart: the library's tracked map, no lock around it.
    #[persist]
    entries: hotrestart::TrackedMap<String, Vec<u8>>,
}
// ANCHOR_END: state

#[hotrestart::hot_main(state_file = "cache.state")]
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
    let listener = hot.tcp("http", ("127.0.0.1", port))?;
    // Slow initialisation: the old process serves meanwhile, and pre-copies its map to us.
    if let Some(ms) = std::env::var("INIT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let cache = hot.ready(Cache::default()).await?;
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/kv/{key}", put(store).get(fetch).delete(remove))
        .route("/fill", post(fill))
        .route("/len", get(len))
        .layer(axum::middleware::map_response(add_pid))
        .with_state(cache);
    hotrestart::http::serve(&hot, listener, app).await?;
    Ok(())
}

async fn store(
    State(cache): State<Arc<Cache>>,
    Path(key): Path<String>,
    value: Bytes,
) -> &'static str {
    cache.entries.insert(key, value.to_vec());
    "stored"
}

async fn fetch(State(cache): State<Arc<Cache>>, Path(key): Path<String>) -> Response {
    match cache.entries.get(&key) {
        Some(value) => value.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn remove(State(cache): State<Arc<Cache>>, Path(key): Path<String>) -> Response {
    match cache.entries.remove(&key) {
        Some(value) => value.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The most entries one `/fill` stores, and the largest value it makes.
const MAX_FILL: usize = 50_000_000;
const MAX_VALUE: usize = 1 << 20;

#[derive(serde::Deserialize)]
struct Fill {
    n: usize,
    bytes: usize,
}

/// Fills on a blocking thread (a million inserts take a while); answers once all are stored.
async fn fill(State(cache): State<Arc<Cache>>, Query(Fill { n, bytes }): Query<Fill>) -> Response {
    if n > MAX_FILL || bytes > MAX_VALUE {
        let why = format!("n is at most {MAX_FILL} and bytes at most {MAX_VALUE}");
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    let filled = tokio::task::spawn_blocking(move || {
        cache.entries.reserve(n);
        for i in 0..n {
            let digits = i.to_string();
            let value = digits.bytes().cycle().take(bytes).collect();
            cache.entries.insert(format!("fill-{i}"), value);
        }
    })
    .await;
    match filled {
        Ok(()) => format!("filled {n}").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn len(State(cache): State<Arc<Cache>>) -> String {
    cache.entries.len().to_string()
}

async fn add_pid(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("x-pid", HeaderValue::from(std::process::id()));
    response
}
// ANCHOR_END: all
