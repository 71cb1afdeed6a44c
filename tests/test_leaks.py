"""No leaks: 1000 connect/close cycles, mixed, against every hosting server.

Each server runs tests/apps/stats_app.py; its /stats route reports the
process's open fds, threads, live greenlets and registered greenws
connections.  After the cycles (clean close, abrupt reset, protocol error,
close timeout) every count must come back to its baseline.  The same for
greenws.Client in this process against a `websockets` server.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from rawws import RawClient, close_frame, frame
from servers import KINDS, HostedServer, gunicorn_has_worker
from websockets.sync.server import serve

import greenws

CYCLES_PER_MODE = 250
WAIT = 10.0


def stats(port):
    raw = RawClient(port, "/stats", timeout=WAIT)
    try:
        opcode, _, payload = raw.read_frame()
        assert opcode == 0x1
        raw.send(close_frame())
        raw.read_until_eof(WAIT)
    finally:
        raw.close()
    return json.loads(payload)


# -- the four ways a cycle ends ---------------------------------------------


def clean(port):
    raw = RawClient(port, "/echo")
    raw.send(frame(0x1, b"hi"))
    assert raw.read_frame() == (0x1, True, b"hi")
    raw.send(close_frame())
    assert raw.read_until_eof(WAIT) == b"\x88\x02\x03\xe8"
    raw.close()


def reset(port):
    raw = RawClient(port, "/echo")
    raw.send(frame(0x1, b"hi"))
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()


def protocol_error(port):
    raw = RawClient(port, "/echo")
    raw.send(frame(0x3, b""))  # reserved opcode
    rest = raw.read_until_eof(WAIT)
    assert rest[:1] == b"\x88" and rest[2:4] == b"\x03\xea", rest  # 1002
    raw.close()


def close_timeout(port):
    # The server closes and waits close_timeout=2 ms for a Close we never send.
    raw = RawClient(port, "/closefast")
    raw.send(frame(0x1, b"x"))
    assert raw.read_until_eof(WAIT).startswith(b"\x88")
    raw.close()


MODES = [clean, reset, protocol_error, close_timeout]
COUNTED = ("fds", "threads", "greenlets", "connections")


def at_baseline(now, base):
    """Every count back to (or below) the baseline; pool threads excepted."""
    grown = pool_threads(now) - pool_threads(base)
    return all(
        now[k] is None or now[k] <= base[k] + (grown if k == "threads" else 0)
        for k in COUNTED
    )


def settle(port, base=None, timeout=5.0):
    """Poll /stats until the counts stop moving (or reach ``base``)."""
    deadline = time.monotonic() + timeout
    previous = stats(port)
    while True:
        time.sleep(0.05)  # polling another process: nothing to wait on
        now = stats(port)
        if base:
            done = at_baseline(now, base)
        else:
            done = all(now[k] == previous[k] for k in COUNTED)
        if done or time.monotonic() >= deadline:
            return now
        previous = now


def start(kind):
    if kind == "gunicorn-eventlet" and not gunicorn_has_worker("eventlet"):
        return None
    return HostedServer(kind, module="stats_app")


@pytest.fixture(scope="module")
def hosted():
    """Every hosting server, started side by side (startup is the slow part)."""
    with ThreadPoolExecutor(len(KINDS)) as pool:
        futures = {kind: pool.submit(start, kind) for kind in KINDS}
    try:
        yield {kind: future.result() for kind, future in futures.items()}
    finally:
        with ThreadPoolExecutor(len(KINDS)) as pool:
            for future in futures.values():
                if future.exception() is None and future.result() is not None:
                    pool.submit(future.result().stop)


def pool_threads(snapshot):
    """gthread's ThreadPoolExecutor grows to --threads on demand: not a leak."""
    names = snapshot["thread_names"]
    return sum(name.startswith("ThreadPoolExecutor") for name in names)


@pytest.mark.parametrize("kind", KINDS)
def test_connect_close_cycles_leak_nothing(hosted, kind):
    server = hosted[kind]
    if server is None:
        pytest.skip("this gunicorn has no eventlet worker (removed in gunicorn 27)")
    for mode in MODES:  # warm up: lazy imports, pools, caches
        for _ in range(3):
            mode(server.port)
    base = settle(server.port)
    started = time.monotonic()
    for _ in range(CYCLES_PER_MODE):
        for mode in MODES:
            mode(server.port)
    elapsed = time.monotonic() - started
    after = settle(server.port, base)
    output = server.output()
    summary = {k: (base[k], after[k]) for k in COUNTED}
    print(f"\n{kind}: {len(MODES) * CYCLES_PER_MODE} cycles in {elapsed:.2f}s; "
          f"(baseline, after): {summary}; RSS {base['rss_kib']} -> "
          f"{after['rss_kib']} KiB; pool threads {pool_threads(base)} -> "
          f"{pool_threads(after)}")
    assert "Traceback" not in output, output[-4000:]
    assert pool_threads(after) <= 8  # servers.py runs gthread with --threads 8
    assert at_baseline(after, base), (summary, base["thread_names"],
                                      after["thread_names"])


# -- greenws.Client in this process ----------------------------------------


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def wait_for(fetch, condition, timeout=5.0):
    """Poll ``fetch()`` until ``condition``; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if condition(value) or time.monotonic() >= deadline:
            return value
        time.sleep(0.02)  # threads ending elsewhere: polled, bounded


def test_client_cycles_leak_nothing():
    def echo(conn):
        for message in conn:
            conn.send(message)

    with serve(echo, "127.0.0.1", 0) as server:
        port = server.socket.getsockname()[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"ws://127.0.0.1:{port}/"

        def cycle():
            ws = greenws.Client.connect(url, open_timeout=WAIT)
            ws.send("hi")
            assert ws.receive(timeout=WAIT) == "hi"
            ws.close()

        def counts():
            return (threading.active_count(), fd_count(),
                    len(greenws.registry.connections()))

        idle_threads = threading.active_count()
        for _ in range(5):  # warm up
            cycle()
        base = wait_for(counts, lambda c: c[0] <= idle_threads)
        started = time.monotonic()
        for _ in range(300):
            cycle()
        elapsed = time.monotonic() - started
        after = wait_for(counts, lambda c: all(a <= b for a, b in zip(c, base)))
        server.shutdown()
    thread.join(WAIT)
    print(f"\nclient: 300 cycles in {elapsed:.2f}s; (threads, fds, registered) "
          f"baseline {base}, after {after}")
    assert all(a <= b for a, b in zip(after, base)), (base, after)
    assert after[2] == 0
