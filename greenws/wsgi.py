"""WSGI integration: where each hosting server keeps the connection's socket,
and how each is kept off it once the WebSocket has taken over.

WSGI has no standard way to hand a connection over to the application, so
every server is different.  Where the socket is:

- werkzeug (Flask's dev server): ``environ["werkzeug.socket"]``;
- gunicorn (every worker): ``environ["gunicorn.socket"]``;
- eventlet.wsgi: ``environ["eventlet.input"].get_socket()``;
- gevent.pywsgi: the socket under ``wsgi.input``'s reader.

Each also may have read bytes beyond the request headers (a client may send
its first frame right behind the request); :func:`find_socket` returns them
so that they are processed at once.

Once :meth:`greenws.Server.accept` has taken the socket, the hosting server
must neither read from it nor write to it again, whatever the application
returns afterwards: a Flask view's ``""``, a plain WSGI function's ``[]`` or
``None``, a Django ``HttpResponse()``.  :func:`take_over` arranges that at
accept time, through the first thing each server does with the request once
the application has returned:

- gunicorn: it checks the result against ``environ["wsgi.file_wrapper"]``;
- eventlet.wsgi: it reads ``environ["eventlet.minimum_write_chunk_size"]``;
- gevent.pywsgi: it calls its handler's ``process_result()``;
- werkzeug: it calls its handler's ``send_response()`` (or, when the
  application returned nothing usable, looks up ``server.passthrough_errors``).

There greenws finishes the WebSocket (closing it with 1000 if the
application did not, and waiting for the closing handshake so that no
watcher outlives the socket) and then ends the request in the way that
server treats as "connection gone, nothing to log or write".
"""

from __future__ import annotations

import inspect
import sys
from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    NamedTuple,
    Optional,
)

from .errors import ConnectionClosed, HandshakeError
from .log import logger
from .smalldeque import SmallDeque

if TYPE_CHECKING:
    from .connection import Base

__all__ = [
    "find_socket",
    "take_over",
    "end_response",
    "is_websocket_upgrade",
    "WebSocketWSGI",
    "SUPPORTED_SERVERS",
]

SUPPORTED_SERVERS = (
    "werkzeug, gunicorn (sync, gthread, gevent, eventlet workers), "
    "eventlet.wsgi and gevent.pywsgi"
)

Environ = Dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def _nothing() -> None:
    pass


class Host(NamedTuple):
    """What :func:`find_socket` learned from the environ.

    ``release`` frees the server's own I/O buffers once the WebSocket owns
    the socket: an idle connection should not keep kilobytes of HTTP buffer
    the server will never use again.  ``peer`` is the client's address as
    the server recorded it at accept time, when it is at hand (else
    ``None``: ask the socket).
    """

    sock: Any
    mode: str
    pending: bytes
    release: Callable[[], None] = _nothing
    peer: Any = None


def _buffered(rfile: Any, sock: Any) -> bytes:
    """Bytes a buffered reader holds beyond the request, without blocking."""
    peek = getattr(rfile, "peek", None)
    if peek is None:
        return b""
    try:
        timeout = sock.gettimeout()
    except (AttributeError, OSError):
        return b""
    try:
        sock.settimeout(0.0)
        try:
            data = peek(1)
        finally:
            sock.settimeout(timeout)
    except (OSError, ValueError):
        return b""
    if not data:
        return b""
    return bytes(rfile.read(len(data)))


def _closer(*files: Any) -> Callable[[], None]:
    """Close a server's buffered reader and writer, which frees their buffers.

    Only for servers that check, after the call, whether these are closed
    before using them again (eventlet.wsgi, gevent.pywsgi); the socket stays
    open because the file objects do not own it.
    """

    def close() -> None:
        for f in files:
            if f is not None:
                f.close()

    return close


# The request headers eventlet.wsgi reads again once the application has
# returned: to decide on keep-alive, and to log the client's address.
_EVENTLET_READS_LATER = frozenset({"connection", "x-forwarded-for"})


