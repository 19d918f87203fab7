//! Open HTTP/1.1 connections move to the successor: the client keeps its TCP connection and
//! the next response comes from the new pid. Bytes the old process had read but not parsed go
//! with the connection; a restart that rolls back gives the connections back to the old
//! process; a successor that cannot take them all refuses, and nothing is lost.

use hotrestart_testkit as common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use common::keepalive::{read_reply, Reply};
use common::*;

/// A persistent HTTP/1.1 client connection, over TCP or a Unix socket.
struct Client<S: Read + Write = TcpStream> {
    reader: BufReader<S>,
}

impl Client<UnixStream> {
    fn connect_unix(path: &std::path::Path) -> Self {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            reader: BufReader::new(s),
        }
    }
}

impl<S: Read + Write> Client<S> {
    /// Waits until the first bytes of a response arrive (without consuming them): the request
    /// is in flight in the server.
    fn wait_response_started(&mut self) {
        use std::io::BufRead;
        let got = self.reader.fill_buf().expect("the response starts").len();
        assert!(got > 0, "the connection ended before a response");
    }
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            reader: BufReader::new(s),
        }
    }

    fn local_port(&self) -> u16 {
        self.reader.get_ref().local_addr().unwrap().port()
    }
}

impl<S: Read + Write> Client<S> {
    fn write(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    fn send(&mut self, method: &str, path: &str) -> Result<Reply, String> {
        let request =
            format!("{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n");
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> Result<Reply, String> {
        read_reply(&mut self.reader)
    }
}

/// `POST /hit` on every client; each must be answered 200 by `pid` on its open connection,
/// with the next count: the state and the connections moved together.
fn hit_all<S: Read + Write>(clients: &mut [Client<S>], pid: u32, when: &str) {
    let mut count: Option<u64> = None;
    for (i, c) in clients.iter_mut().enumerate() {
        let reply = c
            .send("POST", "/hit")
            .unwrap_or_else(|e| panic!("connection {i} {when}: {e}"));
        assert_eq!(reply.status, 200, "connection {i} {when}: {reply:?}");
        assert_eq!(
            reply.pid, pid,
            "connection {i} {when}: answered by the wrong process"
        );
        assert!(!reply.close, "connection {i} {when}: asked to reconnect");
        let now: u64 = reply.body.parse().expect("a count");
        if let Some(before) = count {
            assert_eq!(
                now,
                before + 1,
                "connection {i} {when}: hits counted once, in order"
            );
        }
        count = Some(now);
    }
}

#[test]
fn sixteen_idle_connections_move_to_each_of_five_successors() {
    let svc = Service::start(&[]);
    let mut clients: Vec<Client> = (0..16).map(|_| Client::connect(svc.addr())).collect();
    let ports: Vec<u16> = clients.iter().map(Client::local_port).collect();
    let mut pid = svc.pid();
    hit_all(&mut clients, pid, "before the restarts");
    let mut held = Vec::new();
    for round in 1..=5 {
        let old = pid;
        // Waits for the new pid on a fresh connection, and for the old process to exit 0.
        pid = svc.hot_restart();
        assert_ne!(pid, old);
        hit_all(&mut clients, pid, &format!("after restart {round}"));
        let now = socket_count(pid);
        assert!(
            now > 16,
            "the new process holds the 16 connections and the listener ({now} sockets)"
        );
        held.push(now);
    }
    assert!(
        held.iter().all(|&n| n == held[0]),
        "each generation holds the same sockets, none leaked: {held:?}"
    );
    let still: Vec<u16> = clients.iter().map(Client::local_port).collect();
    assert_eq!(ports, still, "the same 16 TCP connections throughout");
    assert_eq!(svc.count(), 16 * 6, "every hit counted once");
    assert_eq!(svc.live_processes(), vec![pid]);
}

/// Bytes waiting in the receive queue of the server's end of a loopback TCP connection
/// (`/proc/net/tcp`: local port `server`, remote port `client`).
fn server_rx_queue(server: u16, client: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let (local, remote) = (
        format!("0100007F:{server:04X}"),
        format!("0100007F:{client:04X}"),
    );
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.get(1) != Some(&local.as_str()) || cols.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let queues = cols.get(4)?;
        u64::from_str_radix(queues.split(':').nth(1)?, 16).ok()
    })
}

