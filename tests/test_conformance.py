"""RFC 6455 conformance, organised like Autobahn|Testsuite's case groups.

Every case is a script of raw frames sent to greenws and the exact outcome
RFC 6455 (and RFC 7692 for permessage-deflate) requires: the echo of the right
payload, a pong carrying the ping's payload, or a Close frame with the right
code (1002 protocol error, 1007 invalid payload data, 1009 too big) followed by
the TCP connection closing.

Each case runs in both roles and with permessage-deflate off and on:

* ``server``: greenws hosted by a real server subprocess (gevent.pywsgi; a
  representative subset on every server of ``servers.KINDS``) serving
  ``tests/apps/echo_app.py`` -- or ``tests/apps/limits_app.py`` for the 1009
  cases -- and a raw socket client that masks its frames;
* ``client``: a raw TCP server in a thread that answers the handshake and
  sends unmasked frames to a ``greenws.Client``, whose messages a thread echoes
  back; what ``Client.receive()`` raises is checked as well.

greenws parses single-frame uncompressed messages itself (the fast path in
``greenws/protocol.py``) and hands everything else to wsproto: the tables mix
single frames, fragments, control frames and chopped deliveries so that both
paths and the switches between them are exercised.

Group numbers follow Autobahn: 1 framing, 2 pings/pongs, 3 reserved bits,
4 opcodes, 5 fragmentation, 6 UTF-8, 7 close handling, 9 large payloads,
10 limits (1009), 12/13 compression.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import struct
import threading
import zlib
from typing import Any, List, Optional, Tuple

import pytest
from conftest import read_http_head
from rawws import RawClient
from servers import KINDS, HostedServer, gunicorn_has_worker

import greenws
from greenws import presets

TIMEOUT = 5.0  # bound of every socket wait, seconds
LIMIT = 16384  # max_message_size of limits_app.py and of the limited Client
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = b"\x37\xfa\x21\x3d"  # fixed masking key: deterministic bytes on the wire

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 4, 2, 1



# -- frames ---------------------------------------------------------------------


def xor_mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(
        n, "big"
    )


def blob(n: int) -> bytes:
    """``n`` deterministic bytes covering every byte value."""
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def deflate(data: bytes) -> bytes:
    """RFC 7692 payload: raw deflate, sync-flushed, trailing 00 00 ff ff removed.

    A 512-byte window (wbits 9) is valid whatever window size was negotiated.
    """
    compressor = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, -9)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


class F:
    """One frame to send.

    ``mask`` None: masked iff the raw peer is the client.  ``length`` announces
    another payload length than the bytes sent (a frame cut short); ``form``
    forces the 7-, 16- or 64-bit length encoding.
    """

    def __init__(self, opcode: int, payload: Any = b"", fin: bool = True, rsv: int = 0,
                 mask: Optional[bool] = None, length: Optional[int] = None,
                 form: Optional[int] = None) -> None:
        self.opcode = opcode
        self.payload = payload.encode() if isinstance(payload, str) else bytes(payload)
        self.fin = fin
        self.rsv = rsv
        self.mask = mask
        self.length = length
        self.form = form

    def build(self, peer_is_client: bool) -> bytes:
        masked = peer_is_client if self.mask is None else self.mask
        n = len(self.payload) if self.length is None else self.length
        form = self.form or (7 if n < 126 else 16 if n < 65536 else 64)
        b0 = (0x80 if self.fin else 0) | self.rsv << 4 | self.opcode
        mbit = 0x80 if masked else 0
        if form == 7:
            head = bytes([b0, mbit | n])
        elif form == 16:
            head = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            head = struct.pack("!BBQ", b0, mbit | 127, n)
        if masked:
            return head + KEY + xor_mask(self.payload, KEY)
        return head + self.payload


def text(data: Any, **kw: Any) -> F:
    return F(OP_TEXT, data, **kw)


def binary(data: bytes, **kw: Any) -> F:
    return F(OP_BINARY, data, **kw)


def cont(data: Any = b"", **kw: Any) -> F:
    return F(OP_CONT, data, **kw)


def ping(data: Any = b"", **kw: Any) -> F:
    return F(OP_PING, data, **kw)


def pong(data: Any = b"", **kw: Any) -> F:
    return F(OP_PONG, data, **kw)


def close(code: Optional[int] = None, reason: Any = b"", **kw: Any) -> F:
    reason = reason.encode() if isinstance(reason, str) else reason
    payload = b"" if code is None else struct.pack("!H", code) + reason
    return F(OP_CLOSE, payload, **kw)


def ztext(data: str, **kw: Any) -> F:
    return F(OP_TEXT, deflate(data.encode()), rsv=RSV1, **kw)


def zbinary(data: bytes, **kw: Any) -> F:
    return F(OP_BINARY, deflate(data), rsv=RSV1, **kw)


def zfragments(opcode: int, data: bytes, parts: int) -> List[F]:
    """One compressed message cut into ``parts`` frames (RSV1 on the first)."""
    packed = deflate(data)
    step = max(1, len(packed) // parts + 1)
    chunks = [packed[i:i + step] for i in range(0, len(packed), step)]
    frames = [F(OP_CONT, c, fin=False) for c in chunks]
    frames[0] = F(opcode, chunks[0], fin=False, rsv=RSV1)
    frames[-1].fin = True
    return frames


def fragments(opcode: int, parts: List[Any]) -> List[F]:
    """An uncompressed message cut into the given payload parts."""
    frames = [F(OP_CONT, p, fin=False) for p in parts]
    frames[0] = F(opcode, parts[0], fin=False)
    frames[-1].fin = True
    return frames


# -- case scripts -------------------------------------------------------------


def _flatten(items: Any) -> List[F]:
    out: List[F] = []
    for item in items:
        out.extend(_flatten(item) if isinstance(item, (list, tuple)) else [item])
    return out


class Send:
    """Send frames in one write, or chopped into ``chunk``-byte writes."""

    def __init__(self, *frames: Any, chunk: Optional[int] = None,
                 cuts: Tuple[int, ...] = ()) -> None:
        self.frames = _flatten(frames)
        self.chunk = chunk
        self.cuts = cuts  # write boundaries (byte offsets; negative from the end)


class Expect:
    """The next message (or control frame) greenws sends.

    ``optional``: it may be missing -- e.g. the echo of a message that arrived
    right before a frame that fails the connection, or before the peer's Close:
    greenws may have failed/closed before its handler could echo.
    """

    def __init__(self, kind: str, value: Any, optional: bool = False) -> None:
        self.kind = kind
        self.value = value
        self.optional = optional


class Fail:
    """greenws fails the connection: Close with ``code``, then TCP closes."""

    def __init__(self, code: int) -> None:
        self.code = code


class CloseEcho:
    """greenws answers our Close with ``code`` (None: empty payload or 1000)."""

    def __init__(self, code: Optional[int]) -> None:
        self.code = code


def echo(value: Any) -> Expect:
    return Expect("text" if isinstance(value, str) else "binary", value)


def maybe_echo(value: Any) -> Expect:
    return Expect("text" if isinstance(value, str) else "binary", value, optional=True)


def pong_of(payload: Any) -> Expect:
    return Expect("pong", payload.encode() if isinstance(payload, str) else payload)


BOTH = ("server", "client")


class Case:
    def __init__(self, cid: str, *steps: Any, roles: Tuple[str, ...] = BOTH,
                 deflate: Tuple[bool, ...] = (False, True), limits: bool = False,
                 xfail: Optional[dict] = None, timeout: float = TIMEOUT,
                 with_handshake: bool = False) -> None:
        self.cid = cid
        self.steps = list(steps)
        self.roles = roles
        self.deflate = deflate
        self.limits = limits
        self.timeout = timeout  # bound of each wait for greenws in this case
        # The first Send goes in the same write as the handshake request
        # (server role) or the 101 response (client role).
        self.with_handshake = with_handshake
        # {(role, deflate) or role or "*": reason} of known greenws bugs
        self.xfail = xfail or {}


def msg(cid: str, frames: Any, *expects: Any, **kw: Any) -> Case:
    return Case(cid, Send(frames), *expects, **kw)


# -- the raw peer -----------------------------------------------------------------


class Peer:
    """The raw end of the connection; reads what greenws sends, checking masks."""

    def __init__(self, sock: socket.socket, is_client: bool,
                 buffered: bytes = b"") -> None:
        self.sock = sock
        self.is_client = is_client
        self.buf = bytearray(buffered)
        sock.settimeout(TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes, chunk: Optional[int] = None,
             cuts: Tuple[int, ...] = ()) -> None:
        if chunk is not None:
            cuts = tuple(range(chunk, len(data), chunk))
        start = 0
        try:
            for cut in [c % len(data) for c in cuts] + [len(data)]:
                self.sock.sendall(data[start:cut])
                start = cut
        except (BrokenPipeError, ConnectionResetError):
            # greenws failed the connection before we were done (fail fast):
            # what it sent before closing is still there to be read.
            pass

    def _fill(self, n: int) -> bool:
        while len(self.buf) < n:
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                return False
            if not data:
                return False
            self.buf += data
        return True

    def _take(self, n: int) -> Optional[bytes]:
        if not self._fill(n):
            return None
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_frame(self) -> Optional[Tuple[bool, int, int, bytes]]:
        """(fin, rsv, opcode, payload), or None at EOF."""
        head = self._take(2)
        if head is None:
            return None
        b0, b1 = head
        n = b1 & 0x7F
        if n == 126:
            ext = self._take(2)
            if ext is None:
                return None
            (n,) = struct.unpack("!H", ext)
        elif n == 127:
            ext = self._take(8)
            if ext is None:
                return None
            (n,) = struct.unpack("!Q", ext)
        masked = bool(b1 & 0x80)
        # RFC 6455 5.1: a client masks every frame, a server none.
        assert masked == (not self.is_client), (
            f"greenws as {'server' if self.is_client else 'client'} sent a frame "
            f"with mask bit {int(masked)}"
        )
        key = self._take(4) if masked else None
        payload = self._take(n)
        if payload is None:
            return None
        if key is not None:
            payload = xor_mask(payload, key)
        return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload

    def read_message(self) -> Tuple[Any, ...]:
        """("text", str) | ("binary", bytes) | ("ping"/"pong", bytes) |
        ("close", code or None, reason) | ("eof",)."""
        parts: List[bytes] = []
        first: Optional[Tuple[int, int]] = None
        while True:
            got = self.read_frame()
            if got is None:
                return ("eof",)
            fin, rsv, opcode, payload = got
            if opcode >= 8:
                assert fin and rsv == 0, f"bad control frame from greenws: {got!r}"
                if opcode == OP_CLOSE:
                    if not payload:
                        return ("close", None, "")
                    assert len(payload) >= 2, f"1-byte close payload: {payload!r}"
                    return ("close", struct.unpack("!H", payload[:2])[0],
                            payload[2:].decode("utf-8"))
                return ("ping" if opcode == OP_PING else "pong", payload)
            if first is None:
                assert opcode in (OP_TEXT, OP_BINARY), f"greenws sent opcode {opcode}"
                first = (opcode, rsv)
            else:
                assert opcode == OP_CONT and rsv == 0, f"bad continuation {got!r}"
            parts.append(payload)
            if fin:
                break
        opcode, rsv = first
        assert rsv in (0, RSV1), f"greenws set reserved bits {rsv:03b}"
        data = b"".join(parts)
        if rsv == RSV1:
            data = zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff")
        if opcode == OP_TEXT:
            return ("text", data.decode("utf-8"))
        return ("binary", data)

    def read_eof(self) -> bytes:
        """Bytes left until greenws closes TCP; fails if it does not in time."""
        data = bytes(self.buf)
        self.buf.clear()
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                return data
            except socket.timeout:
                raise AssertionError(
                    "greenws did not close the TCP connection in time"
                ) from None
            if not chunk:
                return data
            data += chunk

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# -- the two roles ----------------------------------------------------------------

OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


class ServerRole:
    """greenws is the server (a hosted echo app); the raw peer is the client."""

    role = "server"

    def __init__(self, port: int, use_deflate: bool, path: str = "/echo",
                 trailing: bytes = b"") -> None:
        raw = RawClient(port, path, extra=OFFER if use_deflate else "",
                        trailing=trailing, timeout=TIMEOUT)
        assert raw.status == 101, raw.response_head
        head = raw.response_head.lower()
        if use_deflate:
            assert "sec-websocket-extensions: permessage-deflate" in head, head
            assert "client_no_context_takeover" in head, head
        else:
            assert "permessage-deflate" not in head, head
        self.peer = Peer(raw.sock, is_client=True, buffered=raw.buffer)

    def ready(self) -> None:
        """The 101 has been read: greenws's reader takes what comes next."""

    def finish_fail(self, code: int) -> None:
        assert self.peer.read_eof() == b"", "greenws sent data after its Close"

    def finish_close(self, code: Optional[int]) -> None:
        # The server closes TCP first (RFC 6455 7.1.1): no half-close needed.
        assert self.peer.read_eof() == b"", "greenws sent data after its Close"

    def cleanup(self) -> None:
        self.peer.close()


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


