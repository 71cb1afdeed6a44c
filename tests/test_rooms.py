"""greenws.Rooms and greenws.broadcast: in one process, across real hosting
servers, and across processes through a real redis-server."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import zlib
from contextlib import ExitStack

import pytest
from conftest import WAIT, RawPeer, Runtime, make_environ, raw_request, read_http_head
from servers import HostedServer, check_log
from websockets.sync.client import connect as ws_connect

import greenws
from greenws import protocol
from greenws import rooms as rooms_module


def _rss() -> int:
    """Resident memory of this process, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _first(message):
    """The first character of a text or binary message."""
    return message[:1] if isinstance(message, str) else message[:1].decode()


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
            mine = [m for m in got if _first(m) == tag]
            want = [f"{tag}:{i}" for i in range(count)]
            if tag == "b":  # bytes stay binary
                want = [w.encode() for w in want]
            assert mine == want
    # greenws.broadcast: a one-off fan-out, closed connections skipped
    pairs[0][0].close()
    assert greenws.broadcast([s for s, _ in pairs], "once") == 3
    for _, client in pairs[1:]:
        assert client.receive(WAIT) == "once"


def test_broadcast_never_interleaves_with_the_apps_own_send(harness):
    """While the application sends large messages (in 1 MiB fragments) on a
    member, broadcasts to it wait for the write lock or go to its queue:
    the peer gets each large message whole and every broadcast once, in
    order."""
    rt = harness.rt
    server, client = harness.pair(client_kwargs={"max_message_size": None})
    rooms = greenws.Rooms(max_pending=10**6)
    rooms.join(server, "r")
    big = [os.urandom(2 * 1024 * 1024) for _ in range(3)]
    received = []

    def read():
        while True:
            message = client.receive(WAIT)
            if message is None or message == "end":
                return
            received.append(message)

    reader = rt.spawn(read)
    sender = rt.spawn(lambda: [server.send(data) for data in big])
    sent = 0
    while not sender.ready():
        rooms.send("r", f"small {sent}")
        sent += 1
        rt.sleep(0.0002)
    sender.get()
    rooms.send("r", "end")
    reader.get()
    assert [m for m in received if isinstance(m, bytes)] == big
    assert [m for m in received if isinstance(m, str)] == [
        f"small {i}" for i in range(sent)
    ]


def test_closed_connection_leaves_every_room(harness):
    rt = harness.rt
    (s1, c1), (s2, _) = harness.pair(), harness.pair()
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
    inflated = zlib.decompressobj(-10).decompress(payload + b"\x00\x00\xff\xff")
    assert inflated == text.encode()


def test_frames_the_socket_took_in_part_are_finished_in_order(harness, monkeypatch):
    """A member's socket takes part of a frame: the rest, and what is sent
    after it, go out through the member's writer; the peer gets each message
    whole and in order, and the sender never waited."""
    rt = harness.rt
    handed = []
    real = rooms_module._start_writer
    monkeypatch.setattr(
        rooms_module, "_start_writer",
        lambda member, rest, **kw: (handed.append(rest), real(member, rest, **kw)),
    )
    member, peer = harness.raw_client()
    member.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    rooms = greenws.Rooms(max_pending=1000)
    rooms.join(member, "r")
    want = [b"%04d" % i + os.urandom(50 * 1024) for i in range(40)]
    start = time.monotonic()
    for data in want:
        rooms.send("r", data)
    assert time.monotonic() - start < WAIT / 2
    assert handed and isinstance(handed[0][0], memoryview), "no frame was cut"
    for data in want:
        fin, rsv1, opcode, payload = peer.read_frame()
        assert (fin, rsv1, opcode) == (True, False, 2)
        assert payload == data
    state = rooms_module._members[member]
    assert rt.wait_until(lambda: not state.writers and not state.pending)
    assert member.connected


