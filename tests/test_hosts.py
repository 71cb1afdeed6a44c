"""Integration: greenws served by every hosting server, driven by real peers.

Each server runs as a subprocess on 127.0.0.1 and serves tests/apps/echo_app.py;
the peers are the `websockets` library (an independent implementation),
greenws.Client, and a raw socket for exact bytes.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time

import pytest
from rawws import RawClient, close_frame, frame, handshake_request
from servers import KINDS, HostedServer, gunicorn_has_worker
from websockets.sync.client import connect as ws_connect

import greenws


@pytest.fixture(scope="module", params=KINDS)
def server(request):
    kind = request.param
    if kind == "gunicorn-eventlet" and not gunicorn_has_worker("eventlet"):
        pytest.skip("this gunicorn has no eventlet worker (removed in gunicorn 27)")
    env = {}
    if kind == "gevent":
        # gevent's monitor thread reports any greenlet that blocks the hub.
        env = {
            "GEVENT_MONITOR_THREAD_ENABLE": "true",
            "GEVENT_MAX_BLOCKING_TIME": "1.5",
        }
    hosted = HostedServer(kind, env)
    yield hosted
    hosted.stop_and_check()


def info(server, path="/info", **kwargs):
    ws = greenws.Client.connect(server.url + path, **kwargs)
    return ws, json.loads(ws.receive(timeout=10))


EXPECTED = {
    "werkzeug": ("werkzeug", "threading"),
    "gunicorn-sync": ("gunicorn", "threading"),
    "gunicorn-gthread": ("gunicorn", "threading"),
    "gunicorn-gevent": ("gunicorn", "gevent"),
    "gunicorn-eventlet": ("gunicorn", "eventlet"),
    "eventlet": ("eventlet", "eventlet"),
    "eventlet-plain": ("eventlet", "eventlet"),
    "gevent": ("gevent", "gevent"),
    "gevent-patched": ("gevent", "gevent"),
}


def test_mode_and_preset_detected(server):
    ws, data = info(server, subprotocols=["nope", "superchat"])
    with ws:
        assert (data["mode"], data["preset"]) == EXPECTED[server.kind]
        assert data["subprotocol"] == ws.subprotocol == "superchat"
        assert data["target"] == "/info"
        # However the server found it, it is the client's end of the socket.
        assert tuple(data["remote_address"]) == ws.local_address


SERVER_FILES = {
    # eventlet.wsgi keeps the two headers it reads after the app returns.
    "eventlet": {
        "rfile": "closed",
        "wfile": "closed",
        "headers": ["connection", "x-forwarded-for"],
        "exit_funcs": "SmallDeque",
    },
    "eventlet-plain": {
        "rfile": "closed",
        "wfile": "closed",
        "headers": ["connection", "x-forwarded-for"],
        "exit_funcs": "SmallDeque",
    },
    "gevent": {"rfile": "closed"},
    "gevent-patched": {"rfile": "closed"},
}


def test_server_io_buffers_released(server):
    """eventlet.wsgi and gevent.pywsgi keep 8-16 KiB buffers per connection
    that an idle WebSocket would otherwise hold for its whole life (and
    eventlet.wsgi its parsed copy of the request headers)."""
    headers = {"X-Forwarded-For": "203.0.113.7", "User-Agent": "x" * 300}
    ws, data = info(server, headers=headers)
    with ws:
        assert data["server_files"] == SERVER_FILES.get(server.kind, {})
        ws.send("still works")
        assert ws.receive(timeout=10) == "still works"
    if server.kind.startswith("eventlet"):
        # Its access log still names the forwarded client, once the app ends.
        deadline = time.monotonic() + 10
        while "203.0.113.7" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "203.0.113.7,127.0.0.1" in server.output()
        # The server pool's exit callback ran from the list that replaced
        # eventlet's deque.
        assert "Traceback" not in server.output()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20])
def test_websockets_client_echo_byte_exact(server, size):
    payload = os.urandom(size)
    text = "é✓" * (size // 5)
    with ws_connect(server.url + "/echo", max_size=None, open_timeout=10) as ws:
        ws.send(payload)
        assert ws.recv(timeout=30) == payload
        ws.send(text)
        assert ws.recv(timeout=30) == text


def test_websockets_client_fragmented_message(server):
    with ws_connect(server.url + "/echo", max_size=None) as ws:
        ws.send([b"ab", b"cd", b"ef" * 40000])
        assert ws.recv(timeout=10) == b"abcd" + b"ef" * 40000
        ws.send(iter(["x", "y", "é" * 1000]))
        assert ws.recv(timeout=10) == "xy" + "é" * 1000


@pytest.mark.parametrize("compression", [True, False])
def test_greenws_client_echo(server, compression):
    with greenws.Client.connect(
        server.url + "/echo", subprotocols="chat", compression=compression
    ) as ws:
        assert ws.subprotocol == "chat"
        for payload in (
            "hello",
            b"\x00\xff" * 10,
            os.urandom(1 << 20),
            "z" * (16 << 20),
        ):
            ws.send(payload)
            assert ws.receive(timeout=30) == payload
        assert ws.ping(timeout=10) > 0
        assert ws.latency is not None


def test_server_closes_with_code_and_reason(server):
    with ws_connect(server.url + "/close?code=4001&reason=bye") as ws:
        ws.send("go")
        with pytest.raises(Exception) as exc_info:
            ws.recv(timeout=10)
    assert ws.close_code == 4001 and ws.close_reason == "bye"
    assert exc_info.type.__name__.startswith("ConnectionClosed")

    ws = greenws.Client.connect(server.url + "/close?code=4002&reason=done")
    ws.send("go")
    with pytest.raises(greenws.ConnectionClosed) as closed:
        ws.receive(timeout=10)
    assert (closed.value.reason, closed.value.message) == (4002, "done")
    ws.close()


def test_client_close_code_seen_by_server(server):
    ws = greenws.Client.connect(server.url + "/echo")
    ws.send("x")
    assert ws.receive(timeout=10) == "x"
    ws.close(4003, "client done")
    ws2, data = info(server, "/lastclose")
    with ws2:
        assert data == {"code": 4003, "reason": "client done"}


def test_nothing_written_after_close_and_peer_sees_eof(server):
    raw = RawClient(server.port, "/echo")
    assert raw.status == 101
    raw.send(frame(0x1, b"ping?"))
    assert raw.read_frame() == (0x1, True, b"ping?")
    raw.send(close_frame(1000, "bye"))
    rest = raw.read_until_eof(timeout=10)
    raw.close()
    # Exactly the server's Close frame: no HTTP response, no second request.
    assert rest == b"\x88\x05\x03\xe8bye"


def test_frame_pipelined_with_request_is_processed_at_once(server):
    raw = RawClient(server.port, "/echo", trailing=frame(0x1, b"early"))
    assert raw.status == 101
    assert raw.read_frame() == (0x1, True, b"early")
    raw.send(close_frame())
    assert raw.read_until_eof().startswith(b"\x88")
    raw.close()


def test_plain_http_goes_to_fallback(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello")


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (handshake_request(version="12"), 426),
        (handshake_request().replace(b"Sec-WebSocket-Key", b"X-Nothing"), 400),
        (handshake_request().replace(b"Connection: Upgrade", b"Connection: keep"), 400),
    ],
)
def test_bad_handshake_gets_http_error(server, request_bytes, status):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(request_bytes)
        head = s.recv(4096)
    assert head.startswith(f"HTTP/1.1 {status} ".encode()) or head.startswith(
        f"HTTP/1.0 {status} ".encode()
    ), head
    assert b"Traceback" not in head


def test_origin_allow_list(server):
    with pytest.raises(greenws.ConnectionError) as refused:
        greenws.Client.connect(
            server.url + "/origin", headers={"Origin": "http://evil"}
        )
    assert refused.value.status_code == 403
    with greenws.Client.connect(
        server.url + "/origin", headers=[("Origin", "http://good.example")]
    ) as ws:
        ws.send("ok")
        assert ws.receive(timeout=10) == "ok"


def test_check_request_hook_refuses_with_any_status(server):
    with pytest.raises(greenws.ConnectionError) as refused:
        greenws.Client.connect(server.url + "/auth?token=wrong")
    assert refused.value.status_code == 401
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(handshake_request("/auth"))
        answer = b""
        # Some servers keep the connection alive: read to the end of the body.
        while not answer.endswith(b"login required\n") and (chunk := s.recv(4096)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"www-authenticate: token" in answer.lower()
    assert answer.endswith(b"login required\n")
    with greenws.Client.connect(server.url + "/auth?token=secret") as ws:
        ws.send("in")
        assert ws.receive(timeout=10) == "in"


def test_server_accept_used_directly(server):
    with greenws.Client.connect(server.url + "/accept") as ws:
        ws.send(b"direct")
        assert ws.receive(timeout=10) == b"direct"
    raw = RawClient(server.port, "/accept")
    raw.send(close_frame())
    assert raw.read_until_eof() == b"\x88\x02\x03\xe8"
    raw.close()


def test_two_connections_at_once(server):
    if server.kind == "gunicorn-sync":
        pytest.skip("a sync worker serves one connection at a time")
    a = greenws.Client.connect(server.url + "/echo")
    b = greenws.Client.connect(server.url + "/echo")
    with a, b:
        b.send("b first")
        assert b.receive(timeout=10) == "b first"
        a.send("a second")
        assert a.receive(timeout=10) == "a second"


@pytest.mark.parametrize("worker", ["gevent", "gthread"])
def test_wss_on_gunicorn_with_tls(tmp_path, worker):
    """gunicorn terminating TLS itself: messages spanning TLS records arrive."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    options = ["--certfile", str(cert_file), "--keyfile", str(key_file)]
    hosted = HostedServer(f"gunicorn-{worker}", options=options)
    try:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        url = f"wss://127.0.0.1:{hosted.port}/echo"
        with greenws.Client.connect(url, ssl_context=context) as ws:
            for size in (10, 10_000, 1 << 20):
                payload = os.urandom(size)
                ws.send(payload)
                assert ws.receive(timeout=30) == payload
    finally:
        # The port probe of HostedServer opens and drops a TCP connection
        # without TLS, which gevent logs with a traceback: not ours.
        hosted.stop_and_check(re.compile(r"Error handling request|\" 500 "))