#[test]
fn bytes_already_read_travel_with_the_connection() {
    let svc = Service::start(&[]);
    let mut c = Client::connect(svc.addr());
    let old = svc.pid();
    assert_eq!(c.send("POST", "/hit").unwrap().pid, old);
    // Half a request head, read by the old process (and held in its parser) before the restart:
    // the server side's receive queue is empty once it has read them, so what the successor
    // parses next can only have come with the connection as handed-over bytes.
    c.write(b"POST /hit HTTP/1.1\r\nhost: te");
    let start = std::time::Instant::now();
    while server_rx_queue(svc.port, c.local_port()) != Some(0) {
        assert!(
            start.elapsed() < WAIT,
            "the old process never read the half request"
        );
        thread::sleep(Duration::from_millis(5));
    }
    let new = svc.hot_restart();
    c.write(b"st\r\ncontent-length: 0\r\n\r\n");
    let reply = c.read_reply().unwrap();
    assert_eq!(
        (reply.status, reply.pid),
        (200, new),
        "the successor parsed the whole request: {reply:?}"
    );
    assert_eq!(svc.count(), 2);
}

#[test]
fn a_rolled_back_restart_gives_the_connections_back() {
    let svc = Service::start(&[]);
    let old = svc.pid();
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(svc.addr())).collect();
    hit_all(&mut clients, old, "before the restart");

    // A new build that refuses the snapshot: the connections were already parked for it.
    svc.replace_binary(&std::fs::read(example("counter_incompatible")).unwrap());
    svc.signal(old, libc::SIGHUP);
    let line = svc.wait_rollbacks(1).rollbacks().remove(0);
    assert!(line.contains("rejected the handover"), "{line}");
    hit_all(&mut clients, old, "after the rollback");

    svc.restore_binary();
    let new = svc.hot_restart();
    hit_all(&mut clients, new, "after the good restart");
    assert_eq!(svc.count(), 12);
}

#[test]
fn a_successor_short_of_fds_refuses_the_connections_and_none_is_lost() {
    let svc = Service::start_faulty(&[]);
    let old = svc.pid();
    let mut clients: Vec<Client> = (0..60).map(|_| Client::connect(svc.addr())).collect();
    hit_all(&mut clients, old, "before the restart");

    // Room for the handover itself, and a successor (which inherits the limit) that opens 40
    // files at start-up: it cannot also take the 60 connections.
    let nofile = |set: Option<u64>| {
        let mut was = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a null new limit only reads the current one into the live local `was`.
        let rc =
            unsafe { libc::prlimit(old as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut was) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
        if let Some(soft) = set {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: was.rlim_max,
            };
            // SAFETY: prlimit reads `limit`, a live local, and writes nothing.
            let rc = unsafe {
                libc::prlimit(
                    old as i32,
                    libc::RLIMIT_NOFILE,
                    &limit,
                    std::ptr::null_mut(),
                )
            };
            assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
        }
        was.rlim_cur
    };
    let was = nofile(Some(fd_count(old) as u64 + 16));
    svc.plan("open-files=40");
    svc.signal(old, libc::SIGHUP);
    let line = svc.wait_rollbacks(1).rollbacks().remove(0);
    assert!(line.contains("raise its open-file limit"), "{line}");
    hit_all(&mut clients, old, "after the refused handover");

    nofile(Some(was));
    let new = svc.hot_restart();
    hit_all(&mut clients, new, "after the restart");
    assert_eq!(svc.count(), 180);
}

#[test]
fn tcp_and_unix_connections_each_return_to_their_own_listener() {
    let mut svc = Service::prepare("probe", &[]);
    let sock = svc.dir.path().join("admin.sock");
    svc.env
        .push(("PROBE_UNIX".into(), sock.to_str().unwrap().into()));
    let old = svc.spawn();
    let mut tcp = Client::connect(svc.addr());
    let mut unix = Client::connect_unix(&sock);
    assert_eq!(unix.send("GET", "/").unwrap().pid, old);
    assert_eq!(tcp.send("GET", "/").unwrap().pid, old);

    let new = svc.hot_restart();
    let reply = unix.send("GET", "/").unwrap();
    assert_eq!(
        (reply.status, reply.pid, reply.close),
        (200, new, false),
        "the Unix connection moved"
    );
    let reply = tcp.send("GET", "/").unwrap();
    assert_eq!(
        (reply.status, reply.pid, reply.close),
        (200, new, false),
        "the TCP connection moved"
    );
}

