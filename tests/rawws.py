"""A raw-socket WebSocket peer for tests that need to see or send exact bytes."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from typing import Optional, Tuple


def handshake_request(
    path: str = "/echo",
    host: str = "127.0.0.1",
    extra: str = "",
    key: Optional[str] = None,
    version: str = "13",
) -> bytes:
    key = key or base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: {version}\r\n{extra}\r\n"
    ).encode()


def frame(
    opcode: int, payload: bytes, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    """Encode one frame (masked, as a client must)."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    return frame(0x8, struct.pack("!H", code) + reason.encode())


class RawClient:
    """Connects, upgrades, then reads frames with bounded waits."""

    def __init__(
        self,
        port: int,
        path: str = "/echo",
        trailing: bytes = b"",
        extra: str = "",
        timeout: float = 10.0,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(handshake_request(path, extra=extra) + trailing)
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError(f"EOF during handshake: {self.buffer!r}")
            self.buffer += data
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.response_head = head.decode("latin-1")
        self.status = int(self.response_head.split()[1])

    def _need(self, n: int) -> bool:
        while len(self.buffer) < n:
            data = self.sock.recv(65536)
            if not data:
                return False
            self.buffer += data
        return True

    def read_frame(self) -> Optional[Tuple[int, bool, bytes]]:
        """(opcode, fin, payload), or None on EOF."""
        if not self._need(2):
            return None
        b0, b1 = self.buffer[0], self.buffer[1]
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            if not self._need(4):
                return None
            n = struct.unpack("!H", self.buffer[2:4])[0]
            pos = 4
        elif n == 127:
            if not self._need(10):
                return None
            n = struct.unpack("!Q", self.buffer[2:10])[0]
            pos = 10
        if b1 & 0x80:
            raise AssertionError("server sent a masked frame")
        if not self._need(pos + n):
            return None
        payload = self.buffer[pos : pos + n]
        self.buffer = self.buffer[pos + n :]
        return b0 & 0x0F, bool(b0 & 0x80), payload

    def read_until_eof(self, timeout: float = 10.0) -> bytes:
        """Everything left on the connection until the server closes it."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        data, self.buffer = self.buffer, b""
        while time.monotonic() < deadline:
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        raise TimeoutError("the server did not close the connection")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()
