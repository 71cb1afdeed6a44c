"""Fan-out: one message to many members, locally and across processes.

The members are raw connections of :class:`bench.many.Many` to
``bench.fanoutapp`` under ``gunicorn -k gevent``; a greenws client on
``/trigger`` tells the server what to send, and the time runs from that
command until the last member has the whole message.

* ``fanout-N[-deflate][-large|-tls]``: N members in one worker (``-tls``:
  over TLS, gunicorn ``--certfile``); ``greenws-rooms``
  (``Rooms.send``), ``greenws-broadcast`` (``greenws.broadcast``),
  ``ws.send-loop`` (a plain loop of ``ws.send()``) and ``send() floor`` (a
  bare loop of socket sends: what no fan-out can beat), with
  permessage-deflate negotiated by every member or by none; also the
  worker's CPU per fan-out.  The message is a ~600-byte update, or with
  ``-large`` a ~7 KiB snapshot.
* ``fanout-redis-MxP``: two gunicorn processes sharing a Redis, M members
  each; one ``Rooms.send`` on the first: ``greenws-rooms-redis`` is the time
  until the last member of both has it, ``local fan-out`` until the last
  member of the first (what Redis adds is the difference).
* ``redis-room-100x2``: messages/s into a room of 100 members per process,
  sent on the first, counted when every member of the second has them all.
"""

from __future__ import annotations

import contextlib
import json
import select
import shutil
import socket
import ssl
import subprocess
import time
import zlib
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import greenws

from .fanoutapp import LARGE_PAYLOAD, PAYLOAD
from .many import Many, _Conn
from .rawclient import BenchError, frame, parse_frame
from .servers import FANOUT, FANOUT_TLS, SIO_FANOUT, Running, ServerSpec, free_port

_PAYLOAD = PAYLOAD.encode()
#: The ways :func:`local` fans out, interleaved in each repetition.
MODES = ("floor", "rooms", "broadcast", "loop")


def _env(large: bool) -> Optional[Dict[str, str]]:
    return {"FANOUT_LARGE": "1"} if large else None


def _trigger(port: int, tls: bool = False) -> greenws.Client:
    if not tls:
        return greenws.Client.connect(f"ws://127.0.0.1:{port}/trigger",
                                      compression=False, open_timeout=30)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the bench's own certificate
    return greenws.Client.connect(f"wss://127.0.0.1:{port}/trigger", compression=False,
                                  open_timeout=30, ssl_context=context)


def _wait_members(trigger: greenws.Client, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        trigger.send("count")
        got = int(trigger.receive(timeout=timeout) or 0)
        if got >= n:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"only {got} of {n} members joined")
        time.sleep(0.05)


class _Reader:
    """Reads the members' sockets (registered once: epoll calls for
    thousands of sockets per round would cost more than the server)."""

    def __init__(self, groups: List[List[_Conn]], expected: bytes = b"",
                 same_bytes: bool = True) -> None:
        self.expected = expected or _PAYLOAD
        # False: members' frames differ (zlib contexts kept between
        # messages): each member's frame is parsed for its size.
        self.check = _CHECK if same_bytes else 1
        self.ep = select.epoll()
        self.groups = groups
        self.tls = any(isinstance(c.sock, ssl.SSLSocket) for g in groups for c in g)
        self.owner: Dict[int, int] = {}
        self.by_fd: Dict[int, _Conn] = {}
        for g, conns in enumerate(groups):
            for conn in conns:
                fd = conn.sock.fileno()
                self.owner[fd], self.by_fd[fd] = g, conn
                self.ep.register(fd, select.EPOLLIN)

    def close(self) -> None:
        self.ep.close()

    def collect(self, count: int, t0: float, timeout: float) -> List[float]:
        """Read until every member has ``count`` more messages; per group,
        the seconds from ``t0`` until its last member had them.

        The reader must cost less than the server it measures, so it only
        counts bytes, into one scratch buffer: one member in :data:`_CHECK`
        is parsed and checked, and every member gets the same bytes (they
        negotiated the same parameters), so one checked frame gives the size
        the others must receive.
        """
        owner, by_fd, check = self.owner, self.by_fd, self.check
        pending = set(by_fd)
        left: Dict[int, int] = {}  # fd -> bytes still to come, once known
        frame = 0  # the size of one message's frame, once known
        scratch = bytearray(262144)
        view = memoryview(scratch)
        last = [0.0] * len(self.groups)
        clock = time.perf_counter
        # Polled without sleeping: a reader asleep in epoll_wait has the
        # server's every send() wake it across cores, a cost the server pays
        # on loopback and never on a network.
        poll = self.ep.poll
        deadline = time.monotonic() + timeout
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{len(pending)} members still waiting")
            for fd, _mask in poll(0):
                if fd not in pending:
                    continue  # more than was sent: caught below next round
                sock = by_fd[fd].sock
                try:
                    n = sock.recv_into(scratch)
                    while self.tls and n < len(scratch) and sock.pending():
                        n += sock.recv_into(view[n:])  # decrypted, not signalled
                except (BlockingIOError, ssl.SSLWantReadError):
                    continue
                if not n:
                    raise BenchError("the server closed a member")
                rest = left.get(fd)
                if rest is not None:
                    rest -= n
                elif frame and fd % check:
                    rest = frame * count - n
                else:
                    buf = by_fd[fd].buf
                    buf += view[:n]
                    end = _check(buf, self.expected)
                    if not end:
                        continue
                    frame = end
                    rest = end * count - len(buf)
                    buf.clear()
                if rest > 0:
                    left[fd] = rest
                    continue
                if rest < 0:
                    raise BenchError("more bytes than were sent")
                pending.discard(fd)
                left.pop(fd, None)
                g = owner[fd]
                done = clock() - t0
                if done > last[g]:
                    last[g] = done
        return last


