"""An aiohttp echo server with greenws.AioServer.

    python examples/aio_aiohttp.py [--port 8002]

WebSocket requests to /echo are echoed back; / is a plain page.  Try it with
``python examples/aio_client.py ws://127.0.0.1:8002/echo``.
"""

import argparse

from aiohttp import web

from greenws import AioServer


async def echo(request: web.Request) -> web.Response:
    ws = await AioServer.accept(aiohttp=request)
    async with ws:  # closes (with the closing handshake) on exit
        async for message in ws:
            await ws.send(message)
    return web.Response()  # never written: the connection was the WebSocket's


async def index(request: web.Request) -> web.Response:
    return web.Response(text="greenws on aiohttp: connect a WebSocket to /echo\n")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/echo", echo)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port)
