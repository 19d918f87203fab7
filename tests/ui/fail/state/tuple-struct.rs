#[derive(hotrestart::State)]
struct AppState(#[persist] u64);

fn main() {}
