"""The policy of an open WebSocket, free of I/O.

:class:`Session` sits between :class:`~greenws.protocol.Protocol` (frames)
and an I/O driver (threads, a gevent/eventlet hub, asyncio).  It decides
everything that is not moving bytes or waiting:

- the receive queue and backpressure: whole messages wait in ``queue``;
  reading should pause while :meth:`Session.room` is False, so that TCP
  pushes back on the peer;
- the closing handshake: who closed first, with which code and reason, what
  to answer, when the incoming side is over (``reading``), which close codes
  an application may send (:func:`check_close`);
- pings: payloads, which ping a pong answers, the round-trip time, and
  keepalive's verdict on a peer that stopped answering;
- how the end of a connection is logged.

It takes bytes and the time, and returns bytes to send and tokens to wake;
it never touches a socket, a thread, a lock or a clock, so every rule is
testable with byte strings and made-up times, and every driver gets the same
rules.  A driver calls it with its own serialisation (one lock, one task):
a Session is not thread-safe by itself.
"""

from __future__ import annotations

import enum
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Tuple, Union, cast

from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Ping, Pong
from wsproto.utilities import LocalProtocolError

from .protocol import (
    ABNORMAL,
    GOING_AWAY,
    INTERNAL_ERROR,
    MESSAGE,
    MESSAGE_TOO_BIG,
    NO_STATUS,
    NORMAL_CLOSURE,
    PING,
    PONG,
    Protocol,
    Wire,
)

__all__ = [
    "Session",
    "State",
    "connection_state",
    "check_close",
    "check_ping",
    "close_log_level",
    "Options",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_MAX_QUEUE",
    "KEEPALIVE_TIMEOUT",
    "OK_CODES",
]

Data = Union[str, bytes]
#: The time in seconds, or a function that returns it (read only if needed).
Now = Union[float, Callable[[], float]]

#: Seconds a close waits for the peer's Close frame.
DEFAULT_CLOSE_TIMEOUT = 5.0
#: Messages that may wait in the receive queue before reading pauses.
DEFAULT_MAX_QUEUE = 16

#: Close reason when keepalive gives up on the peer (with code 1011).
KEEPALIVE_TIMEOUT = "keepalive ping timeout"

#: Codes after which ``for msg in ws`` ends quietly instead of raising.
OK_CODES = (NORMAL_CLOSURE, GOING_AWAY, NO_STATUS)

# RFC 6455 7.4.1: codes an endpoint may not put in a Close frame (1005 and
# 1006 mean "none received" and "no Close at all"; 1015 is TLS's failure).
_RESERVED = frozenset({1004, 1005, 1006, 1015})
# Longest close reason: a control frame carries 125 bytes, 2 are the code.
_MAX_REASON = 123
# Longest ping payload (a control frame's).
_MAX_PING = 125


class State(enum.IntEnum):
    """Where a connection is in its life (``ws.state``), with the values of
    the ``websockets`` library's ``State``."""

    #: The opening handshake is under way.
    CONNECTING = 0
    #: Messages flow both ways.
    OPEN = 1
    #: The closing handshake has started (by either side), or the connection
    #: failed: nothing more may be sent; queued messages can still be read.
    CLOSING = 2
    #: The connection is over and its socket closed.
    CLOSED = 3


def connection_state(opened: bool, closing: bool, done: bool) -> State:
    """A connection's :class:`State` from what its driver knows: whether
    the handshake is done (``opened``), whether the closing handshake has
    started or the connection failed (``closing``, :attr:`Session.closing`),
    and whether it is over (``done``)."""
    if done:
        return State.CLOSED
    if closing:
        return State.CLOSING
    return State.OPEN if opened else State.CONNECTING


