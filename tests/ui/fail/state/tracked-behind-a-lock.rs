use std::sync::Mutex;

#[derive(hotrestart::State)]
struct Cache {
    #[persist]
    hits: u64,
    #[persist]
    entries: Mutex<hotrestart::TrackedMap<String, Vec<u8>>>,
}

fn main() {}