def _eventlet_release(handler: Any, rfile: Any) -> Callable[[], None]:
    """Free eventlet.wsgi's buffers and the parsed headers it will not read.

    The handler keeps its parsed request headers (an ``email`` message of a
    few hundred bytes per header) for the connection's whole life, though it
    has already copied them into the environ.  The green thread serving the
    request keeps its exit callbacks (one, the server pool's) in a deque.
    """
    close = _closer(rfile, getattr(handler, "wfile", None))

    def release() -> None:
        close()
        _shrink_exit_funcs()
        headers: Any = getattr(handler, "headers", None)
        if not hasattr(headers, "keys"):
            return
        unread = {k for k in headers.keys() if k.lower() not in _EVENTLET_READS_LATER}
        for name in unread:
            del headers[name]

    return release


def _shrink_exit_funcs() -> None:
    """Hold the current eventlet green thread's exit callbacks in a list.

    eventlet keeps them in a ``deque`` (``append``, ``remove``, ``popleft``,
    truth test), whose first block is ~600 bytes for the one callback a
    server pool links.
    """
    greenlet = sys.modules.get("greenlet")
    current = greenlet.getcurrent() if greenlet is not None else None
    funcs = getattr(current, "_exit_funcs", None)
    if type(funcs) is deque:
        current._exit_funcs = SmallDeque(funcs)  # type: ignore[union-attr]


def _eventlet_handler(environ: Environ) -> Any:
    """eventlet.wsgi's request handler, which holds a 16 KiB write buffer.

    The environ does not name it; the ``eventlet.set_idle`` callback is a
    closure over it.  ``None`` when that is not so (another eventlet version).
    """
    closure = getattr(environ.get("eventlet.set_idle"), "__closure__", None)
    for cell in closure or ():
        if hasattr(cell.cell_contents, "wfile"):
            return cell.cell_contents
    return None


def _gunicorn_buffered(environ: Environ) -> bytes:
    unreader = getattr(
        getattr(environ.get("wsgi.input"), "reader", None), "unreader", None
    )
    if unreader is None:
        return b""
    take = getattr(unreader, "take_buffered", None)
    if take is not None:
        return bytes(take())
    buf = getattr(unreader, "buf", None)  # gunicorn < 27
    if buf is None:
        return b""
    data = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return bytes(data)


def find_socket(environ: Environ) -> Host:
    """Find the client socket of a WSGI request.

    Raises :class:`RuntimeError` on servers greenws does not know.
    """
    if "gunicorn.socket" in environ:
        sock = environ["gunicorn.socket"]
        return Host(sock, "gunicorn", _gunicorn_buffered(environ))
    if "werkzeug.socket" in environ:
        sock = environ["werkzeug.socket"]
        return Host(sock, "werkzeug", _buffered(environ.get("wsgi.input"), sock))
    if "eventlet.input" in environ:
        wsgi_input = environ["eventlet.input"]
        sock = wsgi_input.get_socket()
        rfile = getattr(wsgi_input, "rfile", None)
        handler = _eventlet_handler(environ)
        return Host(
            sock,
            "eventlet",
            _buffered(rfile, sock),
            _eventlet_release(handler, rfile),
            # Asking eventlet's socket instead would make it cache the method
            # in its instance dict, which then grows by ~800 bytes.
            getattr(handler, "client_address", None),
        )
    if str(environ.get("SERVER_SOFTWARE", "")).startswith("gevent"):
        # For upgrade requests gevent passes its raw reader as wsgi.input.
        wsgi_input = environ.get("wsgi.input")
        rfile = getattr(wsgi_input, "rfile", wsgi_input)
        sock = getattr(getattr(rfile, "raw", None), "_sock", None)
        if sock is not None:
            return Host(sock, "gevent", _buffered(rfile, sock), _closer(rfile))
    raise RuntimeError(
        "Cannot find the connection's socket in this WSGI environment; greenws "
        f"supports {SUPPORTED_SERVERS}."
    )


# -- keeping the hosting server off the socket -------------------------------


class _Taken(ConnectionAbortedError):
    """The WebSocket has taken the connection over.

    werkzeug treats a ``ConnectionError`` as a client that went away: it
    logs nothing and writes nothing more.
    """


class _FileWrapperCheck:
    """gunicorn's ``wsgi.file_wrapper`` once the WebSocket owns the socket.

    Every gunicorn worker's first step after the application returns is
    ``isinstance(result, environ["wsgi.file_wrapper"])``; a StopIteration
    from there is how all of them are told "close, write nothing".  An
    instance (isinstance() asks its type's ``__instancecheck__``), not a
    class made per connection: ten thousand of those cost kilobytes each.
    """

    __slots__ = ("_finish",)

    def __init__(self, finish: Callable[[], None]) -> None:
        self._finish = finish

    def __instancecheck__(self, instance: Any) -> bool:
        self._finish()
        raise StopIteration()


