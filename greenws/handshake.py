"""The opening handshake, both roles, without I/O.

wsproto's :class:`~wsproto.handshake.H11Handshake` validates the request or the
response; these helpers feed it what a WSGI server or a socket gave us and turn
its verdict into either an open :class:`wsproto.connection.Connection` or a
:class:`~greenws.errors.HandshakeError` / :class:`~greenws.errors.ConnectionError`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Callable, List, Optional, Sequence, Tuple

import h11
from wsproto.connection import Connection, ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.extensions import Extension
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .compression import BoundedDeflate
from .errors import MAX_REFUSAL_BODY, ConnectionError, HandshakeError

__all__ = ["accept_request", "ClientHandshake"]

Headers = List[Tuple[bytes, bytes]]


def _extensions(compression: bool, max_size: Optional[int]) -> List[Extension]:
    return [BoundedDeflate(max_size)] if compression else []


def _check_key(headers: Headers) -> None:
    """RFC 6455 4.2.1: the key is the base64 encoding of 16 bytes.

    wsproto accepts any value; a client that sends something else is not
    speaking RFC 6455 and gets a 400 rather than a connection.
    """
    for name, value in headers:
        if name.lower() == b"sec-websocket-key":
            try:
                if len(base64.b64decode(value.strip(), validate=True)) == 16:
                    return
            except (binascii.Error, ValueError):
                pass
            break
    raise HandshakeError(400, "Bad WebSocket handshake: invalid Sec-WebSocket-Key")


def accept_request(
    headers: Headers,
    target: str,
    choose_subprotocol: Callable[[Request], Optional[str]],
    compression: bool,
    max_message_size: Optional[int] = None,
) -> Tuple[bytes, Connection, Request, Optional[str]]:
    """Validate an already-parsed upgrade request and accept it.

    Returns the bytes of the ``101`` response, the open frame-level
    connection, wsproto's ``Request`` and the chosen subprotocol.  Raises
    :class:`HandshakeError` (400 or 426) when the request is not a valid
    WebSocket upgrade.
    """
    handshake = H11Handshake(ConnectionType.SERVER)
    try:
        handshake.initiate_upgrade_connection(headers, target)
        request = next(handshake.events())
    except RemoteProtocolError as exc:
        hint = exc.event_hint
        status = hint.status_code if isinstance(hint, RejectConnection) else 400
        extra = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in (hint.headers if isinstance(hint, RejectConnection) else [])
        ]
        raise HandshakeError(status, f"Bad WebSocket handshake: {exc}", extra)
    except (StopIteration, LocalProtocolError, h11.ProtocolError) as exc:
        # h11 refuses to even build some bad requests (no Host header, ...).
        raise HandshakeError(400, f"Bad WebSocket handshake: {exc}")
    assert isinstance(request, Request)
    _check_key(headers)
    subprotocol = choose_subprotocol(request)
    if subprotocol is not None and subprotocol not in request.subprotocols:
        raise ValueError(
            f"choose_subprotocol() returned {subprotocol!r}, which the client "
            f"did not offer ({request.subprotocols!r})"
        )
    data = handshake.send(
        AcceptConnection(
            subprotocol=subprotocol,
            extensions=_extensions(compression, max_message_size),
        )
    )
    conn = handshake.connection
    assert conn is not None
    return data, conn, request, subprotocol


class ClientHandshake:
    """Builds the upgrade request and reads the server's answer."""

    def __init__(
        self,
        host: str,
        target: str,
        subprotocols: Sequence[str],
        headers: Sequence[Tuple[str, str]],
        compression: bool,
        max_message_size: Optional[int] = None,
    ) -> None:
        self._handshake = H11Handshake(ConnectionType.CLIENT)
        # A refusal's status, headers and body, kept for its ConnectionError.
        self._status: Optional[int] = None
        self._headers: List[Tuple[str, str]] = []
        self._body = bytearray()
        self.request_bytes = self._handshake.send(
            Request(
                host=host,
                target=target,
                subprotocols=list(subprotocols),
                extensions=_extensions(compression, max_message_size),
                extra_headers=[
                    (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers
                ],
            )
        )

    def receive_data(
        self, data: bytes
    ) -> Optional[Tuple[Connection, Optional[str], bytes]]:
        """Feed response bytes.

        Returns ``None`` while more are needed, then the open connection, the
        subprotocol the server chose and any bytes that followed the response
        (already handed to the connection).  A refusal raises
        :class:`ConnectionError` with the server's HTTP status, headers and
        body (once the body is complete, or its first 64 KiB arrived).
        """
        try:
            self._handshake.receive_data(data or None)
            for event in self._handshake.events():
                if isinstance(event, AcceptConnection):
                    conn = self._handshake.connection
                    assert conn is not None
                    return conn, event.subprotocol, b""
                if isinstance(event, RejectConnection):
                    self._status = event.status_code
                    self._headers = [
                        (k.decode("latin-1"), v.decode("latin-1"))
                        for k, v in event.headers
                    ]
                    if not event.has_body:
                        raise self._refusal("handshake refused")
                elif isinstance(event, RejectData):
                    self._body += event.data
                    if event.body_finished or len(self._body) >= MAX_REFUSAL_BODY:
                        raise self._refusal("handshake refused")
        except RemoteProtocolError as exc:
            raise self._refusal(f"bad handshake response: {exc}")
        if not data:
            raise self._refusal("server closed during the handshake")
        return None

    def _refusal(self, message: str) -> ConnectionError:
        return ConnectionError(
            self._status, message, self._headers, bytes(self._body[:MAX_REFUSAL_BODY])
        )
