"""Exceptions raised by greenws.

The two public ones keep simple-websocket's names, arguments and attributes so
that code catching ``simple_websocket.ConnectionClosed`` works unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Tuple

#: How much of a refused handshake's response body a client keeps.
MAX_REFUSAL_BODY = 64 * 1024

__all__ = ["GreenWSError", "ConnectionError", "ConnectionClosed", "HandshakeError"]

StartResponse = Callable[..., Any]

#: RFC 6455 "no status received": the peer closed without a code.
NO_STATUS = 1005


class GreenWSError(RuntimeError):
    """Base class of every greenws exception."""


class ConnectionError(GreenWSError):  # noqa: A001 - simple-websocket's name
    """The connection could not be opened.

    ``status_code`` is the HTTP status the server (or a proxy on the way)
    answered the handshake with, or ``None`` when no HTTP answer was received
    (refused, unreachable, timed out, not a WebSocket server).  ``headers``
    (a list of ``(name, value)`` pairs) and ``body`` (its first 64 KiB) are
    that answer's, empty without one.
    """

    def __init__(
        self,
        status_code: Optional[int] = None,
        message: str = "",
        headers: Iterable[Tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        self.status_code = status_code
        self.headers: List[Tuple[str, str]] = list(headers)
        self.body = body
        text = f"Connection error: {status_code}"
        if message:
            text += f" ({message})"
        super().__init__(text)


class ConnectionClosed(GreenWSError):
    """The WebSocket is closed; ``reason`` is the close code, ``message`` its text."""

    def __init__(self, reason: int = NO_STATUS, message: Optional[str] = None) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"Connection closed: {reason} {message or ''}")


class HandshakeError(ConnectionError):
    """A server-side handshake was refused; the exception is the HTTP answer.

    It is a WSGI application: return it (or call it) from a WSGI app or a Flask
    view to send the refusal (status, headers and body) to the client.
    :class:`greenws.WebSocketWSGI` does this for you.
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        headers: Iterable[Tuple[str, str]] = (),
    ) -> None:
        # The body is the plain-text reason sent with the refusal.
        super().__init__(status_code, message, headers, (message + "\n").encode())
        self.reason_text = message

    def __call__(self, environ: object, start_response: StartResponse) -> List[bytes]:
        from http import HTTPStatus

        status = self.status_code or 400
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        body = self.body
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            *self.headers,
        ]
        start_response(f"{status} {phrase}", headers)
        return [body]
