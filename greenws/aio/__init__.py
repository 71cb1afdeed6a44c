"""greenws for asyncio: :class:`AioServer` and :class:`AioClient`.

simple-websocket's asyncio classes, on greenws's protocol core: the same
sans-I/O :class:`~greenws.session.Session` (limits, backpressure, closing
handshake, close codes, keepalive) as the threaded and green drivers::

    from greenws import AioServer, AioClient, ConnectionClosed

    async def handler(request):                 # aiohttp
        ws = await AioServer.accept(aiohttp=request)
        async with ws:
            async for message in ws:
                await ws.send(message)
        return web.Response()

``AioServer.accept`` also takes ``asgi=(scope, receive, send)`` (uvicorn,
hypercorn, any ASGI server) and ``sock=sock, headers=headers`` (a plain
asyncio server); see the README.  Importing this package imports none of
aiohttp, uvicorn or hypercorn.
"""

from .client import AioClient
from .connection import AioBase
from .server import AioServer

__all__ = ["AioBase", "AioClient", "AioServer"]