def test_member_whose_peer_vanished_is_dropped_quietly(harness):
    """A member's peer resets the connection: sending to the room raises
    nothing, the member's connection ends (1006) and leaves the room, and
    the other members get every message."""
    rt = harness.rt
    rooms = greenws.Rooms()
    server, client = harness.pair()
    gone, peer = harness.raw_client()
    rooms.join(server, "r")
    rooms.join(gone, "r")
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    peer.sock.close()
    for i in range(20):
        rooms.send("r", f"m{i}")
        rt.sleep(0.001)
    assert rt.wait_until(lambda: not gone.connected and gone not in rooms.members("r"))
    assert gone.close_reason == 1006
    assert [client.receive(WAIT) for _ in range(20)] == [f"m{i}" for i in range(20)]


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
        for _ in range(1024):
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


@pytest.mark.parametrize("runtime", ["gevent", "eventlet"])
def test_send_never_waits_for_a_full_socket_monkey_patched(runtime):
    """Monkey-patched, the runtime's socket passes for socket.socket, and
    its send() waits for room even with MSG_DONTWAIT: a member whose kernel
    buffer is full must still never hold the sender."""
    import subprocess
    import sys

    from servers import APPS

    out = subprocess.run(
        [sys.executable, str(APPS / "full_member.py"), runtime],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    seconds, members = out.stdout.split()
    assert float(seconds) < 5.0
    assert members == "0"  # dropped as too slow


# -- on real hosting servers ------------------------------------------------------


def _chat_clients(stack, url, count, pids=None, attempts=40, **kw):
    """``count`` websockets clients of /chat (on as many worker processes as
    ``pids`` asks for), each past its "joined PID" greeting; ``stack`` (an
    ExitStack) closes them; ``kw`` go to websockets' connect()."""
    clients, seen = [], set()
    for _ in range(attempts):
        ws = stack.enter_context(ws_connect(url + "/chat", open_timeout=WAIT, **kw))
        greeting = ws.recv(timeout=WAIT)
        assert greeting.startswith("joined ")
        pid = int(greeting.split()[1])
        if pids and pid in seen and len(seen) < pids and len(clients) >= count - 1:
            ws.close()  # keep looking for the other worker
            continue
        seen.add(pid)
        ws.pid = pid
        clients.append(ws)
        if len(clients) >= count and (not pids or len(seen) >= pids):
            return clients
    raise AssertionError(f"clients on {len(seen)} worker processes only")


def _chat(clients, per_client):
    """Every client sends ``per_client`` messages; each client must get all
    of them, each sender's in order, once each."""
    total = len(clients) * per_client
    results = [None] * len(clients)

    def read(i, ws):
        results[i] = [ws.recv(timeout=WAIT) for _ in range(total)]

    readers = [
        threading.Thread(target=read, args=(i, ws)) for i, ws in enumerate(clients)
    ]
    for thread in readers:
        thread.start()
    for i, ws in enumerate(clients):
        for n in range(per_client):
            ws.send(f"{i}:{n}")
    for thread in readers:
        thread.join(WAIT * 2)
    for got in results:
        assert got is not None and len(got) == total
        for i in range(len(clients)):
            assert [m for m in got if m.startswith(f"{i}:")] == [
                f"{i}:{n}" for n in range(per_client)
            ]


@pytest.mark.parametrize("kind", ["gunicorn-gevent", "gunicorn-gthread", "eventlet"])
def test_rooms_on_hosting_servers(kind):
    """A room on gevent, gthread and eventlet.wsgi servers, with a member
    that never reads among websockets clients: everyone else gets every
    message, in order, once; the server logs no error."""
    server = HostedServer(kind, module="rooms_app")
    try:
        with ExitStack() as stack:
            clients = _chat_clients(stack, server.url, 4)
            idle = stack.enter_context(
                socket.create_connection(("127.0.0.1", server.port))
            )
            request, _ = raw_request(server.port, "/chat")
            idle.sendall(request)  # then never reads
            _chat(clients, 50)
    finally:
        server.stop_and_check()


@pytest.mark.parametrize(
    "kind, direct",
    [("gunicorn-gevent", True), ("eventlet", True), ("gevent", True),
     ("gunicorn-gthread", False)],
)
def test_rooms_over_tls_on_hosting_servers(kind, direct, tmp_path):
    """wss:// members, the hosting server terminating TLS: each member gets
    every message whole and in order, also one that stops reading for a
    while (its SSL writes then cannot go out at once, and its writer must
    repeat them with the same bytes).  Where the descriptor never blocks
    (gevent, eventlet) the sender writes to members through the SSL object
    itself; on a blocking one (gthread), always through their writer."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    server = HostedServer(kind, module="rooms_app", tls=(str(cert_file), str(key_file)))
    # More than the kernel buffers for the paused member (tcp_wmem's 4 MiB)
    count = 100
    want = [b"%04d" % i + os.urandom(60 * 1024) for i in range(count)]
    try:
        with ExitStack() as stack:
            sender, reader = _chat_clients(stack, server.url, 2, ssl=context)
            # The paused member: a small receive buffer, and websockets stops
            # reading its socket once one message waits.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.connect(("127.0.0.1", server.port))
            paused = stack.enter_context(ws_connect(
                server.url + "/chat", ssl=context, sock=sock, max_queue=1,
                open_timeout=WAIT,
            ))
            assert paused.recv(timeout=WAIT).startswith("joined ")
            status = stack.enter_context(
                ws_connect(server.url + "/status", ssl=context, open_timeout=WAIT)
            )
            status.send("?")
            members = json.loads(status.recv(timeout=WAIT))["direct"]
            assert members == (3 if direct else 0)
            got = {}

            def read(name, ws):
                got[name] = [ws.recv(timeout=WAIT) for _ in range(count)]

            threads = [threading.Thread(target=read, args=(n, ws))
                       for n, ws in (("sender", sender), ("reader", reader))]
            for thread in threads:
                thread.start()
            for data in want:
                sender.send(data)
            for thread in threads:
                thread.join(WAIT * 2)
            # The paused member reads only now (websockets stopped reading its
            # socket after max_queue messages).
            read("paused", paused)
            for name in ("sender", "reader", "paused"):
                assert got.get(name) == want, name
    finally:
        # The port probe of HostedServer opens and drops a TCP connection
        # without TLS, which the servers log with a traceback: not ours.
        server.stop_and_check(re.compile(r"Error handling request|\" 500 |greenws"))


# -- across processes, through Redis ---------------------------------------------


def _wait(condition, timeout=WAIT, step=0.01):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def _redis_rooms(rt, url, **kw):
    kw.setdefault("timeout", 1.0)
    kw.setdefault("health_check_interval", 0.5)
    return greenws.Rooms(url, preset=rt.preset, **kw)


def _members(harness, rooms, count, room="r"):
    pairs = [harness.pair() for _ in range(count)]
    for server, _ in pairs:
        rooms.join(server, room)
    return [client for _, client in pairs]


def test_redis_passes_messages_between_rooms_objects(harness, redis_server):
    """Two Rooms on one Redis (as two workers would be): each member gets
    each message once, str as text and bytes as binary; send_all reaches
    every room."""
    rt = harness.rt
    a = _redis_rooms(rt, redis_server.url)
    b = _redis_rooms(rt, redis_server.url)
    try:
        assert rt.wait_until(lambda: a.connected and b.connected)
        on_a, on_b = _members(harness, a, 2), _members(harness, b, 2)
        other = _members(harness, b, 1, room="other")
        for i in range(20):
            a.send("r", f"a{i}")
            b.send("r", b"b%d" % i)
        a.send_all("all")
        for client in on_a + on_b:
            got = [client.receive(WAIT) for _ in range(41)]
            assert [m for m in got if isinstance(m, str) and m[1:].isdigit()] == [
                f"a{i}" for i in range(20)
            ]
            assert [m for m in got if isinstance(m, bytes)] == [
                b"b%d" % i for i in range(20)
            ]
            # (a's "all" and b's messages have different senders: no order)
            assert got.count("all") == 1
            assert client.receive(0.2) is None  # nothing twice
        assert other[0].receive(WAIT) == "all"
    finally:
        a.close()
        b.close()


def test_redis_restart_no_worker_stays_deaf(harness, redis_server):
    """Redis killed: send raises BroadcastError within timeout (the local
    members still get the message) and connected is False; restarted on the
    same port: both Rooms resubscribe by themselves."""
    rt = harness.rt
    a = _redis_rooms(rt, redis_server.url)
    b = _redis_rooms(rt, redis_server.url)
    try:
        assert rt.wait_until(lambda: a.connected and b.connected)
        (on_a,), (on_b,) = _members(harness, a, 1), _members(harness, b, 1)
        a.send("r", "before")
        assert on_a.receive(WAIT) == on_b.receive(WAIT) == "before"
        redis_server.kill()
        assert rt.wait_until(lambda: not a.connected and not b.connected, 2.0)
        start = time.monotonic()
        with pytest.raises(greenws.BroadcastError):
            a.send("r", "while down")
        assert time.monotonic() - start < a.timeout + 0.5
        assert on_a.receive(WAIT) == "while down"
        redis_server.start()
        assert rt.wait_until(lambda: a.connected and b.connected, 15)
        a.send("r", "after")
        b.send("r", "and back")
        for client in (on_a, on_b):
            got = {client.receive(WAIT), client.receive(WAIT)}
            assert got == {"after", "and back"}  # two senders: any order
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("rt", ["gevent"], indirect=True)
def test_redis_frozen_is_noticed_within_two_intervals(harness, redis_server):
    rt = harness.rt
    rooms = _redis_rooms(rt, redis_server.url, health_check_interval=0.5)
    try:
        assert rt.wait_until(lambda: rooms.connected)
        (member,) = _members(harness, rooms, 1)
        redis_server.freeze()
        start = time.monotonic()
        with pytest.raises(greenws.BroadcastError):
            rooms.send("r", "frozen")
        assert time.monotonic() - start < rooms.timeout + 0.5
        assert member.receive(WAIT) == "frozen"
        assert rt.wait_until(lambda: not rooms.connected, 2 * 0.5 + 0.5)
        redis_server.thaw()
        assert rt.wait_until(lambda: rooms.connected, 15)
        rooms.send("r", "thawed")
        assert member.receive(WAIT) == "thawed"
    finally:
        rooms.close()


class _Recording:
    """A socket whose sendall() is noted in ``events`` first."""

    def __init__(self, sock, events):
        self._sock, self._events = sock, events

    def sendall(self, data):
        self._events.append("publish")
        return self._sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_the_message_leaves_for_redis_before_the_local_fan_out(
    harness, redis_server, monkeypatch
):
    """So that the other processes fan it out while this one does (its
    answer is awaited after)."""
    rt = harness.rt
    rooms = _redis_rooms(rt, redis_server.url)
    try:
        assert rt.wait_until(lambda: rooms.connected)
        (member,) = _members(harness, rooms, 1)
        rooms.send("r", "warm")  # the publisher's connection is open now
        assert member.receive(WAIT) == "warm"
        events = []
        link = rooms._link
        link._pub.sock = _Recording(link._pub.sock, events)
        real = rooms_module._fan_out
        monkeypatch.setattr(
            rooms_module, "_fan_out",
            lambda *args: (events.append("local"), real(*args))[1],
        )
        rooms.send("r", "hello")
        assert events == ["publish", "local"]
        assert member.receive(WAIT) == "hello"
    finally:
        rooms.close()


@pytest.mark.parametrize("rt", ["gevent", "threading"], indirect=True)
def test_members_here_never_wait_for_redis(harness, redis_server):
    """Redis frozen: while one send waits for Redis's answer (holding the
    publisher), the members here get that message and the next sender's at
    once; both sends then raise BroadcastError."""
    rt = harness.rt
    rooms = _redis_rooms(rt, redis_server.url, timeout=3.0, health_check_interval=5.0)
    try:
        assert rt.wait_until(lambda: rooms.connected)
        (member,) = _members(harness, rooms, 1)
        rooms.send("r", "warm")
        assert member.receive(WAIT) == "warm"
        redis_server.freeze()
        first = rt.spawn(rooms.send, "r", "first")
        assert member.receive(2.0) == "first"
        second = rt.spawn(rooms.send, "r", "second")
        assert member.receive(2.0) == "second"
        assert not first.ready() and not second.ready()
        for task in (first, second):
            with pytest.raises(greenws.BroadcastError):
                task.get()
    finally:
        redis_server.thaw()
        rooms.close()


@pytest.mark.parametrize("rt", ["eventlet", "threading"], indirect=True)
def test_redis_that_never_answers(harness):
    """A port that accepts TCP and never answers: never connected, send
    raises within timeout, close() returns at once."""
    rt = harness.rt
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes handshakes; nobody answers
    port = silent.getsockname()[1]
    try:
        rooms = _redis_rooms(rt, f"redis://127.0.0.1:{port}", timeout=0.5)
        (member,) = _members(harness, rooms, 1)
        start = time.monotonic()
        with pytest.raises(greenws.BroadcastError):
            rooms.send("r", "hello")
        assert time.monotonic() - start < 0.5 + 0.5
        assert member.receive(WAIT) == "hello"
        rt.sleep(1.0)
        assert not rooms.connected
        start = time.monotonic()
        rooms.close()
        assert time.monotonic() - start < 1.0
    finally:
        silent.close()


# While Redis is down the workers log warnings, not errors.
_ERRORS = re.compile(r"Traceback|Error handling request")


def test_two_gunicorn_gevent_workers_share_a_redis(redis_server):
    """gunicorn -k gevent -w 2 with Redis rooms, websockets clients on both
    workers: everyone gets everything; Redis killed and restarted on the
    same port mid-stream: no worker stays deaf."""
    server = HostedServer(
        "gunicorn-gevent", module="rooms_app", options=["-w", "2"],
        env={"ROOMS_REDIS": redis_server.url, "ROOMS_INTERVAL": "0.5",
             "ROOMS_TIMEOUT": "1"},
    )
    try:
        with ExitStack() as stack:
            clients = _chat_clients(stack, server.url, 4, pids=2)
            _chat(clients, 30)
            redis_server.kill()
            redis_server.start()
            # Every worker hears every other again (each probe from a client on
            # one worker must reach a client on the other).
            by_pid = {}
            for ws in clients:
                by_pid.setdefault(ws.pid, ws)
            senders = list(by_pid.values())
            for sender in senders:
                listener = next(ws for ws in clients if ws.pid != sender.pid)
                deadline = time.monotonic() + 20
                heard = False
                n = 0
                while not heard and time.monotonic() < deadline:
                    n += 1
                    sender.send(f"probe {sender.pid} {n}")
                    try:
                        while True:
                            message = listener.recv(timeout=0.5)
                            if message == f"probe {sender.pid} {n}":
                                heard = True
                                break
                    except TimeoutError:
                        pass
                assert heard, f"worker {listener.pid} deaf after Redis restarted"
    finally:
        check_log(server.stop(), "gunicorn-gevent", _ERRORS)


def _tls_echo_server(rt):
    """A websockets echo server over TLS, in a thread: (port, client
    context, stop())."""
    import ssl

    import trustme
    from websockets.sync.server import serve

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    def echo(conn):
        for message in conn:
            conn.send(message)

    server = serve(echo, "127.0.0.1", 0, ssl=server_ctx)
    thread = rt.spawn_thread(server.serve_forever)

    def stop():
        server.shutdown()
        thread.get()

    return server.socket.getsockname()[1], client_ctx, stop


def _tls_members(harness, rooms, port, client_ctx, count=3):
    """``count`` greenws clients of the server of :func:`_tls_echo_server`,
    members of the room "r"."""
    clients = []
    for _ in range(count):
        client = greenws.Client.connect(
            f"wss://localhost:{port}/", preset=harness.rt.preset, ssl_context=client_ctx
        )
        harness.connections.append(client)
        clients.append(client)
        rooms.join(client, "r")
    return clients


@pytest.mark.parametrize("rt", ["threading"], indirect=True)
def test_a_writer_without_a_direct_path_serves_many_messages(harness, monkeypatch):
    """TLS members under threads need their writer for every message: it
    waits for the next one instead of a thread being started per message,
    and it ends as soon as its member closes."""
    rt = harness.rt
    port, client_ctx, stop = _tls_echo_server(rt)
    started = []
    real = rooms_module._start_writer
    monkeypatch.setattr(
        rooms_module, "_start_writer",
        lambda member, rest, **kw: (started.append(member), real(member, rest, **kw)),
    )
    try:
        rooms = greenws.Rooms()
        clients = _tls_members(harness, rooms, port, client_ctx)
        states = [rooms_module._members[c] for c in clients]
        for i in range(30):  # one at a time: each written before the next
            rooms.send("r", f"m{i}")
            for client in clients:
                assert client.receive(WAIT) == f"m{i}"
        assert len(started) == 3, len(started)
        for client in clients:
            client.close()
        # well before the writers would stop waiting by themselves
        assert rt.wait_until(
            lambda: not any(s.writers for s in states), rooms_module._LINGER / 2
        )
    finally:
        for client in harness.connections:
            client.close()
        stop()


@pytest.mark.parametrize("rt", ["threading", "gevent"], indirect=True)
def test_tls_members(harness):
    """Client members over TLS: the SSL object must do every write (no
    write of the raw socket), directly where the descriptor never blocks,
    else through a writer of their own: each message arrives once, in order
    (echoed by a websockets server)."""
    rt = harness.rt
    port, client_ctx, stop = _tls_echo_server(rt)
    try:
        rooms = greenws.Rooms()
        clients = _tls_members(harness, rooms, port, client_ctx)
        # gevent's descriptors never block: the SSL object is written at
        # once; threads' do: their writer writes.
        direct = [rooms_module._members[c].raw is not None for c in clients]
        assert direct == [rt.name != "threading"] * 3
        for i in range(50):
            rooms.send("r", f"m{i}")
            if i % 10 == 0:
                rt.sleep(0.001)
        for client in clients:
            assert _receive_all(client, 50) == [f"m{i}" for i in range(50)]
    finally:
        for client in harness.connections:
            client.close()
        stop()


@pytest.mark.filterwarnings("ignore:Using fork:DeprecationWarning")  # eventlet's
@pytest.mark.parametrize("rt", ["threading"], indirect=True)
def test_redis_rooms_made_before_fork(harness, redis_server):
    """Rooms made before a fork (gunicorn --preload): the child makes a link
    of its own, and its messages reach the parent's members."""
    rt = harness.rt
    rooms = _redis_rooms(rt, redis_server.url)
    try:
        assert rt.wait_until(lambda: rooms.connected)
        (member,) = _members(harness, rooms, 1)
        pid = os.fork()
        if pid == 0:  # the child: a worker forked from a preloading master
            code = 1
            try:
                for server in rooms.members("r"):
                    rooms.leave(server)  # (inherited: the parent's to serve)
                deadline = time.monotonic() + WAIT
                while not rooms.connected and time.monotonic() < deadline:
                    time.sleep(0.01)
                rooms.send("r", "from the child")
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert member.receive(WAIT) == "from the child"
        assert member.receive(0.2) is None  # once
    finally:
        rooms.close()
