"""The WSGI app every integration test serves, on every hosting server.

WebSocket routes (path of the URL):
  /echo          echo every message back (subprotocols "chat", "superchat")
  /info          first send a JSON description of the connection, then echo
  /close?code=N&reason=R   close with that code/reason after the first message
  /lastclose     send the close code/reason the previous connection ended with
  /origin        only accepts Origin: http://good.example (else 403)
  /accept        a plain WSGI app calling greenws.Server.accept() itself
  /auth?token=T  refuses with 401 unless T is "secret" (a check_request hook)
Plain HTTP requests get "hello" from the fallback app.
"""

import json
import os
from urllib.parse import parse_qs

import greenlet

import greenws
from greenws.wsgi import _eventlet_handler

LAST_CLOSE = {}


def _server_files(environ):
    """State of the hosting server's buffered files for this request."""
    if "eventlet.input" in environ:
        handler = _eventlet_handler(environ)
        files = {
            "rfile": environ["eventlet.input"].rfile,
            "wfile": getattr(handler, "wfile", None),
        }
        extra = {
            "headers": sorted(k.lower() for k in handler.headers.keys()),
            # What holds the green thread's exit callbacks (a deque at first).
            "exit_funcs": type(greenlet.getcurrent()._exit_funcs).__name__,
        }
    elif str(environ.get("SERVER_SOFTWARE", "")).startswith("gevent"):
        wsgi_input = environ["wsgi.input"]
        files = {"rfile": getattr(wsgi_input, "rfile", wsgi_input)}
        extra = {}
    else:
        return {}
    state = {
        name: "missing" if f is None else "closed" if f.closed else "open"
        for name, f in files.items()
    }
    return {**state, **extra}


def echo(ws):
    path = ws.environ.get("PATH_INFO", "")
    query = parse_qs(ws.environ.get("QUERY_STRING", ""))
    if path == "/info":
        ws.send(
            json.dumps(
                {
                    "mode": ws.mode,
                    "preset": ws.preset.name,
                    "subprotocol": ws.subprotocol,
                    "target": ws.target,
                    "pid": os.getpid(),
                    "remote_address": ws.remote_address,
                    "server_files": _server_files(ws.environ),
                }
            )
        )
    elif path == "/lastclose":
        ws.send(json.dumps(LAST_CLOSE))
    elif path == "/close":
        ws.receive()
        ws.close(int(query.get("code", ["1000"])[0]), query.get("reason", [None])[0])
        return
    try:
        for message in ws:
            ws.send(message)
    finally:
        LAST_CLOSE.update(code=ws.close_reason, reason=ws.close_message)


def fallback(environ, start_response):
    body = b"hello"
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]


def accept_directly(environ, start_response):
    """What a user writes without WebSocketWSGI: accept, echo, end the call."""
    try:
        ws = greenws.Server.accept(environ)
    except greenws.HandshakeError as exc:
        return exc(environ, start_response)
    with ws:
        try:
            for message in ws:
                ws.send(message)
        except greenws.ConnectionClosed:
            pass  # closed with an error code, or dropped
    return greenws.end_response(ws.mode, start_response)


class TokenServer(greenws.Server):
    """Refuses the handshake with 401 unless the query carries the token."""

    def check_request(self, environ):
        super().check_request(environ)
        if parse_qs(environ.get("QUERY_STRING", "")).get("token") != ["secret"]:
            raise greenws.HandshakeError(
                401, "login required", [("WWW-Authenticate", "Token")]
            )


_OPTIONS = {"subprotocols": ["chat", "superchat"], "max_message_size": 64 << 20}
_echo = greenws.WebSocketWSGI(echo, fallback=fallback, **_OPTIONS)
_origin = greenws.WebSocketWSGI(
    echo, fallback=fallback, origins=["http://good.example"], **_OPTIONS
)

_auth = greenws.WebSocketWSGI(echo, server_class=TokenServer, **_OPTIONS)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/origin":
        return _origin(environ, start_response)
    if path == "/auth":
        return _auth(environ, start_response)
    if path == "/accept":
        return accept_directly(environ, start_response)
    return _echo(environ, start_response)
