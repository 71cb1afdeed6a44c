"""Every open connection of this process, so that shutdown can close them.

A worker that stops (gunicorn's SIGTERM, ``--max-requests`` recycling, a
deploy) should tell its WebSocket peers it is going away (1001) instead of
letting them see the TCP connection vanish (1006).  :func:`close_all` does
that for every connection still open in the process.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, List, Optional, Set

if TYPE_CHECKING:
    from .connection import Base

__all__ = ["connections", "close_all"]

#: Close code sent by :func:`close_all`.
GOING_AWAY = 1001

# A plain set: add/discard and list() copies are atomic under the GIL, which
# a WeakSet's Python-level iteration is not.
_live: Set[Base] = set()


def add(conn: Base) -> None:
    """Called by a connection when it opens."""
    _live.add(conn)


def discard(conn: Base) -> None:
    """Called by a connection when it is over."""
    _live.discard(conn)


def connections() -> List[Base]:
    """The connections of this process that are still open."""
    return list(_live)


def close_all(
    code: int = GOING_AWAY,
    reason: Optional[str] = "server shutting down",
    timeout: Optional[float] = None,
) -> int:
    """Close every open connection of this process; return how many.

    Close frames go to all peers first, then each closing handshake is given
    until ``timeout`` seconds (default: the largest ``close_timeout``) in
    total, after which the remaining TCP connections are dropped.  Safe to
    call from any thread or greenlet of the running preset.
    """
    conns = connections()
    for conn in conns:
        conn._close_with(code, reason)
    if timeout is None:
        timeout = max((conn.close_timeout for conn in conns), default=0.0)
    deadline = time.monotonic() + timeout
    for conn in conns:
        conn._wait_closed(max(deadline - time.monotonic(), 0.0))
    return len(conns)
