//! The state file under faults, with real processes: bad files of every kind are set aside
//! (never overwritten) and the service starts fresh; a failed or interrupted write never
//! damages the previous good file.

use hotrestart_testkit as common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use common::*;

/// Files beside `state` named `counter.state.corrupt-*`.
fn set_aside_files(state: &Path) -> Vec<PathBuf> {
    fs::read_dir(state.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("counter.state.corrupt-")
        })
        .collect()
}

/// Temporary files of state file writes left in the directory.
fn temp_files(state: &Path) -> Vec<PathBuf> {
    fs::read_dir(state.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp-"))
        .collect()
}

/// Stops the serving process gracefully (the state file is written).
fn stop(svc: &Service) {
    let pid = svc.pid();
    svc.signal(pid, libc::SIGTERM);
    assert_eq!(wait_exit(pid, WAIT), 0, "log:\n{}", svc.log_text());
}

/// A real state file holding `hits` hits, as the counter writes it on SIGTERM.
fn good_state_file(hits: u64) -> Vec<u8> {
    let svc = Service::start(&[]);
    for _ in 0..hits {
        svc.hit();
    }
    stop(&svc);
    fs::read(&svc.state_file).unwrap()
}

/// Starts the counter on a state file holding `bytes`: it must start fresh, set the file aside
/// byte for byte with one log line naming `reason`, and later save a good file in its place.
fn bad_state_file_is_set_aside(bytes: &[u8], reason: &str) {
    let svc = Service::prepare("counter", &[]);
    fs::write(&svc.state_file, bytes).unwrap();
    svc.spawn();
    assert_eq!(svc.count(), 0, "starts with the initial state");
    let aside = set_aside_files(&svc.state_file);
    assert_eq!(aside.len(), 1, "set aside once: {aside:?}");
    assert_eq!(fs::read(&aside[0]).unwrap(), bytes, "kept byte for byte");
    assert!(!svc.state_file.exists());
    let lines = svc.wait_log("unusable", 1);
    assert_eq!(lines.len(), 1, "one log line");
    assert!(
        lines[0].contains(reason) && lines[0].contains("moved to"),
        "expected {reason:?}: {}",
        lines[0]
    );

    svc.hit();
    stop(&svc);
    assert_eq!(
        fs::read(&aside[0]).unwrap(),
        bytes,
        "the bad file is never overwritten"
    );
    svc.spawn();
    assert_eq!(svc.count(), 1, "a good file was written in its place");
}

#[test]
fn truncated_state_file_is_set_aside() {
    let good = good_state_file(3);
    bad_state_file_is_set_aside(&good[..good.len() - 5], "truncated");
}

#[test]
fn bit_flipped_state_file_is_set_aside() {
    let mut bytes = good_state_file(3);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x04;
    bad_state_file_is_set_aside(&bytes, "checksum mismatch");
}

#[test]
fn empty_state_file_is_set_aside() {
    bad_state_file_is_set_aside(b"", "bad magic");
}

#[test]
fn state_file_from_a_newer_format_version_is_set_aside() {
    let mut bytes = good_state_file(3);
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    bad_state_file_is_set_aside(&bytes, "written in format version 2");
}

#[test]
fn unreadable_state_file_is_set_aside() {
    let svc = Service::prepare("counter", &[]);
    let good = good_state_file(2);
    fs::write(&svc.state_file, &good).unwrap();
    fs::set_permissions(&svc.state_file, fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads anything: the service runs without the capability that lets it.
    svc.spawn_with_setup(without_permission_override());
    svc.wait_serving();
    assert_eq!(svc.count(), 0);
    let lines = svc.wait_log("unusable", 1);
    assert!(
        lines[0].contains("Permission denied") && lines[0].contains("moved to"),
        "{}",
        lines[0]
    );
    let aside = set_aside_files(&svc.state_file);
    assert_eq!(aside.len(), 1);
    fs::set_permissions(&aside[0], fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::read(&aside[0]).unwrap(), good, "kept byte for byte");
}

#[test]
fn state_file_path_that_is_a_directory_is_left_alone_and_never_written() {
    let svc = Service::prepare("counter", &[]);
    fs::create_dir(&svc.state_file).unwrap();
    fs::write(svc.state_file.join("keep"), b"operator's file").unwrap();
    svc.spawn();
    assert_eq!(svc.count(), 0);
    let lines = svc.wait_log("unusable", 1);
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].contains("is a directory") && lines[0].contains("will not be overwritten"),
        "{}",
        lines[0]
    );
    svc.hit();
    stop(&svc);
    assert_eq!(svc.count_log("not writing the state file"), 1);
    assert!(svc.state_file.is_dir());
    assert_eq!(
        fs::read(svc.state_file.join("keep")).unwrap(),
        b"operator's file"
    );
    assert!(set_aside_files(&svc.state_file).is_empty());
}

