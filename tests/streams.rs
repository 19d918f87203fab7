//! Long-lived connections through hot restarts, driven by real clients no one here wrote:
//! Python `websockets` and `grpcio` (tests/clients/), curl for the event stream, and a plain
//! TCP client for the movable echo protocol. The service is examples/streams.rs.

use hotrestart_testkit as common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The streams example with both of its listeners passed pre-bound; returns it and the echo
/// port.
fn streams(env: &[(&str, &str)]) -> (Service, u16) {
    let mut svc = Service::prepare("streams", env);
    let echo = svc.add_listener("echo");
    svc.first_pid = svc.spawn();
    (svc, echo)
}

fn assert_client(script: &str, args: &[String], svc: &Service) -> String {
    let (code, out) = run_client(script, args, Duration::from_secs(90));
    assert_eq!(
        code,
        Some(0),
        "{script} failed:\n{out}\nservice log:\n{}",
        svc.log_text()
    );
    out
}

#[test]
fn websockets_are_closed_with_1012_at_a_restart_and_reconnect_to_the_successor() {
    if !require_python(&["websockets"]) {
        return;
    }
    let (svc, _) = streams(&[]);
    let old = svc.pid();
    let out = assert_client(
        "ws.py",
        &[svc.port.to_string(), "HUP".into(), "20".into()],
        &svc,
    );
    assert!(out.contains("closed: 20 sockets with 1012"), "{out}");
    assert_eq!(
        wait_exit(old, WAIT),
        0,
        "the old process ends once they are closed"
    );
    // The snapshot waited for none of them (they are long-lived).
    assert_eq!(svc.count_log("still running at the snapshot timeout"), 0);
    let handed = svc.wait_log("handed over to pid", 1).remove(0);
    eprintln!("with 20 WebSockets open: {handed}");
}

#[test]
fn websockets_are_closed_with_1012_at_sigterm() {
    if !require_python(&["websockets"]) {
        return;
    }
    let (svc, _) = streams(&[]);
    let pid = svc.pid();
    let out = assert_client(
        "ws.py",
        &[svc.port.to_string(), "TERM".into(), "3".into()],
        &svc,
    );
    assert!(out.contains("closed: 3 sockets with 1012"), "{out}");
    assert_eq!(wait_exit(pid, WAIT), 0);
}

#[test]
fn grpc_unary_calls_never_fail_and_watch_streams_end_unavailable_over_20_restarts() {
    if !require_python(&["grpc", "grpc_health.v1.health_pb2"]) {
        return;
    }
    let (svc, _) = streams(&[]);
    let out = assert_client("grpc_load.py", &[svc.port.to_string(), "20".into()], &svc);
    assert!(
        out.contains("ended UNAVAILABLE at each of 20 restarts"),
        "{out}"
    );
    assert!(out.contains(" 0 failed"), "{out}");
    eprintln!("{out}");
}

#[test]
fn an_event_stream_ends_cleanly_at_a_restart_and_the_next_one_comes_from_the_successor() {
    if !require("curl", "apt-get install curl") {
        return;
    }
    let (svc, _) = streams(&[]);
    let old = svc.pid();
    let url = format!("http://127.0.0.1:{}/sse", svc.port);
    let mut curl = Command::new("curl")
        .args(["-sN", "--max-time", "30", &url])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let curl_pid = curl.id();
    let mut lines = BufReader::new(curl.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, format!("data: {old} 0"));
    svc.signal(old, libc::SIGHUP);
    // curl reads to the end of the stream: a clean end (the terminating chunk) is exit 0; a
    // connection cut short would be 18 ("partial file").
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    drop(curl);
    assert_eq!(
        wait_exit(curl_pid, WAIT),
        0,
        "curl saw the stream end cleanly; it got {} more lines",
        rest.len()
    );
    assert!(
        rest.iter()
            .all(|l| l.is_empty() || l.starts_with(&format!("data: {old} "))),
        "{rest:?}"
    );
    let new = svc.wait_new_pid(old);
    let next = Command::new("curl")
        .args(["-sN", "--max-time", "1", &url])
        .output()
        .unwrap();
    let next = String::from_utf8_lossy(&next.stdout);
    assert!(
        next.starts_with(&format!("data: {new} 0")),
        "the next stream comes from the successor: {next:?}"
    );
    assert_eq!(wait_exit(old, WAIT), 0);
}

#[test]
fn an_echo_connection_moves_through_five_restarts_without_reconnecting() {
    let (svc, echo) = streams(&[]);
    let stream = TcpStream::connect(("127.0.0.1", echo)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut ask = |text: &str| {
        writer.write_all(format!("{text}\n").as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let (pid, rest) = line.trim_end().split_once(' ').expect("<pid> <line>");
        assert_eq!(rest, text);
        pid.parse::<u32>().unwrap()
    };
    let mut pid = ask("first");
    assert_eq!(pid, svc.pid());
    for n in 0..5 {
        let old = pid;
        let new = svc.hot_restart();
        pid = ask(&format!("after restart {n}"));
        assert_eq!(pid, new, "the same connection, answered by the new pid");
        assert_ne!(pid, old);
    }
    assert_eq!(
        svc.count_log("open connections received from the previous process"),
        5,
        "handed over at each restart, not reconnected; log:\n{}",
        svc.log_text()
    );
}
