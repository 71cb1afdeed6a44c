"""greenws.client: connecting, handshake options, errors, real servers."""

import socket as std_socket
import ssl
import time

import pytest
import trustme
from conftest import WAIT, read_http_head
from websockets.exceptions import ConnectionClosed as WSClosed
from websockets.sync.server import serve

import greenws
from greenws import ConnectionClosed, ConnectionError, presets


def header_lines(head):
    return [line.lower() for line in head.decode("latin-1").split("\r\n")]


def test_host_header_has_non_default_port(harness):
    client, peer = harness.raw_server()
    port = peer.sock.getsockname()[1]
    assert f"host: 127.0.0.1:{port}" in header_lines(peer.request_head)
    assert peer.request_head.startswith(b"GET /ws HTTP/1.1\r\n")


@pytest.mark.parametrize(
    "url, host",
    [("ws://localhost/x", "localhost"), ("ws://example.test:80/x", "example.test"),
     ("ws://[::1]:8765/x", "[::1]:8765"), ("ws://example.test:8080/x?a=b",
                                           "example.test:8080")],
)
def test_host_header_forms(harness, url, host):
    """Host is exactly what RFC 7230 asks (port only when not the default)."""
    listener = harness.listener()
    port = listener.getsockname()[1]
    rt = harness.rt
    base = rt.preset
    fake = presets.Preset(
        "redirected", create_connection=lambda addr, timeout=None: rt.connect(port),
        wrap_ssl=base.wrap_ssl, **dict(base),
    )
    task = rt.spawn(greenws.Client.connect, url, preset=fake, open_timeout=2)
    harness.tasks.append(task)
    listener.settimeout(WAIT)
    sock, _ = listener.accept()
    harness.sockets.append(sock)
    sock.settimeout(WAIT)
    head = read_http_head(sock)
    sock.close()  # refuse: the client must report it as ConnectionError
    assert f"host: {host}" in header_lines(head)
    with pytest.raises(ConnectionError):
        task.get()


@pytest.mark.parametrize("form", ["dict", "list"])
def test_extra_headers(harness, form):
    if form == "dict":
        headers = {"X-Token": "abc", "Origin": "http://example.com"}
    else:
        headers = [("X-Token", "abc"), ("X-Token", "def"),
                   ("Origin", "http://example.com")]
    client, peer = harness.raw_server(headers=headers)
    lines = header_lines(peer.request_head)
    assert "x-token: abc" in lines
    assert "origin: http://example.com" in lines
    if form == "list":
        assert "x-token: def" in lines


def test_path_and_query_sent(harness):
    listener = harness.listener()
    port = listener.getsockname()[1]
    task = harness.rt.spawn(
        greenws.Client.connect, f"ws://127.0.0.1:{port}/a/b?x=1&y=%20",
        preset=harness.rt.preset,
    )
    harness.tasks.append(task)
    server = harness.accept_server(listener)
    harness.connections.append(task.get())
    assert server.target == "/a/b?x=1&y=%20"
    assert server.environ["QUERY_STRING"] == "x=1&y=%20"


@pytest.mark.parametrize(
    "offered, supported, chosen",
    [(["b", "a"], ["a", "b"], "b"), ("a", ["a"], "a"), (["x"], ["a"], None),
     (None, ["a"], None)],
)
def test_subprotocols(ws_pair, offered, supported, chosen):
    server, client = ws_pair(
        server_kwargs={"subprotocols": supported},
        client_kwargs={"subprotocols": offered},
    )
    assert server.subprotocol == chosen
    assert client.subprotocol == chosen


def test_open_timeout_on_silent_listener(harness, rt):
    listener = harness.listener()  # listens, accepts nothing, answers nothing
    port = listener.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        greenws.Client.connect(f"ws://127.0.0.1:{port}/", preset=rt.preset,
                               open_timeout=0.3)
    assert time.monotonic() - start < 0.3 + 2
    assert info.value.status_code is None


def test_connection_refused(rt):
    sock = rt.socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ConnectionError) as info:
        greenws.Client.connect(f"ws://127.0.0.1:{port}/", preset=rt.preset,
                               open_timeout=WAIT)
    assert not isinstance(info.value, OSError)
    assert info.value.status_code is None


