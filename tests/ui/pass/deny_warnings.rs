//! Every macro, under `#![deny(warnings)]`: the generated code adds no warning of its own
//! (`#[automatically_derived]` on the derive, no unused items).

#![deny(warnings)]

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default, hotrestart::State)]
struct App {
    #[persist]
    hits: AtomicU64,
}

#[hotrestart::before_restart]
async fn flush(app: &App) {
    let _ = app.hits.load(Ordering::Relaxed);
}

#[hotrestart::before_restart]
fn sync_hook() -> Result<(), std::io::Error> {
    Ok(())
}

#[hotrestart::hot_main(drain_timeout = "1s", supervisor = false)]
async fn main(hot: hotrestart::Hot) -> Result<(), hotrestart::Error> {
    let app = hot.ready(App::default()).await?;
    app.hits.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
