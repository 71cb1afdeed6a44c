"""The thread driver: how a sync connection reads with plain threads.

A thread in ``receive()`` reads the socket itself, under a lock, so that a
message needs no hand-off between threads (one costs more than the rest of
a round trip).  A background reader per connection reads whenever
``receive()`` does not: it takes over after :data:`_GRACE` seconds without
a read by ``receive()``, or at once when ``ping()``, ``close()`` or
keepalive calls it, and hands reading back as soon as a ``receive()`` asks
for it.  So pings are answered and closes seen while the application does
something else.  While the session's queue is full (``room()``), the reader
pauses and TCP pushes back on the peer.

Used for threads and for classes greenws knows nothing about; what is read
goes to :meth:`greenws.connection.Base._read_once`.
"""

from __future__ import annotations

import selectors
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .connection import Base

__all__ = ["ThreadReader"]

# Seconds without a read by receive() after which the reader thread takes
# reading back, and the longest it sleeps while a receive() is blocked
# reading.
_GRACE = 0.05
_MAX_GRACE = 0.5


class ThreadReader:
    """Reads for one connection: in the receiving thread, or its own."""

    __slots__ = ("conn", "space", "lock", "wake", "reads", "on_duty", "want_read")

    def __init__(self, conn: Base) -> None:
        event_class = conn.event_class
        self.conn = conn
        #: Set while the queue has room (the reader pauses on it).
        self.space = event_class()
        self.space.set()
        #: Held by whoever reads.
        self.lock = conn.preset["lock_class"]()
        #: Wakes the reader thread (it starts on duty).
        self.wake = event_class()
        self.wake.set()
        #: Reads done by receive() (the reader thread backs off meanwhile).
        self.reads = 0
        #: The reader thread is reading.
        self.on_duty = False
        #: A receive() wants the read lock back.
        self.want_read = False

    def start(self) -> None:
        """The connection is open: start the reader thread."""
        conn = self.conn
        conn._thread = conn._spawn(self._run)

    def read(self, timeout: Optional[float]) -> Optional[bool]:
        """Wait up to ``timeout`` for data and read it in the calling thread.

        Returns False if the time ran out, and None at once if another
        thread is reading; that one wakes the connection's message event
        when it stops (``want_read`` asks it to).
        """
        conn = self.conn
        lock = self.lock
        if not lock.acquire(False):
            self.want_read = True
            return None
        try:
            if conn._done:
                return True
            if timeout is not None and not conn._ready(selectors.EVENT_READ, timeout):
                return False
            self.reads += 1
            self._read_or_finish()
        finally:
            lock.release()
            if self.want_read:
                conn._message_event.set()
        return True

    def resume(self) -> None:
        """A message was taken: wake the reader if it paused for room."""
        space = self.space
        if not space.is_set() and self.conn._session.room():
            space.set()

    def call(self) -> None:
        """Make the reader thread read now, if nobody does: for whatever
        needs an answer from the peer (a pong, its Close) when the
        application may not be receiving."""
        if not self.on_duty:
            self.wake.set()

    def closing(self) -> None:
        """The connection is closing: read on (a paused reader too) until
        the peer's Close or EOF."""
        self.space.set()
        self.call()

    def finish(self) -> None:
        """The connection is over: the reader thread ends."""
        self.space.set()
        self.wake.set()

    # -- the reader thread --------------------------------------------------

    def _run(self) -> None:
        """The background reader: reads whenever no receive() does."""
        lock = self.lock
        conn = self.conn
        try:
            while self._await_duty():
                try:
                    while self._wait_for_room() and self._read_or_finish():
                        if self.want_read:
                            break
                finally:
                    self.want_read = False
                    self.on_duty = False
                    lock.release()
                conn._message_event.set()  # the waiting receive() reads next
        finally:
            conn._finish()  # normally done already, under the lock

    def _await_duty(self) -> bool:
        """Sleep until the reader thread has to read; then hold the read lock.

        Returns False once the connection is done.
        """
        conn = self.conn
        wake = self.wake
        pause = _GRACE
        while not conn._done:
            reads = self.reads
            woken = wake.wait(pause)
            if woken:
                wake.clear()
            elif self.reads != reads:
                pause = _GRACE  # receive() is reading: leave it to it
                continue
            if self.lock.acquire(False):
                if not conn._done:
                    self.on_duty = True
                    self.want_read = False
                    return True
                self.lock.release()
                break
            # A receive() is blocked reading; the longer it stays blocked,
            # the less often this thread looks.
            pause = _GRACE if woken else min(pause * 2, _MAX_GRACE)
        return False

    def _read_or_finish(self) -> bool:
        """One read (read lock held); finish, still holding it, when over."""
        conn = self.conn
        try:
            more = conn._read_once()
        except Exception:  # noqa: BLE001 - logged there; the reader goes on
            conn._reader_failed()
            more = False
        if not more:
            conn._finish()
        return more

    def _wait_for_room(self) -> bool:
        """Pause while the queue is full (TCP then pushes back on the peer)."""
        session = self.conn._session
        space = self.space
        while not session.room():
            space.clear()
            if not session.room():
                space.wait()
        return True
