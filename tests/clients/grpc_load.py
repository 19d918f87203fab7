"""gRPC clients (grpcio) against examples/streams.rs. Args: port, restarts.
A thread makes unary hotrestart.Echo/Echo calls without pause; a grpc.health.v1 Watch stream is
open. Each restart (SIGHUP to the serving pid): the Watch must end with UNAVAILABLE, the new pid
must serve, and a Watch is opened again. At the end: no unary call failed, and calls were
answered by more than one pid. Bounded in calls and time."""
import sys
import threading
import time
import os
import signal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common import serving_pid, wait_new_pid

PORT, RESTARTS = int(sys.argv[1]), int(sys.argv[2])


def encode(text):
    data = text.encode()
    return b"\x0a" + bytes([len(data)]) + data


def decode(data):
    return data[2 : 2 + data[1]].decode()


channel = grpc.insecure_channel(f"127.0.0.1:{PORT}")
echo = channel.unary_unary("/hotrestart.Echo/Echo", request_serializer=encode, response_deserializer=decode)
health = health_pb2_grpc.HealthStub(channel)
stop = threading.Event()
calls, failures, pids = [0], [], set()


def load():
    deadline = time.time() + 120
    while not stop.is_set() and time.time() < deadline and calls[0] < 200_000:
        try:
            reply = echo(f"c{calls[0]}", timeout=10)
            pids.add(int(reply.split()[0]))
        except grpc.RpcError as e:
            failures.append(f"{e.code()}: {e.details()}")
        calls[0] += 1


def open_watch():
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
    first = next(watch)
    assert first.status == health_pb2.HealthCheckResponse.SERVING, first
    return watch


thread = threading.Thread(target=load)
thread.start()
try:
    watch = open_watch()
    for n in range(RESTARTS):
        old = serving_pid(PORT)
        os.kill(old, signal.SIGHUP)
        try:
            for update in watch:
                raise SystemExit(f"restart {n}: an update instead of the end: {update}")
            raise SystemExit(f"restart {n}: the Watch ended without a status")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, f"restart {n}: Watch ended {e.code()}: {e.details()}"
        wait_new_pid(PORT, old)
        watch = open_watch()
    print(f"watch: ended UNAVAILABLE at each of {RESTARTS} restarts")
finally:
    stop.set()
    thread.join()
print(f"unary: {calls[0]} calls, {len(failures)} failed, answered by {len(pids)} pids")
assert not failures, failures[:10]
assert len(pids) > 1, pids