def _connecting_client(harness, rt):
    """Client.connect() running in the background, and the server-side socket
    it opened, with the upgrade request already read."""
    listener = harness.listener()
    port = listener.getsockname()[1]
    task = rt.spawn(greenws.Client.connect, f"ws://127.0.0.1:{port}/",
                    preset=rt.preset)
    harness.tasks.append(task)
    listener.settimeout(WAIT)
    sock, _ = listener.accept()
    harness.sockets.append(sock)
    sock.settimeout(WAIT)
    read_http_head(sock)
    return task, sock


@pytest.mark.parametrize("status, body", [(403, b"forbidden"), (404, b""),
                                          (500, b"oops")])
def test_rejected_handshake_status_code(harness, rt, status, body):
    task, sock = _connecting_client(harness, rt)
    sock.sendall(f"HTTP/1.1 {status} Nope\r\nContent-Length: {len(body)}\r\n"
                 "\r\n".encode() + body)
    with pytest.raises(ConnectionError) as info:
        task.get()
    assert info.value.status_code == status


def test_server_hangs_up_during_handshake(harness, rt):
    task, sock = _connecting_client(harness, rt)
    sock.close()
    with pytest.raises(ConnectionError):
        task.get()


@pytest.mark.parametrize("url", ["http:/nohost", "ftp://x/", "ws://"])
def test_bad_urls(url):
    with pytest.raises(ValueError):
        greenws.Client.connect(url)


def test_client_answers_server_close(harness):
    client, peer = harness.raw_server()
    from conftest import OP_CLOSE, close_payload

    peer.send_frame(OP_CLOSE, close_payload(4001, "srv"))
    _, _, opcode, payload = peer.read_frame()
    assert opcode == OP_CLOSE and payload == close_payload(4001, "srv")
    peer.close()
    with pytest.raises(ConnectionClosed) as info:
        client.receive(timeout=WAIT)
    assert (info.value.reason, info.value.message) == (4001, "srv")


# -- against the websockets library ---------------------------------------------


class WSServer:
    """A websockets sync server in a thread, echoing; /close/<code> closes."""

    def __init__(self, rt, ssl_context=None):
        self.rt = rt
        self.closes = []

        def handler(conn):
            path = conn.request.path
            if path.startswith("/close/"):
                conn.recv()
                conn.close(int(path.split("/")[2]), "server says bye")
                return
            try:
                for message in conn:
                    conn.send(message)
            except WSClosed:
                pass
            self.closes.append((conn.close_code, conn.close_reason))

        self.server = serve(handler, "127.0.0.1", 0, ssl=ssl_context,
                            max_size=None, compression="deflate")
        self.port = self.server.socket.getsockname()[1]
        self.thread = rt.spawn_thread(self.server.serve_forever)

    def stop(self):
        self.server.shutdown()
        self.thread.get()


@pytest.fixture
def wsserver(rt):
    server = WSServer(rt)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls():
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


def _exchange(client):
    import os

    client.send("text \u20ac")
    assert client.receive(timeout=WAIT) == "text \u20ac"
    client.send(b"\x00binary\xff")
    assert client.receive(timeout=WAIT) == b"\x00binary\xff"
    # One TLS record larger than a read: the rest waits decrypted inside the
    # SSL object, where a readiness watcher on the socket cannot see it.
    medium = os.urandom(10_000)
    client.send(medium)
    assert client.receive(timeout=WAIT) == medium
    big = os.urandom(1024 * 1024)
    client.send(big)
    assert client.receive(timeout=WAIT) == big


def test_ws_against_websockets_server(harness, rt, wsserver):
    client = greenws.Client.connect(f"ws://127.0.0.1:{wsserver.port}/",
                                    preset=rt.preset)
    harness.connections.append(client)
    _exchange(client)
    client.close(4005, "client says bye")
    assert rt.wait_until(lambda: wsserver.closes)
    assert wsserver.closes == [(4005, "client says bye")]


def test_websockets_server_closes_with_code(harness, rt, wsserver):
    client = greenws.Client.connect(f"ws://127.0.0.1:{wsserver.port}/close/4009",
                                    preset=rt.preset)
    harness.connections.append(client)
    client.send("go")
    with pytest.raises(ConnectionClosed) as info:
        client.receive(timeout=WAIT)
    assert (info.value.reason, info.value.message) == (4009, "server says bye")
    assert client.close_reason == 4009


