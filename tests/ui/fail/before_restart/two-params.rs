struct AppState;

#[hotrestart::before_restart]
async fn flush(_state: &AppState, _why: &str) {}

fn main() {}
