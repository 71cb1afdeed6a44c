"""Many idle connections from one process, driven with epoll.

A thread or a blocking socket per connection would make the client the
bottleneck at 10,000 connections, so this is a single-threaded state
machine: non-blocking connects and handshakes with a bounded number in
flight (so the server's listen backlog never overflows), then a burst where
one small message is sent on every connection at once and the time until
every echo is back is measured.  With ``tls`` each connection does a TLS
handshake (non-blocking, no certificate check: the server is what is
measured) before the WebSocket one.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
import time
from typing import Dict, List, Optional

from .rawclient import (
    BenchError,
    deflate_payload,
    frame,
    parse_message,
    parse_response,
    upgrade_request,
)

#: Handshakes in flight at once.
IN_FLIGHT = 256
MESSAGE = b"x" * 32


class _Conn:
    __slots__ = ("sock", "buf", "state", "deflate", "started")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.state = "connecting"
        self.deflate = False
        self.started = time.monotonic()


class Many:
    """``n`` WebSocket connections to ``port``; close them with :meth:`close`."""

    def __init__(
        self, port: int, n: int, deflate: bool = False, tls: bool = False,
        path: str = "/",
    ) -> None:
        self.port = port
        self.context: Optional[ssl.SSLContext] = None
        if tls:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE
        self.n = n
        self.want_deflate = deflate
        self.request = upgrade_request(port, deflate, path)
        self.conns: List[_Conn] = []
        self.socks: List[socket.socket] = []  # every socket opened, to close
        self.ep = select.epoll()
        self.negotiated = 0

    def connect(self, timeout: float) -> None:
        """Open all ``n`` connections and complete every handshake."""
        deadline = time.monotonic() + timeout
        pending: Dict[int, _Conn] = {}
        started = 0
        done = 0
        ep = self.ep
        while done < self.n:
            while started < self.n and len(pending) < IN_FLIGHT:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self.socks.append(sock)
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                err = sock.connect_ex(("127.0.0.1", self.port))
                if err not in (0, errno.EINPROGRESS):
                    sock.close()
                    raise BenchError(f"connect failed: {errno.errorcode.get(err)}")
                conn = _Conn(sock)
                pending[sock.fileno()] = conn
                ep.register(sock.fileno(), select.EPOLLOUT)
                started += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(
                    f"handshakes timed out: {done} of {self.n} done, "
                    f"{len(pending)} pending"
                )
            for fd, _mask in ep.poll(min(left, 1.0)):
                conn = pending[fd]
                if conn.state == "connecting":
                    err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise BenchError(f"connect failed: {errno.errorcode.get(err)}")
                    if self.context is not None:
                        conn.sock = self.context.wrap_socket(
                            conn.sock, do_handshake_on_connect=False
                        )
                        self.socks.append(conn.sock)
                        conn.state = "tls"
                    else:
                        conn.state = "handshake"
                if conn.state == "tls":
                    try:
                        conn.sock.do_handshake()
                    except ssl.SSLWantReadError:
                        ep.modify(fd, select.EPOLLIN)
                        continue
                    except ssl.SSLWantWriteError:
                        ep.modify(fd, select.EPOLLOUT)
                        continue
                    conn.state = "handshake"
                if conn.state == "handshake":
                    conn.sock.send(self.request)  # small: always sent whole
                    conn.state = "response"
                    ep.modify(fd, select.EPOLLIN)
                    continue
                chunk = _recv(conn.sock)
                if chunk is None:
                    continue
                if not chunk:
                    raise BenchError(f"server closed during handshake {done + 1}")
                conn.buf += chunk
                end = conn.buf.find(b"\r\n\r\n")
                if end < 0:
                    continue
                ok, conn.deflate = parse_response(bytes(conn.buf[: end + 4]))
                if not ok:
                    raise BenchError(f"handshake refused: {bytes(conn.buf[:120])!r}")
                del conn.buf[: end + 4]
                self.negotiated += conn.deflate
                conn.state = "open"
                ep.unregister(fd)
                del pending[fd]
                self.conns.append(conn)
                done += 1

    def burst(self, timeout: float) -> float:
        """Send one message on every connection; seconds until all echoed."""
        plain = frame(MESSAGE)
        squeezed = frame(deflate_payload(MESSAGE), rsv1=True)
        by_fd = {c.sock.fileno(): c for c in self.conns}
        ep = self.ep
        for fd in by_fd:
            ep.register(fd, select.EPOLLIN)
        t0 = time.perf_counter()
        for conn in self.conns:
            conn.sock.send(squeezed if conn.deflate else plain)
        waiting = len(self.conns)
        deadline = time.monotonic() + timeout
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"burst timed out: {waiting} echoes missing")
            for fd, _mask in ep.poll(min(left, 1.0)):
                conn = by_fd[fd]
                chunk = _recv(conn.sock)
                if chunk is None:
                    continue
                if not chunk:
                    raise BenchError("server closed a connection during the burst")
                conn.buf += chunk
                if self._echoed(conn):
                    ep.unregister(fd)
                    waiting -= 1
        return time.perf_counter() - t0

    @staticmethod
    def _echoed(conn: _Conn) -> bool:
        """True once a whole echoed message is in ``conn.buf`` (and checked)."""
        got = parse_message(conn.buf)
        if got is None:
            return False
        _, data, end = got
        if data != MESSAGE:
            raise BenchError(f"wrong echo: {data[:40]!r}")
        del conn.buf[:end]
        return True

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.socks.clear()
        self.conns.clear()
        self.ep.close()


def _recv(sock: socket.socket) -> Optional[bytes]:
    """What is there to read (b"" at EOF), ``None`` if nothing yet.  A TLS
    socket may hold decrypted bytes epoll cannot see: those are taken too."""
    try:
        chunk = sock.recv(4096)
    except (BlockingIOError, ssl.SSLWantReadError):
        return None
    pending = getattr(sock, "pending", None)
    while chunk and pending is not None and pending():
        chunk += sock.recv(4096)
    return chunk


def wait_quiet(sample, settle: float = 0.3, timeout: float = 10.0) -> Optional[int]:
    """Poll ``sample()`` until it stops changing for ``settle`` seconds."""
    deadline = time.monotonic() + timeout
    last = sample()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = sample()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= settle:
            break
    return last