ANSWER = (
    "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
    "client_no_context_takeover; server_max_window_bits=12; "
    "client_max_window_bits=12\r\n"
)


class RawServer:
    """A one-shot raw WebSocket server in a thread: it does the handshake only."""

    def __init__(self, use_deflate: bool, after_101: bytes = b"") -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.use_deflate = use_deflate
        self.after_101 = after_101
        self.sock: Optional[socket.socket] = None
        self.request = b""
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            sock, _ = self.listener.accept()
            self.sock = sock
            sock.settimeout(TIMEOUT)
            head = read_http_head(sock)
            self.request = head
            key = re.search(rb"(?i)sec-websocket-key:\s*(\S+)", head).group(1).decode()
            extra = ""
            if self.use_deflate:
                assert b"permessage-deflate" in head.lower(), head
                extra = ANSWER
            sock.sendall((
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n"
                f"{extra}\r\n"
            ).encode() + self.after_101)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def connection(self) -> socket.socket:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "raw server handshake did not finish"
        if self.error is not None:
            raise self.error
        assert self.sock is not None
        return self.sock

    def close(self) -> None:
        self.listener.close()


class ClientRole:
    """greenws is a Client; the raw peer is a server in a thread.

    A thread echoes every message the Client receives, so the expectations are
    the same as in the server role, and records how ``receive()`` ended.
    """

    role = "client"

    def __init__(self, use_deflate: bool, max_message_size: Optional[int] = None,
                 after_101: bytes = b"") -> None:
        self.server = RawServer(use_deflate, after_101)
        self.options = dict(
            max_message_size=max_message_size,
            preset=presets.THREADING,
            compression=use_deflate,
            close_timeout=2.0,
            open_timeout=TIMEOUT,
        )
        self.ws: Any = None
        self.connected = threading.Event()
        self.closed: Optional[greenws.ConnectionClosed] = None
        self.error: Optional[BaseException] = None
        # connect() runs in the thread too: frames that come with the 101 are
        # handled inside it, and may need the raw peer to answer meanwhile.
        self.thread = threading.Thread(target=self._connect_and_echo, daemon=True)
        self.thread.start()
        try:
            self.peer = Peer(self.server.connection(), is_client=False)
        except BaseException:
            self.server.close()
            raise

    def ready(self) -> None:
        """Wait until connect() returned: later bytes reach the reader's recv()."""
        if not self.connected.wait(TIMEOUT):
            self.thread.join(0)
            raise AssertionError(f"Client.connect() did not return ({self.error!r})")

    def _connect_and_echo(self) -> None:
        try:
            self.ws = greenws.Client.connect(
                f"ws://127.0.0.1:{self.server.port}/echo", **self.options
            )
            self.connected.set()
            while True:
                message = self.ws.receive(timeout=3 * TIMEOUT)
                if message is None:
                    raise TimeoutError("no message and no close")
                self.ws.send(message)
        except greenws.ConnectionClosed as exc:
            self.closed = exc
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _ended(self) -> greenws.ConnectionClosed:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "Client.receive() did not return"
        assert self.error is None, f"Client.receive()/send() raised {self.error!r}"
        assert self.closed is not None
        return self.closed

    def finish_fail(self, code: int) -> None:
        assert self.peer.read_eof() == b"", "greenws sent data after its Close"
        closed = self._ended()
        assert closed.reason == code, (closed.reason, closed.message)

    def finish_close(self, code: Optional[int]) -> None:
        # The client waits for the server to close TCP first (RFC 6455 7.1.1).
        self.peer.sock.shutdown(socket.SHUT_WR)
        assert self.peer.read_eof() == b"", "greenws sent data after its Close"
        closed = self._ended()
        assert closed.reason == (1005 if code is None else code), (
            closed.reason, closed.message)

    def cleanup(self) -> None:
        self.peer.close()
        self.thread.join(TIMEOUT)
        self.server.close()
        if self.ws is None:
            return
        self.ws.close_timeout = 1.0
        self.ws.close()
        reader = getattr(self.ws, "_thread", None)
        if reader is not None:
            reader.join(TIMEOUT)
            assert not reader.is_alive(), "greenws reader thread leaked"


