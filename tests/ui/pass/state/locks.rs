//! `#[persist]` behind every lock a service reaches for: std's (serde implements it), tokio's
//! and parking_lot's (through hotrestart): each field round-trips through a snapshot.

use std::collections::HashMap;

use hotrestart::State;

#[derive(Default, hotrestart::State)]
struct App {
    #[persist]
    std_map: std::sync::Mutex<HashMap<String, u64>>,
    #[persist]
    tokio_map: tokio::sync::RwLock<HashMap<String, u64>>,
    #[persist]
    tokio_list: tokio::sync::Mutex<Vec<String>>,
    #[persist]
    parking: parking_lot::RwLock<Vec<u8>>,
    #[persist]
    parking_count: parking_lot::Mutex<u64>,
}

fn main() {
    let app = App::default();
    app.std_map.lock().unwrap().insert("a".into(), 1);
    app.tokio_map.try_write().unwrap().insert("b".into(), 2);
    app.tokio_list.try_lock().unwrap().push("c".into());
    app.parking.write().push(3);
    *app.parking_count.lock() = 4;
    let _ = &app as &dyn State;
}
