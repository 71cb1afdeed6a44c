"""Drop-in: flask-sock and python-socketio apps run unchanged on greenws.

``greenws.compat.install()`` makes ``import simple_websocket`` give greenws;
the apps in tests/apps/flasksock_app.py and tests/apps/socketio_app.py call it
first and are otherwise ordinary.  Each runs as a real server subprocess:

* flask-sock under werkzeug (threaded) and ``gunicorn -k gevent``, driven by
  the ``websockets`` library, greenws.Client and a raw socket;
* python-socketio (threading mode under werkzeug and ``gunicorn -k gthread``,
  gevent mode under ``gunicorn -k gevent``) talking to python-socketio's own
  client over the websocket transport only.

Each app also reports, from inside the server, that the class really in use
is greenws's.
"""

from __future__ import annotations

import json
import os
import queue
import re
import time
import urllib.request
from typing import Any

import pytest
from rawws import RawClient, close_frame, frame
from servers import HostedServer
from websockets.sync.client import connect as ws_connect

import greenws

pytestmark = pytest.mark.timeout(60)

# Lines a hosting server must never print while serving WebSockets.
_BAD_LOG = re.compile(
    r"Traceback|Error handling request|Internal Server Error|\" 500 "
    r"|appears to be blocked|Exception"
)