/// The faulty example with a 1 MiB state, a good state file of 3 hits, serving 5 hits.
fn big_state_with_a_good_file() -> (Service, Vec<u8>) {
    let svc = Service::prepare_faulty(&[("FAULTY_BALLAST_MB", "1")]);
    svc.spawn();
    for _ in 0..3 {
        svc.hit();
    }
    stop(&svc);
    let good = fs::read(&svc.state_file).unwrap();
    assert!(good.len() > 1 << 20);
    (svc, good)
}

/// Checks what a failed save must leave: the old file, whole; no temporary file; one line.
fn failed_save_keeps_the_good_file(svc: &Service, good: &[u8], reason: &str) {
    let lines = svc.wait_log("state not saved", 1);
    assert_eq!(lines.len(), 1, "one line says so");
    assert!(
        lines[0].contains(reason),
        "expected {reason:?}: {}",
        lines[0]
    );
    assert_eq!(
        fs::read(&svc.state_file).unwrap(),
        good,
        "the previous good file is whole"
    );
    assert!(
        temp_files(&svc.state_file).is_empty(),
        "no temporary file left"
    );
    svc.spawn();
    assert_eq!(svc.count(), 3, "and it still restores");
}

#[test]
fn a_write_failing_for_lack_of_space_keeps_the_previous_file() {
    let (svc, good) = big_state_with_a_good_file();
    // The disk "fills" 64 KiB into the new 1 MiB file (the log stays far below that).
    let pid = svc.spawn_with_setup(file_size_limit(64 << 10));
    svc.wait_serving();
    assert_eq!(svc.count(), 3);
    svc.hit();
    svc.signal(pid, libc::SIGTERM);
    wait_exit(pid, WAIT);
    failed_save_keeps_the_good_file(&svc, &good, "File too large");
}

#[test]
fn a_write_refused_by_a_read_only_directory_keeps_the_previous_file() {
    let (svc, good) = big_state_with_a_good_file();
    let dir = svc.state_file.parent().unwrap().to_owned();
    let pid = svc.spawn_with_setup(without_permission_override());
    svc.wait_serving();
    svc.hit();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o500)).unwrap();
    svc.signal(pid, libc::SIGTERM);
    wait_exit(pid, WAIT);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    failed_save_keeps_the_good_file(&svc, &good, "Permission denied");
}

#[test]
fn a_process_killed_in_the_middle_of_writing_leaves_the_old_file_whole() {
    let svc = Service::prepare_faulty(&[("FAULTY_BALLAST_MB", "16")]);
    svc.spawn();
    svc.hit();
    stop(&svc);
    let mut good = fs::read(&svc.state_file).unwrap();
    let mut saved = 1;
    // Kill a writer as soon as its temporary file exists, before the rename; tried again if
    // a write was ever quicker than the 1 ms poll.
    let mut interrupted = false;
    for _ in 0..5 {
        let pid = svc.spawn();
        assert_eq!(svc.count(), saved);
        svc.hit();
        let tmp = svc
            .state_file
            .with_file_name(format!(".counter.state.tmp-{pid}"));
        svc.signal(pid, libc::SIGTERM);
        let start = std::time::Instant::now();
        while !tmp.exists() && exit_code(pid).is_none() && start.elapsed() < WAIT {
            thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: kill with integer arguments, on the process this test just started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        wait_exit(pid, WAIT);
        let now = fs::read(&svc.state_file).unwrap();
        if tmp.exists() {
            assert_eq!(now, good, "killed mid-write: the old file is whole");
            interrupted = true;
            break;
        }
        // The write won the race: the new file is the good one now.
        good = now;
        saved += 1;
    }
    assert!(interrupted, "no write was caught in the middle");
    // The next start restores the old file and removes the dead writer's temporary file.
    svc.spawn();
    assert_eq!(svc.count(), saved);
    assert!(temp_files(&svc.state_file).is_empty());
    assert_eq!(
        svc.count_log("removed the temporary file of an interrupted"),
        1
    );
}
