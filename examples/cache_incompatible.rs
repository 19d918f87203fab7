//! A test-support service: the cache as a later build whose `#[persist] entries` changed type
//! (values `Vec<u8>` became `String`). It must not take the pre-copy of a map it would decode
//! wrongly: the map then comes whole in the snapshot, where the type change is refused, and the
//! cache keeps serving with its live map (`tests/precopy.rs`).

use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

#[derive(Default, hotrestart::State)]
struct Cache {
    #[persist]
    entries: hotrestart::TrackedMap<String, String>,
}

#[hotrestart::hot_main(state_file = "cache.state")]
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
    let cache = hot.ready(Cache::default()).await?;
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                r.headers_mut()
                    .insert("x-pid", HeaderValue::from(std::process::id()));
                r
            },
        ))
        .with_state(cache);
    hotrestart::http::serve(&hot, listener, app).await?;
    Ok(())
}
