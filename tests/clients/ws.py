"""WebSocket clients (the `websockets` library) against examples/streams.rs.
Args: port, signal (HUP or TERM), number of sockets.
Opens the sockets, checks each is answered by the serving pid, sends the signal to that pid,
and checks that every socket is closed with 1012 "service restart". After HUP, a reconnect
must be answered by the new pid. Prints one line per fact; exits non-zero on the first failure.
Bounded: every wait has a timeout."""
import asyncio
import os
import signal
import sys

import websockets

from common import serving_pid, wait_new_pid

PORT, SIG, N = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])


async def main():
    old = serving_pid(PORT)
    sockets = [await websockets.connect(f"ws://127.0.0.1:{PORT}/ws", open_timeout=10) for _ in range(N)]
    for i, ws in enumerate(sockets):
        await ws.send(f"m{i}")
        reply = await asyncio.wait_for(ws.recv(), 10)
        assert reply == f"{old} m{i}", reply
    print(f"open: {N} sockets answered by pid {old}")
    os.kill(old, getattr(signal, "SIG" + SIG))
    codes = []
    for ws in sockets:
        try:
            extra = await asyncio.wait_for(ws.recv(), 20)
            raise SystemExit(f"a message instead of a close: {extra!r}")
        except websockets.ConnectionClosed as closed:
            frame = closed.rcvd
            codes.append((frame.code, frame.reason) if frame else (None, None))
    bad = [c for c in codes if c != (1012, "service restart")]
    assert not bad, f"closes: {bad}"
    print(f"closed: {N} sockets with 1012 service restart")
    if SIG == "HUP":
        new = wait_new_pid(PORT, old)
        async with websockets.connect(f"ws://127.0.0.1:{PORT}/ws", open_timeout=10) as ws:
            await ws.send("again")
            reply = await asyncio.wait_for(ws.recv(), 10)
        assert reply == f"{new} again", reply
        print(f"reconnected: answered by pid {new}")


asyncio.run(main())