def test_wss_against_websockets_server(harness, rt, tls):
    server_ctx, client_ctx = tls
    server = WSServer(rt, server_ctx)
    try:
        client = greenws.Client.connect(
            f"wss://localhost:{server.port}/", preset=rt.preset,
            ssl_context=client_ctx,
        )
        harness.connections.append(client)
        _exchange(client)
        client.close()
        assert rt.wait_until(lambda: server.closes)
        assert server.closes == [(1000, "")]
    finally:
        server.stop()


def test_wss_untrusted_certificate_is_connection_error(rt, tls):
    server_ctx, _ = tls
    server = WSServer(rt, server_ctx)
    try:
        with pytest.raises(ConnectionError):
            greenws.Client.connect(f"wss://localhost:{server.port}/",
                                   preset=rt.preset, open_timeout=WAIT,
                                   ssl_context=ssl.create_default_context())
    finally:
        server.stop()


def test_wss_default_context_made_once(rt, tls, monkeypatch):
    # Loading the system's CAs takes tens of ms: not once per connection.
    import greenws.client

    made = []
    create = ssl.create_default_context

    def counting(*args, **kwargs):
        made.append(args)
        return create(*args, **kwargs)

    monkeypatch.setattr(greenws.client, "_default_context", None)
    monkeypatch.setattr(ssl, "create_default_context", counting)
    server = WSServer(rt, tls[0])
    try:
        for _ in range(2):
            # The default context checks certificates: this one is untrusted.
            with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                greenws.Client.connect(f"wss://localhost:{server.port}/",
                                       preset=rt.preset, open_timeout=WAIT)
    finally:
        server.stop()
    assert len(made) == 1
    context = greenws.client.default_ssl_context()
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def _tls_server_sending_half_a_record(server_ctx, listener, half_sent, release):
    """One wss connection served by hand through memory BIOs: three whole
    messages, then -- once the client has sent something -- half of the TLS
    record holding "second", and the rest only after ``release``."""
    import base64
    import hashlib
    import re

    from conftest import OP_TEXT, frame

    conn, _ = listener.accept()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = server_ctx.wrap_bio(incoming, outgoing, server_side=True)
    conn.settimeout(WAIT)

    def flush():
        conn.sendall(outgoing.read())

    def pump():
        data = conn.recv(65536)
        if not data:
            raise EOFError("client closed")
        incoming.write(data)

    def read_some():
        while True:
            try:
                return tls.read(65536)
            except ssl.SSLWantReadError:
                flush()
                pump()

    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                flush()
                pump()
        request = b""
        while b"\r\n\r\n" not in request:
            request += read_some()
        key = re.search(rb"sec-websocket-key: *(\S+)", request, re.I).group(1)
        accept = base64.b64encode(hashlib.sha1(
            key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        tls.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                  + b"\r\n\r\n")
        for i in range(3):
            tls.write(frame(OP_TEXT, f"m{i}"))
        flush()
        read_some()  # the client's "go"
        tls.write(frame(OP_TEXT, "second"))
        record = outgoing.read()
        conn.sendall(record[: len(record) // 2])
        half_sent.set()
        release.wait(WAIT)
        conn.sendall(record[len(record) // 2 :])
        read_some()  # until the client closes
    except (EOFError, OSError, ssl.SSLError):
        pass
    finally:
        conn.shutdown(std_socket.SHUT_RDWR)
        conn.close()


def test_timed_receive_over_tls_keeps_its_timeout(harness, rt, tls):
    """Half a TLS record must not hold receive(timeout) past its timeout."""
    import threading

    server_ctx, client_ctx = tls
    listener = std_socket.create_server(("127.0.0.1", 0))
    harness.sockets.append(listener)
    half_sent, release = threading.Event(), threading.Event()
    server = rt.spawn_thread(_tls_server_sending_half_a_record, server_ctx,
                             listener, half_sent, release)
    try:
        client = greenws.Client.connect(
            f"wss://localhost:{listener.getsockname()[1]}/", preset=rt.preset,
            ssl_context=client_ctx, close_timeout=1,
        )
        harness.connections.append(client)
        for i in range(3):  # untimed: receive() does its own reading now
            assert rt.spawn(client.receive).get() == f"m{i}"
        client.send("go")  # half a record comes while receive() waits
        start = time.monotonic()
        assert client.receive(timeout=0.5) is None
        assert time.monotonic() - start < 0.5 + 1.5
        assert half_sent.is_set()
        release.set()
        assert client.receive(timeout=WAIT) == "second"
        client.close()
    finally:
        release.set()
        server.get()
