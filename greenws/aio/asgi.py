"""The ASGI driver: an :class:`~greenws.AioServer` inside uvicorn, hypercorn ...

Under ASGI the server owns the connection and does the framing: it answers
pings, reassembles fragments, applies its own size limit (uvicorn's
``--ws-max-size``, hypercorn's ``websocket_max_message_size``, 16 MiB by
default) and performs the closing handshake; the application sees whole
messages (``websocket.receive``) and the end (``websocket.disconnect``).
What greenws still does, with the same :class:`~greenws.session.Session` as
everywhere:

- the handshake decision: ``origins``, :meth:`AioServer.check_request` and
  ``choose_subprotocol``; a refusal before the accept is sent as an HTTP
  response through the ASGI "websocket.http.response" extension where the
  server has it (status, headers and body as given), else as a close before
  accepting, which the server turns into a 403;
- ``max_message_size`` (1009) and ``max_queue``: one reader task takes
  messages from ``receive`` into the session's queue and stops taking them
  while the queue is full, so the server's own buffer and then TCP push back;
- ``receive(timeout)``, close codes and reasons both ways, a closing
  handshake bounded by ``close_timeout``.

What ASGI cannot carry: pings.  :meth:`~greenws.AioServer.ping` raises
``NotImplementedError`` and ``ping_interval`` is left to the server's own
keepalive (uvicorn pings every 20 s by default; hypercorn with
``websocket_ping_interval``); greenws logs a warning once when it is given.
Compression too is the server's (``compression`` is ignored).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple
from urllib.parse import quote

from wsproto.events import Request

from ..errors import ConnectionClosed, ConnectionError, HandshakeError
from ..log import logger
from ..protocol import ABNORMAL, INTERNAL_ERROR, NO_STATUS
from ..session import Session
from .connection import AioBase, Data, Driver

if TYPE_CHECKING:
    from .server import AioServer

__all__ = ["accept_asgi", "Asgi"]

_warned_ping = False

# The ASGI extension for an HTTP response instead of the WebSocket.
_DENIAL = "websocket.http.response"


def _target(scope: Dict[str, Any]) -> str:
    """The request target (path and query) as the client sent it."""
    raw = scope.get("raw_path")
    if raw:
        path = bytes(raw).decode("latin-1")
    else:
        path = quote(scope.get("root_path", "") + scope.get("path", "/"))
    query = scope.get("query_string") or b""
    if query:
        path += "?" + bytes(query).decode("latin-1")
    return path or "/"


def _request(scope: Dict[str, Any]) -> Request:
    """The handshake request as wsproto describes it (the server already
    validated it: ASGI hands over websocket scopes only for valid upgrades).
    """
    headers = [(bytes(k).lower(), bytes(v)) for k, v in scope.get("headers", [])]
    host = ""
    extensions: List[str] = []
    extra = []
    for name, value in headers:
        if name == b"host":
            host = value.decode("latin-1")
        elif name == b"sec-websocket-extensions":
            extensions.append(value.decode("latin-1"))
        elif name != b"sec-websocket-protocol":
            extra.append((name, value))
    return Request(
        host=host,
        target=_target(scope),
        subprotocols=list(scope.get("subprotocols") or []),
        extensions=extensions,
        extra_headers=extra,
    )


async def accept_asgi(
    ws: AioServer, scope: Dict[str, Any], receive: Any, send: Any
) -> None:
    """Run the handshake of ``ws`` on an ASGI ``websocket`` scope."""
    ws.mode = "asgi"
    kind = scope.get("type")
    if kind == "http":
        # A plain HTTP request reached a WebSocket endpoint.
        refusal = HandshakeError(
            426,
            "This resource only accepts WebSocket connections",
            [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
        )
        await send({"type": "http.response.start", "status": 426,
                    "headers": _headers(refusal)})
        await send({"type": "http.response.body", "body": refusal.body})
        raise refusal
    if kind != "websocket":
        raise ValueError(f"not a websocket ASGI scope: {kind!r}")
    event = await receive()
    if event.get("type") != "websocket.connect":
        raise ConnectionError(
            None, f"the client went away before the accept ({event.get('type')})"
        )
    request = _request(scope)
    ws.request = request
    ws.target = request.target
    try:
        ws.check_request(request)
        subprotocol = ws.choose_subprotocol(request)
        if subprotocol is not None and subprotocol not in request.subprotocols:
            raise ValueError(
                f"choose_subprotocol() returned {subprotocol!r}, which the client "
                f"did not offer ({request.subprotocols!r})"
            )
    except HandshakeError as refusal:
        await _deny(scope, send, refusal)
        raise
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    ws.subprotocol = subprotocol
    ws.local_address = scope.get("server")
    ws.remote_address = scope.get("client")
    if ws.ping_interval:
        global _warned_ping
        if not _warned_ping:
            _warned_ping = True
            logger.warning(
                "AioServer under ASGI: ping_interval is left to the ASGI "
                "server's own keepalive (ASGI has no ping message)"
            )
    session = Session(
        None, client=False, max_queue=ws.max_queue,
        max_message_size=ws.max_message_size,
    )
    driver = Asgi(ws, session, receive, send)
    ws._open(session, driver, "asgi")
    driver.start()


def _headers(refusal: HandshakeError) -> List[Tuple[bytes, bytes]]:
    body = refusal.body
    return [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in refusal.headers),
    ]


async def _deny(scope: Dict[str, Any], send: Any, refusal: HandshakeError) -> None:
    """Send a refusal before the accept: the HTTP response itself where the
    server supports it, else a close, which the server answers with 403."""
    if _DENIAL in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start",
                    "status": refusal.status_code or 403,
                    "headers": _headers(refusal)})
        await send({"type": "websocket.http.response.body", "body": refusal.body})
    else:
        await send({"type": "websocket.close", "code": 1008})


class Asgi(Driver):
    """Drives one :class:`AioServer` over an ASGI ``receive``/``send`` pair."""

    __slots__ = (
        "conn", "session", "receive", "send", "loop", "done", "read_paused",
        "_reader", "_room",
    )

    can_ping = False

    def __init__(
        self, conn: AioBase, session: Session, receive: Any, send: Any
    ) -> None:
        self.conn = conn
        self.session = session
        self.receive = receive
        self.send = send
        self.loop = asyncio.get_running_loop()
        self.done = False
        self.read_paused = False
        self._reader: Optional[asyncio.Task[None]] = None
        # Set while the reader waits for room in the queue.
        self._room: Optional[asyncio.Future[None]] = None

    def start(self) -> None:
        self._reader = self.loop.create_task(self._read())

    # -- Driver -------------------------------------------------------------

    async def send_message(self, message: Data, text: Optional[bool] = None) -> None:
        session = self.session
        if session.closing or self.done:
            raise ConnectionClosed(session.close_reason, session.close_message)
        if text is not None and isinstance(message, str) is not text:
            # ASGI takes text as str and binary as bytes.
            message = message.encode("utf-8") if isinstance(message, str) else (
                message.decode("utf-8")
            )
        event: Dict[str, Any] = {"type": "websocket.send"}
        if isinstance(message, str):
            event["text"] = message
        else:
            event["bytes"] = message
        try:
            await self.send(event)
        except Exception as exc:  # noqa: BLE001 - the server's I/O: gone
            self._lost(exc)
            raise ConnectionClosed(
                session.close_reason, session.close_message
            ) from None

    def send_ping(self, payload: bytes, token: Any, now: float) -> None:
        raise NotImplementedError("ASGI has no ping message")

    async def start_close(self, code: int, reason: Optional[str]) -> None:
        if self.done or not self.session.begin_close(code, reason):
            return
        self.conn.connected = False
        self.conn._wake()
        await self._send_close()

    def resume_reading(self) -> None:
        room = self._room
        if room is not None and not room.done() and self.session.room():
            self.read_paused = False
            room.set_result(None)

    def abort(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if not self.done:
            self.session.connection_lost()
            self._end()

    def time(self) -> float:  # pragma: no cover - no pings
        return self.loop.time()

    async def finished(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            await asyncio.wait([reader], timeout=self.conn.close_timeout)

    # -- internals ------------------------------------------------------------

    async def _send_close(self) -> None:
        session = self.session
        try:
            await self.send({"type": "websocket.close", "code": session.close_reason,
                             "reason": session.close_message or ""})
        except Exception as exc:  # noqa: BLE001 - the server's I/O: gone
            self._lost(exc)

    async def _read(self) -> None:
        """The reader task: takes messages while the queue has room."""
        session = self.session
        conn = self.conn
        try:
            while not self.done:
                if not session.room():
                    self.read_paused = True
                    self._room = self.loop.create_future()
                    await self._room
                    self._room = None
                try:
                    event = await self.receive()
                except Exception as exc:  # noqa: BLE001 - the server's I/O
                    self._lost(exc)
                    return
                kind = event.get("type")
                if kind == "websocket.receive":
                    text = event.get("text")
                    message = text if text is not None else (event.get("bytes") or b"")
                    if not session.receive_message(message):
                        conn.connected = False
                        conn._wake()
                        await self._send_close()  # 1009
                    elif session.queue:
                        conn._wake()
                elif kind == "websocket.disconnect":
                    session.peer_closed(
                        int(event.get("code") or NO_STATUS), event.get("reason") or None
                    )
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a bug of ours: logged, 1011
            logger.exception(
                "%s %s: error while reading; closing with 1011",
                type(conn).__name__, conn.remote_address,
            )
            if session.begin_close(INTERNAL_ERROR, "internal error"):
                await self._send_close()
        finally:
            self._end()

    def _lost(self, exc: BaseException) -> None:
        """The server's receive or send failed: the connection is gone."""
        logger.debug("ASGI connection lost: %r", exc)
        self.session.peer_closed(ABNORMAL, None)
        self.conn.connected = False

    def _end(self) -> None:
        if self.done:
            return
        self.done = True
        self.session.connection_lost()
        room = self._room
        if room is not None and not room.done():
            room.cancel()
        self.conn._ended()
