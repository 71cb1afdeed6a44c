"""greenws.server: accepting from a (fabricated, gunicorn-style) WSGI environ."""

import socket

import pytest
from conftest import OP_CLOSE, WAIT, close_payload, raw_request, read_http_head

import greenws
from greenws import ConnectionError, HandshakeError


def environ_for(sock=None, **overrides):
    env = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/ws",
        "QUERY_STRING": "",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "gunicorn.socket": sock,
        "wsgi.input": None,
    }
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@pytest.fixture
def spare_socket():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def wsgi_call(app, environ):
    calls = []
    body = b"".join(app(environ, lambda status, headers, exc=None: calls.append(
        (status, headers))))
    return calls[0][0], dict(calls[0][1]), body


@pytest.mark.parametrize(
    "overrides, status",
    [
        ({"REQUEST_METHOD": "POST"}, 405),
        ({"HTTP_UPGRADE": None}, 426),
        ({"HTTP_UPGRADE": "h2c"}, 426),
        ({"HTTP_SEC_WEBSOCKET_KEY": None}, 400),
        ({"HTTP_CONNECTION": "keep-alive"}, 400),
        ({"HTTP_SEC_WEBSOCKET_VERSION": "8"}, 426),
        ({"HTTP_HOST": None}, 400),
    ],
    ids=["post", "no-upgrade", "other-upgrade", "no-key", "no-connection",
         "old-version", "no-host"],
)
def test_bad_handshakes(spare_socket, overrides, status):
    a, b = spare_socket
    environ = environ_for(a, **overrides)
    with pytest.raises(HandshakeError) as info:
        greenws.Server.accept(environ, preset=greenws.presets.THREADING)
    exc = info.value
    assert exc.status_code == status
    assert isinstance(exc, ConnectionError)
    # it is a WSGI app that answers the refusal
    got_status, headers, body = wsgi_call(exc, environ)
    assert got_status.startswith(str(status))
    assert body and headers["Content-Length"] == str(len(body))
    if status == 405:
        assert headers["Allow"] == "GET"
    # nothing was written on the connection by accept() itself
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(1)


def test_unknown_wsgi_server_raises_runtime_error():
    environ = environ_for(None)
    del environ["gunicorn.socket"]
    with pytest.raises(RuntimeError) as info:
        greenws.Server.accept(environ)
    assert "gunicorn" in str(info.value)


def test_accept_attributes(harness):
    server, peer = harness.raw_client(target="/chat/room?x=1")
    assert server.mode == "gunicorn"
    assert server.target == "/chat/room?x=1"
    assert server.environ["PATH_INFO"] == "/chat/room"
    assert server.connected and server.subprotocol is None
    assert b"sec-websocket-protocol" not in peer.response_head.lower()


@pytest.mark.parametrize(
    "origin, allowed",
    [("http://good.example", True), ("http://evil.example", False), (None, False)],
)
def test_origins(harness, origin, allowed):
    listener = harness.listener()
    port = listener.getsockname()[1]
    sock = harness.rt.connect(port)
    harness.sockets.append(sock)
    extra = [("Origin", origin)] if origin else []
    sock.sendall(raw_request(port, "/ws", extra)[0])
    if allowed:
        ws = harness.accept_server(listener, origins=["http://good.example"])
        assert ws.connected
        assert read_http_head(sock).startswith(b"HTTP/1.1 101")
    else:
        with pytest.raises(HandshakeError) as info:
            harness.accept_server(listener, origins=["http://good.example"])
        assert info.value.status_code == 403


def test_choose_subprotocol_override(harness):
    class Picky(greenws.Server):
        def choose_subprotocol(self, request):
            assert request.subprotocols == ["a", "b", "special"]
            return "special"

    server, peer = harness.raw_client(
        extra_headers=[("Sec-WebSocket-Protocol", "a, b, special")],
        server_class=Picky,
    )
    assert isinstance(server, Picky)
    assert server.subprotocol == "special"
    assert b"sec-websocket-protocol: special" in peer.response_head.lower()


def test_choose_subprotocol_default_prefers_client_order(harness):
    server, peer = harness.raw_client(
        extra_headers=[("Sec-WebSocket-Protocol", "b, a")], subprotocols=["a", "b"]
    )
    assert server.subprotocol == "b"


def test_choose_subprotocol_string_argument(harness):
    server, _ = harness.raw_client(
        extra_headers=[("Sec-WebSocket-Protocol", "chat")], subprotocols="chat"
    )
    assert server.subprotocol == "chat"


def test_server_closes_tcp_after_closing_handshake(harness):
    server, peer = harness.raw_client()
    peer.send_frame(OP_CLOSE, close_payload(1000))
    _, _, opcode, payload = peer.read_frame()
    assert opcode == OP_CLOSE and payload == close_payload(1000)
    assert peer.read_eof(timeout=WAIT)
    assert peer.buf == b""  # nothing after the Close frame
    assert harness.rt.wait_until(lambda: not server.connected)


def test_server_close_then_tcp_closed(harness):
    server, peer = harness.raw_client(close_timeout=WAIT)
    task = harness.rt.spawn(server.close, 4000, "done")
    _, _, opcode, payload = peer.read_frame()
    assert opcode == OP_CLOSE and payload == close_payload(4000, "done")
    peer.send_frame(OP_CLOSE, payload)
    task.get(timeout=WAIT / 2)
    assert peer.read_eof(timeout=WAIT)
    assert peer.buf == b""


def test_server_does_not_close_the_hosts_socket(harness):
    """The hosting server owns the socket: greenws shuts it down, never closes it."""
    server, peer = harness.raw_client(close_timeout=0.2)
    server.close()
    sock = server.environ["gunicorn.socket"]
    assert sock.fileno() != -1


@pytest.mark.parametrize(
    "path, query",
    [
        ("/ws", ""), ("", ""), ("/a b", "x=1 2"), ("/caf\xe9", "q=\xe9"),
        ("/a;b@c:d/e!~*'()%41", "a=[1]&b=?/"), ("/%2F", "x=%20"), ("/\x00", "\x7f"),
        ("/ok", "a\"b<c>"),
    ],
)
def test_request_target_quotes_as_the_client_sent_it(path, query):
    from urllib.parse import quote

    from greenws.server import _request_target

    expected = quote(path.encode("latin-1"), safe="/;:@&=+$,!~*'()%") or "/"
    if query:
        expected += "?" + quote(query, safe="/;:@&=+$,!~*'()%?[]")
    assert _request_target({"PATH_INFO": path, "QUERY_STRING": query}) == expected
