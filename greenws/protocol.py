"""The sans-I/O side of an open WebSocket: bytes in, messages and replies out.

:class:`Protocol` wraps a :class:`wsproto.connection.Connection` (the frame
layer; the HTTP handshake is done before, see :mod:`greenws.handshake`). It
reassembles fragmented messages, enforces ``max_message_size`` while a message
is still arriving, and turns wsproto's events into the few things the I/O loop
acts on.  It never touches a socket, a thread or a clock.
"""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

__all__ = [
    "Protocol",
    "MESSAGE",
    "PING",
    "PONG",
    "CLOSE",
    "FAIL",
    "NORMAL_CLOSURE",
    "GOING_AWAY",
    "NO_STATUS",
    "ABNORMAL",
    "MESSAGE_TOO_BIG",
    "INTERNAL_ERROR",
]

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
NO_STATUS = 1005
ABNORMAL = 1006
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011

# What receive_data() reports, as (kind, value) pairs.
MESSAGE = 0  #: value: a whole message, ``str`` or ``bytes``
PING = 1  #: value: the ping payload, to be answered with a pong
PONG = 2  #: value: the pong payload
CLOSE = 3  #: value: (code, reason) of the peer's Close frame
FAIL = 4  #: value: (code, reason): we must fail the connection with this Close

Action = Tuple[int, object]
Message = Union[str, bytes]


class Protocol:
    """Frame-level state of one connection, free of I/O."""

    __slots__ = ("_conn", "max_message_size", "_parts", "_size", "_failed")

    def __init__(self, conn: Connection, max_message_size: Optional[int] = None):
        self._conn = conn
        self.max_message_size = max_message_size
        self._parts: List[Union[str, bytes]] = []
        self._size = 0
        self._failed = False

    @property
    def state(self) -> ConnectionState:
        """wsproto's view: OPEN, LOCAL_CLOSING, REMOTE_CLOSING or CLOSED."""
        return self._conn.state

    def send(self, event: Event) -> bytes:
        """Serialise ``event``; raises ``LocalProtocolError`` once closing."""
        return self._conn.send(event)

    def receive_data(self, data: bytes) -> List[Action]:
        """Feed bytes from the peer; return what they mean, in order.

        After a ``CLOSE`` or ``FAIL`` action nothing more is reported: the
        connection is over as far as incoming data goes.
        """
        if self._failed or self._conn.state is ConnectionState.CLOSED:
            return []
        conn = self._conn
        try:
            conn.receive_data(data)
        except LocalProtocolError:  # pragma: no cover - guarded by the check above
            return []
        actions: List[Action] = []
        append = actions.append
        for event in conn.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                data_part = event.data  # type: ignore[attr-defined]
                self._size += len(data_part)
                limit = self.max_message_size
                if limit is not None and self._size > limit:
                    self._failed = True
                    self._parts = []
                    append((FAIL, (MESSAGE_TOO_BIG, "message too big")))
                    break
                if event.message_finished:  # type: ignore[attr-defined]
                    parts = self._parts
                    if parts:
                        parts.append(data_part)
                        whole: Message = (
                            "".join(parts) if kind is TextMessage else b"".join(parts)  # type: ignore[arg-type]
                        )
                        self._parts = []
                    elif kind is BytesMessage:
                        whole = bytes(data_part)
                    else:
                        whole = data_part
                    self._size = 0
                    append((MESSAGE, whole))
                else:
                    self._parts.append(data_part)
            elif kind is Ping:
                append((PING, bytes(event.payload)))  # type: ignore[attr-defined]
            elif kind is Pong:
                append((PONG, bytes(event.payload)))  # type: ignore[attr-defined]
            elif kind is CloseConnection:
                assert isinstance(event, CloseConnection)
                if conn.state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
                    # wsproto reports a protocol violation as a CloseConnection
                    # without changing state: it was never sent by the peer.
                    self._failed = True
                    append((FAIL, (event.code, event.reason or "")))
                else:
                    append((CLOSE, (event.code, event.reason)))
                break
        return actions
