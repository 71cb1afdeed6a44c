"""Helpers for the asyncio tests: running a test body, a plain asyncio server
that accepts with ``AioServer.accept(sock=...)``, and raw asyncio peers.

:func:`run` runs a test body in a fresh event loop and then checks that the
connection left nothing behind: every connection opened during the body has
ended, no task is left, and no timer is pending.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any, Awaitable, Callable, List, Optional

from conftest import accept_key, frame, raw_request

from greenws import AioServer
from greenws.aio.connection import AioBase

WAIT = 10.0  # bound of every wait, seconds

_opened: List[AioBase] = []
_real_open = AioBase._open


def _recording_open(self: AioBase, *args: Any) -> None:
    _opened.append(self)
    _real_open(self, *args)


def run(body: Callable[[], Awaitable[Any]], timeout: float = WAIT) -> Any:
    """Run ``body()`` in a new loop; fail if anything it opened lingers."""

    async def main() -> Any:
        AioBase._open = _recording_open  # type: ignore[method-assign]
        try:
            result = await asyncio.wait_for(body(), timeout)
            loop = asyncio.get_running_loop()
            # Let callbacks already scheduled (a transport's last close) run.
            for _ in range(3):
                await asyncio.sleep(0)
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert not left, f"tasks left behind: {left}"
            live = [c for c in _opened if not c._driver.done]
            assert not live, f"connections still open: {live}"
            timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
            assert not timers, f"timers left behind: {timers}"
            return result
        finally:
            AioBase._open = _real_open  # type: ignore[method-assign]
            _opened.clear()

    return asyncio.run(main())


async def read_request(loop: asyncio.AbstractEventLoop, sock: socket.socket):
    """Read an HTTP request head: (target, headers, bytes read past it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise ConnectionError("EOF before the request")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    target = lines[0].split(" ")[1]
    headers = [tuple(p.strip() for p in line.split(":", 1)) for line in lines[1:]]
    return target, headers, rest


class SockServer:
    """``async with SockServer(handler, **options) as server``: a plain
    asyncio server on ``server.port`` whose connections are accepted with
    ``AioServer.accept(sock=...)`` and handed to ``handler(ws)``.

    ``server.accepted`` lists the connections; ``server.errors`` what
    accepting or a handler raised (besides ConnectionClosed).
    """

    def __init__(self, handler: Callable[[AioServer], Awaitable[Any]],
                 server_class: type = AioServer, **options: Any) -> None:
        self.handler = handler
        self.server_class = server_class
        self.options = options
        self.accepted: List[AioServer] = []
        self.errors: List[BaseException] = []
        self.tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> SockServer:
        self.loop = asyncio.get_running_loop()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        self.acceptor = self.loop.create_task(self._accept_loop())
        return self

    async def _accept_loop(self) -> None:
        while True:
            sock, _ = await self.loop.sock_accept(self.listener)
            task = self.loop.create_task(self._serve(sock))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _serve(self, sock: socket.socket) -> None:
        from greenws import ConnectionClosed

        try:
            target, headers, rest = await read_request(self.loop, sock)
            ws = await self.server_class.accept(
                sock=sock, headers=headers, target=target, pending=rest,
                **self.options,
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
            sock.close()
            return
        self.accepted.append(ws)
        try:
            await self.handler(ws)
        except ConnectionClosed:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
        finally:
            await ws.close()

    async def first(self) -> AioServer:
        """The first accepted connection (waits for it)."""
        while not self.accepted:
            if self.errors:
                raise self.errors[0]
            await asyncio.sleep(0.005)
        return self.accepted[0]

    async def handlers_done(self, timeout: float = WAIT) -> None:
        """Wait until every connection's handler has returned."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)

    async def __aexit__(self, *exc: object) -> None:
        self.acceptor.cancel()
        await asyncio.gather(self.acceptor, return_exceptions=True)
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=WAIT)
        self.listener.close()


async def echo(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


class RawPeer:
    """A hand-driven WebSocket endpoint on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 is_client: bool) -> None:
        self.reader = reader
        self.writer = writer
        self.is_client = is_client

    @classmethod
    async def connect(cls, port: int, target: str = "/", extra_headers=(),
                      limit: int = 1 << 22, rcvbuf: int = 0) -> RawPeer:
        """A raw client: sends the upgrade request, reads the 101.

        ``limit`` bounds what its stream buffers; ``rcvbuf`` sets the
        socket's receive buffer (no kernel autotuning: loopback's may grow
        to tens of MiB, hiding any backpressure).
        """
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        request, _ = raw_request(port, target, extra_headers)
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer, is_client=True)

    def send_frame(self, opcode: int, payload: Any = b"", fin: bool = True,
                   rsv1: bool = False) -> None:
        self.writer.write(frame(opcode, payload, self.is_client, fin, rsv1))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_frame(self, timeout: float = WAIT):
        """(fin, opcode, payload) of the next frame."""
        async def read():
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            key = await self.reader.readexactly(4) if b1 & 0x80 else None
            payload = await self.reader.readexactly(n)
            if key is not None and n:
                k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
                payload = (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")
            return bool(b0 & 0x80), b0 & 0x0F, payload
        return await asyncio.wait_for(read(), timeout)

    async def read_close(self, timeout: float = WAIT):
        """(code, reason) of the next frame, which must be a Close."""
        _, opcode, payload = await self.read_frame(timeout)
        assert opcode == 8, (opcode, payload[:60])
        if not payload:
            return None, ""
        return struct.unpack("!H", payload[:2])[0], payload[2:].decode()

    async def read_eof(self, timeout: float = WAIT) -> bytes:
        """What comes until the other end closes TCP."""
        data = b""
        try:
            while True:
                chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not chunk:
                    return data
                data += chunk
        except ConnectionResetError:
            return data

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


class RawServer:
    """A one-shot raw server: answers the handshake, then is a RawPeer."""

    def __init__(self, extra_headers: str = "", after_101: bytes = b"") -> None:
        self.extra_headers = extra_headers
        self.after_101 = after_101
        self.peer: Optional[RawPeer] = None
        self.request = b""
        self.connected = asyncio.Event()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        return self

    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.request = head
        key = [line.split(b":", 1)[1].strip().decode()
               for line in head.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:")][0]
        writer.write((
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n"
            f"{self.extra_headers}\r\n"
        ).encode() + self.after_101)
        self.peer = RawPeer(reader, writer, is_client=False)
        self.connected.set()

    async def wait_peer(self) -> RawPeer:
        await asyncio.wait_for(self.connected.wait(), WAIT)
        assert self.peer is not None
        return self.peer

    async def __aexit__(self, *exc: object) -> None:
        if self.peer is not None:
            await self.peer.close()
        self.server.close()
        await self.server.wait_closed()
