"""The fixed, minimal-overhead WebSocket client that drives every server.

Everything that can be computed ahead is computed once: the upgrade request is
a constant, frames are masked once with a constant key and reused, and the
frame parser handles only what an echo server sends back.  The cost per
message on the client side is therefore a ``sendall`` and a few ``recv``
calls, so differences between runs are the server's.

The same helpers (:func:`upgrade_request`, :func:`parse_response`,
:func:`parse_frame`) are used by the many-connections driver in
:mod:`bench.many`.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import zlib
from typing import Optional, Tuple

#: Fixed Sec-WebSocket-Key (any 16 bytes, base64) and the accept value it needs.
KEY = base64.b64encode(b"greenws-bench-16").decode()


def accept_for(key: str) -> str:
    """The Sec-WebSocket-Accept value that answers ``key``."""
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
    return base64.b64encode(digest.digest()).decode()


ACCEPT = accept_for(KEY)
#: Fixed masking key: masking is the client's job, but it need only be done once.
MASK = b"\x5a\x3c\x96\xe1"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"


class BenchError(Exception):
    """A server misbehaved (bad handshake, bad frame, timeout, early close)."""


def upgrade_request(port: int, deflate: bool = False, path: str = "/") -> bytes:
    """The HTTP upgrade request, built once per target."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append(f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_response(head: bytes) -> Tuple[bool, bool]:
    """Check a handshake response; return (ok, deflate negotiated)."""
    text = head.decode("latin-1")
    status, _, rest = text.partition("\r\n")
    if " 101 " not in status + " ":
        return False, False
    ok = False
    deflate = False
    for line in rest.split("\r\n"):
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "sec-websocket-accept" and value.strip() == ACCEPT:
            ok = True
        elif name == "sec-websocket-extensions" and "permessage-deflate" in value:
            deflate = True
    return ok, deflate


def mask(payload: bytes, key: bytes = MASK) -> bytes:
    """XOR ``payload`` with ``key`` (done once per benchmark, big ints are fast)."""
    n = len(payload)
    if not n:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(
        n, "big"
    )


def frame(
    payload: bytes, opcode: int = OP_TEXT, rsv1: bool = False, masked: bool = True
) -> bytes:
    """A complete frame (FIN set): masked as a client sends, or as a server."""
    first = 0x80 | opcode | (0x40 if rsv1 else 0)
    bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if not masked:
        return head + payload
    return head + MASK + mask(payload)


def deflate_payload(payload: bytes) -> bytes:
    """Compress one message as permessage-deflate does (fresh context each time).

    A fresh compressor per message is valid whatever context-takeover
    parameters the server chose, and the 2**9 window fits any
    ``client_max_window_bits`` the server may impose.
    """
    comp = zlib.compressobj(6, zlib.DEFLATED, -9)
    data = comp.compress(payload) + comp.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(b"\x00\x00\xff\xff") else data


def parse_frame(
    buf: bytes | bytearray, start: int = 0
) -> Optional[Tuple[bool, int, bool, bytes, int]]:
    """Parse one frame at ``buf[start:]``.

    Returns ``(fin, opcode, rsv1, payload, end)`` or ``None`` if the frame is
    not complete yet.  Masked frames (which only a raw TCP echo sends back)
    are unmasked.
    """
    avail = len(buf) - start
    if avail < 2:
        return None
    b0, b1 = buf[start], buf[start + 1]
    n = b1 & 0x7F
    pos = start + 2
    if n == 126:
        if avail < 4:
            return None
        n = struct.unpack_from("!H", buf, pos)[0]
        pos += 2
    elif n == 127:
        if avail < 10:
            return None
        n = struct.unpack_from("!Q", buf, pos)[0]
        pos += 8
    key = None
    if b1 & 0x80:
        if len(buf) < pos + 4:
            return None
        key = bytes(buf[pos : pos + 4])
        pos += 4
    end = pos + n
    if len(buf) < end:
        return None
    with memoryview(buf) as view:  # one copy, and no view left to pin buf
        payload = bytes(view[pos:end])
    if key is not None:
        payload = mask(payload, key)
    return bool(b0 & 0x80), b0 & 0x0F, bool(b0 & 0x40), payload, end



def parse_message(
    buf: bytes | bytearray, start: int = 0
) -> Optional[Tuple[int, bytes, int]]:
    """Parse one whole data message at ``buf[start:]``, frames and all.

    Returns ``(opcode, payload, end)`` -- inflated if it was compressed --
    or ``None`` while incomplete.  Pings and pongs are skipped; a Close
    frame raises :class:`BenchError`.
    """
    parts = []
    opcode = 0
    compressed = False
    pos = start
    while True:
        got = parse_frame(buf, pos)
        if got is None:
            return None
        fin, op, rsv1, payload, pos = got
        if op in (OP_PING, OP_PONG):
            continue
        if op == OP_CLOSE:
            raise BenchError(f"server closed: {payload[:2].hex()} {payload[2:]!r}")
        if op != OP_CONT:
            opcode, compressed = op, rsv1
        parts.append(payload)
        if fin:
            break
    data = b"".join(parts)
    if compressed:
        data = zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff")
    return opcode, data, pos

class RawClient:
    """One WebSocket connection driven with a plain blocking socket."""

    def __init__(self, port: int, deflate: bool = False, timeout: float = 30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(upgrade_request(port, deflate))
        head = bytearray()
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise BenchError("server closed during the handshake")
            head += chunk
            if len(head) > 65536:
                raise BenchError("handshake response too long")
        end = head.index(b"\r\n\r\n") + 4
        ok, self.deflate = parse_response(bytes(head[:end]))
        if not ok:
            raise BenchError(f"handshake refused: {bytes(head[:end])[:200]!r}")
        self.buf = bytearray(head[end:])

    def read_message(self) -> Tuple[int, bytes]:
        """Read frames until a whole data message is in; (opcode, payload)."""
        while True:
            got = parse_message(self.buf)
            if got is not None:
                opcode, data, end = got
                del self.buf[:end]
                return opcode, data
            self._fill()

    def _fill(self) -> None:
        """Read more into the buffer: a big frame due is read straight into
        place, without a temporary object per read."""
        buf = self.buf
        start = len(buf)
        want = max(65536, self._wanted())
        buf.extend(bytes(want))
        got = 0
        with memoryview(buf) as view:
            while True:
                n = self.sock.recv_into(view[start + got:])
                if not n:
                    break
                got += n
                if want <= 65536 or got == want:
                    break
        del buf[start + got:]
        if not got:
            raise BenchError("server closed the connection")

    def _wanted(self) -> int:
        buf = self.buf
        if len(buf) >= 10 and buf[1] & 0x7F == 127:
            return struct.unpack_from("!Q", buf, 2)[0] + 10 - len(buf)
        return 0

    def recv_exact(self, n: int) -> None:
        """Read and drop exactly ``n`` bytes (for the raw TCP echo)."""
        have = min(n, len(self.buf))
        del self.buf[:have]
        n -= have
        view = memoryview(bytearray(min(n, 1 << 20) or 1))
        while n:
            got = self.sock.recv_into(view, min(n, len(view)))
            if not got:
                raise BenchError("server closed the connection")
            n -= got

    def close(self) -> None:
        """Send a Close frame and drop the socket without waiting."""
        try:
            self.sock.sendall(frame(struct.pack("!H", 1000), OP_CLOSE))
        except OSError:
            pass
        self.sock.close()


class RawTCP(RawClient):
    """A plain TCP connection to the raw echo (no handshake at all)."""

    def __init__(self, port: int, deflate: bool = False, timeout: float = 30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.deflate = False
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()
