"""The sync connection shared by :class:`~greenws.Server` and :class:`~greenws.Client`.

Every rule of an open connection -- the receive queue and when reading
pauses, the closing handshake, ping bookkeeping and keepalive's verdict,
close codes -- is :class:`~greenws.session.Session`'s.  :class:`Base` moves
bytes between it and the socket, and holds what both ways of reading share:
the public API, writing, closing and the end.  Who reads depends on the
preset (a driver each, see :mod:`greenws._threads` and :mod:`greenws._hub`):
the thread that receives, else a reader thread per connection (threads); the
greenlet that receives, else a readiness watcher on the hub (gevent,
eventlet).

Every write (user messages, pongs, pings, Close frames) goes through one
lock and is sent whole, so frames never interleave; pings and pongs go
between the fragments of a large message instead of waiting for all of it
(see "writing" below).  A write that is cut short -- by an error, or by a
gevent/eventlet Timeout, a kill or KeyboardInterrupt -- drops the connection
at once (1006): nothing may follow part of a frame on the wire.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, TypeVar, Union

from wsproto.utilities import LocalProtocolError

from . import presets as _presets
from . import registry as _registry
from ._hub import HubReader
from ._threads import ThreadReader
from .errors import ConnectionClosed
from .log import logger
from .protocol import INTERNAL_ERROR, Protocol, Wire, is_close
from .session import (
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

__all__ = ["Base", "DEFAULT_CLOSE_TIMEOUT", "DEFAULT_MAX_QUEUE"]


# Pongs (and pings) waiting for the write lock beyond which a new pong
# replaces the last one instead of queueing.
_MAX_CONTROLS = 16

# Largest single read when a big frame is arriving.
_MAX_READ = 256 * 1024

# Makes the session's close-state changes (check-and-record) atomic:
# close(), close_all()'s closers, the reader and keepalive may start a close
# at the same moment.  Held for a few assignments only (never across I/O or a
# switch), so one lock serves every connection; reentrant, so that a signal
# handler interrupting the thread that holds it cannot deadlock.
_close_lock = threading.RLock()

_monotonic = time.monotonic

Data = Union[str, bytes]
# ``with Client.connect(...) as ws`` gives a Client, not a Base.
_Self = TypeVar("_Self", bound="Base")


class _Session(Session):
    """The session of a sync connection.  Several threads (or greenlets) may
    start a close at once -- close(), close_all()'s closers, the reader (the
    peer's Close, a protocol error), keepalive -- so each close-state change
    holds ``_close_lock``, and turns the connection's ``connected`` False in
    the same step: whoever sees the close sees that too."""

    __slots__ = ("conn",)

    conn: Base

    def begin_close(self, code: int, reason: Optional[str]) -> bool:
        with _close_lock:
            if not Session.begin_close(self, code, reason):
                return False
            self.conn.connected = False
            return True

    def fail(self, code: int, reason: Optional[str]) -> bool:
        with _close_lock:
            self.conn.connected = False
            return Session.fail(self, code, reason)

    def connection_lost(self) -> None:
        with _close_lock:
            self.conn.connected = False
            Session.connection_lost(self)


def _send_whole(sock: Any, data: Any) -> None:
    """``sock.sendall(data)``, trying one plain ``send()`` first.

    Nearly every frame fits in the socket's buffer at once, and a green
    socket's ``sendall()`` costs more than the send itself (gevent's asks
    the kernel for the buffer size on every call).
    """
    sent = sock.send(data)
    if sent < len(data):
        with memoryview(data) as view:
            sock.sendall(view[sent:])


class Base(Options):
    """A WebSocket connection (the common part of Server and Client).

    Do not instantiate it directly: use :meth:`greenws.Server.accept` or
    :meth:`greenws.Client.connect`.
    """

    # Slots, not a __dict__: ten thousand connections in one worker each
    # save a kilobyte or two.  Subclasses without __slots__ still get a dict.
    __slots__ = (
        "preset",
        "thread_class",
        "event_class",
        "selector_class",
        "local_address",
        "remote_address",
        "sock",
        "_tls_pending",
        "_owns_socket",
        "_protocol",
        "_session",
        "_driver",
        "_message_event",
        "_closed_event",
        "_write_lock",
        "_controls",
        "_done",
        "_thread",
        "_keepalive_thread",
        "__weakref__",
    )

    _session: _Session
    # The reader thread (thread driver), keepalive's thread or greenlet.
    _thread: Any
    _keepalive_thread: Any

    _is_server = False

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        self = super().__new__(cls)
        # From birth, so that the close state and pings always have a home.
        session = self._session = _Session(
            None, client=not cls._is_server, max_queue=None
        )
        session.conn = self
        return self

    def _configure(
        self,
        *,
        receive_bytes: int,
        ping_interval: Optional[float],
        max_message_size: Optional[int],
        ping_timeout: Optional[float],
        close_timeout: Optional[float],
        max_queue: Optional[int],
        preset: Optional[Any],
        sock: Any = None,
        **classes: Any,
    ) -> None:
        """Validate and store the options both roles share.

        ``preset`` and ``classes`` (``thread_class`` ...) are resolved by
        :func:`greenws.presets.resolve`; ``sock`` helps it detect the runtime.
        """
        self._store_options(
            receive_bytes=receive_bytes,
            ping_interval=ping_interval,
            max_message_size=max_message_size,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_queue=max_queue,
        )
        self._session.max_queue = self.max_queue
        self.preset = preset = _presets.resolve(preset, sock=sock, **classes)
        self.thread_class = preset["thread_class"]
        self.event_class = preset["event_class"]
        self.selector_class = preset["selector_class"]

    # -- attributes kept by the session ---------------------------------------

    @property
    def close_reason(self) -> int:
        """The close code (1005 until a close happens)."""
        return self._session.close_reason

    @property
    def close_message(self) -> Optional[str]:
        """The close reason text, if any."""
        return self._session.close_message

    @property
    def latency(self) -> Optional[float]:
        """Round-trip time in seconds of the last answered ping, or ``None``."""
        return self._session.latency

    # The session's receive queue and waiting pings, by their old names.

    @property
    def _queue(self) -> List[Data]:
        return self._session.queue

    @_queue.setter
    def _queue(self, queue: List[Data]) -> None:
        self._session.queue = queue

    @property
    def _pings(self) -> Dict[bytes, List[Any]]:
        return self._session._pings

    @_pings.setter
    def _pings(self, pings: Dict[bytes, List[Any]]) -> None:
        self._session._pings = pings

    # -- starting -----------------------------------------------------------

    def _start(
        self,
        sock: Any,
        protocol: Protocol,
        owns_socket: bool,
        pending: bytes = b"",
        peer: Any = None,
    ) -> None:
        """Begin the open phase on ``sock`` (handshake already done).

        ``peer`` is the remote address when the caller already knows it.
        """
        event_class = self.event_class
        self.sock = sock
        # Looked up once: a missing attribute is slow on green sockets.
        self._tls_pending = getattr(sock, "pending", None)
        self._owns_socket = owns_socket
        self._protocol = self._session.protocol = protocol
        self._message_event = event_class()
        self._closed_event = event_class()
        self._write_lock = self.preset["lock_class"]()
        # Pings and pongs waiting for the write lock's holder (see _send_controls).
        self._controls: Optional[List[List[Any]]] = None
        self._done = False
        readiness = self.preset.readiness
        self._driver: Any = (
            ThreadReader(self) if readiness is None else HubReader(self, readiness)
        )
        try:
            self.local_address: Any = sock.getsockname()
            self.remote_address: Any = peer if peer else sock.getpeername()
        except OSError:
            self.local_address = self.remote_address = None
        self.connected = True
        # Bytes that came with the handshake are handled now, not when more
        # data happens to arrive.
        if not self._read_once(pending):
            self._finish()
            return
        _registry.add(self)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s open %s <-> %s (%s)",
                type(self).__name__,
                self.local_address,
                self.remote_address,
                self.preset.name,
            )
        self._driver.start()
        if self.ping_interval:
            self._keepalive_thread = self._spawn(self._keepalive)

    def _spawn(self, target: Any) -> Any:
        thread = self.thread_class(target=target)
        try:
            thread.daemon = True
        except (AttributeError, RuntimeError):  # pragma: no cover
            pass
        try:
            thread.name = f"greenws-{id(self):x}"
        except (AttributeError, TypeError):  # pragma: no cover
            pass
        thread.start()
        return thread

    # -- public API ---------------------------------------------------------

    def send(
        self,
        data: Union[str, bytes, bytearray, memoryview, Any],
        text: Optional[bool] = None,
    ) -> None:
        """Send one message.

        ``str`` is sent as a text message, ``bytes``/``bytearray``/``memoryview``
        as a binary one, anything else as ``str(data)``.  ``text=True`` sends
        binary data that is UTF-8 already as a text message, without decoding
        it (nor checking it: invalid UTF-8 makes the peer close with 1007);
        ``text=False`` sends a ``str`` as binary (its UTF-8).  Blocks (cooperatively
        under gevent/eventlet) until the whole frame is handed to the kernel,
        so a slow reader slows the sender instead of filling memory.  Raises
        :class:`ConnectionClosed` once the connection is closing or closed.
        """
        # Binary data is framed where it is: copying a large message first
        # would double the memory it takes.
        if isinstance(data, (str, bytes, bytearray)):
            message: Union[str, bytes, bytearray, memoryview] = data
        elif isinstance(data, memoryview):
            # Framing counts and slices bytes: a view of other items (or
            # dimensions) is cast to plain bytes, a scattered one copied.
            message = data.cast("B") if data.c_contiguous else data.tobytes()
        else:
            message = str(data)
        if not self.connected or not self._write(message, text=text):
            raise ConnectionClosed(self.close_reason, self.close_message)

    def receive(self, timeout: Optional[float] = None) -> Optional[Data]:
        """Return the next message (``str`` or ``bytes``).

        ``timeout=None`` waits for ever, ``0`` does not wait; ``None`` is
        returned when the time runs out.  Messages received before the
        connection closed are returned first; then :class:`ConnectionClosed`
        is raised.
        """
        session = self._session
        queue = session.queue
        driver = self._driver
        deadline = None
        while True:
            if queue:
                try:
                    message = queue.pop(0)
                    break
                except IndexError:  # another receiver took it since the test
                    pass
            if session.closing:
                raise ConnectionClosed(session.close_reason, session.close_message)
            remaining = None
            if timeout is not None:
                if deadline is None:
                    deadline = _monotonic() + timeout
                remaining = max(deadline - _monotonic(), 0.0)
            # Cleared before looking: whoever reads instead of this call
            # sets it afterwards.
            self._message_event.clear()
            # Read here unless someone else is (None); with no time left,
            # only what is there.  False: the time ran out.
            if remaining is not None and self._tls_pending is not None:
                # Readable does not mean that a whole TLS record has come,
                # and recv() would wait for the rest past the timeout: the
                # reader thread or the hub's watcher reads instead.
                read = None
                driver.call()
            else:
                read = driver.read(remaining)
            if read is False:
                return None
            if read is None and not queue and not session.closing:
                if remaining == 0.0:
                    return None
                self._message_event.wait(remaining)
        driver.resume()  # reading may have paused on a full queue
        return message

    def ping(
        self, data: Union[str, bytes, bytearray, memoryview] = b"",
        timeout: Optional[float] = None,
    ) -> float:
        """Send a ping and wait for its pong; return the round-trip time (s).

        ``data`` (bytes, or a str sent as UTF-8) is the payload: at most 125
        bytes, else :class:`ValueError`.  Raises :class:`TimeoutError` when
        ``timeout`` passes first and :class:`ConnectionClosed` if the
        connection ends while waiting.
        """
        payload = check_ping(data)
        session = self._session
        entry = session.add_ping(payload, self.event_class(), _monotonic())
        if not self.connected or not self._send_ping(entry, None):
            session.forget_ping(entry[0])
            raise ConnectionClosed(self.close_reason, self.close_message)
        self._driver.call()
        if not entry[0].wait(timeout):
            session.forget_ping(entry[0])
            raise TimeoutError(f"no pong within {timeout} seconds")
        if entry[2] is None:  # woken because the connection ended
            raise ConnectionClosed(self.close_reason, self.close_message)
        return float(entry[2])

    def close(
        self, reason: Optional[int] = None, message: Optional[str] = None
    ) -> None:
        """Close the connection with ``reason`` (default 1000) and ``message``.

        Sends a Close frame, waits up to ``close_timeout`` seconds for the
        peer's, then closes the socket.  Calling it again, or after the peer
        closed, does nothing.

        Raises :class:`ValueError` for a code that may not be sent (allowed:
        1000-1003, 1007-1014 and 3000-4999) or a ``message`` longer than 123
        bytes of UTF-8, :class:`TypeError` for a code that is not an int or a
        message that is not a str; the connection is then left as it was.
        """
        code, message = check_close(reason, message)
        self._close_with(code, message)
        self._wait_closed(self.close_timeout)

    def _wait_closed(self, timeout: float) -> None:
        """Wait for the closing handshake; past ``timeout``, drop TCP.

        However the wait ends (even interrupted), the connection is finished
        when this returns: in hub mode the caller may hand the socket back
        to a server that closes it, and no watcher may outlive it.
        """
        try:
            if not self._closed_event.wait(timeout):
                self._abort()
                self._closed_event.wait(self.close_timeout)
        finally:
            self._finish()
        self._join()

    def _app_returned(self) -> None:
        """The WSGI application returned; its server is about to take the
        socket back (see :func:`greenws.wsgi.take_over`).

        An application that returned without closing gets a normal close
        (1000), as with :class:`~greenws.WebSocketWSGI`.  Either way this
        waits for the closing handshake (at most ``close_timeout``), so that
        the socket is shut down and no longer watched when the server closes
        it.  Calling it again does nothing more.
        """
        if self.connected:
            self.close()
        else:
            self._wait_closed(self.close_timeout)

    @property
    def state(self) -> State:
        """Where the connection is: CONNECTING (during the handshake), OPEN,
        CLOSING (the closing handshake started, or it failed), CLOSED."""
        return connection_state(
            hasattr(self, "_protocol"),
            self._session.closing,
            getattr(self, "_done", False),
        )

    @property
    def extensions(self) -> List[str]:
        """The negotiated extensions, as their ``Sec-WebSocket-Extensions``
        header values (``[]`` without compression)."""
        return self._session.extensions

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

    def __iter__(self) -> Iterator[Data]:
        """Yield messages until the connection closes.

        A normal close (1000, 1001 or no status) ends the loop; any other
        code raises :class:`ConnectionClosed`.
        """
        while True:
            try:
                message = self.receive()
            except ConnectionClosed as exc:
                if exc.reason in OK_CODES:
                    return
                raise
            assert message is not None
            yield message

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------

    def _write(
        self,
        message: Union[str, bytes, bytearray, memoryview, None] = None,
        timeout: Optional[float] = None,
        close: Any = None,
        text: Optional[bool] = None,
    ) -> bool:
        """Frame and send a whole ``message``, or our Close frame: ``close``
        is ``(code, reason)`` (framed here, under the lock, after any
        message going out) or the frame itself (the session's answer to the
        peer's Close).  Returns False if the connection is gone.

        With ``timeout``, a peer that cannot take the frame in that time (the
        lock is held by a stuck send, or the socket buffer stays full) gets
        the connection aborted instead of blocking the caller for ever.
        Pings and pongs never wait for the lock (see :meth:`_send_ping`).
        """
        lock = self._write_lock
        if timeout is None:
            lock.acquire()
        elif not lock.acquire(timeout=timeout):
            self._drop()  # the holder's send fails, and it lets go
            return False
        try:
            if self._done and close is None:
                return False
            # From here on, whatever stops the write leaves the peer with an
            # unknown part of the frame (and the compressor or wsproto with a
            # message the peer never got): the connection is dropped.
            try:
                data: Optional[Wire]
                if close is None:
                    data = self._protocol.send_message(message, text)  # type: ignore[arg-type]
                elif type(close) is tuple:
                    data = self._session.close_frame(*close)
                    if data is None:
                        return False
                else:
                    data = close
                if timeout is not None and not self._ready(
                    selectors.EVENT_WRITE, timeout
                ):
                    self._drop()
                    return False
                if self._controls:
                    self._send_controls()  # pongs for pings read before
                if type(data) is bytes:
                    _send_whole(self.sock, data)
                elif type(data) is tuple:
                    for piece in data:
                        _send_whole(self.sock, piece)
                else:
                    self._send_fragments(data)
            except BaseException as exc:
                if self._write_failed(exc):
                    return False
                raise
            return True
        finally:
            lock.release()
            if self._controls:
                self._flush_controls()  # queued after the last fragment

    # Broadcast (greenws.rooms): a sender fanning messages out to many
    # connections must never wait for one of them, so it writes only what
    # the kernel takes at once and leaves the rest, with the write lock, to
    # a writer of that connection's own.  ``take`` is the messages to write,
    # or a callable giving them that is called holding the write lock, so
    # that whoever holds the lock writes them in the order they were queued;
    # or one frame built already (bytes), shared by many connections.

    def _write_nowait(
        self, take: Any, raw: Any, flags: int, timeout: Optional[float] = None
    ) -> Any:
        """Write ``take`` (see above), as far as the socket takes it at once.

        ``raw.send(data, flags)`` must never block (a non-blocking socket on
        the same file descriptor, or ``MSG_DONTWAIT``).  Returns True when
        it all went out, False when the connection is gone (or closing, for
        a frame built already), None when nothing was done: the write lock
        is taken (``timeout``: waited for that long).  Otherwise it returns
        a list of what is still to send (with the control frames queued
        meanwhile, if any) and keeps the write lock: the caller must hand
        both to :meth:`_write_rest`.
        """
        lock = self._write_lock
        got = lock.acquire(False) if timeout is None else lock.acquire(timeout=timeout)
        if not got:
            return None
        rest: Optional[List[Any]] = None
        more: Sequence[Any]
        try:
            if self._done:
                return False
            try:
                if type(take) is bytes:
                    if not self.connected:  # framed elsewhere: we may be closing
                        return False
                    data, more = take, ()
                else:
                    pieces = self._frames(take() if callable(take) else take)
                    if not pieces:
                        return True
                    data, more = pieces[0], pieces[1:]
                    if type(data) is not bytes:
                        rest = pieces  # large: the writer sends it
                        return rest
                try:
                    sent = raw.send(data, flags)
                except BlockingIOError:
                    sent = 0
            except BaseException as exc:
                if self._write_failed(exc):
                    return False
                raise
            if sent < len(data):
                rest = [memoryview(data)[sent:], *more]
            elif more or self._controls:
                # More pieces, or pongs waiting: they may take waiting.
                rest = list(more)
            return True if rest is None else rest
        finally:
            if rest is None:
                lock.release()

    def _write_batch(self, take: Any) -> bool:
        """Write what ``take()`` gives, waiting for the lock and the socket
        (a member's writer); False if the connection is gone."""
        self._write_lock.acquire()
        try:
            pieces = [] if self._done else self._frames(take())
        except LocalProtocolError:
            pieces = []
        except BaseException:
            self._write_lock.release()
            raise
        return self._write_rest(pieces)

    def _frames(self, events: Any) -> List[Any]:
        """The frames of ``events`` (write lock held), runs of small ones
        joined so that they take one send."""
        send = self._protocol.send
        if len(events) == 1:
            return [send(events[0])]
        pieces: List[Any] = []
        small: List[bytes] = []
        for event in events:
            data = send(event)
            if type(data) is bytes:
                small.append(data)
                continue
            if small:
                pieces.append(b"".join(small))
                small = []
            pieces.append(data)
        if small:
            pieces.append(small[0] if len(small) == 1 else b"".join(small))
        return pieces

    def _write_rest(self, rest: List[Any]) -> bool:
        """Send ``rest`` holding the write lock that :meth:`_write_nowait`
        kept, then let go of it; False if the connection is gone."""
        try:
            if self._done:
                return False
            try:
                for piece in rest:
                    if type(piece) is tuple:
                        for part in piece:
                            _send_whole(self.sock, part)
                    elif isinstance(piece, (bytes, memoryview)):
                        _send_whole(self.sock, piece)
                    else:
                        self._send_fragments(piece)
                if self._controls:
                    self._send_controls()
            except BaseException as exc:
                if self._write_failed(exc):
                    return False
                raise
            return True
        finally:
            self._write_lock.release()
            if self._controls:
                self._flush_controls()

    def _send_fragments(self, frames: Any) -> None:
        """Send a large message's fragments (write lock held), and between
        them the pings and pongs that came meanwhile."""
        sock = self.sock
        for frame in frames:
            if self._controls:
                self._send_controls()
            if type(frame) is tuple:
                for piece in frame:
                    _send_whole(sock, piece)
            else:
                _send_whole(sock, frame)

    # Control frames.  A ping or pong never waits for the write lock: when it
    # is taken it goes in _controls, as [frame, event set once sent or None,
    # the ping's session entry or None, time sent or None], and whoever holds the lock
    # sends it before the next fragment or after releasing the lock.  So
    # neither the reader (answering a ping) nor keepalive waits behind a long
    # message, and a slow peer cannot stall the reader through our own send.

    def _send_controls(self) -> None:
        """Send the queued control frames (write lock held)."""
        controls = self._controls
        while controls:
            item = controls.pop(0)
            try:
                _send_whole(self.sock, item[0])
                item[3] = now = _monotonic()
                if item[2] is not None:
                    self._session.ping_sent(item[2], now)
            finally:
                if item[1] is not None:
                    item[1].set()

    def _flush_controls(self) -> None:
        """Send the queued control frames unless someone holds the lock.

        The holder looks at the queue again after releasing the lock, so a
        frame queued while it was held is never left behind.
        """
        lock = self._write_lock
        while self._controls and lock.acquire(False):
            try:
                if self._done:
                    return
                self._send_controls()
            except (OSError, ValueError):
                self._drop()
            except BaseException:
                self._drop()  # interrupted inside a frame
                raise
            finally:
                lock.release()

    def _queue_pong(self, frame: Wire) -> None:
        """Queue a pong; the reader then sends it with :meth:`_flush_controls`,
        which never waits for the lock (only for the socket, when the peer
        does not read its pongs: TCP then pushes back on its pings)."""
        controls = self._controls
        if controls is None:
            controls = self._controls = []
        if len(controls) >= _MAX_CONTROLS:
            last = controls[-1]
            if last[1] is None and last[2] is None:
                # A flood of pings while a long write holds the lock: only
                # the latest needs an answer (RFC 6455 5.5.3).
                last[0] = frame
                return
        controls.append([frame, None, None, None])

    def _send_ping(self, entry: List[Any], timeout: Optional[float]) -> bool:
        """Send the ping of a session ``entry`` now, or between two fragments
        of the message going out.

        Returns False when the connection is gone, or when the ping could not
        leave within ``timeout`` (what that means is the caller's to say).
        The session learns when the ping actually left.
        """
        try:
            frame = self._session.ping_frame(entry)
        except LocalProtocolError:
            return False
        item: List[Any] = [frame, None, entry, None]
        lock = self._write_lock
        if lock.acquire(False):
            try:
                if self._done:
                    return False
                if timeout is not None and not self._ready(
                    selectors.EVENT_WRITE, timeout
                ):
                    return False
                if self._controls is None:
                    self._controls = []
                self._controls.append(item)
                self._send_controls()
            except (OSError, ValueError):
                self._drop()
                return False
            except BaseException:
                self._drop()
                raise
            finally:
                lock.release()
                if self._controls:
                    self._flush_controls()
            return not self._done
        item[1] = sent = self.event_class()
        if self._controls is None:
            self._controls = []
        self._controls.append(item)
        self._flush_controls()  # the holder may have let go meanwhile
        try:
            sent.wait(timeout)
        finally:
            if item[3] is None:
                try:
                    self._controls.remove(item)  # too late: not at all
                except ValueError:
                    pass  # being sent
        return item[3] is not None and not self._done

    def _write_failed(self, exc: BaseException) -> bool:
        """Whether a write that raised ``exc`` (write lock held) just fails.

        A message that cannot be framed (we are closing) fails with nothing
        sent.  Otherwise part of a frame may be out, so the connection is
        dropped: a peer that is gone (or a socket closed under us) only
        fails the write, while an interruption (gevent/eventlet Timeout,
        kill, KeyboardInterrupt) is for the caller to re-raise.
        """
        if isinstance(exc, LocalProtocolError):
            return True
        self._drop()
        return isinstance(exc, (OSError, ValueError))

    def _drop(self) -> None:
        """End the connection now: a write failed or was cut short.

        Part of a frame may be on the wire, so nothing else may be sent; in
        hub mode, the watcher must not outlive the call, which may return
        to a server that closes the socket next.
        """
        self._session.connection_lost()
        self._finish()

    def _ready(self, events: int, timeout: float) -> bool:
        """Whether the socket is ready for ``events`` within ``timeout`` s.

        False when it cannot be watched (closed, or beyond what the selector
        handles): a blocking call on it could then wait for ever.
        """
        try:
            selector = self.selector_class()
        except OSError:  # pragma: no cover - out of file descriptors
            return True
        try:
            selector.register(self.sock, events)
            return bool(selector.select(timeout))
        except (OSError, ValueError):
            return False
        finally:
            selector.close()

    # -- reading -------------------------------------------------------------
    #
    # The driver (the preset's way of reading) calls _read_once() when data
    # may have come, and _reader_failed() when that raised.

    def _read_once(self, data: Optional[bytes] = None) -> bool:
        """One recv() and whatever it brings; False when reading is over.

        ``data``: bytes already read (those that came with the handshake).
        The common case -- messages, nothing to answer -- costs the session's
        call and one event.
        """
        if data is None:
            protocol = self._protocol
            try:
                # Read a large frame in large pieces, small ones in small.
                data = self.sock.recv(
                    max(self.receive_bytes, min(protocol.wanted, _MAX_READ))
                )
            except (OSError, ValueError):
                data = b""
            if not data:
                self._session.connection_lost()
                return False
            # TLS: a record larger than the read leaves decrypted bytes
            # inside the SSL object, where no readiness check on the socket
            # sees them.
            pending = self._tls_pending
            if pending is not None:
                try:
                    while pending():
                        data += self.sock.recv(pending())
                except (OSError, ValueError):
                    pass  # the next read reports it
        session = self._session
        replies = session.receive_data(data, _monotonic)
        if len(session.queue):  # (the receivers' test is theirs: no bool())
            self._message_event.set()
        if replies is None and session.reading and not session.answered:
            return True
        return self._act(replies)

    def _act(self, replies: Optional[List[Wire]]) -> bool:
        """Do what the session asked after a read: wake answered pings, send
        pongs, our Close; False when reading is over.

        Every message is queued by now, so a gevent/eventlet Timeout or a
        kill that interrupts a wait here loses nothing that was read.
        """
        session = self._session
        if session.answered:
            self._wake_answered()
        close = None
        if replies is not None:
            if is_close(replies[-1]):
                close = replies.pop()
            for pong in replies:
                self._queue_pong(pong)
            if replies:
                self._flush_controls()
        if session.reading:
            return True
        if close is not None:
            self._write(timeout=self.close_timeout, close=close)
        self._closing_started()
        if self._owns_socket and session.awaits_eof():
            self._await_eof()
        return False

    def _pong(self, payload: bytes) -> None:
        """A pong for ``payload`` came: the session settles the pings it
        answers; their waiters wake."""
        self._session.pong(payload, _monotonic)
        self._wake_answered()

    def _wake_answered(self) -> None:
        answered = self._session.answered
        for token in answered:
            token.set()
        answered.clear()

    def _await_eof(self) -> None:
        """Client: after the closing handshake, wait (close_timeout at most,
        however much the server still sends) for the server to close TCP
        (RFC 6455 7.1.1)."""
        deadline = _monotonic() + self.close_timeout
        try:
            while True:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    break
                self.sock.settimeout(remaining)
                if not self.sock.recv(65536):
                    break
        except (OSError, ValueError):
            pass

    def _reader_failed(self) -> None:
        """Reading raised something other than an I/O error: a bug of ours.

        ``_read_once`` already turns I/O errors into the end of the
        connection and protocol errors into their close codes, so anything
        that gets here is neither the peer's fault nor a vanished peer.  It
        is logged with its traceback and the connection fails with 1011,
        rather than passing for a silent 1006.  Call it from an ``except``.
        """
        logger.exception(
            "%s %s: error while reading; closing with 1011",
            type(self).__name__,
            getattr(self, "remote_address", None),
        )
        try:
            self._close_with(INTERNAL_ERROR, "internal error")
        except Exception:  # noqa: BLE001 - already logged; reading ends anyway
            pass

    # -- closing ------------------------------------------------------------

    def _close_with(self, code: int, reason: Optional[str]) -> bool:
        """Record why the connection closes and send our Close frame, once.

        For every close we start: close(), close_all(), a bug in reading.
        The session's check-and-record holds ``_close_lock`` and turns
        ``connected`` False (see :class:`_Session`), as does the reader's for
        the peer's Close or a protocol error, and keepalive's.  Returns False
        if the connection was already closing.
        """
        if not self._session.begin_close(code, reason):
            return False
        self._write(timeout=self.close_timeout, close=(code, reason))
        self._closing_started()
        return True

    def _closing_started(self) -> None:
        """Whoever waits must see it, and someone must read on (a paused or
        idle reader too) until the peer's Close or EOF ends the connection."""
        self._message_event.set()
        self._driver.closing()

    def _keepalive(self) -> None:
        """Ping every ping_interval; fail with 1011 if a pong is late."""
        interval = self.ping_interval or 0.0
        timeout = self.ping_timeout or 0.0
        closed = self._closed_event
        session = self._session
        while not closed.wait(interval):
            entry = session.add_ping(b"", self.event_class(), _monotonic())
            # The ping may wait for the fragment going out, but must leave
            # within ping_timeout; the pong then has ping_timeout from when
            # the ping left, so a busy connection is not dead.
            if not self._send_ping(entry, timeout or None):
                session.forget_ping(entry[0])
                if self._done or session.closing:
                    return  # the connection is gone, or going
            else:
                self._driver.call()
                left = session.pong_due(entry, timeout, _monotonic())
                if entry[0].wait(left) or self._done:
                    continue
            session.keepalive_failed()  # no Close: the peer does not listen
            self._finish()
            return

    # -- ending -------------------------------------------------------------

    def _abort(self) -> None:
        """Shut the socket down so that every blocked call returns."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass

    def _finish(self) -> None:
        """Reading is over: close TCP, wake everyone, drop references."""
        if self._done:
            return
        session = self._session
        session.connection_lost()  # nothing more is read (1006 unless closing)
        _registry.discard(self)
        logger.log(
            close_log_level(session.close_reason),
            "%s closed %s: %s %s",
            type(self).__name__,
            self.remote_address,
            session.close_reason,
            session.close_message or "",
        )
        self.connected = False
        self._done = True
        self._driver.finish()
        self._abort()
        if self._owns_socket:
            try:
                self.sock.close()
            except OSError:  # pragma: no cover
                pass
        self._message_event.set()
        for token in session.waiting_pings():
            token.set()
        for item in self._controls or ():
            if item[1] is not None:
                item[1].set()  # a ping that will never leave
        self._closed_event.set()

    def _join(self) -> None:
        for name in ("_thread", "_keepalive_thread"):
            join = getattr(getattr(self, name, None), "join", None)
            if join is not None:
                try:
                    join(self.close_timeout)
                except RuntimeError:  # pragma: no cover - joining itself
                    pass
