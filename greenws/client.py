"""The client side: open a WebSocket to a ``ws://`` or ``wss://`` URL."""

from __future__ import annotations

import socket
import ssl
import time
from typing import (
    Any,
    Callable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)
from urllib.parse import urljoin, urlsplit

from .connection import Base
from .errors import ConnectionError
from .handshake import ClientHandshake
from .protocol import Protocol
from .proxy import Proxy, ProxyArg, Tunnel, choose_proxy, tunnel

__all__ = ["Client"]

#: Seconds :meth:`Client.connect` may spend opening TCP, TLS and the handshake.
DEFAULT_OPEN_TIMEOUT = 10.0

#: The redirects a client follows (RFC 9110 15.4), and how many in a row.
REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))
MAX_REDIRECTS = 10

_R = TypeVar("_R")

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
    if parts.scheme == "ws+unix":
        raise ValueError(
            f"ws+unix:// URLs are not supported: {url!r}; connect to "
            "'ws://localhost/path' with unix_socket='/path/to.sock'"
        )
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


# Request headers that carry credentials: not sent on to another server.
_CREDENTIALS = frozenset(("authorization", "cookie"))


class Route:
    """Where a client connects, following redirects (shared by both clients).

    ``url``/``target`` is the URL to try, ``unix_socket`` the Unix socket to
    reach it by and ``headers`` the extra request headers to send there; the
    socket, and the credentials among the headers, are kept for redirects to
    the same server only, so that a redirect cannot hand them to another host.
    """

    def __init__(
        self, url: str, unix_socket: Optional[str], headers: HeadersArg = None
    ) -> None:
        self.url = url
        self.target = parse_url(url)
        self.unix_socket = unix_socket
        self.headers = _headers(headers)
        self.redirects = 0

    def follow(self, refusal: ConnectionError) -> None:
        """Move to where a refused handshake redirects, or re-raise ``refusal``.

        A relative ``Location`` is resolved against the URL; a redirect from
        ``wss://`` to ``ws://`` (or to something that is not a WebSocket URL),
        or more than :data:`MAX_REDIRECTS` in a row, raises a
        :class:`ConnectionError` that keeps the answer.
        """
        location = None
        if refusal.status_code in REDIRECT_STATUSES:
            location = next(
                (v for k, v in refusal.headers if k.lower() == "location"), None
            )
        if location is None:
            raise refusal
        new_url = urljoin(self.url, location.strip())

        def refuse(why: str) -> ConnectionError:
            return ConnectionError(
                refusal.status_code, why, refusal.headers, refusal.body
            )

        self.redirects += 1
        if self.redirects > MAX_REDIRECTS:
            raise refuse(f"more than {MAX_REDIRECTS} redirects")
        try:
            target = parse_url(new_url)
        except ValueError:
            raise refuse(f"redirect to {new_url!r}: not a WebSocket URL") from None
        if self.target.secure and not target.secure:
            raise refuse(f"redirect to {new_url!r} not followed: wss:// for ws://")
        old = self.target
        if (old.secure, old.host, old.port) != (
            target.secure,
            target.host,
            target.port,
        ):
            self.unix_socket = None  # another server
            self.headers = [
                (k, v) for k, v in self.headers if k.lower() not in _CREDENTIALS
            ]
        self.url, self.target = new_url, target


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
        unix_socket: Optional[str] = None,
        proxy: ProxyArg = True,
    ) -> None:
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
        deadline = None if open_timeout is None else time.monotonic() + open_timeout
        route = Route(url, unix_socket, headers)
        while True:
            target = route.target
            self.url = route.url
            self.host = target.host
            self.port = target.port
            self.path = target.path
            handshake = ClientHandshake(
                target.host_header,
                self.path,
                self.subprotocols,
                route.headers,
                compression,
                max_message_size,
            )
            sock = self._open(target, ssl_context, route.unix_socket, proxy, deadline)
            try:
                conn, self.subprotocol = self._handshake(sock, handshake, deadline)
                sock.settimeout(None)
                break
            except ConnectionError as refusal:
                sock.close()
                route.follow(refusal)
            except BaseException:
                sock.close()
                raise
        self._start(sock, Protocol(conn, max_message_size), True)

    def _open(
        self,
        target: Target,
        ssl_context: Optional[ssl.SSLContext],
        unix_socket: Optional[str],
        proxy_arg: ProxyArg,
        deadline: Optional[float],
    ) -> Any:
        """A socket to the server, through the proxy and TLS if need be."""
        proxy: Optional[Proxy] = None
        exchange: Optional[Tunnel] = None
        if unix_socket is not None:
            where = unix_socket
            connect: Callable[[Optional[float]], Any] = self._connect_unix(unix_socket)
        else:
            proxy = choose_proxy(proxy_arg, target.secure, target.host, target.port)
            address = (proxy or target).host, (proxy or target).port
            where = f"{address[0]}:{address[1]}"
            if proxy is not None:
                where = f"proxy {proxy.address}"
                exchange = tunnel(proxy, target.host, target.port)

            def connect(timeout: Optional[float]) -> Any:
                return self.preset.create_connection(address, timeout)

        try:
            sock = connect(_remaining(deadline))
        except socket.timeout:
            raise ConnectionError(None, f"timed out connecting to {where}") from None
        except OSError as exc:
            raise ConnectionError(None, f"cannot connect to {where}: {exc}") from None
        try:
            if unix_socket is None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if exchange is not None:
                self._converse(
                    sock,
                    exchange.data_to_send,
                    lambda data: exchange.receive_data(data) or None,
                    deadline,
                    f"the tunnel through {where}",
                )
            if target.secure:
                context = ssl_context or default_ssl_context()
                sock.settimeout(_remaining(deadline))
                sock = self.preset.wrap_ssl(context, sock, target.host)
        except socket.timeout:
            sock.close()
            raise ConnectionError(
                None, f"timed out during the TLS handshake with {target.host}"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise ConnectionError(
                None, f"TLS handshake with {target.host} failed: {exc}"
            ) from None
        except BaseException:  # our ConnectionError included
            sock.close()
            raise
        return sock

    def _connect_unix(self, path: str) -> Callable[[Optional[float]], Any]:
        def connect(timeout: Optional[float]) -> Any:
            sock = self.preset.socket_class(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(path)
            except BaseException:
                sock.close()
                raise
            return sock

        return connect

    def _handshake(
        self, sock: Any, handshake: ClientHandshake, deadline: Optional[float]
    ) -> Tuple[Any, Optional[str]]:
        request = [handshake.request_bytes]
        conn, subprotocol, _ = self._converse(
            sock,
            lambda: request.pop() if request else b"",
            handshake.receive_data,
            deadline,
            "the WebSocket handshake",
        )
        return conn, subprotocol

    def _converse(
        self,
        sock: Any,
        outgoing: Callable[[], bytes],
        receive: Callable[[bytes], Optional[_R]],
        deadline: Optional[float],
        during: str,
    ) -> _R:
        """Send what ``outgoing()`` has, feed the answer to ``receive`` until it
        returns something; all before ``deadline``."""
        try:
            while True:
                data = outgoing()
                if data:
                    sock.settimeout(_remaining(deadline))
                    sock.sendall(data)
                sock.settimeout(_remaining(deadline))
                result = receive(sock.recv(self.receive_bytes or 4096))
                if result is not None:
                    return result
        except socket.timeout:
            raise ConnectionError(None, f"timed out during {during}") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionError(
                None, f"connection lost during {during}: {exc}"
            ) from None

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
            ``compression``, ``open_timeout`` (seconds for everything up to
            the open connection, default 10); ``unix_socket`` (a path: the
            connection goes there, the URL gives ``Host`` and the path);
            ``proxy`` (``True``, the default: from the environment, see
            :func:`greenws.proxy.proxy_for`; a ``http://[user:pass@]host:port``
            or ``socks5://[user:pass@]host:port`` URL; ``None``: direct).

        Redirects (301, 302, 303, 307, 308) are followed, at most 10 in a
        row, never from ``wss://`` to ``ws://``; ``url`` is then the last one.

        :raises ConnectionError: the server or the proxy refused (``status_code``
            is its HTTP status, ``headers`` and ``body`` its answer's) or could
            not be reached in time.
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


def _remaining(deadline: Optional[float]) -> Optional[float]:
    """Seconds left before ``deadline`` (``socket.timeout`` if none)."""
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise socket.timeout()
    return remaining
