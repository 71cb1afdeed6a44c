"""The asyncio connection shared by :class:`AioServer` and :class:`AioClient`.

:class:`AioBase` is the public face -- ``send``, ``receive``, ``ping``,
``close``, ``async for``, ``async with`` -- over two parts:

- a :class:`~greenws.session.Session`, which holds every rule (the receive
  queue and when reading pauses, the closing handshake and its codes, ping
  bookkeeping, keepalive's verdict);
- a driver, which only moves data and reports what happened: the frame
  driver (:mod:`greenws.aio.stream`, an asyncio Protocol on a transport:
  plain sockets, aiohttp's connection, the client) or the ASGI driver
  (:mod:`greenws.aio.asgi`, where the server does the framing).

What is left here is waiting: tasks that wait for a message, a pong or the
end of the connection park on futures that the driver's callbacks resolve.
Nothing here blocks the event loop and nothing outlives the connection:
timers are cancelled and waiters woken when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, List, Optional, Union

from ..errors import ConnectionClosed
from ..log import logger
from ..session import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_QUEUE,
    OK_CODES,
    Options,
    Session,
    State,
    check_close,
    check_ping,
    close_log_level,
    connection_state,
)

__all__ = ["AioBase", "Driver", "DEFAULT_CLOSE_TIMEOUT", "DEFAULT_MAX_QUEUE"]

Data = Union[str, bytes]


def _expire(waiter: asyncio.Future[Any]) -> None:
    """Timer callback: end a wait that ran out of time (result False)."""
    if not waiter.done():
        waiter.set_result(False)


def _expire_current(current: List[Any]) -> None:
    """Timer callback: end the wait in ``current[0]`` (see receive())."""
    _expire(current[0])


class Driver:
    """What :class:`AioBase` needs from the I/O underneath (see the module
    docstring).  A driver feeds the connection's :class:`Session` and calls
    the connection's ``_wake()`` when a waiter may proceed, ``_answered()``
    with ping tokens the session reports answered, and ``_ended()`` once,
    when the connection is over."""

    __slots__ = ()

    #: Whether pings can be sent (ASGI has no ping message).
    can_ping = True
    #: True once the connection is over (set just before ``_ended()``).
    done: bool
    #: True while reading is paused because the receive queue was full.
    read_paused: bool

    def try_send(self, message: Data, text: Optional[bool] = None) -> bool:
        """Send ``message`` now if that needs no wait; False otherwise (then
        :meth:`send_message` is awaited).  The per-message fast path."""
        return False

    async def send_message(self, message: Data, text: Optional[bool] = None) -> None:
        """Send one whole message, waiting while the peer cannot take it
        (``text`` as in :meth:`AioBase.send`).
        Raises :class:`ConnectionClosed` if the connection is closing."""
        raise NotImplementedError

    def send_ping(self, payload: bytes, token: Any, now: float) -> None:
        """Register a ping with the session and send it."""
        raise NotImplementedError

    async def start_close(self, code: int, reason: Optional[str]) -> None:
        """Start the closing handshake (once; later calls do nothing)."""
        raise NotImplementedError

    def resume_reading(self) -> None:
        """The application took a message: read again if there is room."""
        raise NotImplementedError

    def abort(self) -> None:
        """End the connection now, without a closing handshake."""
        raise NotImplementedError

    def time(self) -> float:
        """The clock pings are timed with (the event loop's)."""
        raise NotImplementedError

    async def finished(self) -> None:
        """Once ``done``: wait until the driver's own tasks are over."""


class AioBase(Options):
    """An asyncio WebSocket connection (the common part of AioServer and
    AioClient).  Create one with :meth:`greenws.AioServer.accept` or
    :meth:`greenws.AioClient.connect`.
    """

    __slots__ = (
        "local_address",
        "remote_address",
        "_session",
        "_driver",
        "_loop",
        "_waiters",
        "_keepalive",
        "__weakref__",
    )

    def _configure(
        self,
        *,
        receive_bytes: int,
        ping_interval: Optional[float],
        max_message_size: Optional[int],
        ping_timeout: Optional[float],
        close_timeout: Optional[float],
        max_queue: Optional[int],
    ) -> None:
        """Validate and store the options both roles share."""
        self._store_options(
            receive_bytes=receive_bytes,
            ping_interval=ping_interval,
            max_message_size=max_message_size,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_queue=max_queue,
        )
        self.local_address: Any = None
        self.remote_address: Any = None
        self._session: Optional[Session] = None
        self._driver: Any = None
        self._keepalive: Optional[asyncio.TimerHandle] = None
        # Futures of the tasks waiting in receive() or close().
        self._waiters: List[asyncio.Future[Any]] = []

    def _open(self, session: Session, driver: Driver, mode: str) -> None:
        """The handshake is done: the connection is open (called by the
        role's factory before the driver starts delivering data)."""
        self._loop = asyncio.get_running_loop()
        self._session = session
        self._driver = driver
        self.connected = True
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s open %s <-> %s (%s)",
                type(self).__name__,
                self.local_address,
                self.remote_address,
                mode,
            )
        if self.ping_interval and driver.can_ping:
            self._keepalive = self._loop.call_later(
                self.ping_interval, self._keepalive_ping
            )

    # -- attributes kept by the session --------------------------------------

    @property
    def close_reason(self) -> int:
        """The close code (1005 until a close happens)."""
        session = self._session
        return 1005 if session is None else session.close_reason

    @property
    def close_message(self) -> Optional[str]:
        """The close reason text, if any."""
        session = self._session
        return None if session is None else session.close_message

    @property
    def latency(self) -> Optional[float]:
        """Round-trip time in seconds of the last answered ping, or ``None``."""
        session = self._session
        return None if session is None else session.latency

    @property
    def state(self) -> State:
        """Where the connection is: CONNECTING (during the handshake), OPEN,
        CLOSING (the closing handshake started, or it failed), CLOSED."""
        session = self._session
        if session is None:
            return State.CONNECTING
        return connection_state(True, session.closing, self._driver.done)

    @property
    def extensions(self) -> List[str]:
        """The negotiated extensions, as their ``Sec-WebSocket-Extensions``
        header values (``[]`` without compression, and under ASGI, whose
        server negotiates and applies them itself)."""
        session = self._session
        return [] if session is None else session.extensions

    # -- public API -----------------------------------------------------------

    async def send(
        self,
        data: Union[str, bytes, bytearray, memoryview, Any],
        text: Optional[bool] = None,
    ) -> None:
        """Send one message.

        ``str`` is sent as a text message, ``bytes``/``bytearray``/
        ``memoryview`` as a binary one, anything else as ``str(data)``.
        ``text=True`` sends binary data that is UTF-8 already as a text
        message, without decoding it (nor checking it: invalid UTF-8 makes
        the peer close with 1007); ``text=False`` sends a ``str`` as binary.
        Waits while the peer's TCP window and the write buffer are full, so
        a slow reader slows the sender instead of filling memory.  Frames of
        concurrent sends never interleave.  Raises :class:`ConnectionClosed`
        once the connection is closing or closed.
        """
        if isinstance(data, (str, bytes)):
            message: Data = data
        elif isinstance(data, (bytearray, memoryview)):
            message = bytes(data)
        else:
            message = str(data)
        if not self.connected:
            raise ConnectionClosed(self.close_reason, self.close_message)
        driver = self._driver
        if not driver.try_send(message, text):
            await driver.send_message(message, text)

    async def receive(self, timeout: Optional[float] = None) -> Optional[Data]:
        """Return the next message (``str`` or ``bytes``).

        ``timeout=None`` waits for ever, ``0`` does not wait; ``None`` is
        returned when the time runs out.  Messages received before the
        connection closed are returned first; then :class:`ConnectionClosed`
        is raised.
        """
        session = self._session
        assert session is not None
        queue = session.queue
        if not queue:
            if session.closing:
                raise ConnectionClosed(session.close_reason, session.close_message)
            if timeout is not None and timeout <= 0:
                return None
            loop = self._loop
            waiters = self._waiters
            timer = None
            current: List[Any] = [None]  # the wait the timer is to end
            if timeout is not None:
                timer = loop.call_later(timeout, _expire_current, current)
            try:
                while not queue:
                    if session.closing:
                        raise ConnectionClosed(
                            session.close_reason, session.close_message
                        )
                    # (_wait() inlined: this is the per-message path.)
                    waiter = current[0] = loop.create_future()
                    waiters.append(waiter)
                    try:
                        woken = await waiter
                    finally:
                        waiters.remove(waiter)
                    if not woken and not queue:
                        return None
            finally:
                if timer is not None:
                    timer.cancel()
        message = queue.pop(0)
        driver = self._driver
        if driver.read_paused:
            driver.resume_reading()
        return message

    async def ping(
        self, data: Union[bytes, str] = b"", timeout: Optional[float] = None
    ) -> float:
        """Send a ping and wait for its pong; return the round-trip time (s).

        Raises :class:`TimeoutError` when ``timeout`` passes first and
        :class:`ConnectionClosed` if the connection ends while waiting.
        """
        payload = check_ping(data)
        driver = self._driver
        if not driver.can_ping:
            raise NotImplementedError(
                "ASGI has no ping message: the ASGI server keeps the "
                "connection alive (uvicorn's --ws-ping-interval, hypercorn's "
                "websocket_ping_interval)"
            )
        if not self.connected:
            raise ConnectionClosed(self.close_reason, self.close_message)
        loop = self._loop
        pong: asyncio.Future[Any] = loop.create_future()
        sent = driver.time()
        driver.send_ping(payload, pong, sent)
        timer = None if timeout is None else loop.call_later(timeout, _expire, pong)
        try:
            answered = await pong
        finally:
            if timer is not None:
                timer.cancel()
            if not pong.done() or pong.cancelled() or pong.result() is False:
                session = self._session
                assert session is not None
                session.forget_ping(pong)
        if answered is False:
            raise TimeoutError(f"no pong within {timeout} seconds")
        if answered is None:  # woken because the connection ended
            raise ConnectionClosed(self.close_reason, self.close_message)
        rtt: float = answered - sent
        return rtt

    async def close(
        self, reason: Optional[int] = None, message: Optional[str] = None
    ) -> None:
        """Close the connection with ``reason`` (default 1000) and ``message``.

        Sends a Close frame, waits up to ``close_timeout`` seconds for the
        peer's, then closes the connection.  Calling it again, or after the
        peer closed, does nothing more than wait for the end.  A code that
        may not be sent, or a message too long for a Close frame, raises
        ``ValueError`` (``TypeError`` for a code that is not an int) before
        anything is sent.
        """
        code, text = check_close(reason, message)
        driver = self._driver
        await driver.start_close(code, text)
        loop = self._loop
        if not await self._wait(loop.time() + self.close_timeout, ended=True):
            driver.abort()
            await self._wait(loop.time() + self.close_timeout, ended=True)
        await driver.finished()

    def choose_subprotocol(self, request: Any) -> Optional[str]:
        """Pick the subprotocol from the client's offer (server side).

        The default returns the first protocol offered by the client that is
        in ``subprotocols``.  Override it to negotiate differently; return
        ``None`` for no subprotocol.
        """
        supported = getattr(self, "subprotocols", None) or []
        for name in request.subprotocols:
            if name in supported:
                return str(name)
        return None

    def __aiter__(self) -> AioBase:
        return self

    async def __anext__(self) -> Data:
        """The next message; a normal close (1000, 1001, no status) ends the
        iteration, any other raises :class:`ConnectionClosed`."""
        try:
            message = await self.receive()
        except ConnectionClosed as exc:
            if exc.reason in OK_CODES:
                raise StopAsyncIteration from None
            raise
        assert message is not None
        return message

    async def __aenter__(self) -> AioBase:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- waiting and waking (called by the driver) ------------------------------

    async def _wait(self, deadline: Optional[float], ended: bool = False) -> bool:
        """Wait until woken, or until the end of the connection with
        ``ended``; False if ``deadline`` (loop time) passed first."""
        driver = self._driver
        loop = self._loop
        while not (ended and driver.done):
            waiter = loop.create_future()
            waiters = self._waiters
            waiters.append(waiter)
            timer = None
            if deadline is not None:
                timer = loop.call_at(deadline, _expire, waiter)
            try:
                woken = await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                try:
                    waiters.remove(waiter)
                except ValueError:
                    pass
            if not woken:
                return driver.done if ended else False
            if not ended:
                return True
        return True

    def _wake(self) -> None:
        """Something changed: messages, closing, the end.  Wake every wait."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(True)

    def _answered(self, tokens: List[Any], now: float) -> None:
        """Pongs came for these ping tokens: wake ping() or keep keepalive on."""
        for token in tokens:
            if isinstance(token, asyncio.Future):
                if not token.done():
                    token.set_result(now)
            else:  # keepalive's timeout timer
                token.cancel()
                if token is self._keepalive and self.ping_interval:
                    self._keepalive = self._loop.call_later(
                        self.ping_interval, self._keepalive_ping
                    )
        tokens.clear()

    def _ended(self) -> None:
        """The connection is over: log it, stop keepalive, wake everyone."""
        session = self._session
        assert session is not None
        self.connected = False
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        for token in session.waiting_pings():
            if isinstance(token, asyncio.Future) and not token.done():
                token.set_result(None)
        self._wake()
        code = session.close_reason
        logger.log(
            close_log_level(code),
            "%s closed %s: %s %s",
            type(self).__name__,
            self.remote_address,
            code,
            session.close_message or "",
        )

    # -- keepalive ------------------------------------------------------------

    def _keepalive_ping(self) -> None:
        """Timer: send keepalive's ping; its pong must come in ping_timeout."""
        driver = self._driver
        if driver.done or not self.connected:
            return
        timer = self._loop.call_later(
            self.ping_timeout or self.ping_interval or 0.0, self._keepalive_expired
        )
        self._keepalive = timer
        driver.send_ping(b"", timer, driver.time())

    def _keepalive_expired(self) -> None:
        """Timer: keepalive's pong is late; fail the connection (1011)."""
        self._keepalive = None
        session = self._session
        assert session is not None
        if not self._driver.done and session.keepalive_failed():
            self.connected = False
            self._wake()
            self._driver.abort()