#[test]
fn sigterm_during_a_handover_gives_parked_connections_back_and_closes_them_cleanly() {
    let svc = Service::start_faulty(&[]);
    let old = svc.pid();
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(svc.addr())).collect();
    hit_all(&mut clients, old, "before the restart");
    // The hook runs after the connections are parked and holds the handover for 3 s; at the
    // exit that follows the SIGTERM it runs again, after the drain, for another 3 s.
    svc.plan("hook-sleep-ms=3000");
    svc.signal(old, libc::SIGHUP);
    svc.wait_log("hook: sleeping", 1);
    let successor = svc.successor_of(old);
    svc.signal(old, libc::SIGTERM);
    let sent = std::time::Instant::now();
    for (i, c) in clients.iter_mut().enumerate() {
        let mut byte = [0u8; 1];
        let n = c
            .reader
            .read(&mut byte)
            .unwrap_or_else(|e| panic!("connection {i} was reset, not closed: {e}"));
        assert_eq!(
            n, 0,
            "connection {i}: closed cleanly (EOF), nothing unasked for"
        );
    }
    // Ordering, not timing: the exit's hook (3 s, after the drain) had not finished, so the
    // connections were given back and drained, not left parked until the process exited.
    assert!(
        is_alive(old) && svc.count_log("hook: done") <= 1,
        "the connections closed only at the exit ({:?} after SIGTERM); log:\n{}",
        sent.elapsed(),
        svc.log_text()
    );
    let deadline = std::time::Instant::now() + WAIT;
    while exit_code(old).is_none() && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        exit_code(old),
        Some(0),
        "the old process drains and exits 0; log:\n{}",
        svc.log_text()
    );
    // Killed by the old process, which also reaped it: only its absence can be checked.
    assert!(!is_alive(successor), "the abandoned successor was killed");
    svc.spawn();
    assert_eq!(svc.count(), 4, "the state file saved at exit has every hit");
}

#[test]
fn a_request_in_flight_finishes_in_the_old_process_then_its_connection_moves() {
    let svc = Service::start_faulty(&[]);
    let old = svc.pid();
    let mut c = Client::connect(svc.addr());
    // A handler still computing when the restart quiesces (300 ms, within the snapshot
    // timeout): the snapshot waits for it, so its write is in the state the successor gets.
    c.write(b"POST /slow-hit/300 HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n");
    wait_read_by_server(&svc, &c);
    svc.signal(old, libc::SIGHUP);
    let reply = c.read_reply().unwrap();
    assert_eq!(
        (reply.status, reply.pid, reply.close, reply.body.as_str()),
        (200, old, false, "1"),
        "the request in flight is answered by the old process, without `connection: close`"
    );
    let new = svc.wait_new_pid(old);
    let next = c.send("POST", "/hit").unwrap();
    assert_eq!(
        (next.status, next.pid, next.close, next.body.as_str()),
        (200, new, false, "2"),
        "the next request on the same connection is answered by the successor, which has the slow request's write"
    );
    assert_eq!(wait_exit(old, WAIT), 0);
}

