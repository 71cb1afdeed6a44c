"""greenws.connection: the connection API, for both roles and every preset.

Pairs are real loopback TCP connections (see conftest ``Harness``); "raw"
peers are sockets driven frame by frame by the test.
"""

import array
import os
import socket as std_socket
import struct
import sys
import threading
import time
import tracemalloc

import pytest
from conftest import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    WAIT,
    close_payload,
    pick,
)

import greenws
from greenws import ConnectionClosed
from greenws.connection import Base, _send_whole


def raw_pair(harness, role, **kwargs):
    """(greenws object in ``role``, RawPeer on the other side)."""
    if role == "server":
        return harness.raw_client(**kwargs)
    return harness.raw_server(**kwargs)


def closed_code(ws, timeout=WAIT):
    """Wait until ``receive`` raises; return (code, message) of the close."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = ws.receive(timeout=max(deadline - time.monotonic(), 0.01))
        except ConnectionClosed as exc:
            return exc.reason, exc.message
        assert msg is None, f"unexpected message {msg!r}"
    raise AssertionError("connection did not close in time")


def read_close(peer, timeout=WAIT):
    """Skip data/ping frames until the Close frame; return its (code, reason)."""
    while True:
        _, _, opcode, payload = peer.read_frame(timeout)
        if opcode == OP_CLOSE:
            if not payload:
                return 1005, ""
            return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


# -- sending ---------------------------------------------------------------


class Thing:
    def __str__(self):
        return "thing!"


@pytest.mark.parametrize(
    "data, expected",
    [
        ("hello", "hello"),
        ("", ""),
        ("h\u00e9llo \u20ac \U0001f600", "h\u00e9llo \u20ac \U0001f600"),
        (b"\x00\xffbin", b"\x00\xffbin"),
        (b"", b""),
        (bytearray(b"array"), b"array"),
        (memoryview(b"xxviewxx")[2:6], b"view"),
        (42, "42"),
        (Thing(), "thing!"),
    ],
    ids=["str", "empty-str", "unicode", "bytes", "empty-bytes", "bytearray",
         "memoryview", "int", "object"],
)
def test_send_types(ws_pair, role, data, expected):
    a, b = pick(ws_pair(), role)
    a.send(data)
    got = b.receive(timeout=WAIT)
    assert type(got) is type(expected)
    assert got == expected


def test_many_small_messages_in_order(ws_pair, role):
    a, b = pick(ws_pair(), role)
    for i in range(300):
        a.send(f"m{i}" if i % 2 else f"m{i}".encode())
    for i in range(300):
        expected = f"m{i}" if i % 2 else f"m{i}".encode()
        assert b.receive(timeout=WAIT) == expected


@pytest.mark.parametrize("kind", ["binary", "text"])
def test_large_message_byte_exact(ws_pair, role, rt, kind):
    a, b = pick(ws_pair(), role)
    if kind == "binary":
        data = os.urandom(8 * 1024 * 1024)
    else:
        unit = "abc\u00e9\u20ac\U0001f600" + os.urandom(8).hex()
        data = unit * (8 * 1024 * 1024 // len(unit.encode()))
    sender = rt.spawn(a.send, data)
    got = b.receive(timeout=WAIT * 2)
    sender.get()
    assert got == data


def test_16mib_echo(ws_pair, rt):
    server, client = ws_pair()
    data = os.urandom(16 * 1024 * 1024)

    def echo():
        server.send(server.receive(timeout=WAIT * 2))

    task = rt.spawn(echo)
    client.send(data)
    assert client.receive(timeout=WAIT * 2) == data
    task.get()


def test_small_receive_bytes(ws_pair, role, rt):
    server, client = ws_pair(
        server_kwargs={"receive_bytes": 7}, client_kwargs={"receive_bytes": 7}
    )
    a, b = pick((server, client), role)
    data = os.urandom(100_000)
    sender = rt.spawn(a.send, data)
    assert b.receive(timeout=WAIT) == data
    sender.get()


# -- receiving ----------------------------------------------------------------


def test_receive_timeout_zero_returns_none(ws_pair, role):
    a, b = pick(ws_pair(), role)
    start = time.monotonic()
    assert a.receive(timeout=0) is None
    assert time.monotonic() - start < 0.1
    b.send("x")
    assert a.receive(timeout=WAIT) == "x"


def test_receive_timeout_zero_returns_what_has_arrived(ws_pair, role):
    """receive(0) reads data already in the socket, without yielding first."""
    import select

    a, b = pick(ws_pair(), role)
    b.send("ready")
    poller = select.poll()
    poller.register(a.sock.fileno(), select.POLLIN)
    deadline = time.monotonic() + WAIT
    message = None
    while message is None and time.monotonic() < deadline:
        poller.poll(100)  # bounded wait until the bytes are here
        message = a.receive(timeout=0)
    assert message == "ready"


def test_receive_timeout_then_message(ws_pair, role, rt):
    a, b = pick(ws_pair(), role)
    start = time.monotonic()
    assert a.receive(timeout=0.2) is None
    elapsed = time.monotonic() - start
    assert 0.18 <= elapsed < 2.0
    # A receive already waiting is woken by a message sent later.
    waiter = rt.spawn(a.receive, timeout=WAIT)
    rt.sleep(0.05)  # let the waiter block before the message exists
    assert not waiter.ready()
    b.send("later")
    assert waiter.get() == "later"


def test_messages_before_close_are_returned_first(ws_pair, role, rt):
    a, b = pick(ws_pair(), role)
    for i in range(3):
        b.send(f"m{i}")
    b.close(4001, "bye")
    assert rt.wait_until(lambda: not a.connected)
    assert [a.receive(timeout=WAIT) for _ in range(3)] == ["m0", "m1", "m2"]
    with pytest.raises(ConnectionClosed) as info:
        a.receive(timeout=WAIT)
    assert (info.value.reason, info.value.message) == (4001, "bye")
    # and it keeps raising
    with pytest.raises(ConnectionClosed):
        a.receive(timeout=0)


def test_iteration_ends_quietly_on_normal_close(ws_pair, role, rt):
    a, b = pick(ws_pair(), role)
    b.send("one")
    b.send(b"two")
    closer = rt.spawn(b.close)
    assert list(a) == ["one", b"two"]
    closer.get()
    assert a.close_reason == 1000


@pytest.mark.parametrize("code", [1011, 4000])
def test_iteration_raises_on_error_close(ws_pair, role, rt, code):
    a, b = pick(ws_pair(), role)
    b.send("one")
    closer = rt.spawn(b.close, code, "oops")
    got = []
    with pytest.raises(ConnectionClosed) as info:
        for msg in a:
            got.append(msg)
    closer.get()
    assert got == ["one"]
    assert info.value.reason == code
    assert info.value.message == "oops"


def test_receive_wakes_when_connection_closes(ws_pair, role, rt):
    a, b = pick(ws_pair(), role)
    waiter = rt.spawn(a.receive)  # timeout=None: waits for ever
    rt.sleep(0.05)
    assert not waiter.ready()
    b.close(4003)
    with pytest.raises(ConnectionClosed) as info:
        waiter.get()
    assert info.value.reason == 4003


# -- closing -----------------------------------------------------------------


def test_context_manager_closes(ws_pair, role):
    a, b = pick(ws_pair(), role)
    with a as entered:
        assert entered is a
        a.send("inside")
    assert not a.connected
    assert b.receive(timeout=WAIT) == "inside"
    assert closed_code(b)[0] == 1000
    with pytest.raises(ConnectionClosed):
        a.send("after")


def test_close_code_and_reason_on_both_sides(ws_pair, role):
    a, b = pick(ws_pair(), role)
    a.close(4321, "custom reason")
    assert (a.close_reason, a.close_message) == (4321, "custom reason")
    assert closed_code(b) == (4321, "custom reason")
    assert (b.close_reason, b.close_message) == (4321, "custom reason")
    assert not a.connected and not b.connected


def test_close_default_code(ws_pair, role):
    a, b = pick(ws_pair(), role)
    a.close()
    assert a.close_reason == 1000
    assert closed_code(b)[0] == 1000


def test_close_is_idempotent(ws_pair, role):
    a, b = pick(ws_pair(), role)
    a.close(4100, "first")
    a.close(4200, "second")
    a.close()
    assert (a.close_reason, a.close_message) == (4100, "first")
    assert closed_code(b) == (4100, "first")
    # closing the side that received the Close is a no-op as well
    b.close(4300)
    assert b.close_reason == 4100


def _yield_in(code):
    """A thread tracer that lets other threads run at every line of ``code``.

    As a debugger or a pure-Python coverage tracer does: CPython with the GIL
    otherwise rarely switches threads inside a few lines without a call.
    """

    def tracer(frame, event, arg):
        if frame.f_code is not code:
            return None

        def local(frame, event, arg):
            if event == "line":
                time.sleep(0)  # gives the GIL away
            return local

        return local

    return tracer


def test_racing_closes_record_the_close_that_was_sent(harness, rt):
    """Many close() calls and close_all() at once: one close wins, whole.

    Before, two closes could both find the connection not closing yet; the
    loser's code overwrote close_reason although its Close frame was never
    sent, so the application saw a close its peer never heard of.
    """
    threads = rt.name == "threading"
    tracer = _yield_in(Base._close_with.__code__) if threads else None
    racers = 8
    for _ in range(5):
        ws, peer = harness.raw_client(close_timeout=WAIT)
        gate = threading.Barrier(racers + 1) if threads else None

        def race(close, *args, gate=gate):
            if gate is not None:
                gate.wait(WAIT)
            sys.settrace(tracer)
            try:
                close(*args)
            finally:
                sys.settrace(None)

        tasks = [
            rt.spawn(race, ws.close, 4000 + k, f"racer {k}") for k in range(racers)
        ]
        tasks.append(rt.spawn(race, greenws.close_all, 1001, "all", WAIT))
        code, reason = read_close(peer)
        peer.send_frame(OP_CLOSE, close_payload(code, reason))
        for task in tasks:
            task.get()
        assert (ws.close_reason, ws.close_message) == (code, reason)
        assert peer.read_eof()  # and no second Close frame before the end
        assert not peer.buf


def test_send_and_ping_after_close_raise(ws_pair, role, rt):
    a, b = pick(ws_pair(), role)
    a.close()
    with pytest.raises(ConnectionClosed):
        a.send("x")
    with pytest.raises(ConnectionClosed):
        a.ping(timeout=1)
    assert rt.wait_until(lambda: not b.connected)
    with pytest.raises(ConnectionClosed):
        b.send("x")


def test_close_bounded_by_close_timeout(harness, role):
    ws, peer = raw_pair(harness, role, close_timeout=0.3)
    start = time.monotonic()
    ws.close(1000)
    elapsed = time.monotonic() - start
    assert elapsed < 0.3 + 1.5
    assert read_close(peer) == (1000, "")
    assert peer.read_eof(timeout=WAIT)  # the TCP connection is shut down
    assert not ws.connected


def test_close_waits_for_peer_close(harness, role, rt):
    ws, peer = raw_pair(harness, role, close_timeout=WAIT)
    closer = rt.spawn(ws.close, 4000, "x")
    assert read_close(peer) == (4000, "x")
    assert not closer.ready()
    peer.send_frame(OP_CLOSE, close_payload(4000, "x"))
    if role == "client":
        # the client waits for the server to close TCP first
        rt.sleep(0.05)
        peer.close()
    closer.get(timeout=WAIT / 2)
    if role == "server":
        assert peer.read_eof()


def test_peer_close_is_echoed(harness, role):
    ws, peer = raw_pair(harness, role)
    peer.send_frame(OP_CLOSE, close_payload(4444, "peer"))
    assert read_close(peer) == (4444, "peer")
    if role == "client":
        peer.close()
    assert closed_code(ws) == (4444, "peer")


def test_peer_close_without_status(harness, role):
    ws, peer = raw_pair(harness, role)
    peer.send_frame(OP_CLOSE, b"")
    assert read_close(peer)[0] in (1000, 1005)
    if role == "client":
        peer.close()
    assert closed_code(ws)[0] == 1005
    assert list(ws) == []  # 1005 ends iteration quietly


def test_peer_vanishes_gives_1006(harness, role):
    ws, peer = raw_pair(harness, role)
    peer.send_frame(OP_TEXT, "last words")
    peer.close()
    assert ws.receive(timeout=WAIT) == "last words"
    assert closed_code(ws)[0] == 1006
    assert not ws.connected


@pytest.mark.parametrize("busy", [False, True])
def test_reader_bug_is_logged_and_closes_1011(
    harness, role, rt, caplog, monkeypatch, busy
):
    """An error in reading that is no I/O error is a bug of ours: logged at
    ERROR with its traceback, the peer told 1011 -- never a silent 1006.

    ``busy``: nobody is in receive() when the data arrives (the reader
    thread or the hub's watcher reads).
    """
    import logging

    caplog.set_level(logging.ERROR, logger="greenws")
    ws, peer = raw_pair(harness, role)

    def broken(self, data):
        raise RuntimeError("bug in the protocol layer")

    # The peer is raw: only ``ws`` uses the class.
    monkeypatch.setattr(type(ws._protocol), "receive_data", broken)
    peer.send_frame(OP_TEXT, "boom")
    if not busy:
        with pytest.raises(ConnectionClosed) as closed:
            ws.receive(timeout=WAIT)
        assert closed.value.reason == 1011
    assert read_close(peer) == (1011, "internal error")
    assert rt.wait_until(lambda: ws.close_reason == 1011)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].exc_info is not None
    assert "bug in the protocol layer" in str(errors[0].exc_info[1])


# -- pings ---------------------------------------------------------------


def test_ping_returns_rtt(ws_pair, role):
    a, _ = pick(ws_pair(), role)
    assert a.latency is None
    rtt = a.ping(timeout=WAIT)
    assert isinstance(rtt, float) and 0 < rtt < WAIT
    assert a.latency == rtt
    assert a.ping(b"payload", timeout=WAIT) > 0


def test_ping_timeout_raises(harness, role):
    ws, peer = raw_pair(harness, role)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        ws.ping(timeout=0.2)
    assert time.monotonic() - start < 2.0
    _, _, opcode, _ = peer.read_frame()
    assert opcode == OP_PING
    assert ws.connected


def test_ping_answered_by_raw_peer(harness, role):
    ws, peer = raw_pair(harness, role)
    task = harness.rt.spawn(ws.ping, b"abcd", timeout=WAIT)
    _, _, opcode, payload = peer.read_frame()
    assert (opcode, payload) == (OP_PING, b"abcd")
    peer.send_frame(OP_PONG, payload)
    assert task.get() > 0


def test_pings_from_peer_are_answered(harness, role):
    ws, peer = raw_pair(harness, role)
    peer.send_frame(OP_PING, b"hello?")
    _, _, opcode, payload = peer.read_frame()
    assert (opcode, payload) == (OP_PONG, b"hello?")
    assert ws.connected


def test_unsolicited_pong_ignored(harness, role):
    ws, peer = raw_pair(harness, role)
    peer.send_frame(OP_PONG, b"nobody asked")
    peer.send_frame(OP_TEXT, "still fine")
    assert ws.receive(timeout=WAIT) == "still fine"


def test_keepalive_answered(ws_pair, role, rt):
    a, b = pick(
        ws_pair(
            server_kwargs={"ping_interval": 0.1}, client_kwargs={"ping_interval": 0.1}
        ),
        role,
    )
    assert rt.wait_until(lambda: a.latency is not None)
    assert a.connected and b.connected
    b.send("alive")
    assert a.receive(timeout=WAIT) == "alive"


def test_keepalive_timeout_closes(harness, role):
    ws, peer = raw_pair(harness, role, ping_interval=0.2)
    start = time.monotonic()
    _, _, opcode, _ = peer.read_frame()  # the keepalive ping, never answered
    assert opcode == OP_PING
    code, _ = closed_code(ws)
    elapsed = time.monotonic() - start
    assert code == 1011  # documented in connection._keepalive
    assert elapsed < 0.2 + 0.2 + 1.5
    assert not ws.connected
    assert peer.read_eof()


def test_keepalive_timeout_ends_a_connection_whose_queue_is_full(harness, role, rt):
    """Nobody receives, reading has paused on a full queue, the peer stops
    answering: keepalive must still end the connection and free its reader."""
    ws, peer = raw_pair(harness, role, ping_interval=0.2, max_queue=1)
    for i in range(3):
        peer.send_frame(OP_TEXT, f"m{i}")
    assert rt.wait_until(lambda: len(ws._queue) >= 1)
    assert rt.wait_until(lambda: ws._done)
    assert ws.close_reason == 1011
    assert ws.receive(timeout=WAIT) == "m0"  # what came first is still there


# -- concurrency -------------------------------------------------------------

SIZES = [1, 125, 126, 5000, 65535, 65536, 200_000]


def _message(sender, i):
    size = SIZES[(sender + i) % len(SIZES)]
    head = f"{sender}:{i}:".encode()
    return head + bytes([65 + sender]) * max(size - len(head), 0)


def _check_message(msg):
    sender, i, _ = msg.split(b":", 2)
    assert msg == _message(int(sender), int(i)), "corrupted message"
    return int(sender), int(i)


def test_concurrent_sends_never_interleave(ws_pair, role, rt):
    a, b = pick(ws_pair(client_kwargs={"max_queue": None},
                        server_kwargs={"max_queue": None}), role)
    senders, per_sender = 8, 15

    def send_all(n):
        for i in range(per_sender):
            a.send(_message(n, i))

    tasks = [rt.spawn(send_all, n) for n in range(senders)]
    seen = {n: -1 for n in range(senders)}
    for _ in range(senders * per_sender):
        msg = b.receive(timeout=WAIT)
        assert msg is not None
        sender, i = _check_message(msg)
        assert i == seen[sender] + 1  # per-sender order kept
        seen[sender] = i
    for task in tasks:
        task.get()


def test_concurrent_sends_and_pings_on_the_wire(harness, role, rt):
    """A raw reader parses every frame: no frame is cut or interleaved."""
    ws, peer = raw_pair(harness, role)
    senders, per_sender = 6, 10

    def send_all(n):
        for i in range(per_sender):
            ws.send(_message(n, i))

    def ping_all():
        for _ in range(10):
            try:
                ws.ping(timeout=0.01)
            except TimeoutError:
                pass

    tasks = [rt.spawn(send_all, n) for n in range(senders)] + [rt.spawn(ping_all)]
    count = 0
    while count < senders * per_sender:
        fin, rsv1, opcode, payload = peer.read_frame()
        assert fin and not rsv1
        if opcode == OP_PING:
            continue
        assert opcode == OP_BINARY
        _check_message(payload)
        count += 1
    for task in tasks:
        task.get()


# -- who reads ---------------------------------------------------------------
#
# Thread mode: receive() reads in its own thread; the reader thread reads
# whenever no receive() does.  Hub mode: the same contract through a watcher.


def _receive_some(ws, peer, count=5):
    """Messages read by receive() (timed and untimed), as an application does."""
    for i in range(count):
        peer.send_frame(OP_TEXT, f"m{i}")
        assert ws.receive(timeout=WAIT if i % 2 else None) == f"m{i}"


def _watch_recv(ws, before):
    """Replace ``ws.sock`` by a proxy that calls ``before()`` on every recv()."""
    real = ws.sock

    class Watched:
        def recv(self, size):
            before()
            return real.recv(size)

        def __getattr__(self, name):
            return getattr(real, name)

    ws.sock = Watched()


def test_pings_answered_after_receiving_stops(harness, role):
    ws, peer = raw_pair(harness, role)
    _receive_some(ws, peer)
    peer.send_frame(OP_PING, b"still there?")  # nobody calls receive() now
    _, _, opcode, payload = peer.read_frame()
    assert (opcode, payload) == (OP_PONG, b"still there?")
    peer.send_frame(OP_TEXT, "later")
    assert ws.receive(timeout=WAIT) == "later"


def test_peer_close_seen_after_receiving_stops(harness, role, rt):
    ws, peer = raw_pair(harness, role)
    _receive_some(ws, peer)
    peer.send_frame(OP_CLOSE, close_payload(4001, "bye"))
    assert read_close(peer) == (4001, "bye")  # echoed without a receive()
    assert rt.wait_until(lambda: not ws.connected)
    peer.close()
    assert rt.wait_until(lambda: ws._done)
    assert ws.close_reason == 4001
    with pytest.raises(ConnectionClosed):
        ws.receive(timeout=WAIT)


def test_receive_reads_in_the_calling_thread(harness, role, rt):
    """No hand-off per message between a reader thread and receive()."""
    import threading

    if rt.name != "threading":
        pytest.skip("hub mode has no reader thread")
    ws, peer = raw_pair(harness, role)
    readers = []
    _watch_recv(ws, lambda: readers.append(threading.get_ident()))
    _receive_some(ws, peer, 40)
    mine = readers.count(threading.get_ident())
    # The reader thread may read the first message (it starts on duty) and,
    # on a stalled machine, take a turn; receive() reads the rest.
    assert mine >= len(readers) // 2, (mine, len(readers))


def test_interrupted_receive_leaves_the_connection_usable(harness, role, rt):
    """An exception in the middle of receive() (Ctrl-C) frees the reading."""
    import threading

    if rt.name != "threading":
        pytest.skip("KeyboardInterrupt reaches threads only")
    ws, peer = raw_pair(harness, role)
    _receive_some(ws, peer)
    me, armed = threading.get_ident(), [True]

    def interrupt_once():
        if armed[0] and threading.get_ident() == me:
            armed[0] = False
            raise KeyboardInterrupt

    _watch_recv(ws, interrupt_once)
    peer.send_frame(OP_TEXT, "one")
    with pytest.raises(KeyboardInterrupt):
        while True:  # the reader thread may read "one" before receive() does
            assert ws.receive(timeout=WAIT) == "one"
            peer.send_frame(OP_TEXT, "one")
    peer.send_frame(OP_TEXT, "two")
    got = [ws.receive(timeout=WAIT) for _ in range(2)]
    assert got[-1] == "two" and got[0] in ("one", "two")
    assert ws.connected


def test_ping_while_another_task_receives(ws_pair, role, rt):
    a, b = pick(ws_pair(), role)
    waiter = rt.spawn(a.receive)  # untimed: it is the one reading
    rt.sleep(0.05)
    assert a.ping(timeout=WAIT) > 0
    assert not waiter.ready()
    b.send("done")
    assert waiter.get() == "done"


def test_close_while_another_task_receives(ws_pair, role, rt):
    a, _ = pick(ws_pair(), role)
    waiter = rt.spawn(a.receive)
    rt.sleep(0.05)
    start = time.monotonic()
    a.close(4002, "leaving")
    assert time.monotonic() - start < a.close_timeout  # the handshake, no timeout
    with pytest.raises(ConnectionClosed) as info:
        waiter.get()
    assert info.value.reason == 4002


def test_concurrent_receivers_share_the_messages(ws_pair, role, rt):
    a, b = pick(ws_pair(client_kwargs={"max_queue": 4},
                        server_kwargs={"max_queue": 4}), role)
    receivers, total = 4, 400

    def receive_all(n):
        got = []
        while True:
            msg = a.receive(timeout=WAIT if n % 2 else None)
            if msg == "end":
                return got
            got.append(int(msg))

    tasks = [rt.spawn(receive_all, n) for n in range(receivers)]
    for i in range(total):
        b.send(str(i))
    for _ in range(receivers):
        b.send("end")
    results = [task.get() for task in tasks]
    for got in results:
        assert got == sorted(got)  # each sees the order they were sent in
    assert sorted(sum(results, [])) == list(range(total))  # each one once


# -- limits ------------------------------------------------------------------


def test_max_message_size_closes_1009(ws_pair, role):
    server, client = ws_pair(
        server_kwargs={"max_message_size": 1000},
        client_kwargs={"max_message_size": 1000},
    )
    a, b = pick((server, client), role)
    b.send(b"x" * 1000)  # exactly the limit is fine
    assert a.receive(timeout=WAIT) == b"x" * 1000
    b.send(b"x" * 1001)
    assert closed_code(b)[0] == 1009
    assert closed_code(a)[0] == 1009


def test_max_message_size_enforced_while_arriving(harness, role):
    ws, peer = raw_pair(harness, role, max_message_size=1000)
    # A first fragment already over the limit; the message never finishes.
    peer.send_frame(OP_BINARY, b"y" * 2000, fin=False)
    assert read_close(peer)[0] == 1009
    assert closed_code(ws)[0] == 1009


def test_fragmented_message_reassembled(harness, role):
    ws, peer = raw_pair(harness, role)
    peer.send_frame(OP_TEXT, "frag", fin=False)
    peer.send_frame(OP_PING, b"p")  # control frames may interleave fragments
    peer.send_frame(OP_CONT, "men", fin=False)
    peer.send_frame(OP_CONT, "ted \u20ac")
    assert ws.receive(timeout=WAIT) == "fragmented \u20ac"
    peer.send_frame(OP_BINARY, b"\x00\x01", fin=False)
    peer.send_frame(OP_CONT, b"\x02")
    assert ws.receive(timeout=WAIT) == b"\x00\x01\x02"


def test_bad_utf8_closes_1007(harness, role):
    ws, peer = raw_pair(harness, role)
    peer.send_frame(OP_TEXT, b"ok \xff\xfe not utf-8")
    assert read_close(peer)[0] == 1007
    assert closed_code(ws)[0] == 1007


def test_protocol_error_closes_1002(harness, role):
    ws, peer = raw_pair(harness, role)
    peer.send_frame(OP_CONT, b"continuation of nothing")
    assert read_close(peer)[0] == 1002
    assert closed_code(ws)[0] == 1002


def test_max_queue_backpressure(ws_pair, role, rt):
    max_queue = 2
    server, client = ws_pair(
        server_kwargs={"max_queue": max_queue, "compression": False},
        client_kwargs={"max_queue": max_queue, "compression": False},
    )
    a, b = pick((server, client), role)  # a: slow receiver, b: flooding peer
    size, total = 16 * 1024, 4000  # 64 MiB: far more than socket buffers
    sent = [0]

    def flood():
        try:
            for i in range(total):
                b.send(i.to_bytes(4, "big") * (size // 4))
                sent[0] += 1
        except ConnectionClosed:
            pass

    flooder = rt.spawn(flood)
    # wait until the flooder stalls: no progress for 0.3 s
    deadline = time.monotonic() + WAIT
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        if sent[0] != last:
            last, since = sent[0], time.monotonic()
        elif time.monotonic() - since > 0.3:
            break
        rt.sleep(0.02)
    else:
        pytest.fail("the flooding peer never blocked")
    assert 0 < sent[0] < total
    assert not flooder.ready()
    # one 4 KiB read never completes more than one 16 KiB message
    assert len(a._queue) <= max_queue + 1
    stalled = sent[0]
    # reading resumes: messages arrive in order and the flooder moves on
    for i in range(200):
        msg = a.receive(timeout=WAIT)
        assert msg[:4] == i.to_bytes(4, "big") and len(msg) == size
        assert len(a._queue) <= max_queue + 1
    assert rt.wait_until(lambda: sent[0] > stalled)
    a.close_timeout = 2
    a.close()
    flooder.get()


# -- handshake leftovers -------------------------------------------------------


def test_frame_pipelined_with_101_delivered_at_once(harness):
    from conftest import frame

    client, peer = harness.raw_server(after_101=frame(OP_TEXT, "early bird"))
    assert client.receive(timeout=2) == "early bird"


def test_close_pipelined_with_101(harness):
    """A server that closes right after its handshake (one that is stopping
    does): its Close may come in the same read as the 101.

    The client echoed it while handling that read in connect(), which armed
    the hub's watcher, and then waited for the server to close TCP with a
    recv() of its own: eventlet refused the second reader (RuntimeError out
    of connect()).
    """
    from conftest import frame

    # The raw server never closes TCP: close_timeout bounds the wait for it.
    client, peer = harness.raw_server(
        after_101=frame(OP_CLOSE, close_payload(1001, "bye")), close_timeout=0.5
    )
    assert (client.close_reason, client.close_message) == (1001, "bye")
    _, _, opcode, payload = peer.read_frame()
    assert (opcode, payload) == (OP_CLOSE, close_payload(1001, "bye"))
    with pytest.raises(ConnectionClosed):
        client.receive(timeout=0)


def test_frame_pipelined_with_request_delivered_at_once(harness):
    from conftest import frame, raw_request, read_http_head

    listener = harness.listener()
    port = listener.getsockname()[1]
    sock = harness.rt.connect(port)
    harness.sockets.append(sock)
    request, _ = raw_request(port)
    early = frame(OP_TEXT, "early bird", mask=True)
    sock.sendall(request + early)
    server = harness.accept_server(listener, pending_bytes=len(early))
    assert server.receive(timeout=2) == "early bird"
    sock.settimeout(WAIT)
    assert read_http_head(sock).startswith(b"HTTP/1.1 101")


# -- attributes -----------------------------------------------------------------


def test_attributes(ws_pair, rt):
    server, client = ws_pair(
        server_kwargs={"receive_bytes": 1234, "max_message_size": 99999},
        client_kwargs={"ping_interval": 30},
    )
    assert server.connected and client.connected
    assert server.subprotocol is None and client.subprotocol is None
    assert server.close_reason == 1005 and server.close_message is None
    assert server.receive_bytes == 1234 and server.max_message_size == 99999
    assert client.ping_interval == 30 and server.ping_interval is None
    assert server.local_address == client.remote_address
    assert server.remote_address == client.local_address
    assert server.local_address[0] == "127.0.0.1"
    assert server.latency is None
    assert isinstance(server, greenws.Base) and isinstance(client, greenws.Base)
    assert server.preset.name == rt.preset.name == client.preset.name


def test_invalid_options():
    import greenws.connection as conn

    ws = conn.Base()
    with pytest.raises(ValueError):
        ws._configure(receive_bytes=0, ping_interval=None, max_message_size=None,
                      ping_timeout=None, close_timeout=None, max_queue=None,
                      preset=greenws.presets.THREADING)
    with pytest.raises(ValueError):
        ws._configure(receive_bytes=10, ping_interval=None, max_message_size=None,
                      ping_timeout=None, close_timeout=None, max_queue=0,
                      preset=greenws.presets.THREADING)


def test_send_whole_finishes_what_one_send_left():
    """The first send() may take only part of a frame; sendall() gets the
    rest, from where it stopped."""

    class PartialSocket:
        def __init__(self):
            self.calls = []

        def send(self, data):
            self.calls.append(("send", bytes(data)))
            return 3

        def sendall(self, data):
            self.calls.append(("sendall", bytes(data)))

    sock = PartialSocket()
    _send_whole(sock, b"abcdefgh")
    assert sock.calls == [("send", b"abcdefgh"), ("sendall", b"defgh")]
    sock.calls.clear()
    _send_whole(sock, b"abc")
    assert sock.calls == [("send", b"abc")]


# -- arguments checked up front, and the races around them ---------------------

ALLOWED = "1000-1003, 1007-1014 or 3000-4999"


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((999,), ValueError, ALLOWED),
        ((0,), ValueError, ALLOWED),
        ((1004,), ValueError, ALLOWED),
        ((1005,), ValueError, ALLOWED),
        ((1006,), ValueError, ALLOWED),
        ((1015,), ValueError, ALLOWED),
        ((1016,), ValueError, ALLOWED),
        ((2999,), ValueError, ALLOWED),
        ((5000,), ValueError, ALLOWED),
        (("going away",), TypeError, "int"),
        ((True,), TypeError, "int"),
        ((1000.0,), TypeError, "int"),
        ((1000, b"bytes"), TypeError, "str"),
        ((1000, "bye \udcff"), ValueError, "UTF-8"),
        ((1000, "x" * 124), ValueError, "123"),
        ((4000, "\u00e9" * 62), ValueError, "123"),  # 124 bytes of UTF-8
    ],
    ids=lambda v: repr(v)[:20],
)
def test_close_refuses_bad_arguments_and_changes_nothing(
    harness, role, rt, args, error, match
):
    """Nothing is sent and nothing changes: a blocked receive() still gets
    the next message, the next frame on the wire is data, and a later close()
    is a normal one."""
    ws, peer = raw_pair(harness, role, close_timeout=WAIT)
    waiting = rt.spawn(ws.receive, WAIT)
    with pytest.raises(error, match=match):
        ws.close(*args)
    assert ws.connected
    assert (ws.close_reason, ws.close_message) == (1005, None)
    peer.send_frame(OP_TEXT, "after")
    assert waiting.get() == "after"
    ws.send("still open")
    assert peer.read_frame()[2:] == (OP_TEXT, b"still open")
    closer = rt.spawn(ws.close, 4000, "done")
    assert read_close(peer) == (4000, "done")
    peer.send_frame(OP_CLOSE, close_payload(4000, "done"))
    peer.close()
    closer.get()
    assert (ws.close_reason, ws.close_message) == (4000, "done")
    assert not ws.connected


@pytest.mark.parametrize(
    "args",
    [(1000, "x" * 123), (1000, "\u00e9" * 61 + "x"), (1003,), (1007,), (1014,),
     (3000,), (4999, "")],
    ids=lambda v: repr(v)[:20],
)
def test_close_sends_allowed_codes_and_the_whole_message(harness, role, rt, args):
    ws, peer = raw_pair(harness, role, close_timeout=WAIT)
    closer = rt.spawn(ws.close, *args)
    code, message = args[0], args[1] if len(args) > 1 else None
    assert read_close(peer) == (code, message or "")
    peer.send_frame(OP_CLOSE, close_payload(code, message or ""))
    peer.close()
    closer.get()
    assert (ws.close_reason, ws.close_message) == (code, message)


def test_ping_payload_checked_before_it_is_registered(harness, role):
    ws, peer = raw_pair(harness, role)
    with pytest.raises(ValueError, match="125"):
        ws.ping(b"x" * 126, timeout=WAIT)
    with pytest.raises(ValueError, match="125"):
        ws.ping("\u00e9" * 63, timeout=WAIT)  # 126 bytes of UTF-8
    with pytest.raises(TypeError):
        ws.ping(5, timeout=WAIT)  # not 5 zero bytes
    assert not ws._pings  # no stale entry waits for a pong
    assert ws.connected
    for data, wire in [("\u00e9\u2713", "\u00e9\u2713".encode()),
                       (b"y" * 125, b"y" * 125),
                       (memoryview(b"abcdef")[::2], b"ace")]:
        task = harness.rt.spawn(ws.ping, data, timeout=WAIT)
        assert peer.read_frame()[2:] == (OP_PING, wire)
        peer.send_frame(OP_PONG, wire)
        assert task.get() > 0
    assert not ws._pings


class RacingPings(dict):
    """Pings waiting for their pong, arranged so that a ping()'s time runs
    out exactly while the reader handles that ping's pong: ``_pong()`` is
    held up right after it has listed the waiting pings, until ping() has
    given up (and taken its entry away)."""

    def __init__(self, rt):
        super().__init__()
        self.rt = rt
        self.pong_seen = False
        self.timed_out = False

    def __setitem__(self, payload, entry):  # ping() registers its entry
        entry[0] = _TimesOutOnPong(self)
        super().__setitem__(payload, entry)

    def __iter__(self):  # _pong() lists the waiting pings
        keys = list(super().__iter__())
        self.pong_seen = True
        assert self.rt.wait_until(lambda: self.timed_out)
        return iter(keys)


class _TimesOutOnPong:
    """ping()'s waiter: its time runs out as soon as the pong is seen."""

    def __init__(self, pings):
        self.pings = pings

    def wait(self, timeout=None):
        assert self.pings.rt.wait_until(lambda: self.pings.pong_seen)
        return False

    def set(self):
        pass


def test_pong_racing_a_ping_timeout_unit(rt):
    """The reader's ``_pong()`` finds the entries it listed gone."""
    ws = greenws.Client.__new__(greenws.Client)
    ws._pings = pings = RacingPings(rt)
    earlier = [threading.Event(), time.monotonic(), None]
    dict.__setitem__(pings, b"earlier", earlier)
    dict.__setitem__(pings, b"late", [threading.Event(), time.monotonic(), None])
    later = [threading.Event(), time.monotonic(), None]
    dict.__setitem__(pings, b"later", later)

    def give_up():  # what ping() does when its time runs out
        assert rt.wait_until(lambda: pings.pong_seen)
        pings.pop(b"late", None)
        pings.timed_out = True

    task = rt.spawn(give_up)
    ws._pong(b"late")
    task.get()
    assert earlier[0].is_set() and earlier[2] is not None  # answered too
    assert list(dict.keys(pings)) == [b"later"] and not later[0].is_set()


def _websockets_peer(harness, role, rt):
    """(greenws object in ``role``, a function returning the close code the
    peer saw) with a `websockets` echo peer on the other side."""
    from websockets.sync.client import connect
    from websockets.sync.server import serve

    if role == "server":
        listener = harness.listener()
        port = listener.getsockname()[1]

        def client():
            with connect(f"ws://127.0.0.1:{port}/", open_timeout=WAIT) as peer:
                for message in peer:
                    peer.send(message)
                return peer.close_code

        task = rt.spawn_thread(client)
        ws = harness.accept_server(listener, close_timeout=WAIT)
        return ws, task.get

    codes = []

    def echo(peer):
        for message in peer:
            peer.send(message)
        codes.append(peer.close_code)

    server = serve(echo, "127.0.0.1", 0)
    serving = rt.spawn_thread(server.serve_forever)
    ws = greenws.Client.connect(
        f"ws://127.0.0.1:{server.socket.getsockname()[1]}/",
        preset=rt.preset, close_timeout=WAIT,
    )
    harness.connections.append(ws)

    def stop():
        assert rt.wait_until(lambda: codes)
        server.shutdown()
        serving.get()
        return codes[0]

    return ws, stop


def test_pong_arriving_as_ping_times_out_keeps_the_connection(harness, role, rt):
    """A real peer answers at once; the pong is handled just as ping() gives
    up.  ping() raises TimeoutError, the connection goes on (before, the
    reader died on a KeyError and the connection ended with 1006)."""
    ws, peer_result = _websockets_peer(harness, role, rt)
    ws._pings = pings = RacingPings(rt)
    with pytest.raises(TimeoutError):
        ws.ping(b"late", timeout=WAIT)
    assert pings.pong_seen
    pings.timed_out = True  # the reader goes on handling the pong
    ws.send("still there?")
    assert ws.receive(timeout=WAIT) == "still there?"
    assert ws.connected
    ws._pings = {}
    assert ws.ping(timeout=WAIT) > 0
    ws.close()
    assert ws.close_reason == 1000
    assert peer_result() == 1000


class GatedQueue(list):
    """A receive queue that holds the first two receivers who find it not
    empty until both have: both then go for the same one message."""

    def __init__(self, rt):
        super().__init__()
        self.rt = rt
        self.arrived = 0

    def __bool__(self):
        full = len(self) > 0
        if full and self.arrived < 2:
            self.arrived += 1
            self.rt.wait_until(lambda: self.arrived >= 2)
        return full


def test_two_receivers_racing_for_the_last_message(ws_pair, role, rt):
    a, b = pick(ws_pair(), role)
    a._queue = GatedQueue(rt)
    receivers = [rt.spawn(a.receive, WAIT) for _ in range(2)]
    b.send("one")
    assert rt.wait_until(lambda: any(task.ready() for task in receivers))
    assert a._queue.arrived == 2  # the race did happen
    b.send("two")
    # Before, one of them got IndexError.
    assert sorted(task.get() for task in receivers) == ["one", "two"]
    assert a.connected


def test_many_receivers_each_message_once_in_order(ws_pair, role, rt):
    a, b = pick(ws_pair(), role)
    receivers, total = 12, 3000

    def receive_all():
        got = []
        while True:
            message = a.receive(timeout=WAIT)
            if message == "end":
                return got
            got.append(int(message))

    tasks = [rt.spawn(receive_all) for _ in range(receivers)]
    sender = rt.spawn(lambda: [b.send(str(i)) for i in range(total)])
    sender.get()
    for _ in range(receivers):
        b.send("end")
    results = [task.get() for task in tasks]
    for got in results:
        assert got == sorted(got)
    assert sorted(sum(results, [])) == list(range(total))


def _drain(sock, n):
    """Read and drop ``n`` bytes without keeping them (no allocation)."""
    buf = bytearray(256 * 1024)
    while n > 0:
        got = sock.recv_into(buf, min(n, len(buf)))
        if not got:
            raise EOFError
        n -= got


@pytest.mark.parametrize("kind", ["bytearray", "memoryview"])
def test_send_binary_without_copying_it(harness, role, rt, kind):
    """A 16 MiB bytearray or memoryview is framed where it is: the memory
    send() allocates is the masked frame of a client (which cannot be
    avoided) or next to nothing on a server; before, a copy came on top."""
    ws, peer = raw_pair(harness, role)
    size = 16 * 1024 * 1024
    buffer = bytearray(os.urandom(size))
    data = buffer if kind == "bytearray" else memoryview(buffer)
    peer.sock.settimeout(WAIT)
    from greenws.protocol import _FRAGMENT

    # Sent as 1 MiB fragments, each with a 64-bit length (and a mask).
    header = (10 + (4 if role == "client" else 0)) * (size // _FRAGMENT)
    drain = rt.spawn(_drain, peer.sock, size + header)
    tracemalloc.start()
    try:
        ws.send(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    drain.get()
    unavoidable = size if role == "client" else 0
    assert peak - unavoidable < size // 4, peak
    if kind == "memoryview":
        data.release()
    buffer.extend(b"!")  # send() left no view of it behind
    ws.send(buffer[-1000:])
    assert peer.read_frame()[2:] == (OP_BINARY, bytes(buffer[-1000:]))


@pytest.mark.parametrize(
    "view, expected",
    [
        (memoryview(array.array("i", range(100))), array.array("i", range(100))),
        (memoryview(array.array("d", [0.5] * 20000)), array.array("d", [0.5] * 20000)),
        (memoryview(bytearray(b"abcd")).cast("B", (2, 2)), b"abcd"),
        (memoryview(b"abcdef")[::2], b"ace"),
        (memoryview(bytes(range(256)) * 400)[::-3], (bytes(range(256)) * 400)[::-3]),
        (memoryview(b"x" * 70000)[5:], b"x" * 69995),
    ],
    ids=["int-array", "large-double-array", "2d", "strided", "large-strided",
         "large-slice"],
)
def test_send_memoryview_of_any_shape(ws_pair, role, view, expected):
    """Every byte of the view, in memory order, whatever its format,
    dimensions or strides."""
    a, b = pick(ws_pair(), role)
    a.send(view)
    assert b.receive(timeout=WAIT) == bytes(expected)


def test_with_statement_keeps_the_static_type(tmp_path):
    """``with Client.connect(url) as ws``: mypy sees a Client, not a Base."""
    pytest.importorskip("mypy")
    import subprocess
    import sys
    from pathlib import Path

    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        "import greenws\n"
        "def f(environ: 'dict[str, object]') -> None:\n"
        "    with greenws.Client.connect('ws://127.0.0.1/') as client:\n"
        "        reveal_type(client)\n"
        "    with greenws.Server.accept(environ) as server:\n"
        "        reveal_type(server)\n"
    )
    root = Path(greenws.__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
         "--cache-dir", str(tmp_path / "cache"), str(snippet)],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
        env=dict(os.environ, MYPYPATH=str(root)),
    )
    revealed = [line.split("Revealed type is ")[1] for line in
                result.stdout.splitlines() if "Revealed type is" in line]
    assert revealed == ['"greenws.client.Client"', '"greenws.server.Server"'], (
        result.stdout
    )
    assert result.returncode == 0, result.stdout

# -- interruption and contention -----------------------------------------------
#
# gevent/eventlet programs interrupt calls all the time (Timeout, kill), and
# threads get KeyboardInterrupt: an interrupted send must not leave part of a
# frame followed by other bytes, an interrupted receive must not lose what was
# read, and pings/pongs must not wait behind a long message.

BIG = 32 << 20  # more than loopback's socket buffers hold on both sides


def _interrupt_after(rt, seconds):
    """A context manager that interrupts the calling task after ``seconds``:
    gevent.Timeout, eventlet.Timeout, or (threads) KeyboardInterrupt from
    SIGALRM.  Returns the exception type it raises."""
    import contextlib
    import signal

    if rt.name == "gevent":
        import gevent

        return gevent.Timeout(seconds), gevent.Timeout
    if rt.name == "eventlet":
        import eventlet

        return eventlet.Timeout(seconds), eventlet.Timeout

    @contextlib.contextmanager
    def alarm():
        def interrupt(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    return alarm(), KeyboardInterrupt


def _parse_frames(buf):
    """Complete frames at the start of ``buf`` as (fin, opcode, payload),
    and what is left (the start of a frame cut short)."""
    frames, pos = [], 0
    while len(buf) - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        n, head = b1 & 0x7F, pos + 2
        if n == 126:
            if len(buf) - pos < 4:
                break
            (n,) = struct.unpack_from("!H", buf, head)
            head += 2
        elif n == 127:
            if len(buf) - pos < 10:
                break
            (n,) = struct.unpack_from("!Q", buf, head)
            head += 8
        key = None
        if b1 & 0x80:
            key, head = bytes(buf[head : head + 4]), head + 4
        if len(buf) < head + n:
            break
        payload = bytes(buf[head : head + n])
        if key is not None and n:
            k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
            payload = (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")
        frames.append((bool(b0 & 0x80), b0 & 0x0F, payload))
        pos = head + n
    return frames, bytes(buf[pos:])


def _everything_until_eof(peer):
    """Everything the peer gets until the other side closes TCP."""
    peer.sock.settimeout(WAIT)
    data = bytearray(peer.buf)
    while True:
        try:
            chunk = peer.sock.recv(1 << 20)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_interrupted_send_drops_the_connection(harness, role, rt):
    """Interrupted in the middle of a frame, send() drops the connection
    (1006) at once: the peer sees part of the message, then TCP closing --
    never another frame inside the unfinished one, nor a Close."""
    ws, peer = raw_pair(harness, role, close_timeout=1)
    payload = os.urandom(1024) * (BIG // 1024)
    interrupt, kind = _interrupt_after(rt, 0.3)
    with pytest.raises(kind):
        with interrupt:
            ws.send(payload)  # the peer does not read: this blocks
    assert not ws.connected
    drained = rt.spawn(_everything_until_eof, peer)
    with pytest.raises(ConnectionClosed) as closed:
        ws.send(b"B" * 10)
    assert closed.value.reason == 1006
    ws.close()  # nothing to do: already over
    assert ws.close_reason == 1006
    frames, rest = _parse_frames(drained.get())
    # Whole fragments of the message, then part of the next one (if the
    # interruption did not fall between two), then EOF.
    assert frames and all(not fin for fin, _, _ in frames)
    assert [op for _, op, _ in frames] == [OP_BINARY] + [OP_CONT] * (len(frames) - 1)
    sent = b"".join(p for _, _, p in frames)
    assert sent == payload[: len(sent)]
    assert len(rest) < (1 << 20) + 14


def test_timeout_in_receive_loses_no_message(harness, role, rt):
    """A Ping and a message come in one read while a long send holds the
    write lock: a Timeout around receive() must not lose the message (the
    pong does not make the reader wait for the lock)."""
    if rt.name == "threading":
        pytest.skip("a Timeout interrupts greenlets only")
    ws, peer = raw_pair(harness, role, close_timeout=1)
    sender = rt.spawn(ws.send, b"x" * BIG)  # blocks: the peer does not read
    rt.sleep(0.1)
    assert not sender.ready()
    peer.send_raw(ping_then_text(peer))
    interrupt, _ = _interrupt_after(rt, 2)
    with interrupt:
        assert ws.receive() == "after"
    peer.close()
    with pytest.raises(ConnectionClosed):
        sender.get()


def ping_then_text(peer):
    """A Ping and a text message, to arrive in one read."""
    from conftest import frame

    masked = peer.is_client
    return frame(OP_PING, b"p", masked) + frame(OP_TEXT, "after", masked)


def test_pong_goes_between_fragments_of_a_long_send(harness, role, rt):
    """A peer pings while a long send() of ours is under way and reads on
    only once it has its pong: the reader goes on reading (the pong does not
    wait for the lock), and the pong goes out between two fragments."""
    ws, peer = raw_pair(harness, role, close_timeout=1)
    payload = b"x" * BIG
    sender = rt.spawn(ws.send, payload)
    rt.sleep(0.1)
    assert not sender.ready()  # blocked: the peer does not read
    peer.send_raw(ping_then_text(peer))
    receiver = rt.spawn(ws.receive, WAIT)
    assert receiver.get() == "after"
    # The peer reads now: the pong comes before the message's last fragment.
    peer.sock.settimeout(WAIT)
    buf, frames = bytearray(), []
    while not any(fin and op != OP_PONG for fin, op, _ in frames):
        chunk = peer.sock.recv(1 << 20)
        assert chunk, "EOF before the end of the message"
        buf += chunk
        more, rest = _parse_frames(buf)
        frames += more
        buf = bytearray(rest)
    ops = [op for _, op, _ in frames]
    assert (OP_PONG, b"p") in [(op, p) for _, op, p in frames]
    assert ops.index(OP_PONG) < len(ops) - 1
    data = [p for _, op, p in frames if op != OP_PONG]
    assert b"".join(data) == payload and len(data) == BIG >> 20
    sender.get()
    assert ws.connected


def test_keepalive_is_not_fooled_by_a_long_send(harness, role, rt):
    """Sending a large message to a slow but live reader takes longer than
    ping_interval + ping_timeout; keepalive's ping goes between fragments
    and the connection stays open."""
    ws, peer = raw_pair(harness, role, ping_interval=0.2, ping_timeout=0.6,
                        close_timeout=1)
    ws.sock.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_SNDBUF, 64 << 10)
    size = 12 << 20
    pongs = []

    def slow_reader():
        """~6 MB/s; answers pings; returns the message."""
        peer.sock.settimeout(WAIT)
        buf, parts = bytearray(), []
        while True:
            chunk = peer.sock.recv(64 << 10)
            assert chunk, "EOF before the end of the message"
            buf += chunk
            frames, rest = _parse_frames(buf)
            buf = bytearray(rest)
            for fin, op, data in frames:
                if op == OP_PING:
                    pongs.append(data)
                    peer.send_frame(OP_PONG, data)
                elif op in (OP_BINARY, OP_CONT):
                    parts.append(data)
                    if fin:
                        peer.buf[:0] = buf  # what came after (a ping?)
                        return b"".join(parts)
            rt.sleep(0.01)

    reader = rt.spawn(slow_reader)
    started = time.monotonic()
    ws.send(b"y" * size)
    elapsed = time.monotonic() - started
    assert reader.get() == b"y" * size
    assert elapsed > 0.2 + 0.6  # else this test proves nothing
    assert pongs, "keepalive never pinged"
    assert ws.connected
    ws.send("still here")
    while True:
        _, _, opcode, data = peer.read_frame()
        if opcode == OP_TEXT:
            break
        assert opcode == OP_PING  # keepalive goes on
    assert data == b"still here"


def test_client_waits_close_timeout_in_all_for_the_tcp_close(harness, rt):
    """After the server's Close, the client waits close_timeout in total for
    the server to close TCP, however much the server goes on sending."""
    ws, peer = harness.raw_server(close_timeout=0.5)
    peer.send_frame(OP_CLOSE, close_payload(1000))
    started = time.monotonic()
    stop = [False]

    def babble():
        while not stop[0] and time.monotonic() - started < 5:
            try:
                peer.send_frame(OP_TEXT, "more")
            except OSError:
                return
            rt.sleep(0.05)

    babbler = rt.spawn(babble)
    try:
        code, _ = closed_code(ws)
        # Over: the client gave up waiting and closed its socket.
        assert rt.wait_until(lambda: ws._done, WAIT)
        elapsed = time.monotonic() - started
    finally:
        stop[0] = True
        babbler.wait()
    assert code == 1000
    assert elapsed < 0.5 + 1.0


# -- state, extensions, send(text=...) ------------------------------------------


def test_state_through_a_connections_life(harness, role, rt):
    """CONNECTING in the handshake, OPEN, CLOSING while our Close waits for
    the peer's, CLOSED once over; the peer's side goes the same way."""
    seen = []

    class Watching(greenws.Server):
        def choose_subprotocol(self, request):
            seen.append(self.state)  # called during the handshake
            return None

    if role == "server":
        ws, peer = harness.raw_client(server_class=Watching, close_timeout=WAIT)
        assert seen == [greenws.State.CONNECTING]
    else:
        ws, peer = harness.raw_server(close_timeout=WAIT)
    assert ws.state is greenws.State.OPEN and ws.state == 1
    closing = rt.spawn(ws.close, 4000, "bye")
    assert read_close(peer) == (4000, "bye")
    # Our Close is out, the peer's not in: the closing handshake is on.
    assert ws.state is greenws.State.CLOSING
    assert not closing.ready()
    peer.send_frame(OP_CLOSE, close_payload(4000, "bye"))
    if role == "client":
        # Both Close frames crossed: the client waits for the server's TCP
        # close, still CLOSING.
        assert ws.state is greenws.State.CLOSING
        peer.close()
    closing.get()
    assert ws.state is greenws.State.CLOSED


def test_state_when_the_peer_closes(ws_pair, role, rt):
    a, b = pick(ws_pair(), role)
    assert (a.state, b.state) == (greenws.State.OPEN, greenws.State.OPEN)
    b.close()
    assert b.state is greenws.State.CLOSED
    assert rt.wait_until(lambda: a.state is greenws.State.CLOSED)


def test_state_when_the_peer_vanishes(harness, role, rt):
    ws, peer = raw_pair(harness, role)
    peer.close()
    with pytest.raises(ConnectionClosed):
        ws.receive(timeout=WAIT)
    assert ws.state is greenws.State.CLOSED and ws.close_reason == 1006


@pytest.mark.parametrize("compression", [True, False])
def test_extensions(ws_pair, compression):
    server, client = ws_pair(client_kwargs={"compression": compression})
    if not compression:
        assert server.extensions == client.extensions == []
        return
    # What the server answered, on both sides.
    (value,) = server.extensions
    assert client.extensions == [value]
    assert value.startswith("permessage-deflate; ")
    assert "server_no_context_takeover" in value


def test_extensions_off_on_the_server(ws_pair):
    server, client = ws_pair(server_kwargs={"compression": False})
    assert server.extensions == client.extensions == []


@pytest.mark.parametrize("compression", [True, False])
def test_send_utf8_bytes_as_text(ws_pair, role, compression):
    options = {"compression": compression}
    a, b = pick(ws_pair(server_kwargs=options, client_kwargs=options), role)
    a.send(b"caf\xc3\xa9", text=True)
    assert b.receive(timeout=WAIT) == "caf\u00e9"
    a.send(bytearray(b"\xe2\x82\xac"), text=True)
    assert b.receive(timeout=WAIT) == "\u20ac"
    a.send(memoryview(b"abc"), text=True)
    assert b.receive(timeout=WAIT) == "abc"
    # Over 1 MiB: fragments split inside a character, still one text.
    big = "\u00e9" * (600 * 1024)
    a.send(big.encode("utf-8"), text=True)
    assert b.receive(timeout=WAIT) == big
    a.send("caf\u00e9", text=False)
    assert b.receive(timeout=WAIT) == b"caf\xc3\xa9"
    a.send("already text", text=True)
    assert b.receive(timeout=WAIT) == "already text"
    a.send(b"\x00\xff", text=False)
    assert b.receive(timeout=WAIT) == b"\x00\xff"
    a.send(42, text=False)
    assert b.receive(timeout=WAIT) == b"42"


def test_send_invalid_utf8_as_text_is_the_peers_1007(ws_pair, role):
    """Not checked on the way out (that would decode it again): the peer
    fails the connection with 1007, as for any invalid text."""
    a, b = pick(ws_pair(), role)
    a.send(b"\xff\xfe", text=True)
    with pytest.raises(ConnectionClosed) as info:
        b.receive(timeout=WAIT)
    assert info.value.reason == 1007
    with pytest.raises(ConnectionClosed) as info:
        a.receive(timeout=WAIT)
    assert info.value.reason == 1007
