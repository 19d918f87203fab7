#[derive(hotrestart::State)]
enum AppState {
    Starting,
    Serving { hits: u64 },
}

fn main() {}
