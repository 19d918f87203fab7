//! `#[derive(State)]` on the field types a service keeps: atomics, `Mutex` and `RwLock` of
//! collections, next to unmarked fields of any type. Also generic, unit and raw-named structs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use hotrestart::State;

#[derive(State)]
struct AppState {
    #[persist]
    hits: AtomicU64,
    #[persist]
    per_user: Mutex<HashMap<String, u64>>,
    /// Doc comments and other attributes sit next to `#[persist]`.
    #[persist]
    #[allow(dead_code)]
    recent: RwLock<Vec<String>>,
    #[persist]
    r#type: String,
    started: std::time::Instant,
}

#[derive(State)]
#[state(crate = "hotrestart")]
struct Generic<T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static> {
    #[persist]
    value: T,
}

#[derive(State)]
struct NothingPersisted {
    _started: std::time::Instant,
}

#[derive(State)]
struct Unit;

fn is_state<S: State>(_: &S) {}

fn main() {
    let state = AppState {
        hits: AtomicU64::new(1),
        per_user: Mutex::new(HashMap::new()),
        recent: RwLock::new(Vec::new()),
        r#type: String::new(),
        started: std::time::Instant::now(),
    };
    state.hits.fetch_add(1, Ordering::Relaxed);
    let _ = (&state.per_user, &state.recent, &state.r#type, state.started);
    is_state(&state);
    is_state(&Generic { value: 1u8 });
    is_state(&NothingPersisted { _started: std::time::Instant::now() });
    is_state(&Unit);
}
