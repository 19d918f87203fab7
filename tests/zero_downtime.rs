//! Under load, in both client modes, a hot restart fails no request and loses no write.

use hotrestart_testkit as common;

use common::keepalive::{KeepAliveLoad, Report};
use common::*;

const CONNECTIONS: usize = 8;

/// 8 keep-alive clients hitting the counter through 5 hot restarts: no failure, and the
/// counter conserved. Returns what the clients saw.
fn keep_alive_clients(env: &[(&str, &str)]) -> Report {
    let svc = Service::start(env);
    let load = KeepAliveLoad::start(svc.addr(), CONNECTIONS);
    // Every connection made and busy, then after each restart every connection served again.
    load.wait_more(4 * CONNECTIONS as u64);
    for _ in 0..5 {
        svc.hot_restart();
        load.wait_more(2 * CONNECTIONS as u64);
    }
    let report = load.finish();
    assert!(
        report.failures.is_empty(),
        "{} failures: {:?}",
        report.failures.len(),
        &report.failures[..report.failures.len().min(10)]
    );
    assert_eq!(
        svc.count(),
        report.acked,
        "counter conserved: every acknowledged hit once"
    );
    report
}

#[test]
fn keep_alive_clients_keep_their_connections_across_restarts() {
    let report = keep_alive_clients(&[]);
    let connections = CONNECTIONS as u64;
    assert_eq!(report.reconnects, 0, "no client was asked to reconnect");
    assert_eq!(
        report.connects, connections,
        "each client used the one connection it opened"
    );
    // Each connection outlived the 5 old processes, so each moved; a client that sent nothing
    // during one generation's short life skips a pid, so this is not exactly 5 per connection
    // (the idle test in tests/connections.rs checks each move).
    assert!(
        report.moves >= connections && report.moves <= 5 * connections,
        "every connection moved to a successor: {report:?}"
    );
}

#[test]
fn with_hand_over_off_keep_alive_clients_are_asked_to_reconnect_without_error() {
    let report = keep_alive_clients(&[("HOTRESTART_HAND_OVER_CONNECTIONS", "0")]);
    assert!(
        report.reconnects > 0,
        "the old processes asked their clients to reconnect"
    );
    assert_eq!(report.moves, 0, "no connection moved");
}

#[test]
fn new_connection_clients_see_no_error_and_no_lost_write_across_restarts() {
    new_connection_clients(&[]);
}

#[test]
fn with_hand_over_off_new_connection_clients_see_no_error_either() {
    // A connection accepted just before the handover, whose request has not arrived yet, is
    // then served by the old process (not closed unread).
    new_connection_clients(&[("HOTRESTART_HAND_OVER_CONNECTIONS", "0")]);
}

fn new_connection_clients(env: &[(&str, &str)]) {
    let svc = Service::start(env);
    let loads: Vec<_> = (0..4).map(|_| Load::start(svc.addr())).collect();
    let each_more = |n| loads.iter().for_each(|l| l.wait_more(n));
    each_more(10);
    for _ in 0..5 {
        svc.hot_restart();
        each_more(5);
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