def _take_gunicorn(environ: Environ, finish: Callable[[], None]) -> None:
    environ["wsgi.file_wrapper"] = _FileWrapperCheck(finish)


class _ChunkSize:
    """eventlet.wsgi's write chunk size, read right after the app returns."""

    __slots__ = ("_finish",)

    def __init__(self, finish: Callable[[], None]) -> None:
        self._finish = finish

    def __int__(self) -> int:
        self._finish()
        # The one exception eventlet.wsgi lets through without logging it
        # or writing a 500; the green thread serving the connection ends
        # quietly and closes the socket on its way out.
        import greenlet

        raise greenlet.GreenletExit()


def _take_eventlet(environ: Environ, finish: Callable[[], None]) -> None:
    environ["eventlet.minimum_write_chunk_size"] = _ChunkSize(finish)


def _caller(function: str, module: str) -> Any:
    """``self`` of the innermost running ``module``'s ``function``, or None.

    werkzeug and gevent.pywsgi keep the request's handler object out of the
    environ; it is the ``self`` of the frame that called the application.
    """
    frame = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if code.co_name == function and module in code.co_filename:
            return frame.f_locals.get("self")
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _take_gevent(environ: Environ, finish: Callable[[], None]) -> None:
    handler = _caller("run_application", "pywsgi")
    if handler is None:
        return

    def process_result() -> None:
        finish()
        handler.status = "101 Switching Protocols"
        handler.close_connection = True

    handler.close_connection = True
    handler.process_result = process_result


class _EmptyReader:
    """werkzeug's ``rfile`` once the WebSocket owns the socket: at EOF."""

    closed = False

    def read(self, size: int = -1) -> bytes:
        return b""

    readline = read

    def close(self) -> None:
        self.closed = True


class _HandOff:
    """werkzeug's ``wfile`` and ``send_response`` once the WebSocket owns
    the socket: the first use ends the request as a dropped connection."""

    closed = False

    def __init__(self, finish: Callable[[], None]) -> None:
        self._finish = finish

    def __call__(self, *args: Any) -> None:
        self._finish()
        raise _Taken("the WebSocket took the connection over")

    write = flush = send_response = __call__

    def close(self) -> None:
        self.closed = True


class _QuietServer:
    """werkzeug's server object as one handler sees it.

    werkzeug asks ``server.passthrough_errors`` first when the application
    returned something it cannot send (``None``, or ``[]`` without
    ``start_response``); the WebSocket's end is no error to log.
    """

    def __init__(self, server: Any, hand_off: _HandOff) -> None:
        self._server = server
        self._hand_off = hand_off

    @property
    def passthrough_errors(self) -> bool:
        self._hand_off()
        return False  # pragma: no cover - _hand_off raises

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


def _take_werkzeug(environ: Environ, finish: Callable[[], None]) -> None:
    handler = _caller("run_wsgi", "werkzeug")
    if handler is None:
        return
    hand_off = _HandOff(finish)
    handler.close_connection = True
    handler.send_response = hand_off.send_response
    handler.wfile = hand_off
    handler.rfile = _EmptyReader()
    handler.server = _QuietServer(handler.server, hand_off)


_TAKERS: Dict[str, Callable[[Environ, Callable[[], None]], None]] = {
    "gunicorn": _take_gunicorn,
    "eventlet": _take_eventlet,
    "gevent": _take_gevent,
    "werkzeug": _take_werkzeug,
}


def take_over(mode: str, environ: Environ, ws: Base) -> None:
    """Keep the hosting server ``mode`` off the socket ``ws`` has taken.

    Called by :meth:`greenws.Server.accept` once the handshake is sent.
    Whatever the application returns afterwards, the server then writes
    nothing, logs no error and closes the connection, after the WebSocket
    has finished (see the module docstring).
    """
    take = _TAKERS.get(mode)
    if take is not None:
        take(environ, ws._app_returned)


_refusal_classes: Dict[type, type] = {}


