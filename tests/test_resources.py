"""Hostile peers against real servers: bounded memory and liveness.

The server side runs tests/apps/stats_app.py (slow_app's misbehaving handlers
plus /stats) in a real hosting server process -- one green (gevent.pywsgi) and
one threaded (gunicorn gthread) -- and measures that process's RSS from
/proc while a raw-socket peer floods it, sends oversized frames or
compression bombs, or stops reading.  Liveness: keepalive closes a vanished
peer within about ping_interval + ping_timeout (both roles), and a handler
blocked in receive() is woken by every way a connection can end.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import threading
import time
import uuid
import zlib

import pytest
from rawws import RawClient, close_frame, frame, handshake_request
from servers import HostedServer

import greenws

MIB = 1 << 20
CHUNK = 64 << 10  # flood message size
MAX_QUEUE = 4  # slow_app's limits
MAX_MESSAGE_SIZE = MIB
# Growth allowed beyond what the connection may legitimately hold
# (max_queue * max_message_size): interpreter noise, one read, allocator slack.
SLACK = 4 * MIB
WAIT = 10.0


@pytest.fixture(scope="module", params=["gevent", "gunicorn-gthread"])
def server(request):
    hosted = HostedServer(request.param, module="stats_app")
    yield hosted
    output = hosted.stop()
    assert "Traceback" not in output, output[-4000:]


# -- helpers ---------------------------------------------------------------


def poll(fetch, condition, timeout=WAIT, interval=0.05):
    """Call ``fetch()`` until ``condition(value)``; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if condition(value) or time.monotonic() >= deadline:
            return value
        time.sleep(interval)  # polling another process: nothing to wait on


def fetch_json(server, path):
    with greenws.Client.connect(server.url + path, open_timeout=WAIT) as ws:
        return json.loads(ws.receive(timeout=WAIT))


def state(server, key):
    return fetch_json(server, f"/state?id={key}")


def wait_state(server, key, condition, timeout=WAIT):
    value = poll(lambda: state(server, key), lambda s: s is not None and condition(s),
                 timeout)
    assert value is not None and condition(value), value
    return value


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def server_pid(server):
    """The process that runs the handlers (the worker, under gunicorn)."""
    return fetch_json(server, "/stats")["pid"]


def reset(sock):
    """Close with RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_close(raw, timeout=WAIT):
    """Skip data frames; return (code, reason) of the server's Close frame."""
    raw.sock.settimeout(timeout)
    while True:
        got = raw.read_frame()
        assert got is not None, "EOF without a Close frame"
        opcode, _, payload = got
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


def key():
    return uuid.uuid4().hex[:12]


# -- bounded resources -----------------------------------------------------


