//! Every argument, a renamed parameter type, a `Result` return with `?`, and attributes kept.

use hotrestart::Hot;

#[derive(Debug)]
struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed")
    }
}

impl std::error::Error for Failed {}

fn check(ok: bool) -> Result<u32, Failed> {
    if ok { Ok(1) } else { Err(Failed) }
}

/// Doc comments and lint attributes stay on the generated `fn main`.
#[allow(clippy::needless_return)]
#[hotrestart::hot_main(
    ready_timeout = "5s",
    drain_timeout = "250ms",
    snapshot_timeout = "2s",
    state_file = "args.state",
    flavor = "multi_thread",
    worker_threads = 2,
    hand_over_connections = false,
    supervisor = false,
    crate = "hotrestart",
)]
async fn main(hot: Hot) -> Result<(), Box<dyn std::error::Error>> {
    let _handle: Hot = hot.clone();
    let one = check(true)?;
    tokio::task::yield_now().await;
    if one != 1 {
        return Err(Box::new(Failed));
    }
    Ok(())
}
