"""The asyncio server side: accept a WebSocket from aiohttp, ASGI or a socket.

- ``aiohttp=request``: the handshake is validated from aiohttp's request
  (method, the real path and query, headers), the 101 is written on its
  transport, and the transport is taken from aiohttp's protocol, which is
  kept off it from then on (it writes nothing after the WebSocket, whatever
  the handler returns) and told when the connection ends.
- ``sock=sock, headers=headers``: a connected socket whose request was
  already read (``target`` and ``pending`` say what the socket's reader knew).
- ``asgi=(scope, receive, send)``: the ASGI server does the framing; see
  :mod:`greenws.aio.asgi`.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import ConnectionError, HandshakeError
from ..handshake import Headers, accept_request
from ..protocol import Protocol
from ..session import Session
from .connection import DEFAULT_MAX_QUEUE, AioBase
from .stream import Stream

__all__ = ["AioServer"]

HeadersArg = Union[Mapping[str, str], Sequence[Tuple[Any, Any]]]


def _raw_headers(headers: HeadersArg) -> Headers:
    """Request headers as wsproto wants them: lower-case byte pairs."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for name, value in items:
        if isinstance(name, str):
            name = name.encode("latin-1")
        if isinstance(value, str):
            value = value.encode("latin-1")
        out.append((bytes(name).lower(), bytes(value)))
    return out


def _header(request: Any, name: bytes) -> Optional[str]:
    for key, value in request.extra_headers:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class AioServer(AioBase):
    """A WebSocket accepted inside an asyncio server; see :meth:`accept`.

    ``mode`` says where it came from: ``"aiohttp"``, ``"asgi"`` or
    ``"custom"`` (a socket, as simple-websocket names it).
    """

    __slots__ = ("subprotocols", "origins", "mode", "target", "request")

    def __init__(
        self,
        subprotocols: Union[None, str, Sequence[str]] = None,
        receive_bytes: int = 4096,
        ping_interval: Optional[float] = None,
        max_message_size: Optional[int] = None,
        *,
        ping_timeout: Optional[float] = None,
        close_timeout: Optional[float] = None,
        max_queue: Optional[int] = DEFAULT_MAX_QUEUE,
        origins: Optional[Sequence[str]] = None,
    ) -> None:
        if isinstance(subprotocols, str):
            subprotocols = [subprotocols]
        self.subprotocols: List[str] = list(subprotocols or [])
        self.origins = list(origins) if origins is not None else None
        self.mode = ""
        #: The request target (path and query) as the client sent it.
        self.target = "/"
        #: The handshake request (wsproto's ``Request``: ``host``,
        #: ``target``, ``subprotocols``, ``extensions``, ``extra_headers``).
        self.request: Any = None
        self._configure(
            receive_bytes=receive_bytes,
            ping_interval=ping_interval,
            max_message_size=max_message_size,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_queue=max_queue,
        )

    @classmethod
    async def accept(
        cls,
        aiohttp: Any = None,
        asgi: Optional[Tuple[Any, Any, Any]] = None,
        sock: Optional[socket.socket] = None,
        headers: Optional[HeadersArg] = None,
        subprotocols: Union[None, str, Sequence[str]] = None,
        receive_bytes: int = 4096,
        ping_interval: Optional[float] = None,
        max_message_size: Optional[int] = None,
        *,
        ping_timeout: Optional[float] = None,
        close_timeout: Optional[float] = None,
        max_queue: Optional[int] = DEFAULT_MAX_QUEUE,
        compression: bool = True,
        origins: Optional[Sequence[str]] = None,
        target: str = "/",
        pending: bytes = b"",
    ) -> AioServer:
        """Accept a WebSocket connection.

        Give exactly one source (else ``ValueError``):

        :param aiohttp: aiohttp's ``web.Request``.
        :param asgi: the ASGI ``(scope, receive, send)`` of a ``websocket``
            scope.
        :param sock: a connected socket whose HTTP request was already read;
            ``headers`` are that request's headers (a dict or pairs),
            ``target`` its path and query, ``pending`` any bytes read past
            the request.

        Then, as for :meth:`greenws.Server.accept`: ``subprotocols``,
        ``receive_bytes``, ``ping_interval`` (seconds between keepalive
        pings), ``max_message_size`` (a larger message closes with 1009),
        and the keyword-only ``ping_timeout``, ``close_timeout``,
        ``max_queue``, ``compression`` and ``origins``.

        :raises HandshakeError: the request is not a valid WebSocket upgrade
            (400/405/426) or its ``Origin`` is not in ``origins`` (403), or
            :meth:`check_request` refused it.  The refusal has been sent to
            the client (under aiohttp the exception is also aiohttp's
            ``HTTPException``, which aiohttp answers by itself).
        :raises ConnectionError: the client went away during the handshake.
        """
        given = [name for name, value in
                 (("aiohttp", aiohttp), ("asgi", asgi), ("sock", sock))
                 if value is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of aiohttp=, asgi= or sock= "
                f"(got {', '.join(given) or 'none'})"
            )
        if headers is not None and sock is None:
            raise ValueError("headers= goes with sock= (the request's headers)")
        ws = cls(
            subprotocols,
            receive_bytes,
            ping_interval,
            max_message_size,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_queue=max_queue,
            origins=origins,
        )
        if aiohttp is not None:
            await ws._accept_aiohttp(aiohttp, compression)
        elif sock is not None:
            await ws._accept_sock(sock, headers or {}, target, pending, compression)
        else:
            from .asgi import accept_asgi

            assert asgi is not None
            await accept_asgi(ws, *asgi)
        return ws

    def check_request(self, request: Any) -> None:
        """Refuse the handshake by raising :class:`HandshakeError`.

        ``request`` is wsproto's ``Request`` (``target``, ``subprotocols``,
        ``extra_headers`` ...).  Runs before anything is sent.  The default
        enforces ``origins`` (403 for any other ``Origin``, the defence
        against cross-site WebSocket hijacking).  Override it for
        authentication and the like, e.g. ``raise HandshakeError(401,
        "login required")``.
        """
        if self.origins is not None:
            origin = _header(request, b"origin")
            if origin not in self.origins:
                raise HandshakeError(403, f"Origin not allowed: {origin}")

    # -- sources ----------------------------------------------------------

    def _handshake(
        self, headers: Headers, target: str, compression: bool
    ) -> Tuple[bytes, Any]:
        """Validate the request and run :meth:`check_request`; the 101's
        bytes and the open wsproto connection."""
        response, conn, request, subprotocol = accept_request(
            headers, target, self.choose_subprotocol, compression,
            self.max_message_size,
        )
        self.request = request
        self.target = request.target
        self.check_request(request)
        self.subprotocol = subprotocol
        return response, conn

    def _driver_for(self, conn: Any) -> Stream:
        session = Session(
            Protocol(conn, self.max_message_size), client=False,
            max_queue=self.max_queue,
        )
        return Stream(self, session)

    async def _accept_sock(
        self, sock: socket.socket, headers: HeadersArg, target: str,
        pending: bytes, compression: bool,
    ) -> None:
        self.mode = "custom"
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        try:
            response, conn = self._handshake(_raw_headers(headers), target, compression)
        except HandshakeError as refusal:
            # The socket was given to us to answer: the refusal goes on it.
            try:
                await loop.sock_sendall(sock, _refusal_bytes(refusal))
            except OSError:
                pass
            finally:
                sock.close()
            raise
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_sendall(sock, response)
            driver = self._driver_for(conn)
            await loop.connect_accepted_socket(
                lambda: _Accepted(driver, pending), sock
            )
        except OSError as exc:
            sock.close()
            raise ConnectionError(
                None, f"the client went away during the handshake: {exc}"
            ) from None

    async def _accept_aiohttp(self, request: Any, compression: bool) -> None:
        self.mode = "aiohttp"
        try:
            if request.method != "GET":
                raise HandshakeError(
                    405, "WebSocket handshakes use GET", [("Allow", "GET")]
                )
            response, conn = self._handshake(
                list(request.raw_headers), request.raw_path, compression
            )
        except HandshakeError as refusal:
            raise _aiohttp_refusal(refusal) from None
        host = request.protocol
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionError(None, "the client went away during the handshake")
        # Bytes the client sent right behind its request: aiohttp keeps
        # them aside once it has seen an upgrade.
        pending = getattr(host, "_message_tail", b"") or b""
        if pending:
            host._message_tail = b""
        # aiohttp must not touch the connection again: no transport for
        # whatever response the handler returns (writing to it fails
        # quietly, as for a client that went away), and no keep-alive
        # (force_close() also closes the transport it still knows of).
        host.transport = None
        host.force_close()
        transport.write(response)
        self._driver_for(conn).start(transport, self.mode, pending, host)


