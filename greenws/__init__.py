"""greenws: WebSockets for WSGI apps on gevent, eventlet and threaded servers.

::

    from greenws import Server, Client, ConnectionClosed

    def app(environ, start_response):
        ws = Server.accept(environ)
        for message in ws:
            ws.send(message)
        ...

The API is a superset of simple-websocket's; see the README for the rest.
"""

from . import presets
from .client import Client
from .connection import Base
from .errors import ConnectionClosed, ConnectionError, GreenWSError, HandshakeError
from .reconnect import reconnecting
from .registry import close_all, close_all_on_signals
from .rooms import BroadcastError, Rooms, broadcast
from .server import Server
from .session import State
from .wsgi import WebSocketWSGI, end_response

__version__ = "0.1.0"

# The asyncio classes load on first use: most programs of a WSGI server never
# touch asyncio, and `import greenws` stays as light as it was.
_LAZY = {"AioServer", "AioClient", "AioBase"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from . import aio

        value = getattr(aio, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'greenws' has no attribute {name!r}")

__all__ = [
    "AioBase",
    "AioClient",
    "AioServer",
    "Base",
    "BroadcastError",
    "Client",
    "ConnectionClosed",
    "ConnectionError",
    "GreenWSError",
    "HandshakeError",
    "Rooms",
    "Server",
    "State",
    "WebSocketWSGI",
    "broadcast",
    "close_all",
    "close_all_on_signals",
    "end_response",
    "presets",
    "reconnecting",
]
