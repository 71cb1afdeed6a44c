"""Concurrency presets: which thread, event, selector and lock classes to use.

greenws never imports gevent or eventlet by itself.  A preset names the four
classes a connection needs; each runtime's preset is defined in its own
module (``_threading``, ``_gevent``, ``_eventlet``), imported (with its
library) only when ``THREADING``, ``GEVENT`` or ``EVENTLET`` is first looked
up.  A preset is a mapping, so it can
be passed as ``**presets.GEVENT`` or as ``preset=presets.GEVENT``.

Besides the four classes, a preset knows how to open a client socket and wrap
it in TLS in a way that cooperates with its hub, so :class:`greenws.Client`
never blocks a gevent or eventlet hub even when nothing is monkey-patched.
"""

from __future__ import annotations

import importlib
import socket
import ssl
import sys
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

__all__ = ["Preset", "THREADING", "GEVENT", "EVENTLET", "detect", "resolve"]

THREADING: Preset  # built on first use, see __getattr__
GEVENT: Preset
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
        socket_class: Any = socket.socket,
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
        #: The socket class that cooperates with the hub (a client's Unix
        #: domain socket is made with it).
        self.socket_class = socket_class

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
            socket_class=self.socket_class,
            **merged,
        )

    def __repr__(self) -> str:
        return f"<greenws preset {self.name}>"


def _wrap_ssl_stdlib(
    context: ssl.SSLContext, sock: socket.socket, server_hostname: str
) -> socket.socket:
    return context.wrap_socket(sock, server_hostname=server_hostname)


# Each runtime's preset lives in its own module, imported on first use.
_MODULES = {"THREADING": "_threading", "GEVENT": "_gevent", "EVENTLET": "_eventlet"}
# The presets built so far, by name.
_lazy: Dict[str, Preset] = {}


def __getattr__(name: str) -> Preset:
    """Build ``THREADING`` / ``GEVENT`` / ``EVENTLET`` on first use (PEP 562)."""
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    preset = _lazy.get(name)
    if preset is None:
        preset = _lazy[name] = _module(name).PRESET
        globals()[name] = preset  # looked up directly from now on
    return preset


def _module(name: str) -> Any:
    return importlib.import_module(f"{__name__}.{_MODULES[name]}")


def _preset(name: str) -> Preset:
    return __getattr__(name)


def _running(name: str, library: str) -> bool:
    """Whether ``library`` (already imported by someone) runs this program."""
    return library in sys.modules and bool(_module(name).running())


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
    if _running("GEVENT", "gevent"):
        return _preset("GEVENT")
    if _running("EVENTLET", "eventlet"):
        return _preset("EVENTLET")
    return _preset("THREADING")


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
    for preset in (*_lazy.values(), _preset("THREADING")):
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
