"""Proxies for the client, without I/O.

Which proxy a ``ws://``/``wss://`` URL goes through (:func:`proxy_for`, from
the environment as the ``websockets`` library does), and the exchange that
opens a tunnel through it (:func:`tunnel`): an HTTP ``CONNECT`` request with
optional Basic auth, or a SOCKS5 greeting, authentication and ``CONNECT``.
The sync and asyncio clients drive the same exchange over their own sockets,
so that it cooperates with a gevent or eventlet hub and shares the client's
``open_timeout``.
"""

from __future__ import annotations

import base64
import ipaddress
from typing import List, NamedTuple, Optional, Tuple, Union
from urllib.parse import unquote, urlsplit

import h11

from .errors import MAX_REFUSAL_BODY, ConnectionError

__all__ = ["Proxy", "parse_proxy", "proxy_for", "tunnel", "Tunnel"]

#: What ``proxy=`` accepts: ``True`` (from the environment), a URL, ``None``.
ProxyArg = Union[bool, str, None]

_SOCKS_SCHEMES = ("socks5", "socks5h")


class Proxy(NamedTuple):
    """A proxy URL, split (see :func:`parse_proxy`)."""

    scheme: str
    host: str
    port: int
    username: Optional[str]
    password: Optional[str]

    @property
    def address(self) -> str:
        """``host:port``, for messages."""
        return f"{_bracketed(self.host)}:{self.port}"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_proxy(url: str) -> Proxy:
    """Split a proxy URL; ``ValueError`` if greenws cannot use it.

    ``http://[user:pass@]host[:port]`` (port 80 by default) is used with
    ``CONNECT``; ``socks5://`` and ``socks5h://`` (port 1080 by default) with
    SOCKS5, the proxy resolving the name in both cases.  A URL without a
    scheme, as some environments set ``http_proxy``, is an HTTP proxy.
    """
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "http":
        default_port = 80
    elif scheme in _SOCKS_SCHEMES:
        default_port = 1080
    else:
        raise ValueError(
            f"unsupported proxy {url!r}: greenws uses http:// proxies "
            "(CONNECT) and socks5:// or socks5h:// ones"
        )
    if not parts.hostname:
        raise ValueError(f"the proxy URL has no host: {url!r}")
    return Proxy(
        scheme,
        parts.hostname,
        parts.port or default_port,
        None if parts.username is None else unquote(parts.username),
        None if parts.password is None else unquote(parts.password),
    )


def proxy_for(secure: bool, host: str, port: int) -> Optional[str]:
    """The proxy URL the environment sets for a WebSocket URL, or ``None``.

    ``wss_proxy`` (for ``wss://``) or ``ws_proxy`` (for ``ws://``) first, then
    ``https_proxy``, then, for ``ws://`` only, ``http_proxy``; upper-case
    names too (lower-case ones win).  ``no_proxy`` is honoured.
    """
    import urllib.request  # heavy (http.client, email): only when connecting
    if urllib.request.proxy_bypass(f"{_bracketed(host)}:{port}"):
        return None
    proxies = urllib.request.getproxies()
    names = ("wss", "https") if secure else ("ws", "https", "http")
    for name in names:
        if proxies.get(name):
            return proxies[name]
    return None


def choose_proxy(
    proxy: ProxyArg, secure: bool, host: str, port: int
) -> Optional[Proxy]:
    """The proxy a connection goes through, from the client's ``proxy=``."""
    if proxy is True:
        url = proxy_for(secure, host, port)
    elif proxy is None or isinstance(proxy, str):
        url = proxy
    else:
        raise TypeError(f"proxy must be True, a URL or None, not {proxy!r}")
    return None if url is None else parse_proxy(url)


class Tunnel:
    """An exchange that turns a connection to a proxy into a tunnel.

    The caller sends :meth:`data_to_send` and feeds what the proxy answers to
    :meth:`receive_data` (``b""`` at end of file) until it returns ``True``;
    a refusal raises :class:`ConnectionError`.
    """

    def __init__(self) -> None:
        self._out = bytearray()

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def receive_data(self, data: bytes) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


