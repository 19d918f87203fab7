//! The real systemd: Debian's systemd 252 booted in podman (`--systemd=always`), from a root
//! file system made by `mmdebstrap`, with the book's `counter.service` and `counter.socket`
//! copied in unchanged but for the port. Socket activation, `systemctl reload` (several, and
//! one of a broken binary that fails while the old version serves on), `systemctl stop` with
//! every hit saved, `systemctl start` restoring them, and a `kill -9` of the serving generation
//! that systemd notices and answers with `Restart=`.

use hotrestart_testkit as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::podman::*;
use common::*;

/// Debian bookworm with systemd, built once (about 15 s) and kept under `target/`; each
/// container runs on an overlay of it (`--rootfs DIR:O`), so it stays clean.
fn bookworm() -> Option<PathBuf> {
    let target = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = target.join("hotrestart-systemd-bookworm");
    if dir.join("sbin/init").exists() {
        return Some(dir);
    }
    let tmp = target.join("hotrestart-systemd-bookworm.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let out = {
        let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        Command::new("timeout")
            .args([
                "600",
                "mmdebstrap",
                "--variant=apt",
                "--include=systemd,systemd-sysv,procps",
            ])
            .args(["bookworm", tmp.to_str().unwrap()])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    if !out.status.success() {
        skip_or_fail(&format!(
            "mmdebstrap could not build a Debian root file system (it needs Debian's package mirror): {}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return None;
    }
    std::fs::rename(&tmp, &dir).unwrap();
    Some(dir)
}

/// `systemctl`/`journalctl`/... inside the container.
fn exec(name: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["exec", name];
    all.extend_from_slice(args);
    podman(&all)
}

fn show(name: &str, property: &str) -> String {
    exec(
        name,
        &[
            "systemctl",
            "show",
            "--value",
            "-p",
            property,
            "counter.service",
        ],
    )
    .1
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: not within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Replaces a file the way a deploy does: write beside it, rename over it.
fn deploy(path: &Path, contents: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::write(&tmp, contents).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn the_book_units_under_a_real_systemd() {
    if !require("podman", "apt-get install podman runc")
        || !require("runc", "apt-get install runc")
        || !require("mmdebstrap", "apt-get install mmdebstrap")
    {
        return;
    }
    let Some(root) = bookworm() else { return };
    let mut service = Service::prepare("counter", &[]);
    // systemd binds the port itself, from the socket unit.
    service.release_port();
    let dir = service.dir.path().to_path_buf();
    let (bin, lib, units) = (dir.join("bin"), dir.join("lib"), dir.join("units"));
    for d in [&bin, &lib, &units] {
        std::fs::create_dir_all(d).unwrap();
    }
    let counter = std::fs::read(example("counter")).unwrap();
    deploy(&bin.join("counter"), &counter);
    deploy(&bin.join("hotrestart-ctl"), &std::fs::read(ctl()).unwrap());
    service.state_file = lib.join("counter.state");
    // The book's units, unchanged but for the port.
    let book = Path::new(env!("CARGO_MANIFEST_DIR")).join("book/src/ops");
    let socket = std::fs::read_to_string(book.join("counter.socket")).unwrap();
    assert!(socket.contains("ListenStream=127.0.0.1:3000"));
    let socket = socket.replace(
        "ListenStream=127.0.0.1:3000",
        &format!("ListenStream=127.0.0.1:{}", service.port),
    );
    std::fs::write(units.join("counter.socket"), socket).unwrap();
    std::fs::copy(book.join("counter.service"), units.join("counter.service")).unwrap();

    let name = format!("hotrestart-systemd-{}-{}", std::process::id(), service.port);
    let container = Container(name.clone());
    let volumes = [
        format!("{}:/usr/local/bin", bin.display()),
        format!("{}:/var/lib/counter", lib.display()),
        format!(
            "{}:/etc/systemd/system/counter.socket:ro",
            units.join("counter.socket").display()
        ),
        format!(
            "{}:/etc/systemd/system/counter.service:ro",
            units.join("counter.service").display()
        ),
    ];
    let rootfs = format!("{}:O", root.display());
    let mut args = run_args(&name);
    args.push("--systemd=always".to_owned());
    for v in &volumes {
        args.extend(["--volume".to_owned(), v.clone()]);
    }
    args.extend(["--rootfs".to_owned(), rootfs, "/sbin/init".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(podman(&args).0, "podman run systemd");
    wait_until("systemd booted", || {
        let state = exec(&name, &["systemctl", "is-system-running"]).1;
        state == "running" || state == "degraded"
    });
    let journal = || {
        exec(
            &name,
            &["journalctl", "-u", "counter.service", "--no-pager"],
        )
        .1
    };

    // Socket activation: the first connection starts the service.
    assert!(exec(&name, &["systemctl", "start", "counter.socket"]).0);
    service.wait_serving();
    let main = show(&name, "MainPID");
    let serving = service.pid();
    assert_ne!(
        serving.to_string(),
        main,
        "systemd's main pid is the supervisor"
    );
    for n in 1..=3 {
        assert_eq!(service.hit(), n);
    }

    // Reloads: the main pid stays, the serving generation changes, the count is kept.
    let mut last = serving;
    for _ in 0..3 {
        assert!(
            exec(&name, &["systemctl", "reload", "counter.service"]).0,
            "{}",
            journal()
        );
        let now = service.pid();
        assert_ne!(now, last);
        last = now;
        assert_eq!(show(&name, "MainPID"), main);
    }
    assert_eq!(service.count(), 3);

    // A broken binary: the reload fails, the old version serves on.
    deploy(&bin.join("counter"), b"this is not an executable\n");
    let (ok, _) = exec(&name, &["systemctl", "reload", "counter.service"]);
    assert!(!ok, "a reload to a broken binary must fail");
    assert_eq!(service.pid(), last, "the old version serves on");
    assert_eq!(show(&name, "ActiveState"), "active");
    assert_eq!(service.hit(), 4);
    deploy(&bin.join("counter"), &counter);
    assert!(exec(&name, &["systemctl", "reload", "counter.service"]).0);
    assert_eq!(service.hit(), 5);
    assert_eq!(show(&name, "MainPID"), main);

    // Stop after reloads: every acknowledged hit is saved; nothing was SIGKILLed.
    assert!(exec(&name, &["systemctl", "stop", "counter.service"]).0);
    let text = journal();
    assert!(!text.contains("SIGKILL"), "{text}");
    assert!(!text.contains("not our child"), "{text}");
    assert_eq!(show(&name, "Result"), "success");
    assert_eq!(service.saved_count(), 5, "{text}");

    // Start: restored.
    assert!(exec(&name, &["systemctl", "start", "counter.service"]).0);
    service.wait_serving();
    assert_eq!(service.count(), 5);

    // A crash of the serving generation outside a restart: systemd notices and restarts.
    let restarts = show(&name, "NRestarts");
    let victim = service.pid().to_string();
    assert!(exec(&name, &["kill", "-9", &victim]).0);
    wait_until("systemd restarted the unit", || {
        show(&name, "NRestarts") != restarts && show(&name, "ActiveState") == "active"
    });
    assert!(journal().contains("status=137"), "{}", journal());
    service.wait_serving();
    assert_eq!(
        service.count(),
        5,
        "restored from the state file of the last stop"
    );
    drop(container);
}
