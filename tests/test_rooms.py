"""greenws.Rooms and greenws.broadcast: in one process, across real hosting
servers, and across processes through a real redis-server."""

from __future__ import annotations

import os
import time
import zlib

import pytest
from conftest import WAIT, RawPeer, Runtime, make_environ, raw_request, read_http_head

import greenws
from greenws import protocol
from greenws import rooms as rooms_module


def _rss() -> int:
    """Resident memory of this process, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _receive_all(ws, count):
    return [ws.receive(WAIT) for _ in range(count)]


# -- in one process -------------------------------------------------------------


def test_send_reaches_every_member_in_order_once(harness):
    """Three senders at once into a room of servers and clients: every member
    gets every message once, each sender's in the order sent."""
    rt = harness.rt
    pairs = [harness.pair() for _ in range(4)]
    rooms = greenws.Rooms()
    members = [s for s, _ in pairs[:2]] + [c for _, c in pairs[2:]]
    peers = [c for _, c in pairs[:2]] + [s for s, _ in pairs[2:]]
    for ws in members:
        rooms.join(ws, "lobby")
    assert rooms.members("lobby") == set(members)
    count = 200
    readers = [rt.spawn(_receive_all, peer, 3 * count + 1) for peer in peers]

    def sender(tag):
        for i in range(count):
            rooms.send("lobby", f"{tag}:{i}" if tag != "b" else f"{tag}:{i}".encode())
            if i % 20 == 0:
                rt.sleep(0.001)

    senders = [rt.spawn(sender, tag) for tag in "abc"]
    for task in senders:
        task.get()
    rooms.send_all("end")
    for task in readers:
        got = task.get()
        assert got[-1] == "end"
        for tag in "abc":
            mine = [m for m in got if (m if isinstance(m, str) else m.decode())[0] == tag]
            want = [f"{tag}:{i}" for i in range(count)]
            if tag == "b":  # bytes stay binary
                want = [w.encode() for w in want]
            assert mine == want
    # greenws.broadcast: a one-off fan-out, closed connections skipped
    pairs[0][0].close()
    assert greenws.broadcast([s for s, _ in pairs], "once") == 3
    for _, client in pairs[1:]:
        assert client.receive(WAIT) == "once"


def test_closed_connection_leaves_every_room(harness):
    rt = harness.rt
    (s1, c1), (s2, c2) = harness.pair(), harness.pair()
    rooms, other = greenws.Rooms(), greenws.Rooms()
    for room in ("a", "b"):
        rooms.join(s1, room)
        rooms.join(s2, room)
    other.join(s1, "a")
    rooms.leave(s2, "a")
    assert rooms.members("a") == {s1}
    c1.close()
    assert rt.wait_until(lambda: not rooms.members("a") and not other.members("a"))
    assert rooms.members("b") == {s2}
    assert s1 not in rooms_module._members
    rooms.join(s1, "b")  # closed: not added
    assert rooms.members("b") == {s2}
    rooms.leave(s2)
    assert rooms.rooms() == []


def test_encoded_once_per_deflate_window(harness, monkeypatch):
    """Many members with the same negotiated window share one compressed
    frame; a member with another window gets one of its own, correctly
    compressed; one without compression the plain frame."""
    calls = []
    real = protocol.deflate_message

    def counting(data, bits):
        calls.append(bits)
        return real(data, bits)

    monkeypatch.setattr(protocol, "deflate_message", counting)
    rooms = greenws.Rooms()
    pairs = [harness.pair() for _ in range(5)]
    plain = harness.pair(client_kwargs={"compression": False})
    small, peer = harness.raw_client(
        extra_headers=[("Sec-WebSocket-Extensions",
                        "permessage-deflate; server_max_window_bits=10")]
    )
    for server, _ in pairs + [plain]:
        rooms.join(server, "r")
    rooms.join(small, "r")
    text = "compress me " * 200
    rooms.send("r", text)
    assert sorted(calls) == [10, 12]
    for _, client in pairs + [plain]:
        assert client.receive(WAIT) == text
    fin, rsv1, opcode, payload = peer.read_frame()
    assert (fin, rsv1, opcode) == (True, True, 1)
    assert zlib.decompressobj(-10).decompress(payload + b"\x00\x00\xff\xff") == text.encode()


