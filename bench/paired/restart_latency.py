# Paired restart latency of two builds of the counter (e.g. the last release and this checkout),
# alternating blocks of 10 restarts, 3 rounds, in the same run on the same machine; everything on
# 127.0.0.1. Usage: python3 bench/paired/restart_latency.py OLD_COUNTER_BINARY NEW_COUNTER_BINARY
import os, re, signal, statistics, subprocess, sys, tempfile, time, urllib.request, socket
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def pid_of(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
            return int(r.headers["x-pid"])
    except Exception:
        return None
def block(binary, restarts):
    d = tempfile.mkdtemp(); port = free_port(); log = open(os.path.join(d, "log"), "w")
    env = dict(os.environ, PORT=str(port), HOTRESTART_SUPERVISOR="0", HOTRESTART_STATE_FILE=os.path.join(d, "state"), RUST_LOG="info")
    p = subprocess.Popen([binary], env=env, stdout=log, stderr=log)
    t0 = time.time()
    while pid_of(port) is None:
        assert time.time() - t0 < 20; time.sleep(0.01)
    outside = []
    for _ in range(restarts):
        old = pid_of(port); t = time.perf_counter(); os.kill(old, signal.SIGHUP)
        while True:
            n = pid_of(port)
            if n and n != old: break
            assert time.perf_counter() - t < 10
            time.sleep(0.0002)
        outside.append((time.perf_counter() - t) * 1e3)
        for _ in range(500):
            try: os.kill(old, 0); time.sleep(0.002)
            except ProcessLookupError: break
        time.sleep(0.05)
    os.kill(pid_of(port), signal.SIGTERM); time.sleep(0.5)
    text = open(os.path.join(d, "log")).read()
    el = [float(x) for x in re.findall(r"handed over to pid \d+ .*?elapsed_ms=([\d.]+)", text)]
    gap = [float(x) for x in re.findall(r"accept_gap_ms=([\d.]+)", text)]
    return el, gap, outside
res = {"old": ([], [], []), "new": ([], [], [])}
for rnd in range(3):
    for name, b in (("old", sys.argv[1]), ("new", sys.argv[2])):
        el, gap, out = block(b, 10)
        for i, v in enumerate((el, gap, out)): res[name][i].extend(v)
print("| build | restarts | internal trigger→READY median ms | accept gap median ms | trigger→new pid (outside) median ms |")
print("|---|---|---|---|---|")
for name in ("old", "new"):
    el, gap, out = res[name]
    print(f"| {name} | {len(el)} | {statistics.median(el):.2f} | {statistics.median(gap):.2f} | {statistics.median(out):.2f} |")
