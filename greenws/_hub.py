"""The hub driver: how a sync connection reads under gevent or eventlet.

No reader of its own.  A greenlet that waits in ``receive()`` reads the
socket itself (no hand-off per message), and while nobody receives, a
readiness watcher on the hub spawns a short-lived greenlet when data
arrives, so pings are answered and closes seen.  An idle connection then
costs one watcher instead of a parked greenlet and its stack.  While the
session's queue is full (``room()``), nothing watches: TCP pushes back on
the peer.

The watcher comes from the preset: ``readiness(sock)`` gives an object with
``arm(callback)``, ``disarm()``, ``wait(timeout) -> bool`` and ``close()``
(see :mod:`greenws.presets._gevent` and :mod:`greenws.presets._eventlet`).
What is read goes to :meth:`greenws.connection.Base._read_once`.
"""

from __future__ import annotations

import select
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from .connection import Base

__all__ = ["HubReader", "readable_now"]


class HubReader:
    """Reads for one connection: in the receiving greenlet, or through the
    hub.  It is itself the watcher's callback (no allocation per arm)."""

    __slots__ = ("conn", "readiness", "armed", "reading")

    def __init__(self, conn: Base, readiness: Callable[[Any], Any]) -> None:
        self.conn = conn
        self.readiness = readiness(conn.sock)
        #: The readiness watcher is on.
        self.armed = False
        #: A greenlet is in read(), or the connection handles the bytes that
        #: came with the handshake (a Close among them is answered with
        #: reads of its own: the watcher must stay off).
        self.reading = True

    def start(self) -> None:
        """The connection is open: watch for data."""
        self.reading = False
        self.arm()

    def read(self, timeout: Optional[float]) -> Optional[bool]:
        """Wait up to ``timeout`` for data and read it; None at once if
        another greenlet is reading.

        Returns False if the time ran out.  Whatever happens -- even a
        gevent/eventlet Timeout of the caller's -- reading is handed back to
        the watcher afterwards, or the connection is finished.
        """
        if self.reading:
            return None
        self.disarm()
        self.reading = True
        conn = self.conn
        ready = more = True
        try:
            ready = self.readiness.wait(timeout)
            if ready:
                more = conn._read_once()
        except Exception:  # noqa: BLE001 - logged there; the reader goes on
            conn._reader_failed()
            more = False
        finally:
            self.reading = False
            if more:
                self.arm()  # nobody may receive for a while: keep watching
            else:
                conn._finish()
        return ready

    def arm(self) -> None:
        """Watch for incoming data if nobody reads and there is room."""
        if (
            not self.armed
            and not self.reading
            and not self.conn._done
            and self.conn._session.room()
        ):
            self.armed = True
            self.readiness.arm(self)

    # A message was taken: there may be room again.  Closing: read on until
    # the peer's Close or EOF, whatever the queue holds.
    resume = closing = arm

    def disarm(self) -> None:
        if self.armed:
            self.armed = False
            self.readiness.disarm()

    def call(self) -> None:
        """Nothing to do: the watcher sees whatever the peer sends."""

    def finish(self) -> None:
        """The connection is over: no watcher outlives it (the socket may be
        closed next, even by a server behind our back)."""
        self.disarm()
        self.readiness.close()

    def __call__(self) -> None:
        """Hub callback (must not block): hand the data to a new greenlet."""
        self.disarm()
        self.conn.thread_class(target=self._drain).start()

    def _drain(self) -> None:
        """Read what the watcher saw, unless a receive() took it meanwhile."""
        if not self.reading and not self.conn._done:
            # Timeout 0: only read if the data is still there, never block.
            self.read(0)
            # A receive() waiting on the event may take over reading.
            self.conn._message_event.set()


def readable_now(fd: int, poll: Callable[[], Any]) -> bool:
    """Whether ``fd`` has data (or EOF) right now; never blocks.

    ``poll`` is the unpatched ``select.poll``: a monkey-patched program has
    a green one or none at all.
    """
    poller = poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
