"""The gevent preset: greenlets, gevent's events, locks, selectors and
sockets, and a libev watcher for the hub driver (:mod:`greenws._hub`).

Imported by :mod:`greenws.presets` the first time ``GEVENT`` is looked up
(or gevent is found running), never by ``import greenws``.
"""

from __future__ import annotations

import ssl
from typing import Any, Callable, Dict, Optional

import gevent
import gevent.event
import gevent.lock
import gevent.monkey
import gevent.selectors
import gevent.socket
import gevent.ssl

from .._hub import readable_now
from . import Preset

__all__ = ["PRESET", "running"]


class GeventThread(gevent.Greenlet):  # type: ignore[misc]
    """A greenlet with the ``threading.Thread`` constructor and methods."""

    def __init__(
        self,
        target: Optional[Callable[..., Any]] = None,
        args: tuple[Any, ...] = (),
        kwargs: Optional[Dict[str, Any]] = None,
        name: Optional[str] = None,
        daemon: Optional[bool] = None,
    ) -> None:
        super().__init__(target, *args, **(kwargs or {}))
        if name:
            self.name = name

    def is_alive(self) -> bool:
        return not self.dead


def _wrap_ssl(context: ssl.SSLContext, sock: Any, server_hostname: str) -> Any:
    return gevent.ssl.SSLSocket(
        sock=sock, server_hostname=server_hostname, _context=context
    )


# monkey.patch_all() replaces select.poll; a zero-timeout poll must be
# the kernel's own.
_poll = gevent.monkey.get_original("select", "poll")


class GeventReadiness:
    """One libev I/O watcher, used as a callback or waited on."""

    __slots__ = ("_fd", "_hub", "_io")

    def __init__(self, sock: Any) -> None:
        self._fd: int = sock.fileno()
        self._hub = gevent.get_hub()
        self._io = self._hub.loop.io(self._fd, 1)

    def arm(self, callback: Callable[[], None]) -> None:
        self._io.start(callback)

    def disarm(self) -> None:
        self._io.stop()

    def wait(self, timeout: Optional[float]) -> bool:
        if timeout is None:
            # The common case (a receive() without timeout): no timer.
            self._hub.wait(self._io)
            return True
        if timeout <= 0:
            return readable_now(self._fd, _poll)
        timer = gevent.Timeout(timeout)
        timer.start()
        try:
            self._hub.wait(self._io)
            return True
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            return False
        finally:
            timer.close()

    def close(self) -> None:
        # Stop watching now, even while a greenlet waits in wait(): the
        # socket may be closed next (gevent.pywsgi closes it behind
        # gevent's back when the application returns), and libev aborts
        # the process when it updates a watcher of a closed fd.  The
        # waiter is woken as if data had come, and finds the connection
        # over.
        io = self._io
        waiter, args = io.callback, io.args
        io.close()
        if waiter is not None:
            self._hub.loop.run_callback(waiter, *(args or ()))


PRESET = Preset(
    "gevent",
    thread_class=GeventThread,
    event_class=gevent.event.Event,
    selector_class=gevent.selectors.DefaultSelector,
    lock_class=gevent.lock.Semaphore,
    create_connection=gevent.socket.create_connection,
    wrap_ssl=_wrap_ssl,
    readiness=GeventReadiness,
    socket_class=gevent.socket.socket,
)


def running() -> bool:
    """Whether this program runs under gevent: its socket module is patched,
    or the caller is a greenlet of gevent's hub."""
    from gevent._hub_local import get_hub_if_exists

    if gevent.monkey.is_module_patched("socket"):
        return True
    import greenlet

    hub = get_hub_if_exists()
    return (
        hub is not None
        and greenlet.getcurrent() is not hub
        and (greenlet.getcurrent().parent is hub)
    )
