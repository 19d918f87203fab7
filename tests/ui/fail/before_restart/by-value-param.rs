struct AppState;

#[hotrestart::before_restart]
fn flush(_state: AppState) {}

fn main() {}
