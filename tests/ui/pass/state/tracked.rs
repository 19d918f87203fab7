//! The tracked containers as `#[persist]` fields, next to other kinds, with no lock around them.

#[derive(Default, hotrestart::State)]
struct Cache {
    #[persist]
    hits: std::sync::atomic::AtomicU64,
    #[persist]
    entries: hotrestart::TrackedMap<String, Vec<u8>>,
    #[persist]
    blob: hotrestart::TrackedBytes,
    #[persist]
    names: std::sync::Mutex<Vec<String>>,
}

fn main() {
    let cache = Cache::default();
    cache.entries.insert("k".to_owned(), b"v".to_vec());
    cache.blob.extend_from_slice(b"bytes");
    let mut tracked = Vec::new();
    hotrestart::State::tracked(&cache, &mut |name, _| tracked.push(name));
    assert_eq!(tracked, ["entries", "blob"]);
}
