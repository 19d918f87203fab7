//! `hotrestart-ctl`'s own command line. (Also makes `cargo test --workspace` build the binary,
//! which the process-level tests of the workspace drive.)

use std::process::Command;

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_hotrestart-ctl"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("usage: hotrestart-ctl <control socket> restart|status"));
    let out = Command::new(env!("CARGO_BIN_EXE_hotrestart-ctl"))
        .args(["/x", "reboot"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_absent_socket_exits_1_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nothing.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_hotrestart-ctl"))
        .arg(&socket)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(socket.to_str().unwrap()), "{err}");
}
