//! Unix-domain and UDP sockets cross a hot restart too, and the programmatic trigger works.

use hotrestart_testkit as common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;

fn unix_get(path: &std::path::Path) -> Result<Response, String> {
    let mut s = UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    parse_response(&raw)
}

fn udp_pid(port: u16) -> u32 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(b"ping", ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = socket.recv_from(&mut buf).expect("a UDP answer");
    std::str::from_utf8(&buf[..n]).unwrap().parse().unwrap()
}

#[test]
fn unix_and_udp_sockets_are_handed_over() {
    let mut svc = Service::prepare("probe", &[("PROBE_UDP", "1")]);
    let sock = svc.dir.path().join("admin.sock");
    svc.env
        .push(("PROBE_UNIX".into(), sock.to_str().unwrap().into()));
    let first = svc.spawn();
    let inode = std::fs::metadata(&sock)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    assert_eq!(unix_get(&sock).unwrap().pid, first);
    assert_eq!(udp_pid(svc.port), first);

    let second = svc.hot_restart();
    assert_eq!(
        unix_get(&sock).unwrap().pid,
        second,
        "the Unix socket is served by the successor"
    );
    assert_eq!(
        udp_pid(svc.port),
        second,
        "the UDP socket is served by the successor"
    );
    let after = std::fs::metadata(&sock)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    assert_eq!(
        inode, after,
        "the socket path is the same socket, never unlinked nor re-bound"
    );
}

#[test]
fn the_programmatic_trigger_restarts() {
    let svc = Service::start_example("probe", &[]);
    let old = svc.pid();
    let r = request(svc.addr(), "POST", "/restart").unwrap();
    assert_eq!(r.status, 202);
    let new = svc.wait_new_pid(old);
    assert_eq!(wait_exit(old, WAIT), 0);
    svc.wait_log(&format!("api restart: pid {old} -> pid {new}"), 1);
}
