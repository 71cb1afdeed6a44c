"""The WSGI app every integration test serves, on every hosting server.

Routes (path of the WebSocket URL):
  /echo          echo every message back
  /info          send a JSON description of the connection, then echo
  /close?code=N&reason=R   close with that code/reason after the first message
  /subprotocol   accepts subprotocols "chat" and "superchat"
  /accept        uses Server.accept() directly inside a plain WSGI app
anything else that is plain HTTP gets "hello" (the fallback app).
"""

import json
import os
from urllib.parse import parse_qs

import greenws


def handler(ws):
    path = ws.environ.get("PATH_INFO", "")
    query = parse_qs(ws.environ.get("QUERY_STRING", ""))
    if path == "/info":
        ws.send(json.dumps({
            "mode": ws.mode,
            "preset": ws.preset.name,
            "subprotocol": ws.subprotocol,
            "path": ws.request.target,
            "pid": os.getpid(),
        }))
    if path == "/close":
        ws.receive()
        ws.close(int(query.get("code", ["1000"])[0]), query.get("reason", [None])[0])
        return
    for message in ws:
        ws.send(message)


def fallback(environ, start_response):
    body = b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


_ws_app = greenws.WebSocketWSGI(
    handler, fallback=fallback, subprotocols=["chat", "superchat"],
    max_message_size=64 * 1024 * 1024,
)


def app(environ, start_response):
    return _ws_app(environ, start_response)
