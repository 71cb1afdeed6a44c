"""Framework views and plain WSGI functions on every hosting server.

``tests/apps/views_app.py`` calls ``Server.accept()`` from Flask views (the
example in simple-websocket's docs, through greenws.compat), a flask-sock
route, a Django view and plain WSGI functions that return ``[]``, ``None``
or return without closing.  None of them tells the server that the
WebSocket took the connection over; greenws must keep the server off the
socket by itself: after the WebSocket, not one HTTP byte on the wire, TCP
closed, nothing logged, and the next connection served.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time

import pytest
from rawws import RawClient, close_frame, frame, handshake_request
from servers import BAD_LOG, KINDS, HostedServer, gunicorn_has_worker
from websockets.sync.client import connect as ws_connect

import greenws

# What a server must not log while serving these views: besides BAD_LOG,
# eventlet's "I/O operation on closed file", werkzeug reading frames as a
# request, and an app's None being iterated.
VIEWS_BAD_LOG = re.compile(
    BAD_LOG.pattern + r"|Bad request syntax|closed file|not iterable"
    r"|before start_response|Error on request|has no attribute"
)

CLOSE_1000 = b"\x88\x02\x03\xe8"

ECHO_ROUTES = [
    "/flask/echo",
    "/sock/echo",
    "/plain/list",
    "/plain/none",
    "/plain/flasksock",
    "/django/echo",
]


@pytest.fixture(scope="module", params=KINDS)
def server(request):
    kind = request.param
    if kind == "gunicorn-eventlet" and not gunicorn_has_worker("eventlet"):
        pytest.skip("this gunicorn has no eventlet worker (removed in gunicorn 27)")
    hosted = HostedServer(kind, module="views_app")
    yield hosted
    hosted.stop_and_check(VIEWS_BAD_LOG)


def raw(server, path):
    client = RawClient(server.port, path, extra="Origin: http://good.example\r\n")
    assert client.status == 101, client.response_head
    return client


def http_get(server, path="/"):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  .encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data


@pytest.mark.parametrize("path", ECHO_ROUTES)
def test_nothing_after_the_close_frame(server, path):
    """Peer closes; the view returns; the wire carries our Close and EOF only.

    Repeated: the race between the view returning and the socket being shut
    down lost 1 to 6 cycles in 30 on threaded servers.
    """
    for cycle in range(20):
        client = raw(server, path)
        client.send(frame(0x1, f"hi {cycle}".encode()))
        assert client.read_frame() == (0x1, True, f"hi {cycle}".encode())
        client.send(close_frame(1000))
        rest = client.read_until_eof(timeout=10)
        client.close()
        assert rest == CLOSE_1000, (cycle, rest)
    assert http_get(server).endswith(b"hello")


@pytest.mark.parametrize("path", ["/plain/flasksock", "/flask/echo"])
def test_frames_after_the_close_are_not_read_as_http(server, path):
    """Frames the peer sends right behind its Close never reach the server's
    HTTP parser (werkzeug used to answer them with a 400)."""
    for _ in range(10):
        client = raw(server, path)
        client.send(close_frame(1000) + frame(0x9, b"late") + frame(0x1, b"late"))
        try:
            rest = client.read_until_eof(timeout=10)
        except ConnectionResetError:  # unread data may turn the FIN into RST
            rest = b""
        client.close()
        assert b"HTTP/" not in rest
        assert rest in (b"", CLOSE_1000)


@pytest.mark.parametrize("path", ECHO_ROUTES)
def test_websockets_client_through_views(server, path):
    with ws_connect(
        server.url + path, origin="http://good.example", open_timeout=10
    ) as ws:
        for message in ("text", b"\x00bytes", "é" * 5000):
            ws.send(message)
            assert ws.recv(timeout=10) == message
    assert ws.close_code == 1000


def test_view_that_returns_without_closing(server):
    """The WebSocket is closed (1000) when the app returns, then TCP."""
    client = raw(server, "/plain/noclose")
    client.send(frame(0x1, b"x"))
    assert client.read_frame() == (0x1, True, b"x")
    assert client.read_frame() == (0x8, True, b"\x03\xe8")
    client.send(close_frame(1000))
    assert client.read_until_eof(timeout=10) == b""
    client.close()


def status_of(server, request_bytes):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(request_bytes)
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := s.recv(4096)):
            answer += chunk
    assert b"Traceback" not in answer
    return int(answer.split(b" ", 2)[1]), answer


REFUSALS = [
    ("/flask/echo", {"version": "12"}, 426),
    ("/flask/echo", {"key": "not-base64-16-bytes"}, 400),
    ("/flask/origin", {"origin": "http://evil.example"}, 403),
    ("/sock/echo", {"origin": "http://evil.example"}, 403),
    ("/flask/auth", {}, 401),
]


@pytest.mark.parametrize("path, change, status", REFUSALS)
def test_refusal_inside_a_view_gets_its_status(server, path, change, status):
    origin = change.get("origin", "http://good.example")
    request = handshake_request(
        path,
        extra=f"Origin: {origin}\r\n",
        key=change.get("key"),
        version=change.get("version", "13"),
    )
    got, answer = status_of(server, request)
    assert got == status, answer
    if status == 401:
        assert b"www-authenticate: token" in answer.lower()


def test_greenws_client_sees_refusal_status(server):
    with pytest.raises(greenws.ConnectionError) as refused:
        greenws.Client.connect(
            server.url + "/sock/echo", headers={"Origin": "http://evil.example"}
        )
    assert refused.value.status_code == 403
    with pytest.raises(greenws.ConnectionError) as refused:
        greenws.Client.connect(server.url + "/flask/auth?token=no")
    assert refused.value.status_code == 401
    with greenws.Client.connect(server.url + "/flask/auth?token=secret") as ws:
        ws.send("in")
        assert ws.receive(timeout=10) == "in"


def test_peer_served_while_the_handler_is_busy(server, tmp_path):
    """A handler that sleeps before its first receive(): the peer's ping is
    answered at once, its messages wait in order, its Close is answered;
    the handler then gets every message and sees the close."""
    marker = tmp_path / "go"
    client = raw(server, f"/idle?marker={marker}")
    client.send(frame(0x9, b"are you there"))
    assert client.read_frame() == (0xA, True, b"are you there")
    for n in range(5):
        client.send(frame(0x1, f"m{n}".encode()))
    client.send(frame(0x9, b"again"))
    assert client.read_frame() == (0xA, True, b"again")
    client.send(close_frame(4000, "done"))
    assert client.read_frame() == (0x8, True, struct.pack("!H", 4000) + b"done")
    marker.touch()
    client.close()
    deadline = time.monotonic() + 20
    while True:
        with greenws.Client.connect(server.url + "/idleresult") as ws:
            result = json.loads(ws.receive(timeout=10))
        if result or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # the handler records its result as it ends
    assert result == {
        "messages": [f"m{n}" for n in range(5)],
        "code": 4000,
        "reason": "done",
    }


def test_flask_debug_mode_logs_no_500(tmp_path):
    """``app.run(debug=True)`` wraps the app in werkzeug's debugger, which
    used to log every WebSocket as a 500."""
    import subprocess
    import sys

    from servers import APPS, free_port, wait_for_port

    port = free_port()
    log = tmp_path / "log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(APPS / "flask_debug_app.py"), str(port)],
            cwd=str(APPS), stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, proc)
            for _ in range(3):
                with ws_connect(f"ws://127.0.0.1:{port}/echo", open_timeout=10) as ws:
                    ws.send("hi")
                    assert ws.recv(timeout=10) == "hi"
            with greenws.Client.connect(f"ws://127.0.0.1:{port}/echo") as ws:
                ws.send("bye")
                assert ws.receive(timeout=10) == "bye"
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
            assert answer.endswith(b"hello")
        finally:
            proc.terminate()
            proc.wait(10)
    output = log.read_text()
    assert "GET / HTTP/1.1\" 200" in output
    assert not VIEWS_BAD_LOG.search(output), output
