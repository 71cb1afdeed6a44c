"""The I/O loop shared by :class:`~greenws.Server` and :class:`~greenws.Client`.

Reading feeds :class:`~greenws.protocol.Protocol`, answers pings and closes,
and puts whole messages in a bounded queue that :meth:`Base.receive` drains;
who reads depends on the preset (see "reading" below).  Every write (user
messages, pongs, pings, Close frames) goes through one lock and is sent whole,
so frames never interleave; pings and pongs go between the fragments of a
large message instead of waiting for all of it (see "writing" below).  A
write that is cut short -- by an error, or by a gevent/eventlet Timeout, a
kill or KeyboardInterrupt -- drops the connection at once (1006): nothing
may follow part of a frame on the wire.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, TypeVar, Union

from wsproto.events import CloseConnection, Event, Ping, Pong
from wsproto.utilities import LocalProtocolError

from . import presets as _presets
from . import registry as _registry
from .errors import ConnectionClosed
from .log import logger
from .protocol import (
    ABNORMAL,
    CLOSE,
    FAIL,
    GOING_AWAY,
    INTERNAL_ERROR,
    MESSAGE,
    NO_STATUS,
    NORMAL_CLOSURE,
    PING,
    PONG,
    Protocol,
)
from .session import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_QUEUE,
    check_close,
    check_ping,
    close_log_level,
    store_options,
)

__all__ = ["Base", "DEFAULT_CLOSE_TIMEOUT", "DEFAULT_MAX_QUEUE"]


# Close reason when keepalive gives up on the peer.
_KEEPALIVE_TIMEOUT = "keepalive ping timeout"

# Pongs (and pings) waiting for the write lock beyond which a new pong
# replaces the last one instead of queueing.
_MAX_CONTROLS = 16

# Largest single read when a big frame is arriving.
_MAX_READ = 256 * 1024

# Thread mode: seconds without a read by receive() after which the reader
# thread takes reading back, and the longest it sleeps while a receive() is
# blocked reading (see "reading" below).
_GRACE = 0.05
_MAX_GRACE = 0.5

# Makes _close_with()'s check-and-record atomic: close(), close_all()'s
# closers, the reader and keepalive may start a close at the same moment.
# Held for a few assignments only (never across I/O or a switch), so one lock
# serves every connection; reentrant, so that a signal handler interrupting
# the thread that holds it cannot deadlock.
_close_lock = threading.RLock()

# Codes after which ``for msg in ws`` ends quietly instead of raising.
_OK_CODES = (NORMAL_CLOSURE, GOING_AWAY, NO_STATUS)

Data = Union[str, bytes]
# ``with Client.connect(...) as ws`` gives a Client, not a Base.
_Self = TypeVar("_Self", bound="Base")


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


class Base:
    """A WebSocket connection (the common part of Server and Client).

    Do not instantiate it directly: use :meth:`greenws.Server.accept` or
    :meth:`greenws.Client.connect`.
    """

    # Slots, not a __dict__: ten thousand connections in one worker each
    # save a kilobyte or two.  Subclasses without __slots__ still get a dict.
    __slots__ = (
        "subprotocol",
        "connected",
        "close_reason",
        "close_message",
        "latency",
        "receive_bytes",
        "ping_interval",
        "ping_timeout",
        "max_message_size",
        "close_timeout",
        "max_queue",
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
        "_queue",
        "_message_event",
        "_space_event",
        "_closed_event",
        "_write_lock",
        "_controls",
        "_pings",
        "_closing",
        "_done",
        "_readiness",
        "_armed",
        "_reading",
        "_read_lock",
        "_wake",
        "_reads",
        "_on_duty",
        "_want_read",
        "_thread",
        "_keepalive_thread",
        "__weakref__",
    )

    #: The subprotocol agreed during the handshake, or ``None``.
    subprotocol: Optional[str]
    #: True from the handshake until the connection starts closing.
    connected: bool
    #: Size of each socket read (a larger frame is read in larger pieces).
    receive_bytes: int
    #: Seconds between keepalive pings, or ``None`` for none.
    ping_interval: Optional[float]
    #: Seconds a keepalive pong may take (default: ``ping_interval``).
    ping_timeout: Optional[float]
    #: Largest incoming message in bytes (larger: close 1009), or ``None``.
    max_message_size: Optional[int]
    #: Seconds the closing handshake may take.
    close_timeout: float
    #: Messages that may wait for ``receive()`` before reading pauses.
    max_queue: Optional[int]
    #: The close code (1005 until a close happens).
    close_reason: int
    #: The close reason text, if any.
    close_message: Optional[str]
    #: Round-trip time in seconds of the last answered ping, or ``None``.
    latency: Optional[float]

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
        store_options(
            self,
            receive_bytes=receive_bytes,
            ping_interval=ping_interval,
            max_message_size=max_message_size,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_queue=max_queue,
        )
        self.close_reason = NO_STATUS
        self.close_message = None
        self.latency = None
        self.preset = preset = _presets.resolve(preset, sock=sock, **classes)
        self.thread_class = preset["thread_class"]
        self.event_class = preset["event_class"]
        self.selector_class = preset["selector_class"]

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
        self._protocol = protocol
        # A list, not a deque: it holds at most max_queue messages, and an
        # empty deque costs 600 bytes more per connection.
        self._queue: List[Data] = []
        self._message_event = event_class()
        self._closed_event = event_class()
        self._write_lock = self.preset["lock_class"]()
        # Pings and pongs waiting for the write lock's holder (see _send_controls).
        self._controls: Optional[List[List[Any]]] = None
        # payload -> [waiter or None, time sent, round-trip time once answered]
        self._pings: Dict[bytes, List[Any]] = {}
        self._closing = False
        self._done = False
        readiness = self.preset.readiness
        self._readiness: Any = readiness(sock) if readiness is not None else None
        # Thread mode: set while the queue has room (the reader pauses on it).
        self._space_event: Any = None
        if self._readiness is None:
            self._space_event = event_class()
            self._space_event.set()
            self._read_lock = self.preset["lock_class"]()
            self._wake = event_class()
            self._wake.set()  # the reader thread starts on duty
            self._reads = 0
            self._on_duty = False
            self._want_read = False
        self._armed = False  # hub mode: the readiness watcher is on
        # Hub mode: a greenlet is in _read_once(), or this one handles the
        # bytes that came with the handshake below (a Close among them is
        # answered with reads of its own: the watcher must stay off).
        self._reading = True
        try:
            self.local_address: Any = sock.getsockname()
            self.remote_address: Any = peer if peer else sock.getpeername()
        except OSError:
            self.local_address = self.remote_address = None
        self.connected = True
        # Bytes that came with the handshake are handled now, not when more
        # data happens to arrive.
        if not self._handle(protocol.receive_data(pending)):
            self._finish()
            return
        self._reading = False
        _registry.add(self)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s open %s <-> %s (%s)",
                type(self).__name__,
                self.local_address,
                self.remote_address,
                self.preset.name,
            )
        if self._readiness is not None:
            self._arm()
        else:
            self._thread = self._spawn(self._run)
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

    def send(self, data: Union[str, bytes, bytearray, memoryview, Any]) -> None:
        """Send one message.

        ``str`` is sent as a text message, ``bytes``/``bytearray``/``memoryview``
        as a binary one, anything else as ``str(data)``.  Blocks (cooperatively
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
        if not self.connected or not self._write(message):
            raise ConnectionClosed(self.close_reason, self.close_message)

    def receive(self, timeout: Optional[float] = None) -> Optional[Data]:
        """Return the next message (``str`` or ``bytes``).

        ``timeout=None`` waits for ever, ``0`` does not wait; ``None`` is
        returned when the time runs out.  Messages received before the
        connection closed are returned first; then :class:`ConnectionClosed`
        is raised.
        """
        queue = self._queue
        deadline = None
        while True:
            if queue:
                try:
                    message = queue.pop(0)
                    break
                except IndexError:  # another receiver took it since the test
                    pass
            if self._closing:
                raise ConnectionClosed(self.close_reason, self.close_message)
            remaining = None
            if timeout is not None:
                if deadline is None:
                    deadline = time.monotonic() + timeout
                remaining = max(deadline - time.monotonic(), 0.0)
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
                self._call_reader()
            elif self._readiness is not None:
                read = None if self._reading else self._hub_read(remaining)
            else:
                read = self._read_here(remaining)
            if read is False:
                return None
            if read is None and not queue and not self._closing:
                if remaining == 0.0:
                    return None
                self._message_event.wait(remaining)
        if self._readiness is not None:
            self._arm()
        elif not self._space_event.is_set() and self._room():
            self._space_event.set()  # wake the paused reader
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
        while not payload or payload in self._pings:
            payload = os.urandom(4)
        entry: List[Any] = [self.event_class(), time.monotonic(), None]
        self._pings[payload] = entry
        if not self.connected or not self._write(Ping(payload=payload)):
            self._pings.pop(payload, None)
            raise ConnectionClosed(self.close_reason, self.close_message)
        self._call_reader()
        if not entry[0].wait(timeout):
            self._pings.pop(payload, None)
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
                if exc.reason in _OK_CODES:
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
        event: Union[Event, str, bytes, bytearray, memoryview],
        closing: bool = False,
        timeout: Optional[float] = None,
    ) -> bool:
        """Serialise and send ``event`` (or a whole message) whole.

        Returns False if the connection is gone.

        With ``timeout``, a peer that cannot take the frame in that time (the
        lock is held by a stuck send, or the socket buffer stays full) gets
        the connection aborted instead of blocking the caller for ever.  A
        ping never waits for a whole message (see :meth:`_send_ping`).
        """
        if type(event) is Ping:
            return self._send_ping(event, timeout)
        lock = self._write_lock
        if timeout is None:
            lock.acquire()
        elif not lock.acquire(timeout=timeout):
            self._drop()  # the holder's send fails, and it lets go
            return False
        try:
            if self._done and not closing:
                return False
            # From here on, whatever stops the write leaves the peer with an
            # unknown part of the frame (and the compressor or wsproto with a
            # message the peer never got): the connection is dropped.
            try:
                if isinstance(event, (str, bytes, bytearray, memoryview)):
                    data = self._protocol.send_message(event)
                else:
                    data = self._protocol.send(event)
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
            except LocalProtocolError:
                return False
            except (OSError, ValueError):
                # The peer is gone (or the socket was closed under us).
                self._drop()
                return False
            except BaseException:
                # Interrupted (gevent/eventlet Timeout, kill, KeyboardInterrupt).
                self._drop()
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
    # that whoever holds the lock writes them in the order they were queued.

    def _write_nowait(
        self, take: Any, raw: Any, flags: int, timeout: Optional[float] = None
    ) -> Any:
        """Write what ``take()`` gives, as far as the socket takes it at once.

        ``raw.send(data, flags)`` must never block (a non-blocking socket on
        the same file descriptor, or ``MSG_DONTWAIT``).  Returns True when
        it all went out, False when the connection is gone, None when
        nothing was done: the write lock is taken (``timeout``: waited for
        that long).  Otherwise it returns a list of what is still to send
        (with the control frames queued meanwhile, if any) and keeps the
        write lock: the caller must hand both to :meth:`_write_rest`.
        """
        lock = self._write_lock
        got = lock.acquire(False) if timeout is None else lock.acquire(timeout=timeout)
        if not got:
            return None
        rest: Optional[List[Any]] = None
        try:
            if self._done:
                return False
            try:
                pieces = self._frames(take() if callable(take) else take)
                if not pieces:
                    return True
                data = pieces[0]
                if type(data) is not bytes:
                    rest = pieces  # large: the writer sends it
                    return rest
                try:
                    sent = raw.send(data, flags)
                except BlockingIOError:
                    sent = 0
            except LocalProtocolError:
                return False
            except (OSError, ValueError):
                self._drop()
                return False
            except BaseException:
                self._drop()
                raise
            if sent < len(data):
                rest = [memoryview(data)[sent:], *pieces[1:]]
            elif len(pieces) > 1 or self._controls:
                # More pieces, or pongs waiting: they may take waiting.
                rest = pieces[1:]
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
            except (OSError, ValueError):
                self._drop()
                return False
            except BaseException:
                self._drop()
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
    # ping payload or None, time sent or None], and whoever holds the lock
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
                item[3] = now = time.monotonic()
                if item[2] is not None:
                    entry = self._pings.get(item[2])
                    if entry is not None:
                        entry[1] = now  # round trips count from here
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

    def _queue_pong(self, payload: bytes) -> bool:
        """Queue a pong for ``payload``; False if none may be sent any more.

        The reader then sends it with :meth:`_flush_controls`, which never
        waits for the lock (only for the socket, when the peer does not read
        its pongs: TCP then pushes back on its pings).
        """
        try:
            frame = self._protocol.send(Pong(payload=payload))
        except LocalProtocolError:
            return False  # our Close is out: no more pongs
        controls = self._controls
        if controls is None:
            controls = self._controls = []
        if len(controls) >= _MAX_CONTROLS:
            last = controls[-1]
            if last[1] is None and last[2] is None:
                # A flood of pings while a long write holds the lock: only
                # the latest needs an answer (RFC 6455 5.5.3).
                last[0] = frame
                return True
        controls.append([frame, None, None, None])
        return True

    def _send_ping(self, event: Ping, timeout: Optional[float]) -> bool:
        """Send a ping now, or between two fragments of the message going out.

        Returns False when the connection is gone, or when the ping could not
        leave within ``timeout`` (what that means is the caller's to say).
        The ping's entry in _pings gets the time it actually left.
        """
        try:
            frame = self._protocol.send(event)
        except LocalProtocolError:
            return False
        item: List[Any] = [frame, None, bytes(event.payload), None]
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

    def _drop(self) -> None:
        """End the connection now: a write failed or was cut short.

        Part of a frame may be on the wire, so nothing else may be sent; in
        hub mode, the watcher must not outlive the call, which may return
        to a server that closes the socket next.
        """
        if not self._closing:
            self.close_reason = ABNORMAL
            self.close_message = None
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
    # Two ways to read, chosen by the preset:
    #
    # - Thread mode (threads, or classes greenws knows nothing about): a
    #   thread in receive() reads the socket itself, under a lock, so that a
    #   message needs no hand-off between threads (one costs more than the
    #   rest of a round trip).  A background reader per connection reads
    #   whenever receive() does not: it takes over after _GRACE seconds
    #   without a read by receive(), or at once when ping(), close() or
    #   keepalive calls it, and hands reading back as soon as a receive()
    #   asks for it.  So pings are answered and closes seen while the
    #   application does something else.
    # - Hub mode (gevent, eventlet): no reader of its own.  A greenlet that
    #   waits in receive() reads the socket itself (no hand-off per message),
    #   and while nobody receives, a readiness watcher on the hub spawns a
    #   short-lived greenlet when data arrives, so pings are answered and
    #   closes seen.  An idle connection then costs one watcher instead of a
    #   parked greenlet and its stack.

    def _read_once(self) -> bool:
        """One recv() and whatever it brings; False when reading is over."""
        protocol = self._protocol
        try:
            # Read a large frame in large pieces, small ones in small.
            data = self.sock.recv(
                max(self.receive_bytes, min(protocol.wanted, _MAX_READ))
            )
        except (OSError, ValueError):
            data = b""
        if not data:
            self._eof()
            return False
        # TLS: a record larger than the read leaves decrypted bytes inside
        # the SSL object, where no readiness check on the socket sees them.
        pending = self._tls_pending
        if pending is not None:
            try:
                while pending():
                    data += self.sock.recv(pending())
            except (OSError, ValueError):
                pass  # the next read reports it
        return self._handle(protocol.receive_data(data))

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

    def _room(self) -> bool:
        """Whether reading may go on (backpressure: the queue is not full)."""
        return self.max_queue is None or len(self._queue) < self.max_queue

    # Thread mode.

    def _run(self) -> None:
        """The background reader: reads whenever no receive() does."""
        lock = self._read_lock
        try:
            while self._await_duty():
                try:
                    while self._wait_for_room() and self._read_or_finish():
                        if self._want_read:
                            break
                finally:
                    self._want_read = False
                    self._on_duty = False
                    lock.release()
                self._message_event.set()  # the waiting receive() reads next
        finally:
            self._finish()  # normally done already, under the lock

    def _await_duty(self) -> bool:
        """Sleep until the reader thread has to read; then hold the read lock.

        Returns False once the connection is done.
        """
        wake = self._wake
        pause = _GRACE
        while not self._done:
            reads = self._reads
            woken = wake.wait(pause)
            if woken:
                wake.clear()
            elif self._reads != reads:
                pause = _GRACE  # receive() is reading: leave it to it
                continue
            if self._read_lock.acquire(False):
                if not self._done:
                    self._on_duty = True
                    self._want_read = False
                    return True
                self._read_lock.release()
                break
            # A receive() is blocked reading; the longer it stays blocked,
            # the less often this thread looks.
            pause = _GRACE if woken else min(pause * 2, _MAX_GRACE)
        return False

    def _read_here(self, timeout: Optional[float]) -> Optional[bool]:
        """Wait up to ``timeout`` for data and read it in the calling thread.

        Returns False if the time ran out, and None at once if another
        thread is reading; that one wakes ``_message_event`` when it stops
        (``_want_read`` asks it to).
        """
        lock = self._read_lock
        if not lock.acquire(False):
            self._want_read = True
            return None
        try:
            if self._done:
                return True
            if timeout is not None and not self._ready(selectors.EVENT_READ, timeout):
                return False
            self._reads += 1
            self._read_or_finish()
        finally:
            lock.release()
            if self._want_read:
                self._message_event.set()
        return True

    def _read_or_finish(self) -> bool:
        """One read (read lock held); finish, still holding it, when over."""
        try:
            more = self._read_once()
        except Exception:  # noqa: BLE001 - logged there; the reader goes on
            self._reader_failed()
            more = False
        if not more:
            self._finish()
        return more

    def _call_reader(self) -> None:
        """Thread mode: make the reader thread read now, if nobody does.

        For whatever needs an answer from the peer (a pong, its Close) when
        the application may not be receiving.
        """
        if self._readiness is None and not self._on_duty:
            self._wake.set()

    def _wait_for_room(self) -> bool:
        """Pause while the queue is full (TCP then pushes back on the peer)."""
        while not self._closing and not self._room():
            self._space_event.clear()
            if not self._closing and not self._room():
                self._space_event.wait()
        return True

    # Hub mode.

    def _arm(self) -> None:
        """Watch for incoming data if nobody reads and there is room."""
        if (
            not self._armed
            and not self._reading
            and not self._done
            and (self._closing or self._room())
        ):
            self._armed = True
            self._readiness.arm(self._on_readable)

    def _disarm(self) -> None:
        if self._armed:
            self._armed = False
            self._readiness.disarm()

    def _on_readable(self) -> None:
        """Hub callback (must not block): hand the data to a new greenlet."""
        self._disarm()
        self.thread_class(target=self._drain).start()

    def _drain(self) -> None:
        """Read what the watcher saw, unless a receive() took it meanwhile."""
        if not self._reading and not self._done:
            # Timeout 0: only read if the data is still there, never block.
            self._hub_read(0)
            # A receive() waiting on the event may take over reading.
            self._message_event.set()

    def _hub_read(self, timeout: Optional[float]) -> bool:
        """Wait up to ``timeout`` for data and read it (hub mode).

        Returns False if the time ran out.  Whatever happens -- even a
        gevent/eventlet Timeout of the caller's -- reading is handed back to
        the watcher afterwards, or the connection is finished.
        """
        self._disarm()
        self._reading = True
        ready = more = True
        try:
            ready = self._readiness.wait(timeout)
            if ready:
                more = self._read_once()
        except Exception:  # noqa: BLE001 - logged there; the reader goes on
            self._reader_failed()
            more = False
        finally:
            self._reading = False
            if more:
                self._arm()  # nobody may receive for a while: keep watching
            else:
                self._finish()
        return ready

    # Keepalive (both modes).

    def _keepalive(self) -> None:
        """Ping every ping_interval; fail with 1011 if a pong is late."""
        interval = self.ping_interval or 0.0
        timeout = self.ping_timeout or 0.0
        closed = self._closed_event
        while not closed.wait(interval):
            payload = os.urandom(4)
            entry: List[Any] = [self.event_class(), time.monotonic(), None]
            self._pings[payload] = entry
            # The ping may wait for the fragment going out, but must leave
            # within ping_timeout; the pong then has ping_timeout from when
            # the ping left (entry[1]), so a busy connection is not dead.
            if not self._write(Ping(payload=payload), timeout=timeout or None):
                self._pings.pop(payload, None)
                if self._done or self._closing:
                    return  # the connection is gone, or going
            else:
                self._call_reader()
                left = max(entry[1] + timeout - time.monotonic(), 0.0)
                if entry[0].wait(left) or self._done:
                    continue
            self._close_with(INTERNAL_ERROR, _KEEPALIVE_TIMEOUT, send=False)
            self._finish()
            return

    def _handle(self, actions: Any) -> bool:
        """Act on what the protocol reported; False when reading must stop.

        Nothing here waits until every message is queued: pongs are queued
        in order with them (any later write sends them first) and sent
        after, so a gevent/eventlet Timeout or a kill that interrupts the
        wait loses nothing that was read.
        """
        pong = False
        for kind, value in actions:
            if kind == MESSAGE:
                if not self._closing:
                    self._queue.append(value)
                    self._message_event.set()
            elif kind == PING:
                pong = self._queue_pong(value) or pong
            elif kind == PONG:
                self._pong(value)
            elif kind == CLOSE or kind == FAIL:  # always the last action
                if pong:
                    self._flush_controls()
                if kind == CLOSE:
                    self._peer_closed(*value)
                else:
                    self._close_with(*value)
                return False
        if pong:
            self._flush_controls()
        return True

    def _pong(self, payload: bytes) -> None:
        if payload not in self._pings:
            return  # unsolicited pong: allowed, ignored
        # A pong answers its ping and every earlier one still waiting.
        now = time.monotonic()
        for key in list(self._pings):
            # A ping() whose time ran out meanwhile has taken its own entry.
            entry = self._pings.pop(key, None)
            if entry is not None:
                entry[2] = self.latency = now - entry[1]
                if entry[0] is not None:
                    entry[0].set()
            if key == payload:
                break

    def _peer_closed(self, code: int, reason: Optional[str]) -> None:
        self._close_with(code, reason)  # echo the peer's Close (RFC 6455 5.5.1)
        if not self._owns_socket or self._is_server:
            return  # the server closes the TCP connection first
        # The client waits (close_timeout at most, however much the server
        # still sends) for the server to close TCP.
        deadline = time.monotonic() + self.close_timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.sock.settimeout(remaining)
                if not self.sock.recv(65536):
                    break
        except (OSError, ValueError):
            pass

    def _close_with(self, code: int, reason: Optional[str], send: bool = True) -> bool:
        """Record why the connection closes and send our Close frame, once.

        Used for every way a close starts: ours, the peer's (echoed), and
        failing the connection on a protocol error or a keepalive timeout
        (``send=False`` when the peer is not listening anyway).  Returns
        False if the connection was already closing.
        """
        with _close_lock:
            if self._closing:
                return False
            self._closing = True
            self.connected = False
            self.close_reason = code
            self.close_message = reason
        if send:
            self._write(
                CloseConnection(code=code, reason=reason),
                closing=True,
                timeout=self.close_timeout,
            )
        # Whoever waits must see it, and someone must read on (a paused or
        # idle reader too) until the peer's Close or EOF ends the connection.
        self._message_event.set()
        if self._readiness is not None:
            self._arm()
        else:
            self._space_event.set()
            self._call_reader()
        return True

    def _eof(self) -> None:
        if not self._closing:
            self.close_reason = ABNORMAL
            self.close_message = None
        self.connected = False

    # -- ending -------------------------------------------------------------

    _is_server = False

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
        _registry.discard(self)
        logger.log(
            close_log_level(self.close_reason),
            "%s closed %s: %s %s",
            type(self).__name__,
            self.remote_address,
            self.close_reason,
            self.close_message or "",
        )
        self.connected = False
        self._done = True
        self._closing = True
        if self._readiness is not None:
            self._disarm()
            self._readiness.close()
        self._abort()
        if self._owns_socket:
            try:
                self.sock.close()
            except OSError:  # pragma: no cover
                pass
        self._message_event.set()
        if self._space_event is not None:
            self._space_event.set()
            self._wake.set()  # the reader thread ends
        for entry in list(self._pings.values()):
            if entry[0] is not None:
                entry[0].set()
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
