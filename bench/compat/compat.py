"""Mixed-version restarts (see run.sh). Args: old counter, new counter, scratch directory.
Listens on 127.0.0.1 only; ends only the processes it started, by pid.

Then the same under the new version's supervisor (HOTRESTART_SUPERVISOR=1): new -> old,
old -> new, new -> old, each SIGHUP sent to the main pid, which must stay; SIGTERM to it at
the end must save the count and exit 0. The old version knows nothing of the supervisor: its
predecessor announces it."""
import os, shutil, signal, socket, subprocess, sys, time, urllib.request

OLD, NEW, WORK = sys.argv[1:4]
BIN = os.path.join(WORK, "counter")
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    PORT = s.getsockname()[1]


def install(src):
    shutil.copy(src, BIN + ".new")
    os.chmod(BIN + ".new", 0o755)
    os.rename(BIN + ".new", BIN)


def request(path, method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", method=method,
                                 data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=5) as r:
        return int(r.headers["x-pid"]), r.read().decode()


def restart(label, expected_count):
    old, _ = request("/")
    os.kill(old, signal.SIGHUP)
    deadline = time.time() + 20
    while time.time() < deadline:
        time.sleep(0.01)
        try:
            pid, _ = request("/")
        except OSError:
            continue
        if pid != old:
            count = int(request("/count")[1])
            print(f"{label}: pid {old} -> {pid}, count {count}")
            assert count == expected_count, f"count {count}, expected {expected_count}"
            return pid
    sys.exit(f"{label}: no new pid within 20 s; see {WORK}/log")


install(OLD)
env = dict(os.environ, PORT=str(PORT), HOTRESTART_STATE_FILE=os.path.join(WORK, "state"))
first = subprocess.Popen([BIN], env=env, stderr=open(os.path.join(WORK, "log"), "w"))
try:
    for _ in range(100):
        try:
            request("/")
            break
        except OSError:
            time.sleep(0.05)
    hits = 0
    pid = first.pid
    for label, binary in [("old -> new", NEW), ("new -> old", OLD), ("old -> new", NEW)]:
        for _ in range(3):
            request("/hit", "POST")
            hits += 1
        install(binary)
        pid = restart(label, hits)
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)
    print("ok: every mixed-version restart kept the counter")

    # Under the supervisor (the main process is the new version).
    install(NEW)
    env["HOTRESTART_SUPERVISOR"] = "1"
    main = subprocess.Popen([BIN], env=env, stderr=open(os.path.join(WORK, "log-supervised"), "w"))
    for _ in range(100):
        try:
            request("/")
            break
        except OSError:
            time.sleep(0.05)
    hits = int(request("/count")[1])
    for label, binary in [("new -> old", OLD), ("old -> new", NEW), ("new -> old", OLD)]:
        for _ in range(3):
            request("/hit", "POST")
            hits += 1
        install(binary)
        before, _ = request("/")
        os.kill(main.pid, signal.SIGHUP)
        deadline = time.time() + 20
        while request("/")[0] == before:
            assert time.time() < deadline, f"{label}: no new pid; see {WORK}/log-supervised"
            time.sleep(0.01)
        count = int(request("/count")[1])
        assert main.poll() is None, f"{label}: the main process exited; see {WORK}/log-supervised"
        print(f"supervised {label}: main pid {main.pid} stays, count {count}")
        assert count == hits, f"count {count}, expected {hits}"
    time.sleep(0.3)
    os.kill(main.pid, signal.SIGTERM)
    code = main.wait(timeout=20)
    assert code == 0, f"main process exit status {code}; see {WORK}/log-supervised"
    print(f"ok: supervised mixed-version restarts kept the counter ({hits}), main exited 0")
finally:
    # Whatever generation still runs (we started it, or our own process did).
    for p in {first.pid, pid if "pid" in globals() else first.pid,
              main.pid if "main" in globals() else first.pid}:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
