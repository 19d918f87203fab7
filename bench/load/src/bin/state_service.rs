//! A hotrestart service holding a large `#[persist]` state, for the state-handoff benchmark.
//!
//! At a first start it builds `BIG_BLOB_BYTES` bytes of blob and `BIG_MAP_ENTRIES` short
//! strings in a map, and the same in the library's tracked types (`TRACKED_BLOB_BYTES`,
//! `TRACKED_MAP_ENTRIES`, pre-copied at a restart); successors receive them by handoff.
//! `GET /` answers `hello` with `x-pid`; `GET /size` answers `<blob bytes> <map entries>
//! <tracked blob bytes> <tracked map entries>`; `POST /poke?i=N` writes 16 bytes into the
//! tracked blob and one entry into the tracked map (a write load during pre-copy).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

#[derive(Default, hotrestart::State)]
struct Big {
    #[persist]
    blob: Vec<u8>,
    #[persist]
    map: HashMap<String, String>,
    #[persist]
    tracked_blob: hotrestart::TrackedBytes,
    #[persist]
    tracked_map: hotrestart::TrackedMap<String, String>,
}

#[derive(serde::Deserialize)]
struct Poke {
    i: usize,
}

fn env_usize(name: &str) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[hotrestart::hot_main(ready_timeout = "120s", drain_timeout = "5s")]
async fn main(hot: hotrestart::Hot) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let port: u16 = std::env::var("PORT")?.parse()?;
    let listener = hot.tcp("http", ("127.0.0.1", port))?;
    let mut big = Big::default();
    if hot.generation() == 0 {
        big.blob = (0..env_usize("BIG_BLOB_BYTES"))
            .map(|i| (i % 251) as u8)
            .collect();
        big.map = (0..env_usize("BIG_MAP_ENTRIES"))
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        big.tracked_blob = hotrestart::TrackedBytes::from(
            (0..env_usize("TRACKED_BLOB_BYTES"))
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>(),
        );
        big.tracked_map = (0..env_usize("TRACKED_MAP_ENTRIES"))
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
    }
    let big = hot.ready(big).await?;
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route(
            "/size",
            get(|State(big): State<Arc<Big>>| async move {
                format!(
                    "{} {} {} {}",
                    big.blob.len(),
                    big.map.len(),
                    big.tracked_blob.len(),
                    big.tracked_map.len()
                )
            }),
        )
        .route(
            "/poke",
            axum::routing::post(
                |State(big): State<Arc<Big>>, axum::extract::Query(Poke { i }): axum::extract::Query<Poke>| async move {
                    let len = big.tracked_blob.len();
                    if len >= 16 {
                        big.tracked_blob.write((i * 4099 * 16) % (len - 15), &[i as u8; 16]);
                    }
                    big.tracked_map.insert(format!("poke{i}"), i.to_string());
                    "poked"
                },
            ),
        )
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                r.headers_mut()
                    .insert("x-pid", HeaderValue::from(std::process::id()));
                r
            },
        ))
        .with_state(big);
    hotrestart::http::serve(&hot, listener, app).await?;
    Ok(())
}
