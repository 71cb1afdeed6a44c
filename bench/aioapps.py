"""The asyncio echo servers (run in the server process by bench.serve).

Each echoes every message back on any path, accepts messages of any size and
leaves compression to what the client asks for (the raw client asks for none
unless a many-connections workload wants it):

- ``greenws-aio``: ``AioServer.accept(sock=...)`` in a plain asyncio server;
- ``greenws-aiohttp``: ``AioServer.accept(aiohttp=request)``;
- ``aiohttp-ws``: aiohttp's own ``WebSocketResponse``;
- ``simple-aiohttp``: simple-websocket's ``AioServer`` under aiohttp;
- ``websockets-aio``: the ``websockets`` library's asyncio server.
"""

from __future__ import annotations

import asyncio
import socket

BACKLOG = 4096


# -- greenws, plain asyncio server ---------------------------------------------


async def _read_request(loop, sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise ConnectionError("closed before the request")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    request_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(p.strip() for p in line.split(":", 1)) for line in lines]
    return request_line.split(" ")[1], headers, rest


async def _greenws_sock_connection(loop, sock):
    import greenws

    try:
        target, headers, rest = await _read_request(loop, sock)
        ws = await greenws.AioServer.accept(
            sock=sock, headers=headers, target=target, pending=rest,
            max_message_size=None,
        )
    except (greenws.HandshakeError, ConnectionError, OSError):
        sock.close()
        return
    try:
        while True:
            await ws.send(await ws.receive())
    except greenws.ConnectionClosed:
        pass
    finally:
        await ws.close()


async def _greenws_sock(port: int) -> None:
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", port), backlog=BACKLOG)
    listener.setblocking(False)
    tasks = set()
    while True:
        sock, _ = await loop.sock_accept(listener)
        task = loop.create_task(_greenws_sock_connection(loop, sock))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


# -- aiohttp hosts -------------------------------------------------------------


async def _greenws_aiohttp(request):
    from aiohttp import web

    import greenws

    ws = await greenws.AioServer.accept(aiohttp=request, max_message_size=None)
    try:
        while True:
            await ws.send(await ws.receive())
    except greenws.ConnectionClosed:
        pass
    finally:
        await ws.close()
    return web.Response()


async def _aiohttp_own(request):
    from aiohttp import WSMsgType, web

    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def _simple_aiohttp(request):
    import simple_websocket
    from aiohttp import web

    ws = await simple_websocket.AioServer.accept(aiohttp=request)
    try:
        while True:
            await ws.send(await ws.receive())
    except simple_websocket.ConnectionClosed:
        pass
    return web.Response()


_AIOHTTP_HANDLERS = {
    "greenws-aiohttp": _greenws_aiohttp,
    "aiohttp-ws": _aiohttp_own,
    "simple-aiohttp": _simple_aiohttp,
}


async def _aiohttp(name: str, port: int) -> None:
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/{tail:.*}", _AIOHTTP_HANDLERS[name])
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=BACKLOG)
    await site.start()
    await asyncio.Event().wait()


# -- websockets ------------------------------------------------------------------


async def _websockets(port: int) -> None:
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", port, max_size=None, compression=None,
                     backlog=BACKLOG) as server:
        await server.serve_forever()


NAMES = ("greenws-aio", "websockets-aio", *_AIOHTTP_HANDLERS)


def run(name: str, port: int) -> None:
    """Serve ``name`` on ``port`` until killed."""
    # Import the library now: imported by the first connection, it would
    # count as that connection's memory in the many-connections workload.
    if name.startswith("greenws"):
        import greenws.aio  # noqa: F401
    elif name.startswith("simple"):
        import simple_websocket  # noqa: F401
    if name == "greenws-aio":
        main = _greenws_sock(port)
    elif name == "websockets-aio":
        main = _websockets(port)
    else:
        main = _aiohttp(name, port)
    asyncio.run(main)
