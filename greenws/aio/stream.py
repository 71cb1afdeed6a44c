"""The frame driver: an asyncio Protocol between a transport and a Session.

The event loop calls :meth:`Stream.data_received` with what the socket
brought; the bytes go to the :class:`~greenws.session.Session`, whose
replies (pongs, Close frames) are written back at once and whose queue the
application drains with ``receive()``.  Nobody reads on the application's
behalf: the transport does, in the loop's own callbacks, so pings are
answered and closes seen while the application does something else, and an
idle connection costs no task.

Flow control both ways, through the transport's own switches:

- incoming: while the session's queue is full (``room()``), the transport
  stops reading, so TCP pushes back on the peer; ``receive()`` resumes it;
- outgoing: ``send()`` waits while the transport's write buffer is above its
  high-water mark (``pause_writing``/``resume_writing``), and frames are
  built right before they are written, so concurrent sends never interleave
  or reorder what compression has seen.  Replies the session asks for
  (pongs) are written even then, but reading pauses until the buffer drains:
  a peer that sends pings without reading cannot make the buffer grow.

Writes never wait inside a callback; every timer is cancelled when the
connection ends.
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterator, List, Optional, cast

from ..errors import ConnectionClosed
from ..log import logger
from ..protocol import INTERNAL_ERROR, Frame, Protocol, Wire
from ..session import Session
from .connection import AioBase, Data, Driver

__all__ = ["Stream"]


class Stream(asyncio.Protocol, Driver):
    """Drives one :class:`AioBase` over an asyncio transport."""

    __slots__ = (
        "conn",
        "session",
        "protocol",
        "transport",
        "loop",
        "done",
        "read_paused",
        "write_paused",
        "_drainers",
        "_timer",
        "_host",
    )

    def __init__(self, conn: AioBase, session: Session) -> None:
        self.conn = conn
        self.session = session
        self.protocol: Protocol = session.protocol
        self.transport: Any = None
        self.loop = asyncio.get_running_loop()
        self.done = False
        #: Reading is paused for want of room in the queue (or, see above,
        #: for a write buffer to drain).
        self.read_paused = False
        #: The transport asked us to stop writing (buffer above high water).
        self.write_paused = False
        # Futures of send() calls waiting for the write buffer to drain.
        self._drainers: List[asyncio.Future[None]] = []
        # Bounds the end: the closing handshake's last step, or a transport
        # close that cannot flush.
        self._timer: Optional[asyncio.TimerHandle] = None
        # aiohttp's protocol for this connection, told when it ends.
        self._host: Any = None

    def start(
        self, transport: Any, mode: str, pending: bytes = b"", host: Any = None
    ) -> None:
        """Take over ``transport`` once the handshake is done, and open the
        connection.  ``mode`` names the source in the log; ``pending`` are
        bytes that came behind the handshake; ``host`` is the protocol that
        had the transport before (aiohttp's), told when the connection ends.
        Call it from a loop callback or with no await since the transport
        was made, so that no data reaches another protocol meanwhile."""
        self.transport = transport
        self._host = host
        transport.set_protocol(self)
        conn = self.conn
        conn.local_address = transport.get_extra_info("sockname")
        conn.remote_address = transport.get_extra_info("peername")
        conn._open(self.session, self, mode)
        try:
            size = transport.get_write_buffer_size()
            self.write_paused = size > transport.get_write_buffer_limits()[1]
        except (AttributeError, NotImplementedError):  # pragma: no cover
            pass
        try:
            if not transport.is_reading():
                transport.resume_reading()
        except (AttributeError, NotImplementedError, RuntimeError):  # pragma: no cover
            pass
        # Bytes that came with the handshake are handled now, not when more
        # data happens to arrive.
        self.data_received(pending)

    # -- asyncio callbacks ---------------------------------------------------

    def data_received(self, data: bytes) -> None:
        session = self.session
        try:
            now = self.loop.time()
            replies = session.receive_data(data, now)
            if replies is not None:
                self._write_all(replies)
            if session.answered:
                self.conn._answered(session.answered, now)
            if not session.reading:
                self._reading_over()
            elif session.queue:
                self.conn._wake()
                if not session.room():
                    self._pause_reading()
            if replies is not None and self.write_paused and not self.read_paused:
                self._pause_reading()
        except Exception:  # noqa: BLE001 - a bug of ours: logged, 1011
            self._reader_failed()

    def eof_received(self) -> bool:
        """The peer will send nothing more (1006 unless closing)."""
        self.session.connection_lost()
        self.conn.connected = False
        self.conn._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self.done:
            return
        self.done = True
        self.session.connection_lost()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for waiter in self._drainers:
            if not waiter.done():
                waiter.set_result(None)
        self.conn._ended()
        host, self._host = self._host, None
        if host is not None:
            try:
                host.connection_lost(exc)
            except Exception:  # noqa: BLE001 - aiohttp's own cleanup
                logger.exception("aiohttp failed to forget a WebSocket connection")

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for waiter in self._drainers:
            if not waiter.done():
                waiter.set_result(None)
        if self.read_paused and not self.done and self.session.room():
            self._resume()

    # -- Driver -------------------------------------------------------------

    def try_send(self, message: Data, text: Optional[bool] = None) -> bool:
        if self.write_paused or self.session.closing or self.done:
            return False
        self._write(self.protocol.send_message(message, text))
        return True

    async def send_message(self, message: Data, text: Optional[bool] = None) -> None:
        while self.write_paused and not self.done:
            waiter = self.loop.create_future()
            self._drainers.append(waiter)
            try:
                await waiter
            finally:
                self._drainers.remove(waiter)
        session = self.session
        if session.closing or self.done:
            raise ConnectionClosed(session.close_reason, session.close_message)
        # Built right before it is written: no await in between, so frames
        # go out in the order they were built.
        self._write(self.protocol.send_message(message, text))

    def send_ping(self, payload: bytes, token: Any, now: float) -> None:
        if not self.done:
            self._write(self.session.ping(payload, token, now))

    async def start_close(self, code: int, reason: Optional[str]) -> None:
        self._close(code, reason)

    def resume_reading(self) -> None:
        if not self.done and not self.write_paused and self.session.room():
            self._resume()

    def abort(self) -> None:
        if not self.done:
            self.session.connection_lost()
            self.transport.abort()

    def time(self) -> float:
        return self.loop.time()

    # -- internals ------------------------------------------------------------

    def _write(self, frame: Wire) -> None:
        transport = self.transport
        if type(frame) is bytes:
            transport.write(frame)
        elif type(frame) is tuple:
            for piece in frame:
                transport.write(piece)
        else:
            # A message over 1 MiB, as fragments (built one at a time so that
            # a masked client copies one fragment at a time); written without
            # an await in between, they stay together in the transport.
            for part in cast(Iterator[Frame], frame):
                self._write(part)

    def _write_all(self, frames: List[Wire]) -> None:
        if not self.done and not self.transport.is_closing():
            for frame in frames:
                self._write(frame)

    def _close(self, code: int, reason: Optional[str]) -> None:
        """Start the closing handshake with ``code`` (once)."""
        if self.done:
            return
        frame = self.session.start_close(code, reason)
        if frame is not None:
            self.conn.connected = False
            self._write_all([frame])
            self.conn._wake()
            # The peer's Close must be read, whatever the queue holds.
            if self.read_paused:
                self._resume()

    def _reading_over(self) -> None:
        """The peer's Close came (and ours went), or the session failed the
        connection: close TCP, or let the server do it first (client)."""
        conn = self.conn
        conn.connected = False
        conn._wake()
        if self.session.awaits_eof():
            self._timer = self.loop.call_later(
                conn.close_timeout, self.transport.abort
            )
        else:
            self._close_transport()

    def _close_transport(self) -> None:
        """Close after what is buffered is sent, within close_timeout."""
        transport = self.transport
        transport.close()
        if not self.done and self._timer is None:
            self._timer = self.loop.call_later(
                self.conn.close_timeout, transport.abort
            )

    def _reader_failed(self) -> None:
        """Handling incoming data raised: a bug of ours, not the peer's fault
        (protocol errors are close codes, I/O errors end the connection).
        Logged with its traceback; the connection closes with 1011 rather
        than passing for a silent 1006.  Call it from an ``except``."""
        logger.exception(
            "%s %s: error while reading; closing with 1011",
            type(self.conn).__name__,
            self.conn.remote_address,
        )
        try:
            self._close(INTERNAL_ERROR, "internal error")
        finally:
            self.conn.connected = False
            self.conn._wake()
            self._close_transport()

    def _pause_reading(self) -> None:
        self.read_paused = True
        try:
            self.transport.pause_reading()
        except (AttributeError, NotImplementedError, RuntimeError):  # pragma: no cover
            pass

    def _resume(self) -> None:
        self.read_paused = False
        try:
            self.transport.resume_reading()
        except (AttributeError, NotImplementedError, RuntimeError):  # pragma: no cover
            pass