class _Accepted(asyncio.Protocol):
    """Hands a new transport to the WebSocket's driver in the same callback
    that made it, before any data can arrive."""

    def __init__(self, driver: Stream, pending: bytes) -> None:
        self.driver = driver
        self.pending = pending

    def connection_made(self, transport: Any) -> None:
        self.driver.start(transport, "custom", self.pending)


def _refusal_bytes(refusal: HandshakeError) -> bytes:
    """A refusal as an HTTP/1.1 response."""
    from http import HTTPStatus

    status = refusal.status_code or 400
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = refusal.body
    head = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in refusal.headers),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


_aiohttp_classes: Dict[type, type] = {}


def _aiohttp_refusal(refusal: HandshakeError) -> HandshakeError:
    """``refusal`` as an exception aiohttp answers by itself.

    A :class:`HandshakeError` escaping an aiohttp handler would become a 500
    with a logged traceback; this one is also an ``aiohttp.web.HTTPException``
    with the refusal's status, headers and body.
    """
    web_exceptions = sys.modules.get("aiohttp.web_exceptions")
    http_exception = getattr(web_exceptions, "HTTPException", None)
    if http_exception is None:  # pragma: no cover - aiohttp is running
        return refusal
    cls = type(refusal)
    both = _aiohttp_classes.get(cls)
    if both is None:
        # aiohttp's class first: its response attributes (body, headers)
        # are what aiohttp writes.
        both = _aiohttp_classes[cls] = type(
            cls.__name__, (http_exception, cls), {"__module__": cls.__module__}
        )
    status = refusal.status_code or 400
    converted: Any = Exception.__new__(both)
    converted.__dict__.update(refusal.__dict__)
    converted.status_code = status
    http_exception.__init__(
        converted,
        headers=refusal.headers,
        text=refusal.reason_text + "\n",
    )
    converted.args = refusal.args
    result: HandshakeError = converted
    return result