def test_flood_without_reading_stalls_sender_and_bounds_memory(server):
    """50 MB of 64 KiB messages to a handler that does not read: TCP pushes back.

    The reader stops reading once max_queue messages wait, so the kernel
    buffers fill and the peer's sends stall; the server holds at most
    max_queue messages (plus the one being read).
    """
    name = key()
    pid = server_pid(server)
    raw = RawClient(server.port, f"/slow?id={name}")
    try:
        raw.send(frame(0x2, b"first"))
        wait_state(server, name, lambda s: s["received"] == 1)
        base = rss_kib(pid)
        message = frame(0x2, bytes(range(256)) * (CHUNK // 256))
        total, target = 0, 50 * 1000 * 1000
        peak = base
        raw.sock.setblocking(False)
        view, offset = memoryview(message), 0
        last_progress = time.monotonic()
        deadline = last_progress + 30
        stalled = False
        while total < target and time.monotonic() < deadline:
            _, writable, _ = select.select([], [raw.sock], [], 0.1)
            if writable:
                try:
                    n = raw.sock.send(view[offset:])
                except BlockingIOError:
                    n = 0
                if n:
                    total += n
                    offset = (offset + n) % len(message)
                    last_progress = time.monotonic()
                    continue
            peak = max(peak, rss_kib(pid))
            if time.monotonic() - last_progress > 1.0:
                stalled = True
                break
        peak = max(peak, rss_kib(pid))
        growth = (peak - base) * 1024
        print(f"\n{server.kind}: flood accepted {total / MIB:.1f} MiB before "
              f"stalling; server RSS grew {growth / MIB:.2f} MiB")
        assert stalled, f"sent {total} bytes without stalling"
        assert total < 25 * MIB, total
        assert growth < MAX_QUEUE * MAX_MESSAGE_SIZE + SLACK, growth
        # The handler got only its first message: the rest waits in TCP.
        assert "released" not in state(server, name)
    finally:
        reset(raw.sock)
        release(server, name)
    wait_state(server, name, lambda s: s.get("released") is True)


def release(server, name):
    with greenws.Client.connect(server.url + f"/release?id={name}") as ws:
        assert ws.receive(timeout=WAIT) == "released"


def test_max_message_size_enforced_before_the_message_is_buffered(server):
    """A header announcing 100 MB, then 2 MB of it: 1009 at once."""
    name = key()
    pid = server_pid(server)
    base = rss_kib(pid)
    raw = RawClient(server.port, f"/limited?id={name}")
    try:
        started = time.monotonic()
        raw.send(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 100 * 1000 * 1000)
                 + b"\x01\x02\x03\x04")
        chunk = b"\xab" * CHUNK
        raw.sock.settimeout(5)
        try:
            for _ in range(2 * MIB // CHUNK):
                raw.sock.sendall(chunk)
        except OSError:
            pass  # the server may already have closed: fine
        code, _ = read_close(raw)
        elapsed = time.monotonic() - started
    finally:
        raw.close()
    growth = (rss_kib(pid) - base) * 1024
    print(f"\n{server.kind}: 1009 after {elapsed:.3f}s, RSS +{growth / MIB:.2f} MiB")
    assert code == 1009
    assert elapsed < 5
    assert growth < MAX_MESSAGE_SIZE + SLACK
    assert wait_state(server, name, lambda s: s.get("done"))["code"] == 1009


_BOMB = []


def bomb():
    """One permessage-deflate payload that inflates to 200 MiB of zeros."""
    if not _BOMB:
        deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
        zeros = bytes(MIB)
        parts = [deflater.compress(zeros) for _ in range(200)]
        data = b"".join(parts) + deflater.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        _BOMB.append(data[:-4])
    return _BOMB[0]


def test_compression_bomb_closed_with_1009(server):
    payload = bomb()
    assert len(payload) < 256 * 1024
    name = key()
    pid = server_pid(server)
    base = rss_kib(pid)
    raw = RawClient(server.port, f"/limited?id={name}",
                    extra="Sec-WebSocket-Extensions: permessage-deflate\r\n")
    try:
        assert raw.status == 101
        assert "permessage-deflate" in raw.response_head.lower()
        started = time.monotonic()
        raw.sock.settimeout(5)
        try:
            raw.send(frame(0x2, payload, rsv=0b100))
        except OSError:
            pass
        code, _ = read_close(raw)
        elapsed = time.monotonic() - started
    finally:
        raw.close()
    growth = (rss_kib(pid) - base) * 1024
    print(f"\n{server.kind}: bomb of {len(payload)} bytes -> 1009 after "
          f"{elapsed:.3f}s, RSS +{growth / MIB:.2f} MiB")
    assert code == 1009
    assert elapsed < 5
    assert growth < MAX_MESSAGE_SIZE + SLACK
    assert wait_state(server, name, lambda s: s.get("done"))["code"] == 1009


def test_slow_reader_blocks_send_then_reset_raises_connection_closed(server):
    """send() to a peer that never reads blocks once the socket buffers are
    full (memory stays flat); the peer's reset makes it raise ConnectionClosed.
    """
    name = key()
    pid = server_pid(server)
    base = rss_kib(pid)
    raw = RawClient(server.port, f"/sender?id={name}")
    try:
        wait_state(server, name, lambda s: s["sent"] > 0)
        # Completed sends stop growing: the handler is blocked in send().
        counts = []

        def settled(s):
            counts.append(s["sent"])
            return len(counts) >= 8 and counts[-1] == counts[-8]

        sent = wait_state(server, name, settled, timeout=20)["sent"]
        growth = (rss_kib(pid) - base) * 1024
        print(f"\n{server.kind}: send() blocked after {sent} x 64 KiB "
              f"({sent * CHUNK / MIB:.1f} MiB); RSS +{growth / MIB:.2f} MiB")
        assert sent * CHUNK < 25 * MIB
        assert growth < SLACK
        assert not state(server, name).get("done")
    finally:
        reset(raw.sock)
    ended = wait_state(server, name, lambda s: s.get("done"))
    assert ended["error"] == "ConnectionClosed"
    assert ended["code"] == 1006


# -- liveness --------------------------------------------------------------


class SilentServer:
    """Completes the handshake, then neither reads, answers nor closes."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import base64
        import hashlib

        conn, _ = self.listener.accept()
        self.conns.append(conn)
        conn.settimeout(WAIT)
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        key_line = [line for line in head.split(b"\r\n")
                    if line.lower().startswith(b"sec-websocket-key:")][0]
        client_key = key_line.split(b":", 1)[1].strip()
        accept = base64.b64encode(hashlib.sha1(
            client_key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                     + b"\r\n\r\n")

    def close(self) -> None:
        self.thread.join(WAIT)
        for conn in self.conns:
            conn.close()
        self.listener.close()


def test_client_keepalive_closes_vanished_server():
    silent = SilentServer()
    try:
        ws = greenws.Client.connect(f"ws://127.0.0.1:{silent.port}/",
                                    ping_interval=0.3, close_timeout=1)
        started = time.monotonic()
        with pytest.raises(greenws.ConnectionClosed) as closed:
            ws.receive(timeout=WAIT)
        elapsed = time.monotonic() - started
        ws.close()
    finally:
        silent.close()
    print(f"\nclient keepalive: closed after {elapsed:.3f}s")
    assert (closed.value.reason, closed.value.message) == (
        1011, "keepalive ping timeout")
    assert ws.close_reason == 1011
    assert 0.5 <= elapsed < 0.6 + 1.4


def test_server_keepalive_closes_vanished_client(server):
    name = key()
    raw = RawClient(server.port, f"/keepalive?id={name}")
    try:
        ended = wait_state(server, name, lambda s: s.get("done"), timeout=5)
    finally:
        raw.close()
    print(f"\n{server.kind}: server keepalive closed after {ended['elapsed']:.3f}s")
    assert (ended["error"], ended["code"], ended["reason"]) == (
        "ConnectionClosed", 1011, "keepalive ping timeout")
    assert 0.5 <= ended["elapsed"] < 0.6 + 1.4


def test_server_keepalive_closes_ping_flooder_that_never_reads(server):
    """A peer floods pings and never reads the pongs, then goes silent."""
    name = key()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT)
    sock.connect(("127.0.0.1", server.port))
    started = time.monotonic()
    try:
        sock.sendall(handshake_request(f"/keepalive1?id={name}"))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)  # byte by byte: leave every frame unread
        assert head.startswith(b"HTTP/1.1 101")
        pings = frame(0x9, b"p" * 125) * 1000
        sock.setblocking(False)
        last = time.monotonic()
        try:
            while time.monotonic() - last < 0.3 and time.monotonic() - started < WAIT:
                _, writable, _ = select.select([], [sock], [], 0.05)
                if writable:
                    sock.send(pings)
                    last = time.monotonic()
        except OSError:
            pass  # closed by the server: what keepalive should do
        # ping_interval=1 (+ ping_timeout=1): closed within about 2 s.
        ended = wait_state(server, name, lambda s: s.get("done"),
                           timeout=max(0.1, started + 4 - time.monotonic()))
    finally:
        reset(sock)
        # Once the peer resets, the stuck handler ends (leave the server clean).
        wait_state(server, name, lambda s: s.get("done"))
    assert ended["error"] == "ConnectionClosed"


def _answer_close(raw, expected_code):
    code, reason = read_close(raw)
    assert code == expected_code
    raw.send(close_frame(code, reason))


@pytest.mark.parametrize("how, code", [
    ("peer-close", 4001),
    ("peer-fin", 1006),
    ("peer-rst", 1006),
    ("protocol-error", 1002),
    ("server-close", 4000),
    ("close-all", 1001),
])
def test_blocked_receive_woken_by_every_ending(server, how, code):
    name = key()
    raw = RawClient(server.port, f"/wait?id={name}")
    try:
        wait_state(server, name, lambda s: s.get("waiting"))
        if how == "peer-close":
            raw.send(close_frame(4001, "bye"))
            assert read_close(raw) == (4001, "bye")
        elif how == "peer-fin":
            raw.sock.shutdown(socket.SHUT_WR)
        elif how == "peer-rst":
            reset(raw.sock)
        elif how == "protocol-error":
            raw.send(frame(0x3, b""))  # reserved opcode
            assert read_close(raw)[0] == 1002
        elif how == "server-close":
            with greenws.Client.connect(server.url + f"/kill?id={name}") as killer:
                _answer_close(raw, 4000)
                assert killer.receive(timeout=WAIT) == "killed"
        else:
            closer = greenws.Client.connect(server.url + f"/closeall?id={name}-all")
            _answer_close(raw, 1001)
            with pytest.raises(greenws.ConnectionClosed) as closed:
                closer.receive(timeout=WAIT)
            assert closed.value.reason == 1001
            closer.close()
            # close_all() returns (and records) once every handshake is over.
            wait_state(server, f"{name}-all", lambda s: s["closed"] >= 2)
        ended = wait_state(server, name, lambda s: s.get("done"), timeout=5)
    finally:
        raw.close()
    assert (ended["error"], ended["code"]) == ("ConnectionClosed", code)
    assert ended["elapsed"] < 5


@pytest.mark.parametrize("kind", ["gevent", "gevent-patched"])
def test_close_all_while_handlers_are_blocked_in_send(kind):
    """close_all() while handlers are blocked in send() to peers that stopped
    reading; each handler then returns (through WebSocketWSGI, and from a
    plain app without closing).  gevent.pywsgi closes the socket behind
    gevent's back as soon as the application returns, and libev aborted the
    worker ("I/O watcher with invalid fd") when a greenws watcher outlived
    it: the worker must live on and serve."""
    hosted = HostedServer(kind, module="stats_app")
    peers = []
    try:
        for route in ("/stuck", "/stuck-raw", "/stuck", "/stuck-raw"):
            name = key()
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(WAIT)
            sock.connect(("127.0.0.1", hosted.port))
            sock.sendall(handshake_request(f"{route}?id={name}"))  # never reads
            peers.append((sock, name))
        for _, name in peers:
            wait_state(hosted, name, lambda s: s.get("sending"))
        closer = greenws.Client.connect(hosted.url + f"/closeall?id={key()}")
        with pytest.raises(greenws.ConnectionClosed):
            closer.receive(timeout=WAIT)
        closer.close()
        for _, name in peers:
            assert wait_state(hosted, name, lambda s: s.get("done"))["code"] in (
                1001, 1006)
        # New connections reuse the freed descriptors: still serving.
        for _ in range(3):
            assert fetch_json(hosted, "/stats")["pid"]
        assert hosted.proc.poll() is None
    finally:
        for sock, _ in peers:
            sock.close()
        output = hosted.stop()
    assert "libev" not in output, output[-2000:]
    assert "Traceback" not in output, output[-4000:]
