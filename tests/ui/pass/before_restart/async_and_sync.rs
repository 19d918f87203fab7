//! Hooks in every accepted shape: async or not, with or without the state, returning `()` or a
//! `Result`. Each stays callable as written, and each is registered once.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default, hotrestart::State)]
struct AppState {
    #[persist]
    hits: AtomicU64,
}

#[hotrestart::before_restart]
async fn announce() {
    tokio::task::yield_now().await;
}

#[hotrestart::before_restart]
fn check_hits(state: &AppState) -> Result<(), String> {
    match state.hits.load(Ordering::Relaxed) {
        0 => Err("no hits yet".to_owned()),
        _ => Ok(()),
    }
}

#[hotrestart::before_restart]
async fn flush(state: &AppState) -> Result<(), std::io::Error> {
    state.hits.fetch_add(0, Ordering::Relaxed);
    Ok(())
}

mod nested {
    /// A private hook in another module is found too.
    #[hotrestart::before_restart(crate = "hotrestart")]
    fn private_hook(_: &super::AppState) {}
}

fn main() {
    let state = AppState::default();
    assert!(check_hits(&state).is_err());
    let _ = (announce(), flush(&state));

    let mut names: Vec<&str> = hotrestart::__private::HOOKS.iter().map(|hook| hook.name).collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    for (name, suffix) in names.iter().zip(["::announce", "::check_hits", "::flush", "::nested::private_hook"]) {
        assert!(name.ends_with(suffix), "{name} should end with {suffix}");
    }
}