class _HTTPConnect(Tunnel):
    """``CONNECT host:port`` to an HTTP proxy (h11 reads its answer)."""

    def __init__(self, proxy: Proxy, host: str, port: int) -> None:
        super().__init__()
        self._proxy = proxy
        self._h11 = h11.Connection(h11.CLIENT)
        authority = f"{_bracketed(host)}:{port}"
        headers: List[Tuple[str, str]] = [("Host", authority)]
        if proxy.username is not None:
            credentials = f"{proxy.username}:{proxy.password or ''}".encode()
            token = base64.b64encode(credentials).decode("ascii")
            headers.append(("Proxy-Authorization", f"Basic {token}"))
        self._out += self._h11.send(
            h11.Request(method="CONNECT", target=authority, headers=headers)
        )
        self._refusal: Optional[h11.Response] = None
        self._body = bytearray()

    def receive_data(self, data: bytes) -> bool:
        self._h11.receive_data(data)
        try:
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA:
                    return False
                if event is h11.PAUSED:  # a 2xx answer: the tunnel is open
                    if self._h11.trailing_data[0]:
                        raise self._error("it sent data before the server")
                    return True
                if isinstance(event, h11.Response):
                    self._refusal = event
                elif isinstance(event, h11.Data):
                    self._body += event.data
                    if len(self._body) >= MAX_REFUSAL_BODY:
                        raise self._error()
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    raise self._error()
        except h11.RemoteProtocolError as exc:
            if not data and self._refusal is None:
                raise self._error("it closed the connection without answering")
            raise self._error(f"bad answer: {exc}") from None

    def _error(self, problem: Optional[str] = None) -> ConnectionError:
        where = f"proxy {self._proxy.address}"
        response = self._refusal
        if response is None:
            return ConnectionError(None, f"{where}: {problem}")
        status = response.status_code
        message = f"{where} refused the tunnel: {status} "
        message += response.reason.decode("latin-1")
        if problem is not None:
            message += f" ({problem})"
        return ConnectionError(
            status,
            message,
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers],
            bytes(self._body[:MAX_REFUSAL_BODY]),
        )


#: RFC 1928 6: the SOCKS5 server's reply codes.
_SOCKS5_REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


class _SOCKS5Connect(Tunnel):
    """RFC 1928 ``CONNECT`` (with RFC 1929 username/password if given).

    The proxy resolves host names: greenws never makes a blocking DNS lookup
    for it.
    """

    def __init__(self, proxy: Proxy, host: str, port: int) -> None:
        super().__init__()
        self._proxy = proxy
        self._buffer = bytearray()
        self._state = "method"
        for field in (proxy.username, proxy.password):
            if field is not None and len(field.encode()) > 255:
                raise ValueError("SOCKS5 usernames and passwords are 255 bytes at most")
        methods = b"\x00\x02" if proxy.username is not None else b"\x00"
        self._out += bytes([5, len(methods)]) + methods
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            name = host.encode("idna")
            if len(name) > 255:
                raise ValueError(f"host name too long for SOCKS5: {host!r}") from None
            address = bytes([3, len(name)]) + name
        else:
            address = bytes([1 if ip.version == 4 else 4]) + ip.packed
        self._request = b"\x05\x01\x00" + address + port.to_bytes(2, "big")

    def receive_data(self, data: bytes) -> bool:
        if not data:
            raise self._error("closed the connection")
        self._buffer += data
        while True:
            buffer = self._buffer
            if self._state == "method":
                if len(buffer) < 2:
                    return False
                method = buffer[1]
                del buffer[:2]
                if method == 2 and self._proxy.username is not None:
                    user = self._proxy.username.encode()
                    password = (self._proxy.password or "").encode()
                    self._out += (
                        bytes([1, len(user)]) + user + bytes([len(password)]) + password
                    )
                    self._state = "auth"
                elif method == 0:
                    self._out += self._request
                    self._state = "reply"
                else:
                    raise self._error("accepts none of our authentication methods")
            elif self._state == "auth":
                if len(buffer) < 2:
                    return False
                if buffer[1] != 0:
                    raise self._error("refused the username and password")
                del buffer[:2]
                self._out += self._request
                self._state = "reply"
            else:
                if len(buffer) < 5:
                    return False
                if buffer[1] != 0:
                    reply = _SOCKS5_REPLIES.get(buffer[1], f"error {buffer[1]}")
                    raise self._error(f"refused the tunnel: {reply}")
                kind = buffer[3]
                size = {1: 4, 4: 16, 3: 1 + buffer[4]}.get(kind)
                if size is None:
                    raise self._error("sent a bad reply")
                if len(buffer) < 4 + size + 2:
                    return False
                if len(buffer) > 4 + size + 2:
                    raise self._error("sent data before the server")
                return True

    def _error(self, what: str) -> ConnectionError:
        return ConnectionError(None, f"SOCKS5 proxy {self._proxy.address} {what}")


def tunnel(proxy: Proxy, host: str, port: int) -> Tunnel:
    """The exchange that opens a tunnel to ``host:port`` through ``proxy``."""
    if proxy.scheme in _SOCKS_SCHEMES:
        return _SOCKS5Connect(proxy, host, port)
    return _HTTPConnect(proxy, host, port)