def _check(buf: bytearray, expected: bytes) -> int:
    """The size of the whole frame at the start of ``buf`` (0: incomplete),
    after checking that it carries ``expected``: a compressed one only if it
    inflates on its own (python-socketio's members keep the zlib context
    between messages, and a member's Nth message is the same bytes for all,
    so the size still tells)."""
    got = parse_frame(buf, 0)
    if got is None:
        return 0
    fin, _, rsv1, payload, end = got
    if not fin:
        raise BenchError("a fragmented message")
    if rsv1:
        try:
            payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
        except zlib.error:
            return int(end)
    if payload != expected:
        raise BenchError(f"wrong message: {payload[:60]!r}")
    return int(end)


#: One member in this many is parsed and checked (see _Reader.collect).
_CHECK = 32


def _sio_message(payload: str) -> bytes:
    """What a socket.io member gets for ``emit("update", payload)``."""
    return b"42" + json.dumps(["update", payload], separators=(",", ":")).encode()


_SIO_PATH = "/socket.io/?EIO=4&transport=websocket"


def _sio_join(conns: List[_Conn], timeout: float) -> None:
    """The engine.io open packet, then a socket.io connect to "/", on each."""
    for conn in conns:
        sock = conn.sock
        sock.settimeout(timeout)
        # python-socketio's server keeps its zlib context between messages
        inflater = zlib.decompressobj(-15)
        try:
            for expect, reply in ((b"0", frame(b"40")), (b"40", None)):
                while True:
                    got = parse_frame(conn.buf, 0)
                    if got is not None:
                        break
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise BenchError("socket.io server closed a member")
                    conn.buf += chunk
                _, _, rsv1, data, end = got
                del conn.buf[:end]
                if rsv1:
                    data = inflater.decompress(data + b"\x00\x00\xff\xff")
                if not data.startswith(expect):
                    raise BenchError(f"unexpected socket.io packet {data[:40]!r}")
                if reply is not None:
                    sock.sendall(reply)
        finally:
            sock.setblocking(False)


@contextlib.contextmanager
def _fanout_server(
    spec: ServerSpec, env: Optional[Dict[str, str]], n: int, deflate: bool,
    timeout: float, path: str, expected: bytes, tls: bool = False,
    join: Optional[Callable[[List[_Conn], float], None]] = None,
    same_bytes: bool = True,
) -> Iterator[Tuple[Running, Many, greenws.Client, _Reader]]:
    """Server ``spec`` with ``n`` members connected (then ``join``-ed) and
    counted by it: (server, members, trigger, a reader expecting
    ``expected``), all closed after."""
    with Running(spec, env) as server:
        members = Many(server.port, n, deflate, tls=tls, path=path)
        trigger = reader = None
        try:
            members.connect(timeout)
            if join is not None:
                join(members.conns, timeout)
            trigger = _trigger(server.port, tls)
            _wait_members(trigger, n, timeout)
            reader = _Reader([members.conns], expected, same_bytes)
            yield server, members, trigger, reader
        finally:
            if reader is not None:
                reader.close()
            if trigger is not None:
                trigger.close()
            members.close()


def _timed(server: Running, trigger: greenws.Client, reader: _Reader, command: str,
           timeout: float) -> Tuple[float, float]:
    """Send ``command``: (seconds until the last member had the message, the
    server's CPU ms), once the server answered."""
    cpu0 = server.cpu()
    t0 = time.perf_counter()
    trigger.send(command)
    seconds = reader.collect(1, t0, timeout)[0]
    if trigger.receive(timeout=timeout) != "done":
        raise BenchError("no answer from the trigger")
    return seconds, (server.cpu() - cpu0) * 1000


