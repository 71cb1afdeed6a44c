"""WSGI integration: where each hosting server keeps the connection's socket,
and how each must be told that the WebSocket has taken over.

WSGI has no standard way to hand a connection over to the application, so
every server is different:

- werkzeug (Flask's dev server): ``environ["werkzeug.socket"]``; the call
  ends by raising a ``ConnectionError``, which werkzeug treats as a client
  that went away.
- gunicorn (every worker): ``environ["gunicorn.socket"]``; the call ends by
  raising ``StopIteration``, which every gunicorn worker takes as "close the
  connection, write nothing".
- eventlet.wsgi: ``environ["eventlet.input"].get_socket()``; the call ends by
  setting ``WSGI_LOCAL.already_handled``.
- gevent.pywsgi: the socket under ``wsgi.input``'s reader; the call ends by
  returning no body with ``close_connection`` set on the handler.

Each also may have read bytes beyond the request headers (a client may send
its first frame right behind the request); :func:`find_socket` returns them
so that they are processed at once.
"""

from __future__ import annotations

import inspect
import sys
from collections import deque
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional

from .errors import ConnectionClosed, HandshakeError
from .log import logger
from .smalldeque import SmallDeque

__all__ = [
    "find_socket",
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


class _HandledByWebSocket(ConnectionAbortedError):
    """Tells werkzeug the connection is gone, which it handles silently."""


def end_response(mode: str, start_response: StartResponse) -> List[bytes]:
    """End the WSGI call of a request whose connection the WebSocket took.

    No HTTP bytes may follow the WebSocket on the socket, and the server must
    neither log an error nor try to keep the connection alive.
    """
    if mode == "werkzeug":
        raise _HandledByWebSocket("WebSocket closed")
    if mode == "gunicorn":
        # Every gunicorn worker treats StopIteration as "close, write nothing".
        raise StopIteration()
    if mode == "eventlet":
        wsgi = sys.modules.get("eventlet.wsgi")
        local = getattr(wsgi, "WSGI_LOCAL", None)
        if local is not None:
            local.already_handled = True
        return list(getattr(wsgi, "ALREADY_HANDLED", []) or [])
    if mode == "gevent":
        handler = getattr(start_response, "__self__", None)
        if handler is not None and hasattr(handler, "close_connection"):
            handler.close_connection = True
        return []
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
