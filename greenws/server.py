"""The server side: accept a WebSocket from inside a WSGI application."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import quote

from .connection import Base
from .errors import HandshakeError
from .handshake import accept_request
from .protocol import Protocol
from .wsgi import find_socket, framework_refusal, is_websocket_upgrade, take_over

__all__ = ["Server"]

# WSGI puts these request headers outside the HTTP_ namespace.
_UNPREFIXED = {"CONTENT_TYPE": b"content-type", "CONTENT_LENGTH": b"content-length"}
# environ key -> header name (None: not a header), for the keys seen so far;
# bounded, since some keys are the client's header names.
_NAMES: Dict[str, Optional[bytes]] = {}


def _header_name(key: str) -> Optional[bytes]:
    if key.startswith("HTTP_"):
        name: Optional[bytes] = key[5:].replace("_", "-").lower().encode("latin-1")
    else:
        name = _UNPREFIXED.get(key)
    if len(_NAMES) < 1024:
        _NAMES[key] = name
    return name


def _request_headers(environ: Dict[str, Any]) -> List[Tuple[bytes, bytes]]:
    headers = []
    names = _NAMES
    for key, value in environ.items():
        name = names[key] if key in names else _header_name(key)
        if name is None or (not value and key in _UNPREFIXED):
            continue
        headers.append((name, str(value).encode("latin-1")))
    return headers


# What quote() below leaves as it is: such a path or query (the usual kind)
# needs no quoting.
_PATH_AS_IS = re.compile(r"[A-Za-z0-9_.~/;:@&=+$,!*'()%-]*")
_QUERY_AS_IS = re.compile(r"[A-Za-z0-9_.~/;:@&=+$,!*'()%?\[\]-]*")


def _request_target(environ: Dict[str, Any]) -> str:
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if not _PATH_AS_IS.fullmatch(path):
        # WSGI decodes the path as latin-1; re-encode it as the client sent it.
        path = quote(path.encode("latin-1"), safe="/;:@&=+$,!~*'()%")
    target = path or "/"
    query = environ.get("QUERY_STRING")
    if query:
        if not _QUERY_AS_IS.fullmatch(query):
            query = quote(query, safe="/;:@&=+$,!~*'()%?[]")
        target += "?" + query
    return target


class Server(Base):
    """A WebSocket accepted from a WSGI request.

    Create it with :meth:`accept`.  ``mode`` names the hosting server:
    ``"werkzeug"``, ``"gunicorn"``, ``"eventlet"`` or ``"gevent"``.
    """

    __slots__ = ("environ", "subprotocols", "origins", "mode", "target")

    _is_server = True

    def __init__(
        self,
        environ: Dict[str, Any],
        subprotocols: Union[None, str, Sequence[str]] = None,
        receive_bytes: int = 4096,
        ping_interval: Optional[float] = None,
        max_message_size: Optional[int] = None,
        thread_class: Any = None,
        event_class: Any = None,
        selector_class: Any = None,
        *,
        lock_class: Any = None,
        preset: Optional[Any] = None,
        ping_timeout: Optional[float] = None,
        close_timeout: Optional[float] = None,
        max_queue: Optional[int] = 16,
        compression: bool = True,
        origins: Optional[Sequence[str]] = None,
    ) -> None:
        self.environ = environ
        if isinstance(subprotocols, str):
            subprotocols = [subprotocols]
        self.subprotocols: List[str] = list(subprotocols or [])
        self.origins = list(origins) if origins is not None else None
        try:
            self._check_upgrade(environ)
            self.check_request(environ)
        except HandshakeError as refusal:
            raise framework_refusal(refusal) from None
        host = find_socket(environ)
        self.mode = host.mode
        self._configure(
            receive_bytes=receive_bytes,
            ping_interval=ping_interval,
            max_message_size=max_message_size,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_queue=max_queue,
            preset=preset,
            sock=host.sock,
            thread_class=thread_class,
            event_class=event_class,
            selector_class=selector_class,
            lock_class=lock_class,
        )
        try:
            response, conn, request, self.subprotocol = accept_request(
                _request_headers(environ),
                _request_target(environ),
                self.choose_subprotocol,
                compression,
                max_message_size,
            )
        except HandshakeError as refusal:
            raise framework_refusal(refusal) from None
        #: The request target (path and query) as the client sent it.
        self.target: str = request.target
        sock = host.sock
        # Some servers hand out sockets with a timeout (or non-blocking); the
        # I/O loop wants plain blocking calls.
        sock.settimeout(None)
        sock.sendall(response)
        host.release()
        take_over(self.mode, environ, self)
        self._start(
            sock, Protocol(conn, max_message_size), False, host.pending, host.peer
        )

    def _check_upgrade(self, environ: Dict[str, Any]) -> None:
        if environ.get("REQUEST_METHOD", "GET") != "GET":
            raise HandshakeError(
                405, "WebSocket handshakes use GET", [("Allow", "GET")]
            )
        if not is_websocket_upgrade(environ):
            raise HandshakeError(
                426,
                "This resource only accepts WebSocket connections",
                [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
            )

    def check_request(self, environ: Dict[str, Any]) -> None:
        """Refuse the handshake by raising :class:`HandshakeError`.

        Runs before anything is written to the socket.  The default enforces
        ``origins`` (403 for any other ``Origin``, the defence against
        cross-site WebSocket hijacking).  Override it for authentication and
        the like, e.g. ``raise HandshakeError(401, "login required")``; the
        status, reason text and headers you give are what the client gets.
        """
        if self.origins is not None:
            origin = environ.get("HTTP_ORIGIN")
            if origin not in self.origins:
                raise HandshakeError(403, f"Origin not allowed: {origin}")

    @classmethod
    def accept(
        cls,
        environ: Dict[str, Any],
        subprotocols: Union[None, str, Sequence[str]] = None,
        receive_bytes: int = 4096,
        ping_interval: Optional[float] = None,
        max_message_size: Optional[int] = None,
        thread_class: Any = None,
        event_class: Any = None,
        selector_class: Any = None,
        **options: Any,
    ) -> Server:
        """Accept the WebSocket request described by a WSGI ``environ``.

        :param subprotocols: subprotocols the server supports (see
            :meth:`choose_subprotocol`).
        :param receive_bytes: size of each socket read.
        :param ping_interval: seconds between keepalive pings, ``None`` for none.
        :param max_message_size: largest message accepted, in bytes; a larger
            one closes the connection with 1009.  ``None``: no limit.
        :param thread_class, event_class, selector_class: concurrency classes;
            by default those of :func:`greenws.presets.detect`.
        :param options: keyword-only extras: ``preset``, ``lock_class``,
            ``ping_timeout``, ``close_timeout``, ``max_queue``,
            ``compression``, ``origins``.
        :raises HandshakeError: the request is not a valid WebSocket upgrade
            (400/405/426) or comes from an origin not in ``origins`` (403);
            the exception is a WSGI app that sends that answer.
        :raises RuntimeError: the WSGI server is not one greenws supports.
        """
        return cls(
            environ,
            subprotocols,
            receive_bytes,
            ping_interval,
            max_message_size,
            thread_class,
            event_class,
            selector_class,
            **options,
        )
