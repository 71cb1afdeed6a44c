"""greenws.registry: closing every connection of the process on shutdown.

Unit tests on pairs of the conftest harness (every preset); gunicorn's
use of it is tested with real gunicorn processes in test_gunicorn.py.
"""

from __future__ import annotations

import select
import socket
import time

import pytest
from conftest import OP_CLOSE, WAIT

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