def socketio(n: int, deflate: bool, reps: int, timeout: float, large: bool = False
             ) -> Iterator[Dict[str, float]]:
    """python-socketio's emit(to=room): ``emit_s`` and ``emit_cpu_ms``."""
    expected = _sio_message(LARGE_PAYLOAD if large else PAYLOAD)
    with _fanout_server(SIO_FANOUT, _env(large), n, deflate, timeout, _SIO_PATH,
                        expected, join=_sio_join, same_bytes=not deflate) as (
            server, members, trigger, reader):
        _timed(server, trigger, reader, "emit 1", timeout)  # warm-up, untimed
        for _ in range(reps):
            emit_s, emit_cpu_ms = _timed(server, trigger, reader, "emit 1", timeout)
            yield {"emit_s": emit_s, "emit_cpu_ms": emit_cpu_ms,
                   "deflate": members.negotiated / n}


def local(
    n: int, deflate: bool, reps: int, timeout: float, large: bool = False,
    tls: bool = False,
) -> Iterator[Dict[str, float]]:
    """Yield one result per repetition: ``{mode}_s`` and ``{mode}_cpu_ms``
    for each of :data:`MODES` (interleaved); ``large``: the message is
    :data:`LARGE_PAYLOAD`; ``tls``: the members connect over TLS."""
    expected = (LARGE_PAYLOAD if large else PAYLOAD).encode()
    with _fanout_server(FANOUT_TLS if tls else FANOUT, _env(large), n, deflate,
                        timeout, "/member", expected, tls=tls) as (
            server, members, trigger, reader):
        if deflate and members.negotiated < n:
            raise BenchError("deflate not negotiated")
        for mode in MODES:  # warm-up, untimed
            _timed(server, trigger, reader, f"{mode} 1", timeout)
        for _ in range(reps):
            got: Dict[str, float] = {}
            for mode in MODES:
                got[f"{mode}_s"], got[f"{mode}_cpu_ms"] = _timed(
                    server, trigger, reader, f"{mode} 1", timeout)
            yield got


@contextlib.contextmanager
def _redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server is not installed (make redis)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(10)


def redis(per_process: int, reps: int, timeout: float, burst: int = 0
          ) -> Iterator[Dict[str, float]]:
    """Two servers sharing a Redis, ``per_process`` members each; yield per
    repetition ``redis_s``, ``local_s`` (one Rooms.send), and with ``burst``
    messages ``msgs_per_s``."""
    with _redis() as url, Running(FANOUT, {"FANOUT_REDIS": url}) as a, \
            Running(FANOUT, {"FANOUT_REDIS": url}) as b:
        on_a = Many(a.port, per_process, path="/member")
        on_b = Many(b.port, per_process, path="/member")
        triggers: List[Optional[greenws.Client]] = [None, None]
        readers: List[_Reader] = []
        try:
            on_a.connect(timeout)
            on_b.connect(timeout)
            triggers[0], triggers[1] = _trigger(a.port), _trigger(b.port)
            _wait_members(triggers[0], per_process, timeout)
            _wait_members(triggers[1], per_process, timeout)
            first = triggers[0]
            readers += [_Reader([on_a.conns]), _Reader([on_b.conns]),
                        _Reader([on_a.conns, on_b.conns])]
            # Both servers subscribe in the background: wait for the link.
            deadline = time.monotonic() + timeout
            while True:
                first.send("rooms 1")
                first.receive(timeout=timeout)
                readers[0].collect(1, time.perf_counter(), timeout)
                try:
                    readers[1].collect(1, time.perf_counter(), 0.5)
                    break
                except BenchError:
                    if time.monotonic() > deadline:
                        raise BenchError("Redis link not up in time") from None
                    for conn in on_b.conns:
                        conn.buf.clear()
                    _drain(on_b.conns)
            for _ in range(reps):
                if burst:
                    t0 = time.perf_counter()
                    first.send(f"rooms {burst}")
                    local_s, redis_s = readers[2].collect(burst, t0, timeout)
                    first.receive(timeout=timeout)
                    yield {"msgs_per_s": burst / max(local_s, redis_s)}
                else:
                    t0 = time.perf_counter()
                    first.send("rooms 1")
                    local_s, redis_s = readers[2].collect(1, t0, timeout)
                    first.receive(timeout=timeout)
                    yield {"local_s": local_s, "redis_s": max(local_s, redis_s)}
        finally:
            for trigger in triggers:
                if trigger is not None:
                    trigger.close()
            for reader in readers:
                reader.close()
            on_a.close()
            on_b.close()


def _drain(conns: List[_Conn]) -> None:
    """Throw away whatever has arrived (a partial warm-up)."""
    time.sleep(0.2)
    for conn in conns:
        conn.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while conn.sock.recv(262144):
                pass
        conn.buf.clear()

