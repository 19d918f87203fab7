//! The article's scenario with a real database file: examples/notes.rs, SQLite through an sqlx
//! pool that a `#[before_restart]` hook closes and an `#[on_rollback]` hook reopens, and a
//! `#[persist]` cache. The database is checked with Python's own sqlite3 module.

use hotrestart_testkit as common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn notes(env: &[(&str, &str)]) -> Service {
    let mut svc = Service::prepare("notes", env);
    let db = svc.dir.path().join("notes.db");
    svc.env
        .push(("NOTES_DB".into(), db.to_str().unwrap().to_owned()));
    svc.first_pid = svc.spawn();
    svc
}

fn post(svc: &Service, text: &str) -> Result<Response, String> {
    request_with_body(svc.addr(), "POST", "/notes", text.as_bytes())
}

/// `GET /notes/{id}`: (status, pid, x-cache, body).
fn read(svc: &Service, id: u64) -> (u16, u32, String, String) {
    let r = get(svc.addr(), &format!("/notes/{id}")).unwrap();
    let cache = r.header("x-cache").unwrap_or("").to_owned();
    (r.status, r.pid, cache, r.body)
}

fn count(svc: &Service) -> u64 {
    get(svc.addr(), "/count").unwrap().body.parse().unwrap()
}

/// Python's sqlite3 on the database file: `PRAGMA integrity_check` and the row count.
fn check_database(svc: &Service) -> (String, u64) {
    let db = svc.dir.path().join("notes.db");
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             print(c.execute('pragma integrity_check').fetchone()[0]); \
             print(c.execute('select count(*) from notes').fetchone()[0])",
            db.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let check = lines.next().unwrap_or("").to_owned();
    let rows = lines
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    (check, rows)
}

#[test]
fn a_hot_restart_under_a_load_of_writes_loses_none_doubles_none_and_keeps_the_cache() {
    let svc = notes(&[]);
    // A note read before the restart is in the cache the successor gets.
    let first: u64 = post(&svc, "kept in the cache")
        .unwrap()
        .body
        .parse()
        .unwrap();
    assert_eq!(read(&svc, first).2, "miss");
    assert_eq!(read(&svc, first).2, "hit");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ids = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let addr = svc.addr();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, ids, failures) = (stop.clone(), ids.clone(), failures.clone());
            thread::spawn(move || {
                let start = Instant::now();
                for i in 0..2_000 {
                    if stop.load(std::sync::atomic::Ordering::SeqCst)
                        || start.elapsed() > Duration::from_secs(60)
                    {
                        break;
                    }
                    match request_with_body(addr, "POST", "/notes", format!("w{w} n{i}").as_bytes())
                    {
                        Ok(r) if r.status == 200 => {
                            ids.lock().unwrap().push(r.body.parse::<u64>().unwrap())
                        }
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", r.status, r.body)),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect();
    let wait_ids = |n: usize| {
        let start = Instant::now();
        while ids.lock().unwrap().len() < n {
            assert!(start.elapsed() < WAIT, "the writers stalled");
            thread::sleep(Duration::from_millis(5));
        }
    };
    wait_ids(50);
    let old = svc.pid();
    let new = svc.hot_restart();
    let after = ids.lock().unwrap().len();
    wait_ids(after + 50);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    let ids = ids.lock().unwrap().clone();
    let unique: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "ids are unique");
    assert_eq!(
        count(&svc),
        ids.len() as u64 + 1,
        "every acknowledged note is a row, and nothing more"
    );
    let (status, pid, cache, body) = read(&svc, first);
    assert_eq!(
        (status, pid, cache.as_str(), body.as_str()),
        (200, new, "hit", "kept in the cache")
    );
    assert_ne!(old, new);
    assert!(svc.log_text().contains("closing the database pool"));
}

#[test]
fn rollbacks_leave_the_old_process_writing_with_a_pool() {
    let svc = notes(&[("HOTRESTART_READY_TIMEOUT", "2s")]);
    let pid = svc.pid();
    let mut posted = 0;
    let mut write = |when: &str| {
        let r = post(&svc, when).unwrap();
        assert_eq!((r.status, r.pid), (200, pid), "{when}: {}", r.body);
        posted += 1;
    };
    write("before");

    // A build whose cache changed type: it refuses the snapshot after the old process's hook
    // closed its pool; the rollback hook reopens it.
    svc.replace_binary(&std::fs::read(example("notes_incompatible")).unwrap());
    svc.signal(pid, libc::SIGHUP);
    let status = svc.wait_rollbacks(1);
    assert!(
        status.rollbacks()[0].contains("rejected the handover"),
        "{status:?}"
    );
    write("after a rejected snapshot");

    // Builds that fail before the hooks run: nothing was closed, nothing is reopened.
    svc.replace_binary(EXIT_AT_ONCE);
    svc.signal(pid, libc::SIGHUP);
    svc.wait_rollbacks(2);
    write("after a build that exits");
    svc.replace_binary(HANG);
    svc.signal(pid, libc::SIGHUP);
    svc.wait_rollbacks(3);
    write("after a build that hangs");
    assert_eq!(
        svc.count_log("on_rollback: the database pool is open again"),
        1,
        "the rollback hook runs only after the restart hooks did; log:\n{}",
        svc.log_text()
    );

    // A good build then takes over, with every row.
    svc.restore_binary();
    let new = svc.hot_restart();
    assert_ne!(new, pid);
    assert_eq!(count(&svc), posted);
}

#[test]
fn sigterm_closes_the_pool_and_leaves_a_sound_checkpointed_database() {
    if !require("python3", "apt-get install python3") {
        return;
    }
    let svc = notes(&[]);
    for i in 0..20 {
        assert_eq!(post(&svc, &format!("note {i}")).unwrap().status, 200);
    }
    let pid = svc.pid();
    svc.signal(pid, libc::SIGTERM);
    assert_eq!(wait_exit(pid, WAIT), 0);
    let wal = svc.dir.path().join("notes.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "the write-ahead log was checkpointed at the pool's close"
    );
    assert_eq!(check_database(&svc), ("ok".to_owned(), 20));
}
