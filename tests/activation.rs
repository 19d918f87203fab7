//! Socket activation (systemd, `systemfd --no-pid`), bad inherited fds, and the environment
//! the application's own children see.

use hotrestart_testkit as common;

use std::fs;
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::*;

fn env_of(svc: &Service, more: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = svc.env.clone();
    env.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

#[test]
fn adopts_a_named_socket_without_listen_pid_and_hands_it_over() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut svc = Service::prepare("counter", &[]);
    let activated_port = listener.local_addr().unwrap().port();
    svc.env = env_of(&svc, &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "http")]);
    // PORT points elsewhere: serving on the activated port proves the socket was adopted.
    let pid = svc.spawn_with(Some(listener.as_raw_fd()));
    drop(listener);
    svc.port = activated_port;
    svc.wait_serving();
    assert_eq!(svc.pid(), pid);
    svc.hit();
    let new = svc.hot_restart();
    assert_ne!(new, pid);
    assert_eq!(svc.count(), 1);
}

#[test]
fn a_socket_unit_without_a_name_passes_its_own_and_the_socket_is_adopted_by_kind() {
    // A socket unit without `FileDescriptorName=` names the fd after itself; PORT points
    // elsewhere, so only the "first unnamed socket of its kind" rule can match.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut svc = Service::prepare("counter", &[]);
    let activated_port = listener.local_addr().unwrap().port();
    svc.env = env_of(
        &svc,
        &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "counter.socket")],
    );
    let pid = svc.spawn_with(Some(listener.as_raw_fd()));
    drop(listener);
    svc.port = activated_port;
    svc.wait_serving();
    assert_eq!(svc.pid(), pid);
    let line = &svc.wait_log("adopted an inherited socket nobody named", 1)[0];
    assert!(
        line.contains("the only unnamed socket of its kind") && line.contains("counter.socket"),
        "{line}"
    );
    svc.hit();
    svc.hot_restart();
    assert_eq!(svc.count(), 1);
}

#[test]
fn listen_pid_of_another_process_is_ignored() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut svc = Service::prepare("counter", &[]);
    svc.env = env_of(
        &svc,
        &[
            ("LISTEN_FDS", "1"),
            ("LISTEN_FDNAMES", "http"),
            ("LISTEN_PID", "1"),
        ],
    );
    // What is tested is the process binding PORT itself: the harness lets the port go.
    svc.release_port();
    let pid = svc.spawn_with(Some(listener.as_raw_fd()));
    svc.wait_serving(); // on PORT: it bound its own socket
    assert_eq!(svc.pid(), pid);
    svc.wait_log("LISTEN_PID=1 names another process: ignoring LISTEN_FDS", 1);
}

fn start_failure(fd: std::os::fd::RawFd, env: &[(&str, &str)]) -> (i32, String) {
    let mut svc = Service::prepare("counter", &[]);
    svc.env = env_of(&svc, env);
    let pid = svc.spawn_with(Some(fd));
    let code = wait_exit(pid, WAIT);
    (code, svc.log_text())
}

#[test]
fn an_inherited_regular_file_is_refused_with_a_clear_error() {
    let file = tempfile::tempfile().unwrap();
    let (code, log) = start_failure(
        file.as_raw_fd(),
        &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "http")],
    );
    assert_ne!(code, 0);
    assert!(
        log.contains("listener `http`: inherited fd 3 is a regular file, not a socket"),
        "{log}"
    );
}

#[test]
fn an_inherited_socket_of_the_wrong_type_is_refused() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (code, log) = start_failure(
        udp.as_raw_fd(),
        &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "http")],
    );
    assert_ne!(code, 0);
    assert!(
        log.contains("inherited fd 3 is a IPv4 datagram socket, expected a TCP listening socket"),
        "{log}"
    );
}

#[test]
fn listen_fds_beyond_the_open_fds_is_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (code, log) = start_failure(
        listener.as_raw_fd(),
        &[("LISTEN_FDS", "3"), ("LISTEN_FDNAMES", "http:a:b")],
    );
    assert_ne!(code, 0);
    assert!(log.contains("LISTEN_FDS=3 but fd 4 is not open"), "{log}");
}

#[test]
fn children_of_the_application_see_no_hotrestart_variable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut svc = Service::prepare("probe", &[]);
    let out = svc.dir.path().join("child-env");
    let activated_port = listener.local_addr().unwrap().port();
    svc.env = env_of(
        &svc,
        &[
            ("LISTEN_FDS", "1"),
            ("LISTEN_FDNAMES", "http"),
            ("HOTRESTART_DRAIN_TIMEOUT", "1s"),
            ("PROBE_CHILD_ENV", out.to_str().unwrap()),
        ],
    );
    svc.spawn_with(Some(listener.as_raw_fd()));
    drop(listener);
    svc.port = activated_port;
    svc.wait_serving();
    svc.hot_restart();
    for generation in [0, 1] {
        let path = format!("{}.{generation}", out.display());
        let start = std::time::Instant::now();
        while !std::path::Path::new(&path).exists() {
            assert!(start.elapsed() < WAIT, "{path} never written");
            std::thread::sleep(Duration::from_millis(20));
        }
        let env = fs::read_to_string(&path).unwrap();
        assert!(
            env.contains("PROBE_CHILD_ENV="),
            "the child's env was captured: {env}"
        );
        let leaked: Vec<_> = env
            .lines()
            .filter(|l| l.starts_with("HOTRESTART_") || l.starts_with("LISTEN_"))
            .collect();
        assert!(
            leaked.is_empty(),
            "generation {generation} leaked {leaked:?}"
        );
    }
}

#[test]
fn children_of_the_application_inherit_no_hotrestart_fd() {
    let mut svc = Service::prepare("probe", &[]);
    let out = svc.dir.path().join("child-fds");
    let control = svc.dir.path().join("control.sock");
    svc.env = env_of(
        &svc,
        &[
            ("PROBE_CHILD_FDS", out.to_str().unwrap()),
            ("HOTRESTART_CONTROL_SOCKET", control.to_str().unwrap()),
        ],
    );
    svc.spawn();
    svc.hot_restart();
    for generation in [0, 1] {
        let path = format!("{}.{generation}", out.display());
        let start = std::time::Instant::now();
        while !std::path::Path::new(&path).exists() {
            assert!(start.elapsed() < WAIT, "{path} never written");
            std::thread::sleep(Duration::from_millis(20));
        }
        let listing = fs::read_to_string(&path).unwrap();
        assert!(
            listing.contains(" 0 -> "),
            "the listing was captured: {listing}"
        );
        // Listeners, their duplicates, the handoff channel, the control socket and the
        // runtime's own sockets are all close-on-exec: a child sees none of them.
        let sockets: Vec<_> = listing.lines().filter(|l| l.contains("socket:")).collect();
        assert!(
            sockets.is_empty(),
            "generation {generation}'s child inherited {sockets:?}"
        );
    }
}
