"""Every open connection of this process, so that shutdown can close them.

A worker that stops (gunicorn's SIGTERM, ``--max-requests`` recycling, a
deploy) should tell its WebSocket peers it is going away (1001) instead of
letting them see the TCP connection vanish (1006).  :func:`close_all` does
that for every connection still open in the process; :func:`stop` does it
too and also closes every connection that opens afterwards, for a server
that keeps accepting for a while after it began to stop.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, List, Optional, Set, Tuple

from .log import logger

if TYPE_CHECKING:
    from .connection import Base

__all__ = [
    "connections",
    "close_all",
    "stop",
    "stopping",
]

#: Close code sent by :func:`close_all` and :func:`stop`.
GOING_AWAY = 1001
#: Close reason sent by :func:`close_all` and :func:`stop`.
SHUTTING_DOWN = "server shutting down"

# Seconds close_all() still gives the connections it dropped at its deadline
# (and their closers) to wind down: a dropped socket ends its reader at once.
_WIND_DOWN = 0.5

# A plain set: add/discard and list() copies are atomic under the GIL, which
# a WeakSet's Python-level iteration is not.
_live: Set[Base] = set()

# (code, reason) once stop() was called: every connection opened from then on
# is closed at once.
_stopping: Optional[Tuple[int, Optional[str]]] = None


def add(conn: Base) -> None:
    """Called by a connection when it opens."""
    _live.add(conn)
    # Read after adding, while stop() sets it before listing: a connection
    # opening during stop() is closed by one or the other (or both: the
    # second close does nothing), never by neither.
    stopping = _stopping
    if stopping is not None:
        _start_closing(conn, stopping[0], stopping[1], None)


def discard(conn: Base) -> None:
    """Called by a connection when it is over."""
    _live.discard(conn)


def connections() -> List[Base]:
    """The connections of this process that are still open."""
    return list(_live)


def stopping() -> bool:
    """Whether :func:`stop` was called in this process."""
    return _stopping is not None


def close_all(
    code: int = GOING_AWAY,
    reason: Optional[str] = SHUTTING_DOWN,
    timeout: Optional[float] = None,
) -> int:
    """Close every open connection of this process; return how many.

    Every connection starts its close at once, each in a thread or greenlet
    of its own preset, so a peer that stopped reading (whose Close frame
    waits behind a stuck send) delays no other.  The closing handshakes get
    ``timeout`` seconds in total (default: the largest ``close_timeout``);
    the TCP connections still open then are dropped, and ``close_all``
    returns soon after, whatever the peers do.  Safe to call from any thread
    or greenlet of the running preset.
    """
    conns = connections()
    if timeout is None:
        timeout = max((conn.close_timeout for conn in conns), default=0.0)
    deadline = time.monotonic() + timeout
    closers = [_start_closing(conn, code, reason, deadline) for conn in conns]
    for conn in conns:
        if not conn._closed_event.wait(_left(deadline)):
            # Its closer may be stuck behind a send: dropping the socket
            # ends that send, the closer and the reader.
            conn._abort()
    wound_down = time.monotonic() + _WIND_DOWN
    for closer in closers:
        join = getattr(closer, "join", None)
        if join is not None:
            join(_left(wound_down))
    return len(conns)


def stop(
    code: int = GOING_AWAY,
    reason: Optional[str] = SHUTTING_DOWN,
    timeout: Optional[float] = None,
) -> int:
    """The process is stopping: :func:`close_all`, now and from now on.

    A server that was told to stop may still accept connections for a while
    (gunicorn's workers for up to a second, eventlet.wsgi and gevent.pywsgi
    until the process ends).  After ``stop()`` every connection that opens
    is closed with ``code`` and ``reason`` as soon as its handshake is done,
    so that the worker is not kept alive by it and its peer reconnects (to
    a server that is not stopping) at once.  Returns the number of
    connections that were open; there is no way back.
    """
    global _stopping
    _stopping = (code, reason)
    return close_all(code, reason, timeout)


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def _start_closing(
    conn: Base, code: int, reason: Optional[str], deadline: Optional[float]
) -> Any:
    """Close ``conn`` in a new thread or greenlet of its preset; return it.

    Without ``deadline``, the handshake gets the connection's close_timeout.
    """
    try:
        return conn._spawn(lambda: _close(conn, code, reason, deadline))
    except Exception:  # noqa: BLE001 - e.g. "can't start new thread"
        logger.exception("cannot close %s: dropping it", conn.remote_address)
        conn._abort()
        return None


def _close(
    conn: Base, code: int, reason: Optional[str], deadline: Optional[float]
) -> None:
    try:
        conn._close_with(code, reason)
        conn._wait_closed(
            conn.close_timeout if deadline is None else _left(deadline)
        )
    except Exception:  # noqa: BLE001 - a bug of ours: say so, drop the peer
        logger.exception("closing %s failed", conn.remote_address)
        conn._abort()
