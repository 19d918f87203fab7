//! A test-support service: `notes` as a later build whose `#[persist] cache` changed type.
//! Handed the notes service's snapshot, it must refuse it — after the old process's
//! `#[before_restart]` hook closed its pool — so that the old process rolls back, runs its
//! `#[on_rollback]` hook and serves on with its database (`tests/notes.rs`).

#[derive(Default, hotrestart::State)]
struct Notes {
    #[persist]
    cache: u64,
}

#[hotrestart::hot_main]
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
    let _listener = hot.tcp("http", ("127.0.0.1", port))?;
    hot.ready(Notes::default()).await?;
    Ok(())
}
