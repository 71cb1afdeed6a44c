"""The echo applications each server runs (imported in the server process).

Every app echoes each message back on the same connection and accepts
messages of any size.  Nothing here imports gevent or eventlet at import time,
so gunicorn's gevent worker can import this module after monkey-patching.
"""

from __future__ import annotations

import resource
import sys


def raise_nofile() -> None:
    """Raise the soft open-files limit to the hard limit (10k connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


raise_nofile()


# -- greenws ---------------------------------------------------------------

def greenws_app(environ, start_response):
    """greenws.Server.accept echo, shaped like the peers' apps.

    A plain function with a ``receive()`` loop, as ``simple_app`` is: on a
    green host each idle connection parks its greenlet, and calling a class
    instance (``WebSocketWSGI``) or looping over a generator (``for message
    in ws``) would each add a C-level frame, several hundred bytes of saved
    stack per connection, that the peers' apps do not pay.
    """
    import greenws

    ws = greenws.Server.accept(environ, max_message_size=None)
    with ws:
        try:
            while True:
                ws.send(ws.receive())
        except greenws.ConnectionClosed:
            pass
    return greenws.end_response(ws.mode, start_response)


# -- the raw reference -------------------------------------------------------

def raw_app(environ, start_response):
    """The least a WebSocket echo can do on this host: the floor for greenws.

    It answers the upgrade by hand, frees the host's HTTP buffers as greenws
    does, and echoes frames as they come, checking nothing (no UTF-8, no
    fragmentation, no limits) -- only for the bench's own client.
    """
    from bench import rawclient
    from greenws import wsgi

    host = wsgi.find_socket(environ)
    sock = host.sock
    sock.settimeout(None)
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
        + rawclient.accept_for(environ["HTTP_SEC_WEBSOCKET_KEY"]).encode()
        + b"\r\n\r\n"
    )
    host.release()
    buf = bytearray(host.pending)
    while True:
        got = rawclient.parse_frame(buf)
        if got is None:
            data = sock.recv(262144)
            if not data:
                break
            buf += data
            continue
        _, opcode, _, payload, end = got
        del buf[:end]
        if opcode == rawclient.OP_PING:
            opcode = rawclient.OP_PONG
        sock.sendall(rawclient.frame(payload, opcode, masked=False))
        if opcode == rawclient.OP_CLOSE:
            break
    return wsgi.end_response(host.mode, start_response)


# -- simple-websocket --------------------------------------------------------

class _Handled(ConnectionAbortedError):
    """Raised to end a werkzeug request whose socket the WebSocket used."""


def simple_app(environ, start_response):
    """simple_websocket.Server echo, ending the WSGI call as each host needs.

    simple-websocket leaves ending the request to the framework (Flask-Sock
    does it per server); this does the same so that nothing is written after
    the WebSocket closes.
    """
    import simple_websocket

    ws = simple_websocket.Server.accept(environ, max_message_size=None)
    try:
        while True:
            message = ws.receive()
            ws.send(message)
    except simple_websocket.ConnectionClosed:
        pass
    finally:
        ws.close()
    if ws.mode == "gunicorn":
        raise StopIteration()
    if ws.mode == "werkzeug":
        raise _Handled()
    if ws.mode == "eventlet":
        wsgi = sys.modules["eventlet.wsgi"]
        return wsgi.ALREADY_HANDLED
    return []


# -- gevent-websocket --------------------------------------------------------

def geventws_app(environ, start_response):
    """gevent-websocket (geventwebsocket.handler.WebSocketHandler) echo."""
    ws = environ.get("wsgi.websocket")
    if ws is None:
        start_response("400 Bad Request", [("Content-Length", "0")])
        return []
    while True:
        message = ws.receive()
        if message is None:
            break
        ws.send(message, binary=isinstance(message, (bytes, bytearray)))
    return []


# -- eventlet.websocket -----------------------------------------------------

def make_eventletws_app():
    """eventlet.websocket.WebSocketWSGI echo (call after monkey-patching)."""
    import eventlet.websocket

    def echo(ws):
        while True:
            message = ws.wait()
            if message is None:
                break
            ws.send(message)

    return eventlet.websocket.WebSocketWSGI(echo, max_frame_length=1 << 30)