def get_json(server: HostedServer, path: str) -> Any:
    with urllib.request.urlopen(server.http_url + path, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def stop_and_check(server: HostedServer) -> None:
    server.stop_and_check(_BAD_LOG)


# --------------------------------------------------------------------------
# flask-sock
# --------------------------------------------------------------------------


@pytest.fixture(
    scope="module", params=["werkzeug", "gunicorn-gevent", "werkzeug-late-install"]
)
def flask_server(request):
    """The app served by each host; "-late-install": flask_sock was imported
    before greenws.compat.install()."""
    kind, late, _ = request.param.partition("-late-install")
    env = {"GREENWS_LATE_INSTALL": "1"} if late else None
    server = HostedServer(kind, env, module="flasksock_app")
    try:
        yield server
    finally:
        stop_and_check(server)


def test_flask_sock_server_is_greenws(flask_server):
    which = get_json(flask_server, "/which")
    assert which == {
        "server_is_greenws": True,
        "closed_is_greenws": True,
        "server": "greenws.server.Server",
        "simple_websocket": "greenws",
    }


PAYLOADS = ["hello", "é✓" * 1000, b"\x00\xff" * 10, os.urandom(1 << 20),
            "z" * (1 << 20)]


@pytest.mark.parametrize("compression", [True, False])
def test_flask_sock_echo_websockets_client(flask_server, compression):
    with ws_connect(
        flask_server.url + "/echo",
        max_size=None,
        open_timeout=10,
        compression="deflate" if compression else None,
    ) as ws:
        for payload in PAYLOADS:
            ws.send(payload)
            assert ws.recv(timeout=30) == payload
    assert ws.close_code == 1000  # the server answered our Close


def test_flask_sock_echo_greenws_client(flask_server):
    with greenws.Client.connect(flask_server.url + "/echo", open_timeout=10) as ws:
        for payload in PAYLOADS:
            ws.send(payload)
            assert ws.receive(timeout=30) == payload
        assert ws.ping(timeout=10) >= 0
    assert ws.close_reason == 1000
    assert not ws.connected


def test_flask_sock_server_closes_with_code(flask_server):
    with ws_connect(flask_server.url + "/close?code=4001&reason=bye") as ws:
        ws.send("go")
        with pytest.raises(Exception) as exc_info:
            ws.recv(timeout=10)
    assert exc_info.type.__name__.startswith("ConnectionClosed")
    assert (ws.close_code, ws.close_reason) == (4001, "bye")

    ws = greenws.Client.connect(flask_server.url + "/close?code=4002&reason=done")
    try:
        ws.send("go")
        with pytest.raises(greenws.ConnectionClosed) as closed:
            ws.receive(timeout=10)
        assert (closed.value.reason, closed.value.message) == (4002, "done")
    finally:
        ws.close()


def test_flask_sock_nothing_written_after_client_close(flask_server):
    raw = RawClient(flask_server.port, "/echo")
    try:
        assert raw.status == 101
        raw.send(frame(0x1, b"ping?"))
        assert raw.read_frame() == (0x1, True, b"ping?")
        raw.send(close_frame(1000, "bye"))
        rest = raw.read_until_eof(timeout=10)
    finally:
        raw.close()
    # Exactly the server's Close frame: no HTTP response after the WebSocket.
    assert rest == b"\x88\x05\x03\xe8bye"


def test_flask_sock_nothing_written_after_server_close(flask_server):
    raw = RawClient(flask_server.port, "/close?code=4003&reason=x")
    try:
        assert raw.status == 101
        raw.send(frame(0x1, b"go"))
        assert raw.read_frame() == (0x8, True, b"\x0f\xa3x")
        raw.send(close_frame(4003, "x"))
        rest = raw.read_until_eof(timeout=10)
    finally:
        raw.close()
    assert rest == b""


# --------------------------------------------------------------------------
# python-socketio
# --------------------------------------------------------------------------

SOCKETIO_SETUPS = {
    # id: (hosting server kind, engineio async_mode, expected ws.mode)
    "threading-werkzeug": ("werkzeug", "threading", "werkzeug"),
    "threading-gunicorn-gthread": ("gunicorn-gthread", "threading", "gunicorn"),
    "gevent-gunicorn-gevent": ("gunicorn-gevent", "gevent", "gunicorn"),
    # engineio's driver imported before greenws.compat.install()
    "threading-werkzeug-late-install": ("werkzeug", "threading", "werkzeug"),
}


@pytest.mark.parametrize("setup", list(SOCKETIO_SETUPS))
def test_socketio_over_greenws(setup):
    import socketio

    kind, async_mode, mode = SOCKETIO_SETUPS[setup]
    env = {"SIO_ASYNC_MODE": async_mode}
    if setup.endswith("-late-install"):
        env["GREENWS_LATE_INSTALL"] = "1"
    server = HostedServer(kind, env, module="socketio_app")
    client = socketio.Client(reconnection=False)
    try:
        before = get_json(server, "/which")
        assert before["async_mode"] == async_mode
        assert before["simple_websocket"] == "greenws"
        assert before["live_greenws"] == []
        if async_mode == "gevent":
            assert before["geventwebsocket_blocked"]
            # simple-websocket's class, with gevent's classes injected
            assert before["websocket_class"] == (
                "engineio.async_drivers.gevent.WebSocketWSGI"
            )
        else:
            assert before["websocket_class"] == (
                "engineio.async_drivers._websocket_wsgi.SimpleWebSocketWSGI"
            )

        replies: queue.Queue = queue.Queue()
        client.on("reply", replies.put)
        client.connect(server.http_url, transports=["websocket"], wait_timeout=10)
        assert client.transport() == "websocket"

        ack = client.call("hello", {"n": 1, "text": "héllo"}, timeout=10)
        assert ack["echo"] == {"n": 1, "text": "héllo"}
        assert ack["simple_websocket"] == "greenws"
        # The connection carrying this event is a live greenws.Server...
        live = [ws for ws in ack["live_greenws"] if ws["path"] == "/socket.io/"]
        assert len(live) == 1, ack
        assert live[0]["mode"] == mode
        classes = live[0]["classes"]
        if async_mode == "gevent":
            # ...running on the gevent classes engineio injects (and a gevent
            # lock): nothing in it can block the worker's hub.
            assert classes["thread_class"] == "engineio.async_drivers.gevent.Thread"
            for key in ("event_class", "selector_class", "lock_class"):
                assert classes[key].startswith("gevent."), classes
        else:
            assert live[0]["preset"] == "threading"
            assert classes["thread_class"] == "threading.Thread"
        assert replies.get(timeout=10) == ack

        client.disconnect()
        # The server closes its side too: no greenws connection stays open.
        deadline = time.monotonic() + 10
        while get_json(server, "/which")["live_greenws"]:
            assert time.monotonic() < deadline, "the server kept the WebSocket"
            time.sleep(0.05)  # polling another process: nothing to wait on
    finally:
        client.disconnect()
        stop_and_check(server)


# --------------------------------------------------------------------------
# simple-websocket style: classes injected one by one
# --------------------------------------------------------------------------
