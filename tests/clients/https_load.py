"""HTTPS keep-alive load (Python's http.client and ssl) against the counter's https listener,
through restarts. Args: http port, https port, CA file (the self-signed certificate), restarts.
Four threads POST /hit on keep-alive connections (reconnecting when the server says
`connection: close` or closes cleanly between two requests); the main thread sends SIGHUP to
the serving pid `restarts` times, each once the new pid answers. Prints the acknowledged hits
and the failures; exits non-zero if any request failed. Bounded in requests and time."""
import http.client
import os
import signal
import ssl
import sys
import threading
import time

from common import serving_pid, wait_new_pid

HTTP, HTTPS, CA, RESTARTS = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
# CA `-`: plain HTTP on the HTTPS port's place, for a baseline measured the same way.
context = None if CA == "-" else ssl.create_default_context(cafile=CA)
stop = threading.Event()
lock = threading.Lock()
acked, failures, reconnects = [0], [], [0]


def worker():
    conn = None
    deadline = time.time() + 120
    for _ in range(100_000):
        if stop.is_set() or time.time() > deadline:
            break
        try:
            if conn is None:
                if context is None:
                    conn = http.client.HTTPConnection("127.0.0.1", HTTPS, timeout=10)
                else:
                    conn = http.client.HTTPSConnection("127.0.0.1", HTTPS, context=context, timeout=10)
            conn.request("POST", "/hit", body=b"")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                with lock:
                    failures.append(f"status {response.status}")
            else:
                with lock:
                    acked[0] += 1
            if response.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
                with lock:
                    reconnects[0] += 1
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
            # A request that got no response at all is a failure: the server must answer every
            # request it read, and close only between two requests with `connection: close`.
            with lock:
                failures.append(repr(e))
            conn = None
        except OSError as e:
            with lock:
                failures.append(repr(e))
            conn = None


threads = [threading.Thread(target=worker) for _ in range(4)]
for t in threads:
    t.start()
try:
    time.sleep(0.2)
    for n in range(RESTARTS):
        old = serving_pid(HTTP)
        os.kill(old, signal.SIGHUP)
        wait_new_pid(HTTP, old)
        time.sleep(0.05)
finally:
    stop.set()
    for t in threads:
        t.join()
print(f"acked {acked[0]} reconnects {reconnects[0]} failed {len(failures)}")
assert not failures, failures[:10]
