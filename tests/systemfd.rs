//! The real systemfd (`cargo install --locked systemfd`), as the book's development loop uses
//! it: it passes its sockets with `LISTEN_FDS` and no names at all. The counter adopts the one
//! whose address it asks for, serves on it, and hot-restarts on it keeping its count.

use hotrestart_testkit as common;

use common::*;

/// The inode of the TCP socket listening on 127.0.0.1:`port`, from `/proc/net/tcp`.
fn listening_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // local_address, state 0A = LISTEN, inode is the tenth column.
        (cols.get(1) == Some(&local.as_str()) && cols.get(3) == Some(&"0A"))
            .then(|| cols.get(9)?.parse().ok())
            .flatten()
    })
}

#[test]
fn the_counter_serves_on_systemfds_unnamed_socket_and_restarts_on_it() {
    if !require("systemfd", "cargo install --locked systemfd") {
        return;
    }
    let mut service = Service::prepare("counter", &[]);
    // systemfd binds both ports itself.
    service.release_port();
    // Two sockets, the counter's second: it is found by its address, not by its place.
    let other = free_port();
    let (first, second) = (
        format!("http::127.0.0.1:{other}"),
        format!("http::127.0.0.1:{}", service.port),
    );
    let bin = service.bin.to_str().unwrap().to_owned();
    let systemfd = service.spawn_wrapped(
        "systemfd",
        &["--no-pid", "-s", &first, "-s", &second, "--", &bin],
    );
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill with integer arguments, on the systemfd this test started.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let _systemfd = Kill(systemfd);
    service.wait_serving();
    let lines = service.wait_log("adopted an inherited socket nobody named", 1);
    assert!(
        lines[0].contains("its local address is the one asked for"),
        "{}",
        lines[0]
    );
    // The socket served on is systemfd's own: the counter bound nothing itself.
    let inode = listening_inode(service.port).expect("a socket listens on the port");
    assert!(
        socket_inodes(systemfd).contains(&inode),
        "systemfd created it"
    );
    let first = service.pid();
    assert!(
        socket_inodes(first).contains(&inode),
        "the counter serves on it"
    );

    for n in 1..=3 {
        assert_eq!(service.hit(), n);
        // (systemfd is generation 0's parent and reaps it: gone, not an exit status, is
        // what the test can see.)
        let old = service.pid();
        service.signal(old, libc::SIGHUP);
        let new = service.wait_new_pid(old);
        wait_gone(old, WAIT);
        assert!(
            socket_inodes(new).contains(&inode),
            "generation {n} took the same socket"
        );
        assert_eq!(listening_inode(service.port), Some(inode));
    }
    assert_eq!(service.count(), 3);
    // The unclaimed one was closed by the counter (only systemfd, while it runs, holds it).
    if let Some(unclaimed) = listening_inode(other) {
        assert!(!socket_inodes(service.pid()).contains(&unclaimed));
    }

    let serving = service.pid();
    service.signal(serving, libc::SIGTERM);
    wait_gone(serving, WAIT);
    assert_eq!(service.saved_count(), 3);
}
