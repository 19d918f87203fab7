//! Pre-copy with real processes (`examples/cache.rs`, its map a `TrackedMap`): the map is
//! copied while the old process serves, only the last delta after the quiesce; every
//! acknowledged write is in the successor's map, none undone; faults mid-round roll back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hotrestart_testkit as common;

use common::*;

/// Entries the map holds before the restarts (a debug build copies them in a few hundred ms).
const FILLED: usize = 100_000;

fn cache(env: &[(&str, &str)]) -> Service {
    let svc = Service::start_example("cache", env);
    let filled = request(svc.addr(), "POST", &format!("/fill?n={FILLED}&bytes=16")).unwrap();
    assert_eq!(filled.status, 200, "{filled:?}");
    svc
}

fn len(svc: &Service) -> usize {
    get(svc.addr(), "/len").unwrap().body.parse().unwrap()
}

/// A write load: PUTs (and every seventh a DELETE) of keys `w{thread}-{n}`, overwriting the
/// same 3,000 keys per thread, each on a new connection; remembers, per key, what the last
/// acknowledged write left (`None`: deleted).
struct Writes {
    stop: Arc<AtomicBool>,
    last: Arc<Mutex<HashMap<String, Option<String>>>>,
    failures: Arc<Mutex<Vec<String>>>,
    acked: Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Writes {
    fn start(addr: SocketAddr, threads: usize) -> Writes {
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(Mutex::new(HashMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads = (0..threads)
            .map(|t| {
                let (stop, last, failures, acked) =
                    (stop.clone(), last.clone(), failures.clone(), acked.clone());
                thread::spawn(move || {
                    let start = Instant::now();
                    for i in 0..200_000u64 {
                        if stop.load(Ordering::SeqCst) || start.elapsed() > Duration::from_secs(120)
                        {
                            break;
                        }
                        let key = format!("w{t}-{}", (i * 7919) % 3000);
                        let path = format!("/kv/{key}");
                        let (result, after) = if i % 7 == 6 {
                            (request(addr, "DELETE", &path), None)
                        } else {
                            let value = format!("{t}:{i}");
                            let r = request_with_body(addr, "PUT", &path, value.as_bytes());
                            (r, Some(value))
                        };
                        match result {
                            Ok(r) if r.status == 200 || (r.status == 404 && after.is_none()) => {
                                last.lock().unwrap().insert(key, after);
                                acked.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(r) => failures
                                .lock()
                                .unwrap()
                                .push(format!("{path}: {}", r.status)),
                            Err(e) => failures.lock().unwrap().push(format!("{path}: {e}")),
                        }
                    }
                })
            })
            .collect();
        Writes {
            stop,
            last,
            failures,
            acked,
            threads,
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Stops the load; returns what the acknowledged writes left, and the failures.
    fn finish(self) -> (HashMap<String, Option<String>>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let last = std::mem::take(&mut *self.last.lock().unwrap());
        let failures = self.failures.lock().unwrap().clone();
        (last, failures)
    }
}

/// Every key holds what its last acknowledged write left; the fill is whole.
fn check_writes(svc: &Service, last: &HashMap<String, Option<String>>) {
    let mut wrong = Vec::new();
    for (key, want) in last {
        let r = get(svc.addr(), &format!("/kv/{key}")).unwrap();
        let got = (r.status == 200).then_some(r.body);
        if &got != want {
            wrong.push(format!("{key}: {got:?}, acknowledged {want:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} keys differ: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    let present = last.values().filter(|v| v.is_some()).count();
    assert_eq!(
        len(svc),
        FILLED + present,
        "the fill and the written keys, nothing else"
    );
    for i in [0, 1, FILLED / 2, FILLED - 1] {
        let r = get(svc.addr(), &format!("/kv/fill-{i}")).unwrap();
        let want: String = i.to_string().chars().cycle().take(16).collect();
        assert_eq!((r.status, r.body), (200, want), "fill-{i}");
    }
}

/// Waits until the old process pre-copies to its successor, and stops the successor there: a
/// round is under way once 64 KiB wait unread in the stopped successor's end of the channel
/// (before PREPARED only HELLO travels; without writes the last delta is a few bytes).
fn stop_successor_mid_round(svc: &Service, old: u32) -> u32 {
    let successor = svc.successor_of(old);
    let fd: i32 = env_of(successor, "HOTRESTART_HANDOFF_FD")
        .and_then(|v| v.parse().ok())
        .expect("a successor has HOTRESTART_HANDOFF_FD");
    let start = Instant::now();
    loop {
        // SAFETY: kill with a pid and a signal number.
        if unsafe { libc::kill(successor as i32, libc::SIGSTOP) } != 0 {
            panic!(
                "successor {successor} is gone before a round was caught; log:\n{}",
                svc.log_text()
            );
        }
        thread::sleep(Duration::from_millis(30));
        if unread_bytes(successor, fd).unwrap_or(0) >= 64 << 10 {
            return successor;
        }
        svc.signal(successor, libc::SIGCONT);
        assert!(
            start.elapsed() < WAIT,
            "no pre-copy under way; log:\n{}",
            svc.log_text()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn every_acknowledged_write_survives_twenty_restarts_with_the_map_pre_copied() {
    let svc = cache(&[]);
    let writes = Writes::start(svc.addr(), 2);
    let mut pids = vec![svc.pid()];
    for _ in 0..20 {
        let before = writes.acked();
        let new = svc.hot_restart();
        assert!(!pids.contains(&new));
        pids.push(new);
        // The load goes on through each restart.
        let start = Instant::now();
        while writes.acked() < before + 20 {
            assert!(start.elapsed() < WAIT, "the writes stalled");
            thread::sleep(Duration::from_millis(5));
        }
    }
    let (last, failures) = writes.finish();
    assert!(
        failures.is_empty(),
        "{} writes failed: {failures:?}",
        failures.len()
    );
    assert!(last.len() > 1000, "the load wrote {} keys", last.len());
    check_writes(&svc, &last);
    // Pre-copied: each snapshot after the quiesce held none of the map.
    let handed = svc.wait_log("handed over to pid", 20);
    for line in &handed {
        let rounds: u32 = field(line, "precopy_rounds").unwrap();
        let precopied: u64 = field(line, "precopy_bytes").unwrap();
        let snapshot: u64 = field(line, "state_bytes").unwrap();
        // The first round went while the successor initialised.
        let early: u64 = field(line, "precopy_early_bytes").unwrap();
        assert!(
            (1..=10).contains(&rounds)
                && precopied > FILLED as u64 * 20
                && early > FILLED as u64 * 20
                && snapshot < 1024,
            "{line}"
        );
    }
}

#[test]
fn without_pre_copy_the_map_is_copied_whole_after_the_quiesce_and_still_loses_nothing() {
    let svc = cache(&[("HOTRESTART_PRECOPY", "0")]);
    let writes = Writes::start(svc.addr(), 1);
    for _ in 0..3 {
        svc.hot_restart();
    }
    let (last, failures) = writes.finish();
    assert!(failures.is_empty(), "{failures:?}");
    check_writes(&svc, &last);
    // No round while serving; the whole map in pieces after the quiesce.
    for line in svc.wait_log("handed over to pid", 3) {
        let rounds: u32 = field(&line, "precopy_rounds").unwrap();
        let after: u64 = field(&line, "last_delta_bytes").unwrap();
        assert!(rounds == 0 && after > FILLED as u64 * 20, "{line}");
    }
}

#[test]
fn successor_killed_during_a_pre_copy_round_is_rolled_back_and_the_map_serves_on() {
    let svc = cache(&[]);
    let writes = Writes::start(svc.addr(), 1);
    let old = svc.pid();
    svc.signal(old, libc::SIGHUP);
    let successor = stop_successor_mid_round(&svc, old);
    svc.signal(successor, libc::SIGKILL);
    let status = svc.wait_rollbacks(1);
    assert_eq!(status.pid, old);
    let line = status.rollbacks().remove(0);
    assert!(
        line.contains(&format!("successor pid {successor}"))
            && line.contains("SIGKILL")
            && line.contains("while receiving the pre-copied state"),
        "{line}"
    );
    assert!(children(old).is_empty(), "the successor is reaped");
    // Recording stopped with the rollback; a second restart pre-copies from scratch.
    let new = svc.hot_restart();
    let (last, failures) = writes.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(svc.pid(), new);
    check_writes(&svc, &last);
}

#[test]
fn old_process_killed_during_a_pre_copy_round_leaves_the_successor_on_the_state_file() {
    let svc = cache(&[]);
    // The state file: the fill, and one key more.
    request_with_body(svc.addr(), "PUT", "/kv/saved", b"yes").unwrap();
    let first = svc.pid();
    svc.signal(first, libc::SIGTERM);
    assert_eq!(wait_exit(first, WAIT), 0);
    svc.spawn();
    assert_eq!(len(&svc), FILLED + 1);
    // Written after the state file: only the live process knows it.
    request_with_body(svc.addr(), "PUT", "/kv/live", b"only here").unwrap();
    let old = svc.pid();
    svc.signal(old, libc::SIGHUP);
    let successor = stop_successor_mid_round(&svc, old);
    svc.signal(old, libc::SIGKILL);
    assert_eq!(wait_exit(old, WAIT), 128 + libc::SIGKILL);
    svc.signal(successor, libc::SIGCONT);
    assert_eq!(svc.wait_new_pid(old), successor, "the successor serves");
    let lines = svc.wait_log("went away before handing over its state", 1);
    assert!(
        lines[0].contains("falling back to the state file"),
        "{}",
        lines[0]
    );
    // The state file's map, not a part of the pre-copy mixed in.
    assert_eq!(len(&svc), FILLED + 1);
    assert_eq!(get(svc.addr(), "/kv/saved").unwrap().body, "yes");
    assert_eq!(get(svc.addr(), "/kv/live").unwrap().status, 404);
}

#[test]
fn a_successor_whose_map_changed_type_takes_no_pre_copy_and_refuses_the_snapshot() {
    let svc = cache(&[]);
    request_with_body(svc.addr(), "PUT", "/kv/k", b"v").unwrap();
    let pid = svc.pid();
    svc.replace_binary(&std::fs::read(example("cache_incompatible")).unwrap());
    svc.signal(pid, libc::SIGHUP);
    let status = svc.wait_rollbacks(1);
    assert_eq!(status.pid, pid, "the old process serves on");
    let line = status.rollbacks().remove(0);
    assert!(
        line.contains("rejected the handover")
            && line.contains("`entries` changed type")
            && line.contains("TrackedMap<alloc::string::String, alloc::vec::Vec<u8>>")
            && line.contains("TrackedMap<alloc::string::String, alloc::string::String>"),
        "{line}"
    );
    assert_eq!(get(svc.addr(), "/kv/k").unwrap().body, "v");
    assert_eq!(len(&svc), FILLED + 1);
    svc.restore_binary();
    let new = svc.hot_restart();
    assert_ne!(new, pid);
    assert_eq!(len(&svc), FILLED + 1, "and handed over afterwards");
}

#[test]
fn the_first_round_is_copied_while_the_successor_initialises() {
    // A successor that takes 1.5 s to initialise: the whole map goes meanwhile.
    let svc = cache(&[("INIT_DELAY_MS", "1500")]);
    request_with_body(svc.addr(), "PUT", "/kv/before", b"1").unwrap();
    let old = svc.pid();
    svc.signal(old, libc::SIGHUP);
    // While the successor sleeps in its initialisation, the old process still serves, writes
    // included.
    thread::sleep(Duration::from_millis(700));
    let during = request_with_body(svc.addr(), "PUT", "/kv/during", b"2").unwrap();
    assert_eq!((during.status, during.pid), (200, old));
    let new = svc.wait_new_pid(old);
    assert_eq!(wait_exit(old, WAIT), 0);
    let line = svc.wait_log("handed over to pid", 1).remove(0);
    let early: u64 = field(&line, "precopy_early_bytes").unwrap();
    let precopied: u64 = field(&line, "precopy_bytes").unwrap();
    assert!(
        early > FILLED as u64 * 20 && early * 10 >= precopied * 9,
        "the first round, nearly all of it, went during the initialisation: {line}"
    );
    assert_eq!(svc.pid(), new);
    assert_eq!(get(svc.addr(), "/kv/before").unwrap().body, "1");
    assert_eq!(
        get(svc.addr(), "/kv/during").unwrap().body,
        "2",
        "written during the init, in a later round"
    );
    assert_eq!(len(&svc), FILLED + 2);
}
