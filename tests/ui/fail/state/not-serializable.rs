#[derive(hotrestart::State)]
struct AppState {
    #[persist]
    hits: u64,
    #[persist]
    started: std::time::Instant,
}

fn main() {}
