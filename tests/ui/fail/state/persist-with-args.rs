#[derive(hotrestart::State)]
struct AppState {
    #[persist(rename = "count")]
    hits: u64,
    #[persist = "names"]
    names: Vec<String>,
}

fn main() {}