def _fast_reader(peer, count, out):
    for _ in range(count):
        out.append(peer.receive(WAIT))


def test_slow_member_is_closed_and_others_get_everything(harness):
    """A member that never reads among fast ones: the sender never waits for
    it, it gets 1008 "too slow" after a prefix of the messages, in order,
    and the fast members get every message."""
    rt = harness.rt
    rooms = greenws.Rooms(max_pending=16)
    fast = [harness.pair() for _ in range(3)]
    slow, peer = harness.raw_client(close_timeout=WAIT)
    for server, _ in fast:
        rooms.join(server, "r")
    rooms.join(slow, "r")
    count, size = 600, 32 * 1024
    outs = [[] for _ in fast]
    readers = [rt.spawn(_fast_reader, c, count, out) for (_, c), out in zip(fast, outs)]
    longest = 0.0
    for i in range(count):
        start = time.monotonic()
        rooms.send("r", b"%06d" % i + b"x" * size)
        longest = max(longest, time.monotonic() - start)
        if i % 10 == 0:
            rt.sleep(0.001)  # the fast readers get their turn under a hub
    for task in readers:
        task.wait()
    want = [b"%06d" % i + b"x" * size for i in range(count)]
    for out in outs:
        assert out == want
    assert longest < 1.0, "a send waited for the slow member"
    assert slow not in rooms.members("r")
    got = []
    while True:
        fin, rsv1, opcode, payload = peer.read_frame()
        if opcode == 8:
            break
        assert opcode == 2 and fin
        if rsv1:
            payload = zlib.decompressobj(-12).decompress(payload + b"\x00\x00\xff\xff")
        got.append(payload)
    assert int.from_bytes(payload[:2], "big") == 1008
    assert payload[2:] == b"too slow"
    assert 0 < len(got) < count
    assert got == want[: len(got)]


def test_slow_member_memory_is_bounded():
    """Messages for a member that never reads do not pile up: 64 MiB sent
    to it, the process grows by far less."""
    rt = Runtime("threading")
    from conftest import Harness

    harness = Harness(rt)
    try:
        slow, peer = harness.raw_client(close_timeout=1.0)
        rooms = greenws.Rooms(max_pending=8)
        rooms.join(slow, "r")
        before = _rss()
        for i in range(1024):
            rooms.send("r", os.urandom(64 * 1024))
        grown = _rss() - before
        assert grown < 24 * 1024 * 1024, grown
        assert not rooms.members("r")
    finally:
        harness.cleanup()


def test_thousand_members_in_one_process():
    """1,000 server connections in one room (gevent): one send reaches all."""
    rt = Runtime("gevent")
    listener = rt.listener()
    listener.listen(1024)
    port = listener.getsockname()[1]
    rooms = greenws.Rooms()
    peers, servers = [], []
    try:
        for _ in range(1000):
            sock = rt.connect(port)
            request, _ = raw_request(port, "/ws")
            sock.sendall(request)
            conn, _ = listener.accept()
            head = read_http_head(conn)
            ws = greenws.Server.accept(make_environ(head, conn), preset=rt.preset,
                                       compression=False)
            servers.append(ws)
            read_http_head(sock)
            peers.append(RawPeer(rt, sock, is_client=True))
            rooms.join(ws, "big")
        assert len(rooms.members("big")) == 1000
        for i in range(3):
            rooms.send("big", f"hello {i}")
        for peer in peers:
            for i in range(3):
                assert peer.read_frame()[3] == f"hello {i}".encode()
    finally:
        for peer in peers:
            peer.close()
        for ws in servers:
            ws.close_timeout = 0.5
        for ws in servers:
            ws.close()
        listener.close()
    assert not rooms.members("big")


def test_bad_arguments():
    with pytest.raises(ValueError):
        greenws.Rooms(max_pending=0)
    with pytest.raises(ValueError):
        greenws.Rooms("http://127.0.0.1:1")
    with pytest.raises(ValueError):
        greenws.Rooms(timeout=0)
    with pytest.raises(TypeError):
        greenws.Rooms().join(object(), "r")


def test_import_greenws_does_not_import_redis():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "import sys, greenws; greenws.Rooms();"
         "print('redis' in sys.modules, 'greenws._redis' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.split() == ["False", "False"]