# -- running a case ---------------------------------------------------------------


def _same(got: Any, want: Any) -> bool:
    return type(got) is type(want) and got == want


def _describe(value: Any) -> str:
    if isinstance(value, (bytes, str)) and len(value) > 80:
        return f"{type(value).__name__}[{len(value)}] {value[:40]!r}..."
    return repr(value)


def run(conn: Any, case: Case) -> None:
    steps = list(case.steps)
    if case.with_handshake:
        steps = steps[1:]  # already sent, see connect()
    if not isinstance(steps[-1], (Fail, CloseEcho)):
        steps += [Send(close(1000)), CloseEcho(1000)]
    if not case.with_handshake:
        conn.ready()  # deterministic: the first frames never ride with the 101
    peer = conn.peer
    peer.sock.settimeout(case.timeout)
    pending = None
    for step in steps:
        if isinstance(step, Send):
            data = b"".join(f.build(peer.is_client) for f in step.frames)
            peer.send(data, step.chunk, step.cuts)
            continue
        got, pending = pending or peer.read_message(), None
        if isinstance(step, Expect):
            ok = got[0] == step.kind and _same(got[1], step.value)
            if not ok and step.optional:
                pending = got
                continue
            assert ok, (
                f"expected {step.kind} {_describe(step.value)}, got {got[0]} "
                f"{_describe(got[1]) if len(got) > 1 else ''}"
            )
        elif isinstance(step, Fail):
            assert got[:2] == ("close", step.code), (
                f"expected Close {step.code}, got {got!r}"
            )
            conn.finish_fail(step.code)
        elif isinstance(step, CloseEcho):
            codes = (None, 1000) if step.code is None else (step.code,)
            assert got[0] == "close" and got[1] in codes, (
                f"expected Close {step.code}, got {got!r}"
            )
            conn.finish_close(got[1] if step.code is not None else step.code)


# -- case tables ------------------------------------------------------------------

SIZES = [0, 1, 125, 126, 127, 128, 65535, 65536, 1 << 20]
_KOSME = "κόσμε"

CASES: List[Case] = []

# 1: framing, payload lengths and length encodings (7/16/64-bit forms).
for _n in SIZES:
    CASES.append(msg(f"1.1-text-len-{_n}", text("*" * _n), echo("*" * _n)))
    CASES.append(msg(f"1.2-binary-len-{_n}", binary(blob(_n)), echo(blob(_n))))
CASES += [
    Case("1.1-text-65536-chopped-997", Send(text("x" * 65536), chunk=997),
         echo("x" * 65536)),
    Case("1.2-binary-200-chopped-1", Send(binary(blob(200)), chunk=1), echo(blob(200))),
    Case("1.2-binary-70000-cut-inside-header", Send(binary(blob(70000)), cuts=(2, 5)),
         echo(blob(70000))),
    Case("1.2-binary-70000-last-byte-late", Send(binary(blob(70000)), cuts=(-1,)),
         echo(blob(70000))),
    msg("1.3-three-messages-one-write", [text("a"), binary(b"b"), text("")],
        echo("a"), echo(b"b"), echo("")),
    msg("1.3-fast-wsproto-fast-one-write",
        [text("fast"), fragments(OP_TEXT, ["slo", "w"]), binary(b"fast again"),
         fragments(OP_BINARY, [b"x", b"y"]), text("end")],
        echo("fast"), echo("slow"), echo(b"fast again"), echo(b"xy"), echo("end")),
    msg("1.3-ping-then-fast-path-one-write", [ping(b"p"), text("after ping")],
        pong_of(b"p"), echo("after ping")),
    msg("1.4-nonminimal-16bit-len-5", text("hello", form=16), Fail(1002)),
    msg("1.4-nonminimal-16bit-len-125", binary(blob(125), form=16), Fail(1002)),
    msg("1.4-nonminimal-64bit-len-0", binary(b"", form=64), Fail(1002)),
    msg("1.4-nonminimal-64bit-len-200", text("x" * 200, form=64), Fail(1002)),
    msg("1.4-nonminimal-64bit-len-65535", binary(blob(65535), form=64), Fail(1002)),
    msg("1.4-64bit-length-msb-set", F(OP_BINARY, b"", length=(1 << 63) | 5, form=64),
        Fail(1002)),
    msg("1.4-nonminimal-after-valid-message",
        [text("ok"), text("hello", form=16)], maybe_echo("ok"), Fail(1002)),
]

