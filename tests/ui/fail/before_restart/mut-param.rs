struct AppState {
    hits: u64,
}

#[hotrestart::before_restart]
fn reset(state: &mut AppState) {
    state.hits = 0;
}

fn main() {}
