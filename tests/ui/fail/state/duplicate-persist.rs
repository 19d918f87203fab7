#[derive(hotrestart::State)]
struct AppState {
    #[persist]
    #[persist]
    hits: u64,
}

fn main() {}
