//! Baseline peer: the counter service on plain axum, with no restart support at all.
//!
//! `SIGTERM`/`SIGINT`: stop accepting, let in-flight requests finish (axum graceful
//! shutdown), exit 0. A "restart" is the naive one: the benchmark sends SIGTERM, waits
//! for the exit, then starts a new process; the counter starts again from 0.

use std::sync::atomic::Ordering;

use hotrestart_bench_peers::{addr, app, event, init_logging, terminate_signal, Counter};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    init_logging();
    let addr = addr();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let counter = Counter::default();

    event("READY", format_args!("peer=plain_axum addr={addr}"));
    axum::serve(listener, app(counter.clone()))
        .with_graceful_shutdown(async {
            let sig = terminate_signal().await;
            event("DRAIN", format_args!("reason={sig}"));
        })
        .await?;
    event(
        "EXIT",
        format_args!("reason=shutdown count={}", counter.load(Ordering::SeqCst)),
    );
    Ok(())
}