/// Waits until the server has read everything `c` sent (its socket's receive queue is empty).
fn wait_read_by_server(svc: &Service, c: &Client) {
    let start = std::time::Instant::now();
    while server_rx_queue(svc.port, c.local_port()) != Some(0) {
        assert!(start.elapsed() < WAIT, "the server never read the request");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_streaming_response_does_not_hold_the_snapshot_and_finishes_in_the_old_process() {
    let svc = Service::start_faulty(&[]);
    let old = svc.pid();
    // 30 lines over 3 s: a response of no known length, long-lived.
    let (mut stream, mut got) = svc.open_stream(3);
    svc.signal(old, libc::SIGHUP);
    // The successor serves while the stream still runs in the old process: the snapshot did
    // not wait for it.
    let new = svc.wait_new_pid(old);
    assert_ne!(new, old);
    stream.set_nonblocking(true).unwrap();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    let so_far = String::from_utf8_lossy(&got).into_owned();
    assert!(
        !so_far.contains("line 29"),
        "the stream had already ended when the successor served: {so_far:?}"
    );
    assert!(is_alive(old), "the old process serves the stream on");
    // It runs to its end there (the drain timeout, 10 s, is longer), then the old process exits.
    stream.set_nonblocking(false).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    got.extend_from_slice(&rest);
    let all = String::from_utf8_lossy(&got);
    assert!(all.contains("line 29"), "the whole stream: {all:?}");
    assert!(all.contains(&format!("x-pid: {old}")), "{all:?}");
    assert_eq!(wait_exit(old, WAIT), 0);
}

#[test]
fn a_slow_request_holds_the_snapshot_for_the_snapshot_timeout_and_no_longer() {
    let svc = Service::start_faulty(&[("HOTRESTART_SNAPSHOT_TIMEOUT", "200ms")]);
    let old = svc.pid();
    let mut c = Client::connect(svc.addr());
    // 3 s of computing, far past the snapshot timeout.
    c.write(b"POST /slow-hit/3000 HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n");
    wait_read_by_server(&svc, &c);
    svc.signal(old, libc::SIGHUP);
    let new = svc.wait_new_pid(old);
    // The successor serves while the slow request is still computing in the old process.
    assert_eq!(
        svc.count(),
        0,
        "the snapshot was taken before the slow write"
    );
    assert!(is_alive(old));
    let reply = c.read_reply().unwrap();
    assert_eq!(
        (reply.status, reply.pid),
        (200, old),
        "it finishes in the old process"
    );
    assert_eq!(
        svc.count_log("still running at the snapshot timeout"),
        1,
        "one line counts what the snapshot did not wait for; log:\n{}",
        svc.log_text()
    );
    assert_eq!(svc.pid(), new);
    assert_eq!(wait_exit(old, WAIT), 0);
}

/// hyper may notice a dropped request body only after the response is out, i.e. after the
/// connection looks idle; a connection whose last request body was not read to its end is
/// therefore never handed over (its remaining bytes would reach the successor as requests):
/// it ends with the old process. (The race itself is not reproduced here; this checks the rule.)
#[test]
fn a_connection_whose_request_body_was_left_unread_is_not_handed_over() {
    let svc = Service::start_faulty(&[]);
    let old = svc.pid();
    let mut c = Client::connect(svc.addr());
    // `/stream/1` ignores its request body, made of `POST /hit` requests: were they ever read
    // as requests, the counter would show it.
    let smuggled = "POST /hit HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n".repeat(50);
    c.write(
        format!(
            "GET /stream/1 HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        )
        .as_bytes(),
    );
    c.wait_response_started();
    svc.signal(old, libc::SIGHUP);
    let reply = c.read_reply().unwrap();
    assert_eq!((reply.status, reply.pid), (200, old));
    let new = svc.wait_new_pid(old);
    assert_ne!(new, old);
    let mut rest = Vec::new();
    let end = c.reader.read_to_end(&mut rest);
    assert!(
        end.is_ok(),
        "the old process closed the connection instead of handing it over: {end:?}"
    );
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert_eq!(svc.count(), 0, "no body byte was executed as a request");
}

/// A handler that answers at once and leaves its request body unfinished (queued for a task):
/// the rest of that body is still to come on the connection, so it is not handed over (the
/// successor would read the body as requests); it ends with the old process, as in a drain.
#[test]
fn a_connection_whose_request_body_is_still_held_unfinished_is_not_handed_over() {
    let svc = Service::start_faulty(&[("HOTRESTART_DRAIN_TIMEOUT", "1s")]);
    let old = svc.pid();
    let mut c = Client::connect(svc.addr());
    // The second half of the body is made of `POST /hit` requests: handed over mid-body, the
    // successor would execute them.
    let first = "x".repeat(1000);
    let second = "POST /hit HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n".repeat(20);
    c.write(
        format!(
            "POST /upload-later HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n\r\n{first}",
            first.len() + second.len()
        )
        .as_bytes(),
    );
    let reply = c.read_reply().unwrap();
    assert_eq!((reply.status, reply.pid), (202, old));
    svc.signal(old, libc::SIGHUP);
    // The handover is decided (the successor serves) while the body is unfinished; the old
    // process, draining this connection, reads the rest.
    let new = svc.wait_new_pid(old);
    assert_ne!(new, old);
    c.write(second.as_bytes());
    assert_eq!(wait_exit(old, WAIT), 0);
    let mut rest = Vec::new();
    let _ = c.reader.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("HTTP/1.1"),
        "nothing answered the body's bytes: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(svc.count(), 0, "no body byte was executed as a request");
}

#[test]
fn a_streaming_response_runs_to_its_end_when_the_restart_rolls_back() {
    use std::io::Read;
    // A drain timeout far shorter than the stream: were its clock started at the quiescence,
    // the rolled-back process would cut the stream it serves on.
    let svc = Service::start_faulty(&[("HOTRESTART_DRAIN_TIMEOUT", "300ms")]);
    let old = svc.pid();
    let (mut stream, _) = svc.open_stream(2);
    // A build whose `hits` changed type: it refuses the snapshot, after the quiescence.
    svc.replace_binary(&std::fs::read(example("counter_incompatible")).unwrap());
    svc.signal(old, libc::SIGHUP);
    let status = svc.wait_rollbacks(1);
    assert!(status.rollbacks()[0].contains("rejected"), "{status:?}");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let all = String::from_utf8_lossy(&rest);
    assert!(
        all.contains("line 19"),
        "the stream ran to its end in the process that serves on: {all:?}"
    );
    assert_eq!(svc.pid(), old);
}