# Frames in the same TCP write as the handshake (greenws's "pending" bytes).
_H = {"with_handshake": True}
CASES += [
    msg("1.6-handshake-plus-text", text("early"), echo("early"), **_H),
    msg("1.6-handshake-plus-fragments-and-ping",
        [text("ea", fin=False), ping("p"), cont("rly")], pong_of("p"), echo("early"),
        **_H),
    Case("1.6-handshake-plus-first-fragment", Send(binary(blob(300), fin=False)),
         Send(cont(b"!")), echo(blob(300) + b"!"), **_H),
    msg("1.6-handshake-plus-reserved-opcode", F(0xD, b"x"), Fail(1002), **_H),
    msg("1.6-handshake-plus-invalid-utf8", text(b"\xc0\xaf"), Fail(1007), **_H),
    msg("1.6-handshake-plus-close", close(1000, "now"), CloseEcho(1000), **_H),
]

# 2: pings and pongs.
CASES += [
    msg("2.1-ping-empty", ping(), pong_of(b"")),
    msg("2.2-ping-text-payload", ping("Hello, world!"), pong_of("Hello, world!")),
    msg("2.3-ping-binary-payload", ping(b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"),
        pong_of(b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff")),
    msg("2.4-ping-125", ping(blob(125)), pong_of(blob(125))),
    msg("2.5-ping-126", ping(blob(126)), Fail(1002)),
    Case("2.6-ping-125-chopped-1", Send(ping(blob(125)), chunk=1), pong_of(blob(125))),
    msg("2.7-unsolicited-pong-empty", [pong(), text("next")], echo("next")),
    msg("2.8-unsolicited-pong-payload", [pong("unsolicited"), binary(b"next")],
        echo(b"next")),
    msg("2.9-unsolicited-pong-then-ping", [pong("x"), ping("ping")], pong_of("ping")),
    msg("2.10-ten-pings", [ping(f"p{i}") for i in range(10)],
        *[pong_of(f"p{i}") for i in range(10)]),
    Case("2.11-ten-pings-chopped", Send([ping(f"p{i}") for i in range(10)], chunk=1),
         *[pong_of(f"p{i}") for i in range(10)]),
    msg("2.x-pong-126", pong(blob(126)), Fail(1002)),
    msg("2.x-ping-126-16bit-form", ping(blob(126), form=16), Fail(1002)),
    msg("2.x-ping-5-16bit-form", ping(b"hello", form=16), Fail(1002)),
]

# 3: reserved bits (RSV1 is permessage-deflate's: see group 13 for it with deflate).
CASES += [
    msg("3.1-text-rsv2", text("hi", rsv=RSV2), Fail(1002)),
    Case("3.2-echo-then-rsv2-rsv3-then-ping", Send(text("hi")), echo("hi"),
         Send(text("hi", rsv=RSV2 | RSV3), ping()), Fail(1002)),
    msg("3.3-text-rsv1-without-extension", text("hi", rsv=RSV1), Fail(1002),
        deflate=(False,)),
    msg("3.3-empty-text-rsv1-without-extension", text("", rsv=RSV1), Fail(1002),
        deflate=(False,)),
    msg("3.4-binary-rsv1-rsv3", binary(blob(8), rsv=RSV1 | RSV3), Fail(1002)),
    msg("3.5-binary-rsv3", binary(blob(8), rsv=RSV3), Fail(1002)),
    msg("3.6-ping-rsv1-rsv2", ping(b"x", rsv=RSV1 | RSV2), Fail(1002)),
    msg("3.7-close-all-rsv", close(1000, rsv=7), Fail(1002)),
    msg("3.x-continuation-rsv2", [text("a", fin=False), cont("b", rsv=RSV2)],
        Fail(1002)),
    msg("3.x-large-binary-rsv3", binary(blob(70000), rsv=RSV3), Fail(1002)),
]

# 4: reserved opcodes.
for _op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF):
    CASES.append(msg(f"4.x-opcode-{_op:#x}-empty", F(_op), Fail(1002)))
    CASES.append(msg(f"4.x-opcode-{_op:#x}-payload", F(_op, b"reserved"), Fail(1002)))
CASES += [
    Case("4.1.3-echo-then-opcode-5-then-ping", Send(text("ok")), echo("ok"),
         Send(F(5, b"x"), ping()), Fail(1002)),
    Case("4.2.3-echo-then-opcode-0xb-then-ping", Send(binary(b"ok")), echo(b"ok"),
         Send(F(0xB, b"x"), ping()), Fail(1002)),
    msg("4.x-opcode-3-not-fin", F(3, b"x", fin=False), Fail(1002)),
    msg("4.x-reserved-opcode-inside-fragmented-message",
        [text("a", fin=False), F(0xC, b"")], Fail(1002)),
]

# 5: fragmentation.
CASES += [
    msg("5.1-fragmented-ping", [ping("a", fin=False), cont("b")], Fail(1002)),
    msg("5.2-fragmented-pong", [pong("a", fin=False), cont("b")], Fail(1002)),
    msg("5.x-fragmented-close", [close(1000, fin=False), cont("")], Fail(1002)),
    msg("5.3-text-2-fragments", fragments(OP_TEXT, ["frag", "ment"]), echo("fragment")),
    Case("5.4-text-2-fragments-chopped-1",
         Send(fragments(OP_TEXT, ["frag", "ment"]), chunk=1), echo("fragment")),
    Case("5.5-text-2-fragments-separate-writes",
         Send(text("frag", fin=False)), Send(cont("ment")), echo("fragment")),
    msg("5.6-text-2-fragments-ping-between",
        [text("frag", fin=False), ping("between"), cont("ment")],
        pong_of("between"), echo("fragment")),
    Case("5.7-text-2-fragments-ping-between-chopped-1",
         Send(text("frag", fin=False), ping("between"), cont("ment"), chunk=1),
         pong_of("between"), echo("fragment")),
    Case("5.8-text-2-fragments-ping-between-separate-writes",
         Send(text("frag", fin=False)), Send(ping("between")), pong_of("between"),
         Send(cont("ment")), echo("fragment")),
    msg("5.9-continuation-without-start-fin", cont("x"), Fail(1002)),
    msg("5.10-continuation-without-start-not-fin", cont("x", fin=False), Fail(1002)),
    Case("5.11-continuation-without-start-chopped-1", Send(cont("abc"), chunk=1),
         Fail(1002)),
    msg("5.12-empty-continuation-without-start", cont(""), Fail(1002)),
    msg("5.12-continuation-without-start-after-message",
        [text("one"), cont("two")], maybe_echo("one"), Fail(1002)),
    Case("5.15-message-then-continuation-without-start",
         Send(fragments(OP_TEXT, ["fragment1", "fragment2"])),
         echo("fragment1fragment2"),
         Send(cont("fragment3", fin=False), cont("fragment4")), Fail(1002)),
    msg("5.16-text-before-previous-ended", [text("a", fin=False), text("b")],
        Fail(1002)),
    msg("5.17-binary-before-text-ended", [text("a", fin=False), binary(b"b")],
        Fail(1002)),
    msg("5.17-text-not-fin-before-binary-ended",
        [binary(b"a", fin=False), text("b", fin=False)], Fail(1002)),
    msg("5.18-new-message-after-ping-inside-message",
        [text("a", fin=False), ping("p"), text("b")], pong_of("p"), Fail(1002)),
    msg("5.19-text-5-fragments-pings-between",
        [text("f1", fin=False), cont("f2", fin=False), ping("p1"),
         cont("f3", fin=False), ping("p2"), ping("p3"), cont("f4", fin=False),
         cont("f5")],
        pong_of("p1"), pong_of("p2"), pong_of("p3"), echo("f1f2f3f4f5")),
    Case("5.20-text-5-fragments-pings-between-separate-writes",
         Send(text("f1", fin=False)), Send(cont("f2", fin=False)), Send(ping("p1")),
         pong_of("p1"), Send(cont("f3", fin=False)), Send(ping("p2")), pong_of("p2"),
         Send(cont("f4", fin=False), cont("f5")), echo("f1f2f3f4f5")),
    msg("5.x-binary-fragments-with-empty-ones",
        fragments(OP_BINARY, [b"", b"ab", b"", b"cd", b""]), echo(b"abcd")),
    msg("5.x-text-all-fragments-empty", fragments(OP_TEXT, ["", "", ""]), echo("")),
    msg("5.x-binary-100-one-byte-fragments",
        fragments(OP_BINARY, [bytes([i]) for i in range(100)]),
        echo(bytes(range(100)))),
    msg("5.x-binary-large-fragments-16-and-64-bit-forms",
        fragments(OP_BINARY, [blob(125), blob(70000), blob(65535), blob(1)]),
        echo(blob(125) + blob(70000) + blob(65535) + blob(1))),
    Case("5.x-binary-large-fragments-chopped-4093",
         Send(fragments(OP_BINARY, [blob(70000), blob(300)]), chunk=4093),
         echo(blob(70000) + blob(300))),
    msg("5.x-unsolicited-pong-between-fragments",
        [binary(b"a", fin=False), pong(b"?"), cont(b"b")], echo(b"ab")),
]

# 6: UTF-8.
_VALID = [
    ("6.1-empty", ""),
    ("6.2-kosme", _KOSME),
    ("6.2-mixed", "Hello-µ@ßöäüàá-UTF-8!!"),
    ("6.3-4-byte-g-clef", "\U0001d11e"),
    ("6.3-max-code-point", "\U0010ffff"),
    ("6.3-boundaries", "\x00\x7f\x80\u07ff\u0800\ud7ff\ue000\ufffd\uffff\U00010000"),
    ("6.3-bom-and-nonchars", "\ufeff\ufffe\U0001fffe"),
]
for _cid, _s in _VALID:
    CASES.append(msg(f"{_cid}-single-frame", text(_s), echo(_s)))
for _s, _name in ((_KOSME, "kosme"), ("a\U0001d11e\u00e9\u2713z\U0010ffff", "4-byte")):
    _b = _s.encode()
    CASES.append(msg(f"6.4-{_name}-one-byte-fragments",
                     fragments(OP_TEXT, [_b[i:i + 1] for i in range(len(_b))]),
                     echo(_s)))
    CASES.append(Case(f"6.4-{_name}-single-frame-chopped-1",
                      Send(text(_s), chunk=1), echo(_s)))
_CLEF = "\U0001d11e".encode()  # f0 9d 84 9e
for _i in (1, 2, 3):
    CASES.append(msg(f"6.4-4-byte-split-after-byte-{_i}",
                     fragments(OP_TEXT, [b"<" + _CLEF[:_i], _CLEF[_i:] + b">"]),
                     echo("<\U0001d11e>")))
CASES.append(msg("6.4-4-byte-split-over-3-fragments-ping-between",
                 [text(_CLEF[:1], fin=False), cont(_CLEF[1:3], fin=False), ping("p"),
                  cont(_CLEF[3:])], pong_of("p"), echo("\U0001d11e")))
_INVALID = [
    ("6.3-surrogate-in-kosme", b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
                               b"\xed\xa0\x80edited"),
    ("6.6-truncated-2-byte", b"\xce"),
    ("6.6-kosme-truncated", b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce"),
    ("6.8-above-10ffff", b"\xf4\x90\x80\x80"),
    ("6.8-5-byte-form", b"\xf8\x88\x80\x80\x80"),
    ("6.9-overlong-slash-2", b"\xc0\xaf"),
    ("6.9-overlong-slash-3", b"\xe0\x80\xaf"),
    ("6.9-overlong-slash-4", b"\xf0\x80\x80\xaf"),
    ("6.10-lone-continuation", b"\x80"),
    ("6.11-byte-fe", b"\xfe"),
    ("6.11-byte-ff", b"\xff"),
    ("6.12-high-surrogate", b"\xed\xa0\x80"),
    ("6.12-low-surrogate", b"\xed\xbf\xbf"),
    ("6.13-truncated-4-byte", b"\xf0\x9d\x84"),
    ("6.x-invalid-in-middle", b"hello\xc0world"),
]
for _cid, _b in _INVALID:
    CASES.append(msg(f"{_cid}-single-frame", text(_b), Fail(1007)))
CASES += [
    msg("6.x-invalid-in-large-single-frame", text(b"a" * 70000 + b"\xff"), Fail(1007)),
    msg("6.x-invalid-after-valid-message", [text("ok"), text(b"\xff")],
        maybe_echo("ok"), Fail(1007)),
    msg("6.5-invalid-in-later-fragment",
        [text("hello", fin=False), cont(b"\xff", fin=False), cont("world")],
        Fail(1007)),
    msg("6.5-invalid-in-last-fragment",
        [text("hello", fin=False), cont(b"\xed\xa0\x80")],
        Fail(1007)),
    msg("6.5-overlong-split-across-fragments",
        [text(b"\xe0", fin=False), cont(b"\x80\xaf")], Fail(1007)),
    msg("6.5-sequence-unfinished-at-message-end",
        [text(b"\xf0\x9d", fin=False), cont(b"\x84")], Fail(1007)),
    msg("6.5-sequence-unfinished-then-empty-final-fragment",
        [text(b"\xce", fin=False), cont(b"")], Fail(1007)),
    # Fail fast: the rest of the message is never sent.
    msg("6.6-fail-fast-invalid-first-fragment", text(b"\xce\xba\xff", fin=False),
        Fail(1007)),
    msg("6.6-fail-fast-invalid-start-of-long-first-fragment",
        text(b"\xff" + b"a" * 70000, fin=False), Fail(1007)),
    msg("6.6-fail-fast-invalid-second-fragment-then-nothing",
        [text("valid", fin=False), cont(b"\xc0\xaf", fin=False)], Fail(1007)),
    msg("6.6-fail-fast-mid-frame-of-fragment",
        text(b"\xce\xba\xff", fin=False, length=65536), Fail(1007)),
    msg("6.6-fail-fast-mid-single-frame",
        text(b"\xce\xba\xff", length=65536), Fail(1007), timeout=1.5,),
]

# 7: close handling.
CASES += [
    Case("7.1.1-echo-then-close", Send(text("Hello")), echo("Hello"),
         Send(close(1000)), CloseEcho(1000)),
    msg("7.1.2-close-twice", [close(1000), close(1000)], CloseEcho(1000)),
    msg("7.1.3-ping-after-close-ignored", [close(1000), ping("late")], CloseEcho(1000)),
    msg("7.1.4-text-after-close-ignored", [close(1000), text("late")], CloseEcho(1000)),
    msg("7.1.4-fragments-after-close-ignored",
        [close(1000), text("a", fin=False), cont("b")], CloseEcho(1000)),
    msg("7.1.4-invalid-frame-after-close-ignored", [close(1000), F(5, b"x")],
        CloseEcho(1000)),
    msg("7.1.5-close-inside-fragmented-message",
        [text("frag", fin=False), close(1000)], CloseEcho(1000)),
    msg("7.1.6-close-after-large-message",
        [binary(blob(300000)), close(1000)], maybe_echo(blob(300000)), CloseEcho(1000)),
    msg("7.3.1-close-empty-payload", close(), CloseEcho(None)),
    msg("7.3.2-close-1-byte-payload", F(OP_CLOSE, b"\x03"), Fail(1002)),
    msg("7.3.3-close-1000-no-reason", close(1000), CloseEcho(1000)),
    msg("7.3.4-close-1000-reason", close(1000, "Hello World!"), CloseEcho(1000)),
    msg("7.3.5-close-123-byte-reason", close(1000, "*" * 123), CloseEcho(1000)),
    msg("7.3.6-close-124-byte-reason", close(1000, "*" * 124), Fail(1002)),
    msg("7.5.1-close-invalid-utf8-reason", close(1000, _INVALID[0][1]), Fail(1007)),
    msg("7.5.x-close-truncated-utf8-reason", close(1001, b"ok\xce"), Fail(1007)),
    msg("7.x-close-2-byte-payload-16bit-form", close(1000, form=16), Fail(1002)),
]
# Autobahn's lists (1012-1014, registered after RFC 6455, are in neither).
for _code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000,
              4999):
    CASES.append(msg(f"7.7-close-code-{_code}", close(_code, "bye"), CloseEcho(_code)))
for _code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
    CASES.append(msg(f"7.9-close-invalid-code-{_code}", close(_code), Fail(1002)))

# Masking: each role insists on the RFC 6455 5.1 rule.
CASES += [
    msg("1.5-unmasked-text-from-client", text("hi", mask=False), Fail(1002),
        roles=("server",)),
    msg("1.5-unmasked-ping-from-client", ping("hi", mask=False), Fail(1002),
        roles=("server",)),
    msg("1.5-unmasked-close-from-client", close(1000, mask=False), Fail(1002),
        roles=("server",)),
    msg("1.5-unmasked-continuation-from-client",
        [text("a", fin=False), cont("b", mask=False)], Fail(1002), roles=("server",)),
    msg("1.5-masked-text-from-server", text("hi", mask=True), Fail(1002),
        roles=("client",)),
    msg("1.5-masked-large-binary-from-server", binary(blob(70000), mask=True),
        Fail(1002), roles=("client",)),
    msg("1.5-masked-ping-from-server", ping("hi", mask=True), Fail(1002),
        roles=("client",)),
    msg("1.5-masked-close-from-server", close(1000, mask=True), Fail(1002),
        roles=("client",)),
]

# 9: larger payloads (modest sizes) and many messages.
CASES += [
    msg("9.1-text-4MiB", text("é" * (2 << 20)), echo("é" * (2 << 20))),
    msg("9.2-binary-4MiB", binary(blob(4 << 20)), echo(blob(4 << 20))),
    Case("9.2-binary-1MiB-chopped-65536", Send(binary(blob(1 << 20)), chunk=65536),
         echo(blob(1 << 20))),
    msg("9.3-text-1MiB-in-64-fragments",
        fragments(OP_TEXT, ["y" * 16384] * 64), echo("y" * (1 << 20))),
    msg("9.7-500-small-text-messages-one-write", [text(f"m{i}") for i in range(500)],
        *[echo(f"m{i}") for i in range(500)]),
    msg("9.8-200-small-binary-messages-one-write",
        [binary(blob(i)) for i in range(200)], *[echo(blob(i)) for i in range(200)]),
]

# 12/13: permessage-deflate (only on connections that negotiated it).
_Z = {"deflate": (True,)}



def _zsplice(frames: List[F], at: int, control: F) -> List[F]:
    assert 0 < at < len(frames), "the control frame must go between fragments"
    return frames[:at] + [control] + frames[at:]


_ZTEXT = "Hello, compressed world! " * 40
CASES += [
    msg("12.1-compressed-text-16", ztext("sixteen bytes!!!"), echo("sixteen bytes!!!"),
        **_Z),
    msg("12.1-compressed-text-1000", ztext(_ZTEXT), echo(_ZTEXT), **_Z),
    msg("12.1-compressed-binary-65536", zbinary(blob(65536)), echo(blob(65536)), **_Z),
    msg("12.1-compressed-binary-1MiB", zbinary(blob(1 << 20)), echo(blob(1 << 20)),
        **_Z),
    msg("12.1-compressed-text-utf8", ztext(_KOSME * 100), echo(_KOSME * 100), **_Z),
    msg("12.2-compressed-empty-message", F(OP_TEXT, deflate(b""), rsv=RSV1), echo(""),
        **_Z),
    msg("12.2-compressed-empty-payload", F(OP_BINARY, b"", rsv=RSV1), echo(b""), **_Z),
    Case("12.3-compressed-chopped-1", Send(ztext(_ZTEXT), chunk=1), echo(_ZTEXT), **_Z),
    msg("12.4-compressed-in-3-fragments", zfragments(OP_TEXT, _ZTEXT.encode(), 3),
        echo(_ZTEXT), **_Z),
    msg("12.4-compressed-binary-in-5-fragments-with-ping",
        _zsplice(zfragments(OP_BINARY, blob(70000), 5), 2, ping("z")),
        pong_of("z"), echo(blob(70000)), **_Z),
    msg("12.4-compressed-text-in-3-fragments-with-pong",
        _zsplice(zfragments(OP_TEXT, _ZTEXT.encode(), 3), 1, pong("unsolicited")),
        echo(_ZTEXT), **_Z),
    msg("12.4-plain-fragments-with-ping-on-deflate-connection",
        [text("ab", fin=False), ping("q"), cont("cd")], pong_of("q"), echo("abcd"),
        **_Z),
    msg("12.5-compressed-and-plain-messages-mixed",
        [ztext("one"), text("two"), zbinary(b"three"), binary(b"four")],
        echo("one"), echo("two"), echo(b"three"), echo(b"four"), **_Z),
    msg("12.6-no-context-takeover-20-messages",
        [ztext(f"msg {i} " * 20) for i in range(20)],
        *[echo(f"msg {i} " * 20) for i in range(20)], **_Z),
    msg("13.1-rsv1-on-continuation", [ztext("abc", fin=False), cont("def", rsv=RSV1)],
        Fail(1002), **_Z),
    msg("13.1-rsv1-on-continuation-of-plain-message",
        [text("abc", fin=False), cont(deflate(b"def"), rsv=RSV1)], Fail(1002), **_Z),
    msg("13.2-rsv1-on-ping", ping("x", rsv=RSV1), Fail(1002), **_Z),
    msg("13.2-rsv1-on-pong", pong("x", rsv=RSV1), Fail(1002), **_Z),
    msg("13.2-rsv1-on-close", close(1000, rsv=RSV1), Fail(1002), **_Z),
    msg("13.3-rsv2-with-deflate", text("x", rsv=RSV1 | RSV2), Fail(1002), **_Z),
    msg("13.4-compressed-invalid-utf8", F(OP_TEXT, deflate(b"ok\xff"), rsv=RSV1),
        Fail(1007), **_Z),
    msg("13.4-compressed-invalid-utf8-split-fragments",
        zfragments(OP_TEXT, b"abc" * 100 + b"\xed\xa0\x80", 3), Fail(1007), **_Z),
    msg("13.5-corrupt-deflate-data", F(OP_BINARY, b"\xff\xff\xff\xff", rsv=RSV1),
        Fail(1007), **_Z),
    msg("13.6-new-message-inside-compressed-one",
        [ztext("abc", fin=False), ztext("def")], Fail(1002), **_Z),
    msg("13.6-new-plain-message-inside-compressed-one",
        [ztext("abc", fin=False), text("def")], Fail(1002), **_Z),
    msg("13.6-new-compressed-message-inside-plain-one",
        [text("abc", fin=False), ztext("def")], Fail(1002), **_Z),
]

# 10: max_message_size (limits_app.py / Client(max_message_size=LIMIT)) -> 1009.
_L = {"limits": True}
CASES += [
    msg("10.1-binary-at-limit", binary(blob(LIMIT)), echo(blob(LIMIT)), **_L),
    msg("10.1-text-at-limit", text("t" * LIMIT), echo("t" * LIMIT), **_L),
    msg("10.2-binary-over-limit-single-frame", binary(blob(LIMIT + 1)), Fail(1009),
        **_L),
    msg("10.2-text-over-limit-single-frame", text("t" * (LIMIT + 1)), Fail(1009), **_L),
    # The frame announces 1 GiB; only LIMIT + 1 bytes ever come.
    msg("10.3-1GiB-announced-fails-before-buffering",
        binary(blob(LIMIT + 1), length=1 << 30), Fail(1009), **_L),
    msg("10.4-fragments-at-limit",
        fragments(OP_BINARY, [blob(LIMIT // 2), blob(LIMIT // 2)]),
        echo(blob(LIMIT // 2) * 2), **_L),
    msg("10.4-fragments-over-limit",
        fragments(OP_TEXT, ["a" * (LIMIT // 2), "b" * (LIMIT // 2), "c"]), Fail(1009),
        **_L),
    msg("10.4-fragments-over-limit-before-message-ends",
        [binary(blob(LIMIT), fin=False), cont(b"x", fin=False)], Fail(1009), **_L),
    msg("10.4-many-small-fragments-over-limit",
        [binary(blob(1024), fin=False)] + [cont(blob(1024), fin=False)] * 15
        + [cont(b"!", fin=False)], Fail(1009), **_L),
    # max_message_size counts bytes (as the fast path and the inflater do).
    msg("10.7-multibyte-text-over-limit-in-bytes", text("é" * (LIMIT // 2 + 1)),
        Fail(1009), **_L),
    msg("10.7-4-byte-text-fragments-over-limit-in-bytes",
        fragments(OP_TEXT, ["\U0001d11e" * (LIMIT // 8 + 1)] * 2), Fail(1009), **_L),
    msg("10.7-compressed-multibyte-text-over-limit-in-bytes",
        ztext("é" * (LIMIT // 2 + 1)), Fail(1009), deflate=(True,), **_L),
    msg("10.7-multibyte-text-at-limit-in-bytes", text("é" * (LIMIT // 2)),
        echo("é" * (LIMIT // 2)), **_L),
    msg("10.5-compressed-at-limit", zbinary(bytes(LIMIT)), echo(bytes(LIMIT)),
        deflate=(True,), **_L),
    msg("10.5-compressed-over-limit-by-1", zbinary(bytes(LIMIT + 1)), Fail(1009),
        deflate=(True,), **_L),
    msg("10.6-compression-bomb-1MiB", zbinary(bytes(1 << 20)), Fail(1009),
        deflate=(True,), **_L),
    msg("10.6-compression-bomb-16MiB-text", ztext(" " * (16 << 20)), Fail(1009),
        deflate=(True,), **_L),
    msg("10.6-compression-bomb-fragmented",
        zfragments(OP_BINARY, bytes(4 << 20), 4), Fail(1009), deflate=(True,), **_L),
]


def _params(cases: List[Case]) -> List[Any]:
    out = []
    for case in cases:
        for role in case.roles:
            for use_deflate in case.deflate:
                marks = []
                reason = (case.xfail.get((role, use_deflate)) or case.xfail.get(role)
                          or case.xfail.get("*"))
                if reason:
                    marks.append(pytest.mark.xfail(reason=reason, strict=True))
                out.append(pytest.param(
                    case, role, use_deflate, marks=marks,
                    id=f"{case.cid}-{role}-{'deflate' if use_deflate else 'plain'}",
                ))
    return out


_ids = [c.cid for c in CASES]
assert len(_ids) == len(set(_ids)), "duplicate case ids"


# -- fixtures ---------------------------------------------------------------------


def limits_hosted(kind: str) -> HostedServer:
    """``kind`` serving tests/apps/limits_app.py with max_message_size=LIMIT."""
    return HostedServer(kind, {"GREENWS_TEST_LIMIT": str(LIMIT)}, module="limits_app")


@pytest.fixture(scope="module")
def echo_server():
    hosted = HostedServer("gevent")
    yield hosted
    hosted.stop_and_check()


@pytest.fixture(scope="module")
def limits_server():
    hosted = limits_hosted("gevent")
    yield hosted
    hosted.stop_and_check()


@pytest.fixture
def connect(request):
    """``connect(role, deflate, limits=False)`` -> ServerRole or ClientRole."""
    made: List[Any] = []

    def factory(role: str, use_deflate: bool, limits: bool = False,
                server: Optional[HostedServer] = None,
                case: Optional[Case] = None) -> Any:
        early = b""
        if case is not None and case.with_handshake:
            first = case.steps[0]
            assert isinstance(first, Send)
            early = b"".join(f.build(role == "server") for f in first.frames)
        if role == "server":
            if server is None:
                server = request.getfixturevalue(
                    "limits_server" if limits else "echo_server")
            conn: Any = ServerRole(server.port, use_deflate, trailing=early)
        else:
            conn = ClientRole(use_deflate, LIMIT if limits else None, early)
        made.append(conn)
        return conn

    yield factory
    for conn in made:
        conn.cleanup()


# -- tests ------------------------------------------------------------------------


def _group(prefixes: Tuple[str, ...]) -> List[Any]:
    return _params([c for c in CASES if c.cid.split("-")[0].startswith(prefixes)])


@pytest.mark.parametrize("case, role, use_deflate", _group(("1.",)))
def test_1_framing(connect, case, role, use_deflate):
    run(connect(role, use_deflate, case.limits, case=case), case)


@pytest.mark.parametrize("case, role, use_deflate", _group(("2.",)))
def test_2_pings_and_pongs(connect, case, role, use_deflate):
    run(connect(role, use_deflate, case.limits, case=case), case)


@pytest.mark.parametrize("case, role, use_deflate", _group(("3.",)))
def test_3_reserved_bits(connect, case, role, use_deflate):
    run(connect(role, use_deflate, case.limits, case=case), case)


@pytest.mark.parametrize("case, role, use_deflate", _group(("4.",)))
def test_4_opcodes(connect, case, role, use_deflate):
    run(connect(role, use_deflate, case.limits, case=case), case)


@pytest.mark.parametrize("case, role, use_deflate", _group(("5.",)))
def test_5_fragmentation(connect, case, role, use_deflate):
    run(connect(role, use_deflate, case.limits, case=case), case)


@pytest.mark.parametrize("case, role, use_deflate", _group(("6.",)))
def test_6_utf8(connect, case, role, use_deflate):
    run(connect(role, use_deflate, case.limits, case=case), case)


@pytest.mark.parametrize("case, role, use_deflate", _group(("7.",)))
def test_7_close_handling(connect, case, role, use_deflate):
    run(connect(role, use_deflate, case.limits, case=case), case)


@pytest.mark.parametrize("case, role, use_deflate", _group(("9.",)))
def test_9_large_payloads(connect, case, role, use_deflate):
    run(connect(role, use_deflate, case.limits, case=case), case)


@pytest.mark.parametrize("case, role, use_deflate", _group(("10.",)))
def test_10_limits(connect, case, role, use_deflate):
    run(connect(role, use_deflate, case.limits, case=case), case)


@pytest.mark.parametrize("case, role, use_deflate", _group(("12.", "13.")))
def test_12_13_compression(connect, case, role, use_deflate):
    run(connect(role, use_deflate, case.limits, case=case), case)


# A representative subset on every hosting server.
_EVERY_SERVER = {
    "1.2-binary-len-65536", "1.3-fast-wsproto-fast-one-write",
    "1.4-nonminimal-16bit-len-5", "1.6-handshake-plus-fragments-and-ping",
    "2.4-ping-125", "3.1-text-rsv2", "4.x-opcode-0xb-payload",
    "5.6-text-2-fragments-ping-between", "5.9-continuation-without-start-fin",
    "6.5-invalid-in-later-fragment", "6.6-fail-fast-invalid-first-fragment",
    "7.1.4-text-after-close-ignored", "7.3.1-close-empty-payload",
    "7.7-close-code-4999", "7.5.1-close-invalid-utf8-reason",
    "7.9-close-invalid-code-1005", "1.5-unmasked-text-from-client",
    "12.4-compressed-in-3-fragments", "13.1-rsv1-on-continuation",
}


@pytest.fixture(scope="module", params=KINDS)
def hosted(request):
    kind = request.param
    if kind == "gunicorn-eventlet" and not gunicorn_has_worker("eventlet"):
        pytest.skip("this gunicorn has no eventlet worker (removed in gunicorn 27)")
    server = HostedServer(kind)
    yield server
    server.stop_and_check()


@pytest.mark.parametrize(
    "case, role, use_deflate",
    [p for p in _params([c for c in CASES if c.cid in _EVERY_SERVER])
     if p.values[1] == "server"],
)
def test_every_server(hosted, connect, case, role, use_deflate):
    run(connect(role, use_deflate, server=hosted, case=case), case)


def test_every_server_subset_exists():
    assert {c.cid for c in CASES} >= _EVERY_SERVER


@pytest.mark.parametrize("kind", ["werkzeug", "gunicorn-gevent"])
def test_limits_on_other_servers(connect, kind):
    """1009 (single frame, fragments, compression bomb) on two more servers."""
    server = limits_hosted(kind)
    try:
        for cid, use_deflate in (("10.2-binary-over-limit-single-frame", False),
                                 ("10.4-fragments-over-limit", False),
                                 ("10.6-compression-bomb-1MiB", True),
                                 ("10.1-binary-at-limit", True)):
            case = next(c for c in CASES if c.cid == cid)
            run(connect("server", use_deflate, server=server, case=case), case)
    finally:
        server.stop_and_check()


@pytest.mark.parametrize("use_deflate", [False, True], ids=["plain", "deflate"])
def test_client_frame_pipelined_with_101(use_deflate):
    """A frame in the same packet as the server's 101 is delivered at once."""
    frame = text("early").build(False) + ping("p").build(False)
    server = RawServer(use_deflate, after_101=frame)
    ws = greenws.Client.connect(
        f"ws://127.0.0.1:{server.port}/", preset=presets.THREADING,
        compression=use_deflate, close_timeout=1.0, open_timeout=TIMEOUT,
    )
    peer = Peer(server.connection(), is_client=False)
    try:
        assert ws.receive(timeout=TIMEOUT) == "early"
        assert peer.read_message() == ("pong", b"p")
    finally:
        peer.close()
        ws.close()
        server.close()


def test_client_offers_deflate_and_masks_with_fresh_keys():
    """The client's handshake and frames, byte for byte where the RFC says."""
    server = RawServer(False)
    ws = greenws.Client.connect(
        f"ws://127.0.0.1:{server.port}/x", preset=presets.THREADING,
        close_timeout=1.0, open_timeout=TIMEOUT,
    )
    try:
        sock = server.connection()
        request = server.request.decode("latin-1").lower()
        assert "sec-websocket-extensions: permessage-deflate" in request
        assert "sec-websocket-version: 13" in request
        ws.send(b"\x00" * 8)
        ws.send(b"\x00" * 8)
        sock.settimeout(TIMEOUT)
        data = b""
        while len(data) < 28:
            data += sock.recv(64)
        first, second = data[:14], data[14:28]
        # FIN|binary, MASK|8, then key: a zero payload shows the key itself.
        assert first[:2] == second[:2] == b"\x82\x88"
        assert first[2:6] == first[6:10] == first[10:14]  # masked zeros = key
        assert first[2:6] != second[2:6], "masking keys must not repeat"
    finally:
        ws.close_timeout = 0.5
        ws.close()
        server.close()


# 7.2: closing handshakes that greenws starts.


def test_7_2_server_initiated_close(echo_server):
    """greenws sends Close first, ignores data after it, closes TCP on our Close."""
    conn = ServerRole(echo_server.port, False, path="/close?code=4001&reason=bye")
    try:
        peer = conn.peer
        peer.send(text("trigger").build(True))
        assert peer.read_message() == ("close", 4001, "bye")
        # Data frames after its Close are ignored; our Close completes it.
        peer.send(text("too late").build(True) + close(4001).build(True))
        assert peer.read_eof() == b"", "greenws sent data after its Close"
    finally:
        conn.cleanup()


@pytest.mark.parametrize("use_deflate", [False, True], ids=["plain", "deflate"])
def test_7_2_client_initiated_close(use_deflate):
    """Client.close(): Close with the code, waits for ours, ends on our TCP close."""
    conn = ClientRole(use_deflate)
    try:
        assert conn.connected.wait(TIMEOUT)
        closer = threading.Thread(target=conn.ws.close, args=(4002, "done"),
                                  daemon=True)
        closer.start()
        assert conn.peer.read_message() == ("close", 4002, "done")
        conn.peer.send(text("too late").build(False) + close(4002).build(False))
        conn.peer.sock.shutdown(socket.SHUT_WR)
        assert conn.peer.read_eof() == b"", "greenws sent data after its Close"
        closer.join(TIMEOUT)
        assert not closer.is_alive(), "Client.close() did not return"
        assert conn.ws.close_reason == 4002
        assert conn._ended().reason == 4002
    finally:
        conn.cleanup()
