"""An ASGI echo app with greenws.AioServer, for uvicorn, hypercorn or any
ASGI server:

    uvicorn --app-dir examples aio_asgi:app --port 8003
    hypercorn --bind 127.0.0.1:8003 examples/aio_asgi.py:app

WebSocket connections on any path are echoed back; plain HTTP gets a short
text.  The ASGI server does the framing, pings and compression; greenws adds
receive timeouts, max_message_size, max_queue, close codes and refusals.
An exception leaving an ASGI app is logged by the server as an error, hence
the ``except``: ``async for`` ends quietly on 1000/1001 but raises on other
codes, and hypercorn reports a client's close as 1006.
"""

import greenws
from greenws import AioServer


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        try:
            ws = await AioServer.accept(asgi=(scope, receive, send),
                                        max_message_size=1 << 20)
        except greenws.HandshakeError:
            return  # the refusal (status, body) went to the client
        async with ws:
            try:
                async for message in ws:
                    await ws.send(message)
            except greenws.ConnectionClosed:
                pass  # an abnormal end (hypercorn reports every client close so)
    elif scope["type"] == "http":
        body = b"greenws on ASGI: connect a WebSocket client to this URL\n"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})
