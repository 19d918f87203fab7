//! A test-support service: the counter, with faults on demand, for the fault-injection tests
//! (`tests/faults.rs`, `tests/state_file.rs`).
//!
//! The counter's interface (`GET /`, `POST /hit`, `GET /count`, `x-pid`, `PORT`, signals,
//! `HOTRESTART_*`), plus:
//! - `FAULTY_PLAN=<path>`: a file of words naming the faults to inject, read by each process
//!   at start and by the hook at each handover, so a test arms and disarms faults by writing it:
//!   - `exit`: a successor (generation > 0) returns an error from `main` before `hot.ready`;
//!   - `panic`: a successor panics before `hot.ready`;
//!   - `hang`: a successor sleeps forever before `hot.ready`;
//!   - `open-files=N`: a successor opens N files before `hot.ready` (and keeps them), like a
//!     new version that opens a pool at start-up, so it has fewer fds left than its predecessor;
//!   - `hook-sleep-ms=N`: the `#[before_restart]` hook logs `hook: sleeping`, sleeps N ms, then
//!     logs `hook: done` (in the old process, after it stopped accepting, before the snapshot);
//!   - `linger-ms=N`: once serving has ended (handed over, or stopping), `main` logs
//!     `lingering` and sleeps N ms before returning, like an application closing its pools.
//! - `FAULTY_BALLAST_MB=N`: a `#[persist] ballast` of N MiB, filled at a first start, so the
//!   snapshot is big enough to be caught in the middle of a transfer or a write.
//! - `GET /ballast` → `<length>:<fnv1a-64 hex>` of the ballast, to check it arrived whole.
//! - `GET /stream/N` → a response that sends a line every 100 ms for N seconds.
//! - `POST /slow-hit/N` → waits N ms, then counts a hit and answers the count: a handler still
//!   computing (no response yet) when a restart quiesces, whose write must be in the snapshot
//!   if it ends within the snapshot timeout.
//! - `POST /upload-later` → `202` at once; a task then reads the request body and logs
//!   `upload done bytes=N` (or `upload failed`), like a handler that queues an upload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

#[derive(Default, hotrestart::State)]
struct Faulty {
    #[persist]
    hits: AtomicU64,
    /// ASCII filler: a `String` is (de)serialized in one copy, a `Vec<u8>` byte by byte.
    #[persist]
    ballast: Mutex<String>,
}

/// The armed faults, read from `$FAULTY_PLAN`.
#[derive(Default)]
struct Plan {
    words: Vec<String>,
}

impl Plan {
    fn read() -> Plan {
        let words = std::env::var_os("FAULTY_PLAN")
            .and_then(|path| std::fs::read_to_string(path).ok())
            .map(|text| text.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        Plan { words }
    }

    fn has(&self, word: &str) -> bool {
        self.words.iter().any(|w| w == word)
    }

    fn millis(&self, key: &str) -> Option<u64> {
        self.words.iter().find_map(|w| {
            w.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .and_then(|n| n.parse().ok())
        })
    }
}

#[hotrestart::before_restart]
async fn slow_hook(_state: &Faulty) {
    if let Some(ms) = Plan::read().millis("hook-sleep-ms") {
        tracing::info!(ms, "hook: sleeping");
        tokio::time::sleep(Duration::from_millis(ms)).await;
        tracing::info!("hook: done");
    }
}

#[hotrestart::hot_main(state_file = "counter.state")]
async fn main(hot: hotrestart::Hot) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = hot.tcp("http", ("127.0.0.1", port))?;

    let plan = Plan::read();
    if hot.generation() > 0 {
        if plan.has("exit") {
            return Err("faulty: exiting before ready, as planned".into());
        }
        if plan.has("panic") {
            panic!("faulty: panicking before ready, as planned");
        }
        if let Some(n) = plan.millis("open-files") {
            let files: Vec<std::fs::File> = (0..n)
                .map_while(|_| std::fs::File::open("/dev/null").ok())
                .collect();
            tracing::info!(
                opened = files.len(),
                "faulty: holding open files, as planned"
            );
            std::mem::forget(files);
        }
        if plan.has("hang") {
            tracing::info!("faulty: hanging before ready, as planned");
            std::future::pending::<()>().await;
        }
    }

    let state = hot.ready(Faulty::default()).await?;
    let ballast_mb: usize = std::env::var("FAULTY_BALLAST_MB")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    {
        let mut ballast = state.ballast.lock().unwrap();
        if ballast.is_empty() && ballast_mb > 0 {
            *ballast = (0..ballast_mb << 20)
                .map(|i| char::from(b'a' + (i % 23) as u8))
                .collect();
        }
    }

    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/hit", post(hit))
        .route("/count", get(count))
        .route("/ballast", get(ballast))
        .route("/stream/{secs}", get(stream))
        .route("/slow-hit/{ms}", post(slow_hit))
        .route("/upload-later", post(upload_later))
        .layer(axum::middleware::map_response(add_pid))
        .with_state(state);
    hotrestart::http::serve(&hot, listener, app).await?;
    if let Some(ms) = Plan::read().millis("linger-ms") {
        tracing::info!(ms, "lingering");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(())
}

async fn hit(State(state): State<Arc<Faulty>>) -> String {
    (state.hits.fetch_add(1, Ordering::SeqCst) + 1).to_string()
}

async fn slow_hit(State(state): State<Arc<Faulty>>, Path(ms): Path<u64>) -> String {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    (state.hits.fetch_add(1, Ordering::SeqCst) + 1).to_string()
}

async fn count(State(state): State<Arc<Faulty>>) -> String {
    state.hits.load(Ordering::SeqCst).to_string()
}

async fn ballast(State(state): State<Arc<Faulty>>) -> String {
    let ballast = state.ballast.lock().unwrap();
    let hash = ballast.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}:{hash:016x}", ballast.len())
}

async fn upload_later(body: Body) -> axum::http::StatusCode {
    tokio::spawn(async move {
        match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => tracing::info!(bytes = bytes.len(), "upload done"),
            Err(e) => tracing::warn!("upload failed: {e}"),
        }
    });
    axum::http::StatusCode::ACCEPTED
}

async fn stream(Path(secs): Path<u64>) -> Body {
    let lines = secs * 10;
    let chunks = futures_util::stream::unfold(0u64, move |i| async move {
        if i >= lines {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some((
            Ok::<_, std::convert::Infallible>(format!("line {i}\n")),
            i + 1,
        ))
    });
    Body::from_stream(chunks)
}

async fn add_pid(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("x-pid", HeaderValue::from(std::process::id()));
    response
}
