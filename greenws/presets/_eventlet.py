"""The eventlet preset: green threads, small events and locks, a selector
on the hub's poller, green sockets, and a hub listener for the hub driver
(:mod:`greenws._hub`).

Imported by :mod:`greenws.presets` the first time ``EVENTLET`` is looked up
(or eventlet is found running), never by ``import greenws``.
"""

from __future__ import annotations

import selectors
import ssl
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

import eventlet
import eventlet.event
import eventlet.green.socket
import eventlet.green.ssl
import eventlet.hubs
import eventlet.patcher
import greenlet

from .._hub import readable_now
from . import Preset

__all__ = ["PRESET", "running"]


class EventletThread:
    """A green thread with the ``threading.Thread`` constructor and methods."""

    def __init__(
        self,
        target: Optional[Callable[..., Any]] = None,
        args: tuple[Any, ...] = (),
        kwargs: Optional[Dict[str, Any]] = None,
        name: Optional[str] = None,
        daemon: Optional[bool] = None,
    ) -> None:
        self._target = target
        self._args = args
        self._kwargs = kwargs or {}
        self.name = name or "greenws"
        self.daemon = True
        self._done = EventletEvent()
        self._gt: Any = None

    def _run(self) -> None:
        try:
            if self._target is not None:
                self._target(*self._args, **self._kwargs)
        finally:
            self._done.set()

    def start(self) -> None:
        self._gt = eventlet.spawn(self._run)

    def join(self, timeout: Optional[float] = None) -> None:
        self._done.wait(timeout)

    def is_alive(self) -> bool:
        return self._gt is not None and not self._done.is_set()


class EventletEvent:
    """A ``threading.Event`` for green threads, small while nobody waits.

    ``eventlet.green.threading.Event`` works but costs about 2 KiB (a
    Condition with its deque); a connection holds two of them.  Waiters
    here park on a one-shot ``eventlet.event.Event`` made for the wait.
    """

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: Optional[List[Any]] = None

    def is_set(self) -> bool:
        return self._flag

    isSet = is_set

    def set(self) -> None:
        self._flag = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.ready():
                waiter.send(True)

    def clear(self) -> None:
        self._flag = False

    def wait(self, timeout: Optional[float] = None) -> bool:
        if self._flag:
            return True
        waiter = eventlet.event.Event()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            with eventlet.Timeout(timeout, False):
                waiter.wait()
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return self._flag


class EventletLock:
    """A non-reentrant green lock, small while nobody waits (see above)."""

    __slots__ = ("_locked", "_free")

    def __init__(self) -> None:
        self._locked = False
        self._free: Any = None  # an EventletEvent while someone waits

    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        if not self._locked:
            self._locked = True
            return True
        if not blocking:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._locked:
            if self._free is None:
                self._free = EventletEvent()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._free.clear()
            self._free.wait(remaining)
        self._locked = True
        return True

    def release(self) -> None:
        self._locked = False
        if self._free is not None:
            self._free.set()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class EventletSelector(selectors.BaseSelector):
    """A one-socket selector built on the hub's own poller.

    eventlet's green ``selectors`` only has a ``select()``-based selector,
    which fails on file descriptors above 1024; waiting through the hub
    (epoll on Linux) has no such limit.
    """

    def __init__(self) -> None:
        self._keys: Dict[Any, selectors.SelectorKey] = {}

    def register(
        self, fileobj: Any, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(fileobj)

    def select(
        self, timeout: Optional[float] = None
    ) -> list[tuple[selectors.SelectorKey, int]]:
        if not self._keys:
            eventlet.sleep(timeout or 0)
            return []
        if len(self._keys) > 1:
            raise ValueError("EventletSelector watches one file at a time")
        key = next(iter(self._keys.values()))
        read = bool(key.events & selectors.EVENT_READ)
        write = bool(key.events & selectors.EVENT_WRITE)
        if timeout is not None and timeout <= 0:
            timeout = 0.0001
        try:
            eventlet.hubs.trampoline(
                key.fd,
                read=read,
                write=write,
                timeout=timeout,
                timeout_exc=_Timeout,
            )
        except _Timeout:
            return []
        return [(key, key.events)]

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return dict(self._keys)

    def close(self) -> None:
        self._keys.clear()


def _wrap_ssl(context: ssl.SSLContext, sock: Any, server_hostname: str) -> Any:
    return eventlet.green.ssl.GreenSSLSocket(
        sock, server_hostname=server_hostname, _context=context
    )


# eventlet.monkey_patch() removes select.poll altogether.
_poll = eventlet.patcher.original("select").poll


class EventletReadiness:
    """A hub read listener, used as a callback or waited on."""

    __slots__ = ("_fd", "_listener", "_waiter")

    def __init__(self, sock: Any) -> None:
        self._fd: int = sock.fileno()
        self._listener: Any = None
        self._waiter: Any = None  # the green thread in wait(), if any

    def arm(self, callback: Callable[[], None]) -> None:
        hub = eventlet.hubs.get_hub()
        self._listener = hub.add(
            hub.READ, self._fd, lambda _fd: callback(), _ignore, _ignore
        )

    def disarm(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            eventlet.hubs.get_hub().remove(listener)

    def wait(self, timeout: Optional[float]) -> bool:
        if timeout is not None and timeout <= 0:
            return readable_now(self._fd, _poll)
        # What trampoline() does, except that close() can wake us: a
        # socket closed meanwhile would otherwise leave us parked.
        hub = eventlet.hubs.get_hub()
        current = greenlet.getcurrent()
        timer = None
        if timeout is not None:
            timer = hub.schedule_call_global(timeout, current.throw, _Timeout)
        listener = hub.add(hub.READ, self._fd, current.switch, current.throw, _ignore)
        self._waiter = current
        try:
            hub.switch()
            return True
        except _Timeout:
            return False
        finally:
            self._waiter = None
            hub.remove(listener)
            if timer is not None:
                timer.cancel()

    def _wake(self, waiter: Any) -> None:
        if self._waiter is waiter:  # still parked in wait()
            waiter.switch()

    def close(self) -> None:
        self.disarm()
        # A green thread in wait() is woken as if data had come, and
        # finds the connection over.
        if self._waiter is not None:
            eventlet.hubs.get_hub().schedule_call_global(0, self._wake, self._waiter)


PRESET = Preset(
    "eventlet",
    thread_class=EventletThread,
    event_class=EventletEvent,
    selector_class=EventletSelector,
    lock_class=EventletLock,
    create_connection=eventlet.green.socket.create_connection,
    wrap_ssl=_wrap_ssl,
    readiness=EventletReadiness,
    socket_class=eventlet.green.socket.socket,
)


class _Timeout(Exception):
    pass


def _ignore(*args: Any) -> None:
    pass


def running() -> bool:
    """Whether this program runs under eventlet: its socket module is
    patched, or the caller is a green thread of eventlet's hub."""
    if eventlet.patcher.is_monkey_patched("socket"):
        return True
    hub = getattr(eventlet.hubs._threadlocal, "hub", None)
    return hub is not None and greenlet.getcurrent().parent is hub.greenlet
