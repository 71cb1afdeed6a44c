"""The client side: open a WebSocket to a ``ws://`` or ``wss://`` URL."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from .connection import Base
from .errors import ConnectionError
from .handshake import ClientHandshake
from .protocol import Protocol

__all__ = ["Client"]

#: Seconds :meth:`Client.connect` may spend opening TCP, TLS and the handshake.
DEFAULT_OPEN_TIMEOUT = 10.0

HeadersArg = Union[None, Mapping[str, str], Sequence[Tuple[str, str]]]


def _headers(headers: HeadersArg) -> List[Tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


_default_context: Optional[ssl.SSLContext] = None


def default_ssl_context() -> ssl.SSLContext:
    """The context ``wss://`` uses when none is given, made once per process:
    :func:`ssl.create_default_context` loads the system's CA certificates,
    tens of milliseconds on each call.  A context is meant to be shared."""
    global _default_context
    if _default_context is None:
        _default_context = ssl.create_default_context()
    return _default_context


class Target(NamedTuple):
    """Where a ``ws://``/``wss://`` URL leads (see :func:`parse_url`)."""

    secure: bool
    host: str
    port: int
    #: Path and query, as the request's target.
    path: str
    #: The ``Host`` header: the host, with the port unless the default.
    host_header: str


def parse_url(url: str) -> Target:
    """Split a WebSocket URL; ``ValueError`` if it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https"):
        raise ValueError(f"not a WebSocket URL (ws:// or wss://): {url!r}")
    if not parts.hostname:
        raise ValueError(f"the URL has no host: {url!r}")
    secure = parts.scheme in ("wss", "https")
    host = parts.hostname
    default_port = 443 if secure else 80
    host_header = host if ":" not in host else f"[{host}]"
    if parts.port and parts.port != default_port:
        host_header += f":{parts.port}"
    return Target(
        secure,
        host,
        parts.port or default_port,
        (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        host_header,
    )


class Client(Base):
    """A WebSocket client connection; create it with :meth:`connect`."""

    __slots__ = ("url", "host", "port", "path", "subprotocols")

    def __init__(
        self,
        url: str,
        subprotocols: Union[None, str, Sequence[str]] = None,
        headers: HeadersArg = None,
        receive_bytes: int = 4096,
        ping_interval: Optional[float] = None,
        max_message_size: Optional[int] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
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
        open_timeout: Optional[float] = DEFAULT_OPEN_TIMEOUT,
    ) -> None:
        target = parse_url(url)
        secure = target.secure
        self.url = url
        self.host = target.host
        self.port = target.port
        self.path = target.path
        if isinstance(subprotocols, str):
            subprotocols = [subprotocols]
        self.subprotocols: List[str] = list(subprotocols or [])
        self._configure(
            receive_bytes=receive_bytes,
            ping_interval=ping_interval,
            max_message_size=max_message_size,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_queue=max_queue,
            preset=preset,
            thread_class=thread_class,
            event_class=event_class,
            selector_class=selector_class,
            lock_class=lock_class,
        )
        handshake = ClientHandshake(
            target.host_header,
            self.path,
            self.subprotocols,
            _headers(headers),
            compression,
            max_message_size,
        )
        deadline = None if open_timeout is None else time.monotonic() + open_timeout
        sock = self._open(secure, ssl_context, open_timeout)
        try:
            conn, self.subprotocol = self._handshake(sock, handshake, deadline)
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        self._start(sock, Protocol(conn, max_message_size), True)

    def _open(
        self,
        secure: bool,
        ssl_context: Optional[ssl.SSLContext],
        timeout: Optional[float],
    ) -> Any:
        preset = self.preset
        try:
            sock = preset.create_connection((self.host, self.port), timeout)
        except socket.timeout:
            raise ConnectionError(
                None, f"timed out connecting to {self.host}:{self.port}"
            )
        except OSError as exc:
            raise ConnectionError(
                None, f"cannot connect to {self.host}:{self.port}: {exc}"
            )
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if secure:
                context = ssl_context or default_ssl_context()
                sock = preset.wrap_ssl(context, sock, self.host)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise ConnectionError(None, f"TLS handshake with {self.host} failed: {exc}")
        return sock

    def _handshake(
        self, sock: Any, handshake: ClientHandshake, deadline: Optional[float]
    ) -> Tuple[Any, Optional[str]]:
        try:
            sock.sendall(handshake.request_bytes)
            while True:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise socket.timeout()
                    sock.settimeout(remaining)
                result = handshake.receive_data(sock.recv(self.receive_bytes or 4096))
                if result is not None:
                    conn, subprotocol, _ = result
                    return conn, subprotocol
        except socket.timeout:
            raise ConnectionError(None, "timed out during the WebSocket handshake")
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionError(None, f"connection lost during the handshake: {exc}")

    @classmethod
    def connect(
        cls,
        url: str,
        subprotocols: Union[None, str, Sequence[str]] = None,
        headers: HeadersArg = None,
        receive_bytes: int = 4096,
        ping_interval: Optional[float] = None,
        max_message_size: Optional[int] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        thread_class: Any = None,
        event_class: Any = None,
        selector_class: Any = None,
        **options: Any,
    ) -> Client:
        """Open a WebSocket connection to ``url`` (``ws://`` or ``wss://``).

        :param subprotocols: a name or a list of names, in order of preference.
        :param headers: extra request headers, as a dict or a list of pairs.
        :param ssl_context: the TLS context for ``wss://`` (default: the
            system's trusted CAs, hostname checked).
        :param options: keyword-only extras: ``preset``, ``lock_class``,
            ``ping_timeout``, ``close_timeout``, ``max_queue``,
            ``compression``, ``open_timeout`` (seconds, default 10).
        :raises ConnectionError: the server refused the handshake
            (``status_code`` is its HTTP status) or could not be reached in time.
        """
        return cls(
            url,
            subprotocols,
            headers,
            receive_bytes,
            ping_interval,
            max_message_size,
            ssl_context,
            thread_class,
            event_class,
            selector_class,
            **options,
        )