def framework_refusal(refusal: HandshakeError) -> HandshakeError:
    """``refusal`` in a form the running web framework sends as it is.

    A :class:`HandshakeError` raised inside a Flask (or other werkzeug-based)
    view would become a 500 with a logged traceback; once werkzeug is
    loaded, the refusal is also a ``werkzeug.exceptions.HTTPException``,
    which Flask answers with the refusal's own status, headers and body.
    """
    exceptions = sys.modules.get("werkzeug.exceptions")
    http_exception = getattr(exceptions, "HTTPException", None)
    if http_exception is None or isinstance(refusal, http_exception):
        return refusal
    cls = type(refusal)
    both = _refusal_classes.get(cls)
    if both is None:
        both = _refusal_classes[cls] = type(
            cls.__name__,
            (cls, http_exception),
            {"get_response": _werkzeug_response, "__module__": cls.__module__},
        )
    converted: HandshakeError = HandshakeError.__new__(both)
    converted.__dict__.update(refusal.__dict__)
    converted.args = refusal.args
    # What werkzeug's HTTPException API reads.
    extra: Any = converted
    extra.code = refusal.status_code
    extra.description = refusal.reason_text
    extra.response = None
    return converted


def _werkzeug_response(self: HandshakeError, *args: Any, **kwargs: Any) -> Any:
    from werkzeug.wrappers import Response

    status = self.status_code or 400
    return Response(
        self.body,
        status,
        [("Content-Type", "text/plain; charset=utf-8"), *self.headers],
    )


def end_response(mode: str, start_response: StartResponse) -> List[bytes]:
    """What a WSGI app returns after a WebSocket it accepted itself.

    Kept for code written for earlier greenws versions and simple-websocket:
    since :meth:`greenws.Server.accept` already keeps the hosting server off
    the socket (:func:`take_over`), any return value would do; this one is
    an empty body.
    """
    return []


class WebSocketWSGI:
    """A WSGI application that runs ``handler(ws)`` for WebSocket requests.

    It accepts the connection with :meth:`greenws.Server.accept` (``options``
    are its keyword arguments), calls ``handler(ws)``, closes the WebSocket
    when the handler returns or raises, and ends the WSGI call in the way the
    hosting server needs.  A refused handshake gets its HTTP error response.
    Requests that are not WebSocket upgrades go to ``fallback`` (another WSGI
    app) when given, else get ``426 Upgrade Required``.
    """

    def __init__(
        self,
        handler: Callable[[Any], Any],
        fallback: Optional[WSGIApp] = None,
        server_class: Any = None,
        **options: Any,
    ) -> None:
        from .server import Server

        self.handler = handler
        self.fallback = fallback
        self.server_class = server_class or Server
        _check_options(self.server_class, options)
        self.options = options

    def __call__(
        self, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes]:
        if self.fallback is not None and not is_websocket_upgrade(environ):
            return self.fallback(environ, start_response)
        try:
            ws = self.server_class.accept(environ, **self.options)
        except HandshakeError as exc:
            return exc(environ, start_response)
        try:
            self.handler(ws)
        except ConnectionClosed:
            pass
        except Exception:
            ws.close(1011, "internal error")
            logger.exception("WebSocket handler raised; closed with 1011")
        finally:
            ws.close()
        return end_response(ws.mode, start_response)


def _check_options(server_class: Any, options: Dict[str, Any]) -> None:
    """Refuse options ``server_class.accept`` cannot take, now rather than
    on every request.

    It takes its own named parameters and passes the rest on to
    ``__init__``; an ``__init__`` with ``**kwargs`` may take anything.
    """
    names = set()
    for function in (server_class.accept, server_class.__init__):
        for param in inspect.signature(function).parameters.values():
            if param.kind is param.VAR_KEYWORD and function is server_class.__init__:
                return
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                names.add(param.name)
    # Given by accept() itself, not by an option.
    names.difference_update(("self", "environ"))
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(
            f"{server_class.__name__} has no option "
            f"{', '.join(map(repr, unknown))}; its options are: "
            f"{', '.join(sorted(names))}"
        )


def is_websocket_upgrade(environ: Environ) -> bool:
    """Whether the request asks for a WebSocket (``Upgrade: websocket``)."""
    return "websocket" in str(environ.get("HTTP_UPGRADE", "")).lower()
