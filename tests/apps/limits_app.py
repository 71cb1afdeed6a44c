"""An echo app with a small ``max_message_size``, for the 1009 conformance cases.

Every WebSocket path echoes each message back; the limit is
``GREENWS_TEST_LIMIT`` bytes (default 16384) and permessage-deflate is on (the
server default), so compression bombs can be tried too.

Served like every test app: ``limits_app:app`` under gunicorn, else
``serve.py KIND PORT limits_app``.
"""

import os

import greenws

LIMIT = int(os.environ.get("GREENWS_TEST_LIMIT", "16384"))


def echo(ws):
    for message in ws:
        ws.send(message)


def fallback(environ, start_response):
    body = b"limits"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


app = greenws.WebSocketWSGI(echo, fallback=fallback, max_message_size=LIMIT)


