//! Under load, in both client modes, a hot restart fails no request and loses no write.

mod common;

use std::thread;
use std::time::Duration;

use common::keepalive::KeepAliveLoad;
use common::*;

#[test]
fn keep_alive_clients_see_no_error_and_no_lost_write_across_restarts() {
    let svc = Service::start(&[]);
    let load = KeepAliveLoad::start(svc.addr(), 8);
    thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        svc.hot_restart();
        thread::sleep(Duration::from_millis(100));
    }
    let (acked, reconnects, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        reconnects > 0,
        "the old processes asked their clients to reconnect"
    );
    assert_eq!(
        svc.count(),
        acked,
        "counter conserved: every acknowledged hit once"
    );
}

#[test]
fn new_connection_clients_see_no_error_and_no_lost_write_across_restarts() {
    let svc = Service::start(&[]);
    let loads: Vec<_> = (0..4).map(|_| Load::start(svc.addr())).collect();
    thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        svc.hot_restart();
        thread::sleep(Duration::from_millis(100));
    }
    let mut acked = 0;
    for load in loads {
        let (a, failures) = load.finish();
        assert!(
            failures.is_empty(),
            "{} failures: {failures:?}",
            failures.len()
        );
        acked += a;
    }
    assert_eq!(svc.count(), acked, "counter conserved");
}