class Options:
    """The options every connection has (sync or asyncio), declared and
    validated once: both connection classes inherit this."""

    __slots__ = (
        "subprotocol",
        "connected",
        "receive_bytes",
        "ping_interval",
        "ping_timeout",
        "max_message_size",
        "close_timeout",
        "max_queue",
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

    def _store_options(
        self,
        *,
        receive_bytes: int,
        ping_interval: Optional[float],
        max_message_size: Optional[int],
        ping_timeout: Optional[float],
        close_timeout: Optional[float],
        max_queue: Optional[int],
    ) -> None:
        """Validate the options and store them, with their defaults:
        ``ping_timeout`` defaults to ``ping_interval``, ``close_timeout`` to
        :data:`DEFAULT_CLOSE_TIMEOUT`."""
        if receive_bytes <= 0:
            raise ValueError("receive_bytes must be a positive number of bytes")
        if max_queue is not None and max_queue < 1:
            raise ValueError("max_queue must be at least 1, or None for no limit")
        self.subprotocol = None
        self.connected = False
        self.receive_bytes = receive_bytes
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout if ping_timeout is not None else ping_interval
        self.max_message_size = max_message_size
        self.close_timeout = (
            DEFAULT_CLOSE_TIMEOUT if close_timeout is None else close_timeout
        )
        self.max_queue = max_queue


def check_close(code: Any, message: Any) -> Tuple[int, Optional[str]]:
    """Validate what an application passes to ``close(reason, message)``.

    Returns ``(code, message)`` with the default code (1000) filled in.
    Raises :class:`TypeError` for a code that is not an ``int`` or a message
    that is not a ``str``, and :class:`ValueError` for a code that may not
    be sent (RFC 6455 7.4: 1000-1003, 1007-1014 and 3000-4999 may) or a
    message longer than 123 bytes in UTF-8 or not encodable at all.
    """
    if code is None:
        code = NORMAL_CLOSURE
    if not isinstance(code, int) or isinstance(code, bool):
        raise TypeError(f"the close code must be an int, not {type(code).__name__}")
    if not (1000 <= code <= 1014 or 3000 <= code <= 4999) or code in _RESERVED:
        raise ValueError(
            f"close code {code} may not be sent: use 1000-1003, 1007-1014 "
            "or 3000-4999 (RFC 6455 7.4)"
        )
    if message is not None:
        if not isinstance(message, str):
            raise TypeError(
                f"the close message must be a str, not {type(message).__name__}"
            )
        try:
            size = len(message.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"the close message cannot be sent as UTF-8: {exc}"
            ) from None
        if size > _MAX_REASON:
            raise ValueError(
                f"the close message is {size} bytes in UTF-8; at most "
                f"{_MAX_REASON} fit in a Close frame"
            )
    return code, message


def check_ping(data: Any) -> bytes:
    """The payload of an application's ``ping(data)``: ``str`` as UTF-8.

    Raises :class:`TypeError` for something that is not text or bytes-like,
    and :class:`ValueError` for more than 125 bytes (a control frame's).
    """
    # memoryview: bytes-like objects only (bytes(5) would be five zeros).
    payload = (
        data.encode("utf-8") if isinstance(data, str) else memoryview(data).tobytes()
    )
    if len(payload) > _MAX_PING:
        raise ValueError(
            f"a ping payload is at most {_MAX_PING} bytes, not {len(payload)}"
        )
    return payload


def close_log_level(code: int) -> int:
    """How the end of a connection with ``code`` is logged.

    Normal ends (1000, 1001, no status) and application codes (3000-4999)
    at DEBUG; abnormal ends (1006, protocol errors, 1011 ...) at INFO.
    """
    if code in OK_CODES or 3000 <= code <= 4999:
        return logging.DEBUG
    return logging.INFO


class Session:
    """The policy of one open connection (see the module docstring)."""

    __slots__ = (
        "protocol",
        "client",
        "max_queue",
        "queue",
        "closing",
        "close_reason",
        "close_message",
        "reading",
        "latency",
        "answered",
        "max_message_size",
        "_pings",
    )

    def __init__(
        self,
        protocol: Optional[Protocol],
        *,
        client: bool,
        max_queue: Optional[int],
        max_message_size: Optional[int] = None,
    ) -> None:
        # None for a driver whose server does the framing (ASGI): it hands
        # in whole messages and closes (receive_message, peer_closed,
        # begin_close) and never calls what needs frames.
        self.protocol = cast(Protocol, protocol)
        #: Whether this is the client end (it waits for the server to close
        #: TCP after the closing handshake).
        self.client = client
        self.max_queue = max_queue
        #: Whole messages not yet taken by the application, oldest first.
        #: (A list: it holds at most max_queue messages, and an empty deque
        #: costs 600 bytes more per connection.)
        self.queue: List[Data] = []
        #: True once either side has started the closing handshake, or the
        #: connection failed: no more messages are queued or sent.
        self.closing = False
        self.close_reason = NO_STATUS
        self.close_message: Optional[str] = None
        #: False once nothing more is to be read: the peer's Close has come,
        #: or the connection failed.
        self.reading = True
        #: Round-trip time of the last answered ping, in seconds.
        self.latency: Optional[float] = None
        #: Tokens of pings answered since the driver last looked (it empties
        #: the list and wakes their waiters).
        self.answered: List[Any] = []
        #: Largest message :meth:`receive_message` accepts, in bytes (frame
        #: drivers leave the limit to :class:`~greenws.protocol.Protocol`,
        #: which applies it while a message arrives).
        self.max_message_size = max_message_size
        # payload -> [token, time sent, round-trip time once answered, payload]
        self._pings: Dict[bytes, List[Any]] = {}

    @property
    def extensions(self) -> List[str]:
        """The negotiated extensions, as their ``Sec-WebSocket-Extensions``
        header values (empty when the server does the framing: ASGI)."""
        protocol = self.protocol
        return [] if protocol is None else protocol.extensions

    # -- incoming ----------------------------------------------------------

    def receive_data(self, data: bytes, now: Now) -> Optional[List[Wire]]:
        """Feed bytes read from the peer.

        ``now`` is the time, or a function that returns it: only a pong
        needs it, and a driver need not read the clock for every read.

        Whole messages go to ``queue`` (dropped once closing).  Returns the
        frames to send back, in order -- pongs, and the Close frame that
        answers the peer's or fails the connection -- or None when there are
        none (the common case).  ``reading`` turns False when the incoming
        side is over; ``answered`` lists pings a pong answered.  Every frame
        in ``data`` is accounted for before this returns: nothing a caller
        does with the result can lose a message.
        """
        replies: Optional[List[Wire]] = None
        value: Any
        for kind, value in self.protocol.receive_data(data):
            if kind == MESSAGE:
                if not self.closing:
                    self.queue.append(value)
            elif kind == PING:
                if not self.closing:
                    try:
                        pong = self.protocol.send(Pong(payload=value))
                    except LocalProtocolError:
                        # Our Close went out meanwhile (a sync close() in
                        # another thread): no more pongs.
                        continue
                    if replies is None:
                        replies = []
                    replies.append(pong)
            elif kind == PONG:
                self.pong(value, now)
            else:
                # CLOSE: echo the peer's Close (RFC 6455 5.5.1), unless ours
                # went first.  FAIL: a protocol error; our Close says which.
                frame = self.start_close(*value)
                self.reading = False
                if frame is not None:
                    if replies is None:
                        replies = []
                    replies.append(frame)
                break
        return replies

    def room(self) -> bool:
        """Whether reading may go on: the queue is not full (or closing,
        when only the peer's Close is still wanted)."""
        return (
            self.closing or self.max_queue is None or len(self.queue) < self.max_queue
        )

    def receive_message(self, message: Data) -> bool:
        """Feed one whole message, for drivers whose server does the framing.

        Under ASGI the server reassembles frames and answers pings; what
        remains is the receive queue, ``max_message_size`` and the closing
        rules.  The message is queued (dropped once closing) and True is
        returned; a message over ``max_message_size`` bytes (UTF-8 for text)
        is not queued: the session starts closing with 1009 and False tells
        the driver to send that close (``close_reason``, ``close_message``).
        """
        limit = self.max_message_size
        if limit is not None and len(message) > limit // 4:
            # A character is at most 4 bytes in UTF-8: only texts near the
            # limit need encoding to be measured.
            size = (
                len(message.encode("utf-8", "surrogatepass"))
                if isinstance(message, str)
                else len(message)
            )
            if size > limit:
                return not self.begin_close(MESSAGE_TOO_BIG, "message too big")
        if not self.closing:
            self.queue.append(message)
        return True

    def peer_closed(self, code: int, reason: Optional[str]) -> None:
        """The connection ended as reported whole by a server that does the
        framing (ASGI's ``websocket.disconnect``): the peer's close code, or
        1006 when it vanished.  The first close decides the code, as with
        frames; nothing more is read."""
        self.begin_close(code, reason)
        self.reading = False

    def awaits_eof(self) -> bool:
        """Whether, reading being over, the driver should let the peer close
        TCP first (waiting at most its close timeout): true for a client once
        both Close frames have crossed (RFC 6455 7.1.1: the server closes
        the TCP connection first).  Otherwise the driver closes it now."""
        return self.client and self.protocol.state is ConnectionState.CLOSED

    def connection_lost(self) -> None:
        """The peer is gone (EOF or a socket error): 1006 unless closing."""
        if not self.closing:
            self.closing = True
            self.close_reason = ABNORMAL
            self.close_message = None
        self.reading = False

    # -- closing -----------------------------------------------------------

    def start_close(self, code: int, reason: Optional[str]) -> Optional[bytes]:
        """Begin the closing handshake with ``code`` and ``reason``.

        Returns our Close frame, or None if the connection was already
        closing (the first close decides the code).  ``code`` and ``reason``
        must be valid (see :func:`check_close`), or come from the peer.
        """
        if not self.begin_close(code, reason):
            return None
        return self.close_frame(code, reason)

    def close_frame(self, code: int, reason: Optional[str]) -> Optional[bytes]:
        """Our Close frame for a close :meth:`begin_close` recorded, or None
        if wsproto is past sending one.  (A sync driver builds it under its
        write lock, right before sending: a message going out is finished
        first.)"""
        try:
            return self.protocol.send(CloseConnection(code=code, reason=reason))
        except LocalProtocolError:  # wsproto already closed
            return None

    def begin_close(self, code: int, reason: Optional[str]) -> bool:
        """Record that the closing handshake starts with ``code`` and
        ``reason``, without framing a Close (:meth:`start_close` frames it;
        a driver whose server does the framing sends its own close).
        False if the connection was already closing: the first close
        decides the code."""
        if self.closing:
            return False
        self.closing = True
        self.close_reason = code
        self.close_message = reason
        return True

    def fail(self, code: int, reason: Optional[str]) -> bool:
        """Fail the connection without a Close frame (the peer does not
        listen, e.g. keepalive gave up).  False if it was already closing."""
        if self.closing:
            return False
        self.closing = True
        self.close_reason = code
        self.close_message = reason
        self.reading = False
        return True

    def keepalive_failed(self) -> bool:
        """Keepalive's pong did not come in time: fail with 1011."""
        return self.fail(INTERNAL_ERROR, KEEPALIVE_TIMEOUT)

    # -- pings -------------------------------------------------------------

    def ping(self, payload: bytes, token: Any, now: float) -> bytes:
        """Register a ping and return its frame.

        An empty payload, or one already waiting for its pong, is replaced
        by four random bytes; ``token`` (say, an event to set) goes to
        ``answered`` when the pong comes.
        """
        return self.ping_frame(self.add_ping(payload, token, now))

    def add_ping(self, payload: bytes, token: Any, now: float) -> List[Any]:
        """Register a ping (as :meth:`ping`) without framing it; return its
        entry: ``[token, time sent, round-trip time once answered, payload]``.
        A driver that may send the ping later keeps the entry for
        :meth:`ping_frame`, :meth:`ping_sent` and the round-trip time."""
        pings = self._pings
        while not payload or payload in pings:
            payload = os.urandom(4)
        entry = pings[payload] = [token, now, None, payload]
        return entry

    def ping_frame(self, entry: List[Any]) -> bytes:
        """The frame of a ping :meth:`add_ping` registered (raises
        ``LocalProtocolError`` once our Close is out)."""
        return self.protocol.send(Ping(payload=entry[3]))

    def ping_sent(self, entry: List[Any], now: float) -> None:
        """The ping left at ``now``: its round trip, and keepalive's wait
        for its pong, count from here, not from when it was queued behind a
        long message."""
        entry[1] = now

    def pong_due(self, entry: List[Any], timeout: float, now: float) -> float:
        """Seconds left, at ``now``, for the pong of the ping ``entry``
        (sent or not) within ``timeout`` of when it left; at least 0."""
        return max(float(entry[1]) + timeout - now, 0.0)

    def forget_ping(self, token: Any) -> None:
        """Drop a ping nobody waits for any more (its caller timed out)."""
        for payload, entry in list(self._pings.items()):
            if entry[0] is token:
                self._pings.pop(payload, None)

    def waiting_pings(self) -> List[Any]:
        """Tokens of every ping still waiting (to wake them on close)."""
        return [entry[0] for entry in self._pings.values()]

    def pong(self, payload: bytes, now: Now) -> None:
        """A pong for ``payload`` came: it answers its ping and every earlier
        one still waiting (their tokens go to ``answered``, their entries get
        the round-trip time); an unsolicited pong is ignored."""
        pings = self._pings
        if payload not in pings:
            return  # unsolicited pong: allowed, ignored
        if callable(now):
            now = now()
        # A pong answers its ping and every earlier one still waiting.
        for key in list(pings):
            # A sync ping() whose time ran out meanwhile has taken its own
            # entry (forget_ping); the pings after it stay unanswered.
            entry = pings.pop(key, None)
            if entry is not None:
                entry[2] = self.latency = now - entry[1]
                self.answered.append(entry[0])
            if key == payload:
                break
