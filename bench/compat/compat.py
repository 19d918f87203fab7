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


def wait_serving():
    """Until the service answers (bounded: 100 tries)."""
    for _ in range(100):
        try:
            return request("/")
        except OSError:
            time.sleep(0.05)
    sys.exit(f"the service did not start; see {WORK}")


def restart(label, expected_count, signal_pid=None):
    """SIGHUP to `signal_pid` (the serving pid if None); waits for a new pid, checks the count."""
    old, _ = request("/")
    os.kill(signal_pid or old, signal.SIGHUP)
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
    sys.exit(f"{label}: no new pid within 20 s; see {WORK}")


def wait_gone(pid):
    """Until `pid` no longer runs (reaped by anyone, or a zombie), bounded: 20 s."""
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.01)
    sys.exit(f"pid {pid} still runs 20 s after SIGTERM")


install(OLD)
env = dict(os.environ, PORT=str(PORT), HOTRESTART_STATE_FILE=os.path.join(WORK, "state"))
first = subprocess.Popen([BIN], env=env, stderr=open(os.path.join(WORK, "log"), "w"))
try:
    wait_serving()
    hits = 0
    pid = first.pid
    for label, binary in [("old -> new", NEW), ("new -> old", OLD), ("old -> new", NEW)]:
        for _ in range(3):
            request("/hit", "POST")
            hits += 1
        install(binary)
        pid = restart(label, hits)
    os.kill(pid, signal.SIGTERM)
    wait_gone(pid)
    print("ok: every mixed-version restart kept the counter")

    # Under the supervisor (the main process is the new version).
    install(NEW)
    env["HOTRESTART_SUPERVISOR"] = "1"
    main = subprocess.Popen([BIN], env=env, stderr=open(os.path.join(WORK, "log-supervised"), "w"))
    wait_serving()
    hits = int(request("/count")[1])
    for label, binary in [("new -> old", OLD), ("old -> new", NEW), ("new -> old", OLD)]:
        for _ in range(3):
            request("/hit", "POST")
            hits += 1
        install(binary)
        pid = restart(f"supervised {label}", hits, signal_pid=main.pid)
        assert main.poll() is None, f"{label}: the main process exited; see {WORK}/log-supervised"
        print(f"supervised {label}: main pid {main.pid} stays")
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
