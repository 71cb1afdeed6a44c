"""Every open connection of this process, so that shutdown can close them.

A worker that stops (gunicorn's SIGTERM, ``--max-requests`` recycling, a
deploy) should tell its WebSocket peers it is going away (1001) instead of
letting them see the TCP connection vanish (1006).  :func:`close_all` does
that for every connection still open in the process; :func:`stop` does it
too and also closes every connection that opens afterwards, for a server
that keeps accepting for a while after it began to stop;
:func:`close_all_on_signals` calls :func:`stop` when a signal arrives, for
servers without a shutdown hook (eventlet.wsgi, gevent.pywsgi).
"""

from __future__ import annotations

import os
import signal
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterable,
    List,
    Optional,
    Set,
    Tuple,
)

from . import presets
from .log import logger

if TYPE_CHECKING:
    from .connection import Base

__all__ = [
    "connections",
    "close_all",
    "stop",
    "stopping",
    "close_all_on_signals",
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


# Called with each connection that is over (greenws.rooms: it leaves its
# rooms); they must not block.
_discard_hooks: List[Callable[[Base], None]] = []


def discard(conn: Base) -> None:
    """Called by a connection when it is over."""
    _live.discard(conn)
    for hook in _discard_hooks:
        hook(conn)


def on_discard(hook: Callable[[Base], None]) -> None:
    """Call ``hook(conn)`` whenever a connection is over, from then on.

    It runs in whatever thread or greenlet ends the connection, so it must
    be quick and never block.  For state kept per connection elsewhere
    (:mod:`greenws.rooms`), which a connection that closed must leave.
    """
    if hook not in _discard_hooks:
        _discard_hooks.append(hook)


def is_open(conn: Base) -> bool:
    """Whether ``conn`` opened and is not over yet.

    Read after adding ``conn`` to state that the hooks of
    :func:`on_discard` clean up: if this says True, the hook will run.
    """
    return conn in _live


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


def close_all_on_signals(
    signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
    code: int = GOING_AWAY,
    reason: Optional[str] = SHUTTING_DOWN,
    timeout: Optional[float] = None,
    preset: Optional[Any] = None,
) -> None:
    """Close every connection with ``code`` when one of ``signals`` arrives.

    For servers with no shutdown hook of their own (eventlet.wsgi,
    gevent.pywsgi).  On the first of ``signals``: the signals get back what
    they did before, :func:`stop` runs in a new thread or greenlet of
    ``preset`` (default: :func:`greenws.presets.detect`; pass
    ``presets.GEVENT`` under a gevent server that is not monkey-patched),
    and then the signal is sent again, so that the process ends as it would
    have without greenws (a second signal meanwhile ends it at once).
    Signals the process ignores are left alone.  Call it from the main
    thread, before the server starts.

    Each runtime gets its signals its own way: gevent through
    ``gevent.signal_handler``; eventlet and threads through a plain handler
    that only starts the work, since under eventlet it runs inside the hub,
    which must not block.
    """
    runtime = presets.resolve(preset)
    signals = [s for s in signals if signal.getsignal(s) != signal.SIG_IGN]
    if not signals:
        return
    start = _eventlet_starter() if runtime.name == "eventlet" else _starter(runtime)
    undo: List[Callable[[], None]] = []
    fired: List[int] = []

    def restore() -> None:
        for step in undo:
            step()
        undo.clear()

    def finish(signum: int) -> None:
        try:
            stop(code, reason, timeout)
        except Exception:  # noqa: BLE001 - the process must still stop
            logger.exception("closing the connections on signal %s failed", signum)
        if runtime.name == "gevent":
            # From the hub, where the previous handler would have run: a
            # KeyboardInterrupt then reaches the main greenlet as usual,
            # not through this greenlet.
            import gevent

            gevent.get_hub().loop.run_callback(os.kill, os.getpid(), signum)
        else:
            os.kill(os.getpid(), signum)

    def on_signal(signum: int, frame: Any = None) -> None:
        if fired:
            return  # a second signal before restore() ran (gevent)
        fired.append(signum)
        restore()
        start(lambda: finish(signum))

    for signum in signals:
        previous = signal.getsignal(signum)
        if runtime.name == "gevent":
            import gevent

            watcher = gevent.signal_handler(signum, on_signal, signum)
            undo.append(watcher.cancel)
        else:
            signal.signal(signum, on_signal)
        # Puts back what the signal did (after gevent's watcher, which
        # leaves the signal at SIG_DFL when cancelled).
        undo.append(_setter(signum, previous))


def _starter(runtime: Any) -> Callable[[Callable[[], None]], None]:
    """A function that runs its argument in a new thread of ``runtime``."""

    def start(target: Callable[[], None]) -> None:
        thread = runtime["thread_class"](target=target)
        try:
            thread.daemon = True
        except (AttributeError, RuntimeError):  # pragma: no cover
            pass
        thread.start()

    return start


def _eventlet_starter() -> Callable[[Callable[[], None]], None]:
    """Like :func:`_starter`, for a signal handler under eventlet.

    The handler runs inside the hub while it polls, and the poll then goes
    on with the timeout it had (up to a minute when nothing else is due), so
    a green thread spawned there could wait that long.  A green thread that
    waits on a pipe instead is woken at once by a byte written to it.
    """
    import eventlet
    import eventlet.hubs
    import eventlet.patcher

    # eventlet's green os.write() waits through the hub: not from inside it.
    plain_os = eventlet.patcher.original("os")
    read_fd, write_fd = plain_os.pipe()
    plain_os.set_blocking(write_fd, False)
    targets: List[Callable[[], None]] = []

    def wait() -> None:
        try:
            eventlet.hubs.trampoline(read_fd, read=True)
        finally:
            plain_os.close(read_fd)
            plain_os.close(write_fd)
        for target in targets:
            target()

    eventlet.spawn_n(wait)

    def start(target: Callable[[], None]) -> None:
        targets.append(target)
        plain_os.write(write_fd, b"\0")

    return start


def _setter(signum: int, handler: Any) -> Callable[[], None]:
    """A function that gives ``signum`` back its ``handler``."""
    # None: a handler not installed from Python; the default is closest.
    handler = signal.SIG_DFL if handler is None else handler

    def set_handler() -> None:
        signal.signal(signum, handler)

    return set_handler


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
