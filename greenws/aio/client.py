"""The asyncio client side: open a WebSocket to a ``ws://`` or ``wss://`` URL."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, List, Optional, Sequence, Tuple, Union

from ..client import (
    DEFAULT_OPEN_TIMEOUT,
    HeadersArg,
    Route,
    Target,
    default_ssl_context,
    parse_url,
)
from ..errors import ConnectionError
from ..handshake import ClientHandshake
from ..protocol import Protocol
from ..proxy import ProxyArg, Tunnel, choose_proxy, tunnel
from ..session import Session
from .connection import DEFAULT_MAX_QUEUE, AioBase
from .stream import Stream

__all__ = ["AioClient"]


class AioClient(AioBase):
    """An asyncio WebSocket client connection; create it with :meth:`connect`."""

    __slots__ = ("url", "host", "port", "path", "subprotocols")

    def __init__(
        self,
        url: str,
        subprotocols: Union[None, str, Sequence[str]] = None,
        receive_bytes: int = 4096,
        ping_interval: Optional[float] = None,
        max_message_size: Optional[int] = None,
        *,
        ping_timeout: Optional[float] = None,
        close_timeout: Optional[float] = None,
        max_queue: Optional[int] = DEFAULT_MAX_QUEUE,
    ) -> None:
        target = parse_url(url)
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
        )

    @classmethod
    async def connect(
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
        *,
        ping_timeout: Optional[float] = None,
        close_timeout: Optional[float] = None,
        max_queue: Optional[int] = DEFAULT_MAX_QUEUE,
        compression: bool = True,
        open_timeout: Optional[float] = DEFAULT_OPEN_TIMEOUT,
        unix_socket: Optional[str] = None,
        proxy: ProxyArg = True,
    ) -> AioClient:
        """Open a WebSocket connection to ``url`` (``ws://`` or ``wss://``).

        :param subprotocols: a name or a list of names, in order of preference.
        :param headers: extra request headers, as a dict or a list of pairs.
        :param ssl_context: the TLS context for ``wss://`` (default: the
            system's trusted CAs, hostname checked).
        :param thread_class, event_class: accepted for simple-websocket's
            signature and ignored (asyncio needs neither).
        Keyword-only extras: ``ping_timeout``, ``close_timeout``,
        ``max_queue``, ``compression``, ``open_timeout`` (seconds for
        everything up to the open connection; default 10), ``unix_socket``
        and ``proxy`` (as :meth:`greenws.Client.connect`'s).  Redirects are
        followed as :meth:`greenws.Client.connect` does.

        :raises ConnectionError: the server or the proxy refused
            (``status_code`` is its HTTP status, ``headers`` and ``body`` its
            answer's) or could not be reached in time.
        """
        ws = cls(
            url,
            subprotocols,
            receive_bytes,
            ping_interval,
            max_message_size,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_queue=max_queue,
        )
        route = Route(url, unix_socket, headers)

        async def open_following_redirects() -> None:
            while True:
                target = route.target
                ws.url, ws.host, ws.port, ws.path = (
                    route.url,
                    target.host,
                    target.port,
                    target.path,
                )
                handshake = ClientHandshake(
                    target.host_header,
                    ws.path,
                    ws.subprotocols,
                    route.headers,
                    compression,
                    max_message_size,
                )
                context = None
                if target.secure:
                    context = ssl_context or default_ssl_context()
                transport, opened = await ws._open_connection(
                    target, handshake, context, route.unix_socket, proxy
                )
                try:
                    await opened
                    return
                except ConnectionError as refusal:  # the server's, not a proxy's
                    transport.abort()
                    route.follow(refusal)
                except BaseException:
                    transport.abort()
                    raise

        try:
            await asyncio.wait_for(open_following_redirects(), open_timeout)
        except asyncio.TimeoutError:
            raise ConnectionError(
                None, f"timed out opening {ws.host}:{ws.port} and its handshake"
            ) from None
        return ws

    async def _open_connection(
        self,
        target: Target,
        handshake: ClientHandshake,
        context: Optional[ssl.SSLContext],
        unix_socket: Optional[str],
        proxy_arg: ProxyArg,
    ) -> Tuple[Any, asyncio.Future[None]]:
        """Connect (through the proxy, and TLS) and send the handshake.

        Returns the transport and the future the handshake's answer ends.
        """
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        handshaking = _Handshaking(self, handshake, opened)
        hostname = target.host if context is not None else None
        proxy = None
        if unix_socket is None:
            proxy = choose_proxy(proxy_arg, target.secure, target.host, target.port)
        where = unix_socket or f"{target.host}:{target.port}"
        if proxy is not None:
            where = f"proxy {proxy.address}"
        transport: Any = None
        try:
            if unix_socket is not None:
                transport, _ = await loop.create_unix_connection(
                    lambda: handshaking,
                    unix_socket,
                    ssl=context,
                    server_hostname=hostname,
                )
            elif proxy is None:
                transport, _ = await loop.create_connection(
                    lambda: handshaking,
                    target.host,
                    target.port,
                    ssl=context,
                    server_hostname=hostname,
                )
            else:
                exchange = tunnel(proxy, target.host, target.port)
                tunneling = _Tunneling(exchange, loop.create_future())
                transport, _ = await loop.create_connection(
                    lambda: tunneling, proxy.host, proxy.port
                )
                await tunneling.opened
                if context is not None:
                    transport = await loop.start_tls(
                        transport, handshaking, context, server_hostname=hostname
                    )
                else:
                    transport.set_protocol(handshaking)
                handshaking.connection_made(transport)
        except ssl.SSLError as exc:
            if transport is not None:
                transport.abort()
            raise ConnectionError(
                None, f"TLS handshake with {target.host} failed: {exc}"
            ) from None
        except OSError as exc:
            if transport is not None:
                transport.abort()
            raise ConnectionError(None, f"cannot connect to {where}: {exc}") from None
        except BaseException:
            if transport is not None:
                transport.abort()
            raise
        return transport, opened


class _Opening(asyncio.Protocol):
    """A transport's protocol until the connection is open: bytes in go to
    :meth:`_receive`, whose ``ConnectionError`` fails ``opened`` (and aborts
    the transport); a transport lost before then fails it with ``lost``."""

    lost = "connection lost"

    def __init__(self, opened: asyncio.Future[None]) -> None:
        self.opened = opened
        self.transport: Any = None

    def data_received(self, data: bytes) -> None:
        self._feed(data)

    def eof_received(self) -> bool:
        self._feed(b"")
        return False

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(None, f"{self.lost}: {exc}"))

    def _feed(self, data: bytes) -> None:
        if self.opened.done():  # pragma: no cover - nothing comes after
            return
        try:
            self._receive(data)
        except ConnectionError as exc:
            self.opened.set_exception(exc)
            self.transport.abort()

    def _receive(self, data: bytes) -> None:
        raise NotImplementedError


class _Tunneling(_Opening):
    """The transport's protocol while a proxy opens the tunnel (see
    :class:`greenws.proxy.Tunnel`); ``opened`` is done once it is."""

    lost = "proxy connection lost"

    def __init__(self, exchange: Tunnel, opened: asyncio.Future[None]) -> None:
        super().__init__(opened)
        self.exchange = exchange

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.exchange.data_to_send())

    def _receive(self, data: bytes) -> None:
        done = self.exchange.receive_data(data)
        out = self.exchange.data_to_send()
        if out:
            self.transport.write(out)
        if done:
            self.opened.set_result(None)


class _Handshaking(_Opening):
    """The transport's protocol during the opening handshake.

    Sends the request, feeds the response to the :class:`ClientHandshake`,
    and, in the callback that completes it, hands the transport to the
    connection's driver (so that no frame can arrive in between).
    """

    lost = "connection lost during the handshake"

    def __init__(
        self, ws: AioClient, handshake: ClientHandshake, opened: asyncio.Future[None]
    ) -> None:
        super().__init__(opened)
        self.ws = ws
        self.handshake = handshake

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                import socket

                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):  # pragma: no cover
                pass
        transport.write(self.handshake.request_bytes)

    def _receive(self, data: bytes) -> None:
        result: Optional[Tuple[Any, Optional[str], bytes]] = (
            self.handshake.receive_data(data)
        )
        if result is None:
            return
        conn, subprotocol, _ = result
        ws = self.ws
        ws.subprotocol = subprotocol
        session = Session(
            Protocol(conn, ws.max_message_size), client=True, max_queue=ws.max_queue
        )
        Stream(ws, session).start(self.transport, "client")
        self.opened.set_result(None)
