"""greenws.registry: closing every connection of the process on shutdown.

Unit tests on pairs of the conftest harness (every preset); gunicorn's
use of it is tested with real gunicorn processes in test_gunicorn.py.  The
last tests send signals to real eventlet.wsgi and gevent.pywsgi servers
that use ``greenws.close_all_on_signals`` and watch their peers (the
``websockets`` client) get 1001.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from contextlib import ExitStack

import pytest
from conftest import OP_CLOSE, WAIT
from servers import HostedServer
from websockets.exceptions import ConnectionClosed as PeerClosed
from websockets.sync.client import connect

import greenws
from greenws import ConnectionClosed, registry


@pytest.fixture(autouse=True)
def not_stopping():
    """stop() is for good; put the process back for the next test."""
    yield
    registry._stopping = None


def closed_with(ws, timeout=WAIT):
    """Wait until ``receive`` raises; return the close code."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ws.receive(timeout=max(deadline - time.monotonic(), 0.01))
        except ConnectionClosed as exc:
            return exc.reason
        if time.monotonic() >= deadline:
            raise AssertionError("connection did not close in time")


def stuck_sender(rt, harness):
    """A server whose raw peer stopped reading, with a send() stuck on it."""
    ws, peer = harness.raw_client(close_timeout=1.0)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sender = rt.spawn(ws.send, b"x" * (8 << 20))

    def stuck():
        if sender.ready():
            return False
        _, writable, _ = select.select([], [ws.sock.fileno()], [], 0)
        return not writable

    assert rt.wait_until(stuck), "the send did not get stuck"
    return ws, peer, sender


def test_close_all_is_bounded_by_its_timeout_not_by_the_peers(rt, harness):
    """Three peers stopped reading while a send to each is stuck.

    Closing them one after another took 3 x close_timeout (each Close frame
    waited its close_timeout for the write lock), and a healthy peer waited
    its turn for its Close frame.
    """
    stuck = [stuck_sender(rt, harness) for _ in range(3)]
    _, peer = harness.raw_client(close_timeout=WAIT)

    def healthy():
        _, _, opcode, payload = peer.read_frame(timeout=WAIT)
        told = time.monotonic()
        peer.send_frame(OP_CLOSE, payload)
        return opcode, payload, told

    answer = rt.spawn(healthy)
    started = time.monotonic()
    assert greenws.close_all(timeout=1.0) == 4
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 0.6, f"close_all took {elapsed:.2f}s"
    opcode, payload, told = answer.get()
    assert (opcode, payload[:2]) == (OP_CLOSE, b"\x03\xe9")  # 1001
    assert told - started < 0.5
    for ws, _, sender in stuck:
        # The stuck sends end with the connection, which was dropped.
        with pytest.raises(ConnectionClosed):
            sender.get()
        assert not ws.connected
        assert ws._closed_event.is_set()


def test_close_all_waits_for_the_handshakes(rt, harness):
    pairs = [harness.pair() for _ in range(3)]
    assert greenws.close_all(timeout=WAIT) == 6  # both ends of each pair
    for server, client in pairs:
        assert server._closed_event.is_set()
        assert closed_with(client) == 1001
        assert client.close_message == "server shutting down"
    assert registry.connections() == []


def test_stop_closes_connections_that_open_later(rt, harness):
    """What a stopping server still accepts is closed as soon as it opens."""
    before, before_client = harness.pair()
    assert not registry.stopping()
    assert registry.stop(4001, "bye", timeout=WAIT) == 2  # both ends
    assert registry.stopping()
    assert closed_with(before_client) == 4001
    started = time.monotonic()
    server, client = harness.pair()
    assert closed_with(client) == 4001
    assert client.close_message == "bye"
    assert rt.wait_until(lambda: registry.connections() == [])
    assert time.monotonic() - started < 1.0


def test_close_all_leaves_later_connections_alone(rt, harness):
    greenws.close_all(timeout=WAIT)
    server, client = harness.pair()
    client.send("still here")
    assert server.receive(timeout=WAIT) == "still here"


# -- close_all_on_signals ----------------------------------------------------


def test_close_all_on_signals_closes_then_hands_the_signal_on(rt, harness):
    """The signal closes everything with 1001, then does what it did before."""
    pairs = [harness.pair() for _ in range(2)]
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        greenws.close_all_on_signals([signal.SIGUSR1], preset=rt.preset)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert rt.wait_until(lambda: seen == [signal.SIGUSR1])
        for server, client in pairs:
            assert closed_with(client) == 1001
            assert not server.connected
        assert registry.stopping()
        # Handed back: the next signal goes straight to the old handler.
        os.kill(os.getpid(), signal.SIGUSR1)
        assert rt.wait_until(lambda: len(seen) == 2)
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_close_all_on_signals_leaves_ignored_signals_alone(rt):
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        greenws.close_all_on_signals([signal.SIGUSR2], preset=rt.preset)
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGUSR2)
        rt.sleep(0.05)
        assert not registry.stopping()
    finally:
        signal.signal(signal.SIGUSR2, previous)


# -- real servers ------------------------------------------------------------


def wait_closed(ws, timeout):
    """The close code the server sent, or None for a dropped connection."""
    with pytest.raises(PeerClosed):
        while True:
            ws.recv(timeout=timeout)
    return ws.close_code, ws.close_reason


@pytest.mark.parametrize("kind, signum, returncode", [
    pytest.param("eventlet", signal.SIGTERM, -signal.SIGTERM, id="eventlet-TERM"),
    pytest.param("gevent", signal.SIGTERM, -signal.SIGTERM, id="gevent-TERM"),
    pytest.param(
        "gevent-patched", signal.SIGTERM, -signal.SIGTERM, id="gevent-patched-TERM"
    ),
    # KeyboardInterrupt: eventlet.wsgi.server() returns, gevent's
    # serve_forever() raises it (and Python ends by SIGINT).
    pytest.param("eventlet", signal.SIGINT, 0, id="eventlet-INT"),
    pytest.param("gevent", signal.SIGINT, -signal.SIGINT, id="gevent-INT"),
])
def test_signal_closes_websockets_with_1001(kind, signum, returncode):
    """eventlet.wsgi and gevent.pywsgi have no shutdown hook: the signal one.

    Every client hears 1001, then the signal does what it did before.
    """
    server = HostedServer(kind, {"GREENWS_TEST_CLOSE_ON_SIGNALS": "1"})
    results = {}

    def watch(i, ws):
        results[i] = wait_closed(ws, WAIT)

    try:
        with ExitStack() as stack:
            peers = [
                stack.enter_context(connect(server.url + "/echo", open_timeout=WAIT))
                for _ in range(3)
            ]
            for i, ws in enumerate(peers):
                ws.send(str(i))
                assert ws.recv(timeout=WAIT) == str(i)
            watchers = [
                threading.Thread(target=watch, args=(i, ws))
                for i, ws in enumerate(peers)
            ]
            started = time.monotonic()
            server.proc.send_signal(signum)
            for thread in watchers:
                thread.start()
            for thread in watchers:
                thread.join(WAIT)
            elapsed = time.monotonic() - started
        assert results == {i: (1001, "server shutting down") for i in range(3)}
        assert elapsed < 1.0
        assert server.proc.wait(WAIT) == returncode
    finally:
        output = server.stop()
    if returncode == -signal.SIGINT:
        # gevent prints the KeyboardInterrupt, as without greenws, from
        # the main greenlet (not from greenws's).
        assert "serve_forever" in output, output[-4000:]
        assert os.path.join("greenws", "registry.py") not in output, output[-4000:]
    else:
        assert "Traceback" not in output, output[-4000:]
