"""The asyncio test app: greenws.AioServer on aiohttp, ASGI servers and a socket.

Routes (the path of the URL), as in echo_app.py:
  /echo          echo every message back (subprotocols "chat", "superchat")
  /info          first send a JSON description of the connection, then echo
  /close?code=N&reason=R   close with that code/reason after the first message
  /lastclose     send the close code/reason the previous connection ended with
  /origin        only accepts Origin: http://good.example (else 403)
  /timeout       receive(timeout=0.2): send "timeout" when nothing came
  /limit         max_message_size=1024 (a larger message closes with 1009)
  /origin-noext  (ASGI) /origin as if the server had no denial extension
  /typed         send b"caf\xc3\xa9" with text=True, "caf\u00e9" with text=False,
                 then JSON of ws.state and ws.extensions, then echo
Other routes have max_message_size GREENWS_TEST_LIMIT (default 64 MiB).

Served by:
  aiohttp:    python -m aiohttp.web -H 127.0.0.1 -P PORT aio_app:aiohttp_app
  uvicorn:    uvicorn aio_app:asgi_app --host 127.0.0.1 --port PORT
  hypercorn:  hypercorn aio_app:asgi_app --bind 127.0.0.1:PORT
  a socket:   python aio_app.py PORT   (a plain asyncio server, sock= mode)
"""

import asyncio
import json
import os
import sys
from urllib.parse import parse_qs, urlsplit

import greenws
from greenws import AioServer

LIMIT = int(os.environ.get("GREENWS_TEST_LIMIT", str(64 << 20)))
LAST_CLOSE = {}
OPTIONS = {"subprotocols": ["chat", "superchat"], "max_message_size": LIMIT}


async def accept(path, **source):
    options = dict(OPTIONS)
    if path.startswith("/origin"):
        options["origins"] = ["http://good.example"]
    elif path == "/limit":
        options["max_message_size"] = 1024
    return await AioServer.accept(**source, **options)


async def serve(ws):
    """What every route does once accepted."""
    parts = urlsplit(ws.target)
    path, query = parts.path, parse_qs(parts.query)
    try:
        if path == "/info":
            await ws.send(json.dumps({
                "mode": ws.mode,
                "subprotocol": ws.subprotocol,
                "target": ws.target,
                "remote_address": list(ws.remote_address or ()),
                "pid": os.getpid(),
            }))
        elif path == "/lastclose":
            await ws.send(json.dumps(LAST_CLOSE))
        elif path == "/close":
            await ws.receive()
            await ws.close(int(query.get("code", ["1000"])[0]),
                           query.get("reason", [None])[0])
            return
        elif path == "/typed":
            await ws.send(b"caf\xc3\xa9", text=True)
            await ws.send("caf\u00e9", text=False)
            await ws.send(json.dumps({"state": ws.state.name,
                                      "extensions": ws.extensions}))
        elif path == "/timeout":
            got = await ws.receive(timeout=0.2)
            await ws.send("timeout" if got is None else f"got {got}")
        async with ws:
            async for message in ws:
                await ws.send(message)
    except greenws.ConnectionClosed:
        pass
    finally:
        LAST_CLOSE.update(code=ws.close_reason, reason=ws.close_message)


# -- aiohttp ----------------------------------------------------------------


async def _aiohttp_handler(request):
    from aiohttp import web

    ws = await accept(request.path, aiohttp=request)
    await serve(ws)
    return web.Response()  # what simple-websocket's docs return: never written


def aiohttp_app(argv=None):
    from aiohttp import web

    async def hello(request):
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/{tail:.+}", _aiohttp_handler)
    return app


# -- ASGI ---------------------------------------------------------------------


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"hello"})
        return
    if scope["path"] == "/origin-noext":
        scope = dict(scope, extensions={})
    try:
        ws = await accept(scope["path"], asgi=(scope, receive, send))
    except greenws.HandshakeError:
        return  # the refusal went to the client
    await serve(ws)


# -- a plain asyncio server (sock= mode) ------------------------------------


async def read_request(loop, sock):
    """Read an HTTP request head from ``sock``: target, headers, extra bytes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise ConnectionError("EOF before the request")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    target = lines[0].split(" ")[1]
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
    return target, headers, rest


async def _sock_connection(loop, sock):
    try:
        target, headers, rest = await read_request(loop, sock)
        ws = await accept(urlsplit(target).path, sock=sock, headers=headers,
                          target=target, pending=rest)
    except (greenws.HandshakeError, ConnectionError, OSError):
        sock.close()
        return
    await serve(ws)


async def sock_main(port):
    import socket

    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", port))
    listener.setblocking(False)
    tasks = set()
    while True:
        sock, _ = await loop.sock_accept(listener)
        task = loop.create_task(_sock_connection(loop, sock))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    asyncio.run(sock_main(int(sys.argv[1])))
