"""Concurrency presets: which thread, event, selector and lock classes to use.

greenws never imports gevent or eventlet by itself.  A preset names the four
classes a connection needs; ``GEVENT`` and ``EVENTLET`` are built (and their
library imported) only when first looked up.  A preset is a mapping, so it can
be passed as ``**presets.GEVENT`` or as ``preset=presets.GEVENT``.

Besides the four classes, a preset knows how to open a client socket and wrap
it in TLS in a way that cooperates with its hub, so :class:`greenws.Client`
never blocks a gevent or eventlet hub even when nothing is monkey-patched.
"""

from __future__ import annotations

import select
import selectors
import socket
import ssl
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

__all__ = ["Preset", "THREADING", "GEVENT", "EVENTLET", "detect", "resolve"]

GEVENT: Preset  # built on first use, see __getattr__
EVENTLET: Preset

#: The keys a preset maps; each is also a keyword argument of Server and Client.
CLASS_KEYS = ("thread_class", "event_class", "selector_class", "lock_class")


class Preset(Mapping[str, Any]):
    """A named set of concurrency classes.

    ``thread_class(target=fn)`` must return an object with ``start()`` (and,
    optionally, ``join(timeout)``); ``event_class()`` a ``threading.Event``-like
    object; ``selector_class()`` a :mod:`selectors` selector; ``lock_class()``
    a ``threading.Lock``-like lock (``acquire(blocking, timeout)``,
    ``release()``).
    """

    def __init__(
        self,
        name: str,
        *,
        thread_class: Any,
        event_class: Any,
        selector_class: Any,
        lock_class: Any,
        create_connection: Callable[..., Any] = socket.create_connection,
        wrap_ssl: Optional[Callable[..., Any]] = None,
        readiness: Optional[Callable[[Any], Any]] = None,
    ) -> None:
        self.name = name
        self._classes: Dict[str, Any] = {
            "thread_class": thread_class,
            "event_class": event_class,
            "selector_class": selector_class,
            "lock_class": lock_class,
        }
        self.create_connection = create_connection
        self.wrap_ssl = wrap_ssl or _wrap_ssl_stdlib
        #: ``readiness(sock)`` -> an object with ``arm(callback)``,
        #: ``disarm()``, ``wait(timeout) -> bool`` and ``close()``, watching
        #: the socket for incoming data through the hub.  Presets that have
        #: one read in the greenlet that receives, and through the hub while
        #: none does; others (threads) read in the thread that receives, and
        #: in a reader thread per connection while none does.
        self.readiness = readiness

    def __getitem__(self, key: str) -> Any:
        return self._classes[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["_classes"][key]
        except KeyError:
            raise AttributeError(key) from None

    def replace(self, **classes: Any) -> Preset:
        """A copy with some classes replaced (``None`` values are ignored)."""
        changes = {k: v for k, v in classes.items() if v is not None}
        if not changes:
            return self  # presets are not modified in place: share it
        merged = dict(self._classes)
        merged.update(changes)
        return Preset(
            self.name,
            create_connection=self.create_connection,
            wrap_ssl=self.wrap_ssl,
            readiness=self.readiness,
            **merged,
        )

    def __repr__(self) -> str:
        return f"<greenws preset {self.name}>"


def _wrap_ssl_stdlib(
    context: ssl.SSLContext, sock: socket.socket, server_hostname: str
) -> socket.socket:
    return context.wrap_socket(sock, server_hostname=server_hostname)


THREADING = Preset(
    "threading",
    thread_class=threading.Thread,
    event_class=threading.Event,
    selector_class=selectors.DefaultSelector,
    lock_class=threading.Lock,
)

_lazy: Dict[str, Preset] = {}


def _make_gevent() -> Preset:
    import gevent
    import gevent.event
    import gevent.lock
    import gevent.monkey
    import gevent.selectors
    import gevent.socket
    import gevent.ssl

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

    def wrap_ssl(context: ssl.SSLContext, sock: Any, server_hostname: str) -> Any:
        return gevent.ssl.SSLSocket(
            sock=sock, server_hostname=server_hostname, _context=context
        )

    # monkey.patch_all() replaces select.poll; a zero-timeout poll must be
    # the kernel's own.
    poll = gevent.monkey.get_original("select", "poll")

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
                return _readable_now(self._fd, poll)
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

    return Preset(
        "gevent",
        thread_class=GeventThread,
        event_class=gevent.event.Event,
        selector_class=gevent.selectors.DefaultSelector,
        lock_class=gevent.lock.Semaphore,
        create_connection=gevent.socket.create_connection,
        wrap_ssl=wrap_ssl,
        readiness=GeventReadiness,
    )


def _make_eventlet() -> Preset:
    import eventlet
    import eventlet.event
    import eventlet.green.socket
    import eventlet.green.ssl
    import eventlet.hubs
    import eventlet.patcher
    import greenlet

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

        def acquire(
            self, blocking: bool = True, timeout: Optional[float] = None
        ) -> bool:
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

    def wrap_ssl(context: ssl.SSLContext, sock: Any, server_hostname: str) -> Any:
        return eventlet.green.ssl.GreenSSLSocket(
            sock, server_hostname=server_hostname, _context=context
        )

    # eventlet.monkey_patch() removes select.poll altogether.
    poll = eventlet.patcher.original("select").poll

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
                return _readable_now(self._fd, poll)
            # What trampoline() does, except that close() can wake us: a
            # socket closed meanwhile would otherwise leave us parked.
            hub = eventlet.hubs.get_hub()
            current = greenlet.getcurrent()
            timer = None
            if timeout is not None:
                timer = hub.schedule_call_global(timeout, current.throw, _Timeout)
            listener = hub.add(
                hub.READ, self._fd, current.switch, current.throw, _ignore
            )
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
                eventlet.hubs.get_hub().schedule_call_global(
                    0, self._wake, self._waiter
                )

    return Preset(
        "eventlet",
        thread_class=EventletThread,
        event_class=EventletEvent,
        selector_class=EventletSelector,
        lock_class=EventletLock,
        create_connection=eventlet.green.socket.create_connection,
        wrap_ssl=wrap_ssl,
        readiness=EventletReadiness,
    )


class _Timeout(Exception):
    pass


def _ignore(*args: Any) -> None:
    pass


def _readable_now(fd: int, poll: Callable[[], Any]) -> bool:
    """Whether ``fd`` has data (or EOF) right now; never blocks.

    ``poll`` is the unpatched ``select.poll``: a monkey-patched program has
    a green one or none at all.
    """
    poller = poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


_FACTORIES = {"GEVENT": _make_gevent, "EVENTLET": _make_eventlet}


def __getattr__(name: str) -> Preset:
    """Build ``GEVENT`` / ``EVENTLET`` on first use (PEP 562)."""
    if name in _FACTORIES:
        if name not in _lazy:
            _lazy[name] = _FACTORIES[name]()
        return _lazy[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _preset(name: str) -> Preset:
    return __getattr__(name)


def _running_gevent() -> bool:
    if "gevent" not in sys.modules:
        return False
    import gevent.monkey
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


def _running_eventlet() -> bool:
    if "eventlet" not in sys.modules:
        return False
    import eventlet.patcher

    if eventlet.patcher.is_monkey_patched("socket"):
        return True
    import eventlet.hubs
    import greenlet

    hub = getattr(eventlet.hubs._threadlocal, "hub", None)
    current = greenlet.getcurrent()
    return hub is not None and current.parent is hub.greenlet


def detect(sock: Any = None) -> Preset:
    """Pick the preset that matches the running program.

    A gevent or eventlet socket (as a non-patched ``gevent.pywsgi`` or
    ``eventlet.wsgi`` server hands out) decides it; otherwise a monkey-patched
    gevent or eventlet, or running inside one of their greenlets; otherwise
    ``THREADING``.
    """
    if sock is not None:
        module = type(sock).__module__
        if module.startswith("gevent"):
            return _preset("GEVENT")
        if module.startswith("eventlet"):
            return _preset("EVENTLET")
    if _running_gevent():
        return _preset("GEVENT")
    if _running_eventlet():
        return _preset("EVENTLET")
    return THREADING


def _matching(classes: Mapping[str, Any]) -> Optional[Preset]:
    """The preset one of the passed classes belongs to, if any.

    A class from gevent or eventlet picks that library's preset (built now if
    need be), so that passing ``event_class=gevent.event.Event`` alone also
    brings gevent's lock and sockets.  Otherwise a class that *is* one of an
    already built preset's picks that preset.
    """
    given = [value for value in classes.values() if value is not None]
    for value in given:
        module = str(getattr(value, "__module__", ""))
        if module.startswith("gevent"):
            return _preset("GEVENT")
        if module.startswith("eventlet"):
            return _preset("EVENTLET")
    for preset in (*_lazy.values(), THREADING):
        for key, value in classes.items():
            if value is not None and preset[key] is value:
                return preset
    return None


_KEYS = frozenset(CLASS_KEYS)


def resolve(
    preset: Optional[Mapping[str, Any]] = None, sock: Any = None, **classes: Any
) -> Preset:
    """The preset a connection runs with.

    ``preset`` (a :class:`Preset`, or any mapping of class keys) is the base;
    without it, the preset one of ``classes`` belongs to, else :func:`detect`.
    Classes given one by one override the base.
    """
    if preset is None and not any(classes.values()) and classes.keys() <= _KEYS:
        return detect(sock)  # the common case, once per connection: keep it short
    unknown = set(classes) - set(CLASS_KEYS)
    if unknown:
        raise TypeError(f"unknown preset keys: {sorted(unknown)}")
    if preset is None:
        base = _matching(classes) or detect(sock)
    elif isinstance(preset, Preset):
        base = preset
    else:
        extra = dict(preset)
        base = (_matching(extra) or detect(sock)).replace(**extra)
    return base.replace(**classes)
