"""What the Python clients share: the serving pid from `x-pid`, and bounded waits."""
import time
import urllib.request


def serving_pid(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        return int(r.headers["x-pid"])


def wait_new_pid(port, old, limit=20):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            pid = serving_pid(port)
            if pid != old:
                return pid
        except OSError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"no new pid after {limit} s")
