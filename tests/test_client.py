"""greenws.client: connecting, handshake options, errors, real servers."""

import socket as std_socket
import ssl
import time

import pytest
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
    task = rt.spawn(greenws.Client.connect, url, preset=fake, open_timeout=2,
                    proxy=None)
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
    """A websockets sync server in a thread, echoing; /close/<code> closes.

    Close the clients before :meth:`stop`: it waits for their closing
    handshakes in a way that blocks a gevent or eventlet hub.

    ``unix_path`` serves on that Unix socket instead of 127.0.0.1;
    ``redirects`` maps a path to ``(status, Location)`` answers.  ``requests``
    keeps every handshake request (path and headers) the server accepted,
    ``remotes`` the address each came from.
    """

    def __init__(self, rt, ssl_context=None, unix_path=None, redirects=None):
        from websockets.sync.server import unix_serve

        self.rt = rt
        self.closes = []
        self.requests = []
        self.remotes = []
        redirects = redirects or {}

        def process_request(conn, request):
            if request.path in redirects:
                status, location = redirects[request.path]
                response = conn.respond(status, "moved\n")
                response.headers["Location"] = location
                return response
            return None

        def handler(conn):
            self.requests.append(conn.request)
            self.remotes.append(conn.remote_address)
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

        options = dict(ssl=ssl_context, max_size=None, compression="deflate",
                       process_request=process_request)
        if unix_path is None:
            self.server = serve(handler, "127.0.0.1", 0, **options)
            self.port = self.server.socket.getsockname()[1]
        else:
            self.server = unix_serve(handler, str(unix_path), **options)
            self.port = None
        self.thread = rt.spawn_thread(self.server.serve_forever)

    def stop(self):
        self.server.shutdown()
        self.thread.get()


@pytest.fixture
def wsserver(rt):
    server = WSServer(rt)
    yield server
    server.stop()


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


# -- Unix domain sockets ----------------------------------------------------------


def test_unix_socket_against_websockets_server(harness, rt, tmp_path):
    path = tmp_path / "ws.sock"
    server = WSServer(rt, unix_path=path)
    try:
        client = greenws.Client.connect("ws://example.test/chat?room=1",
                                        unix_socket=str(path), preset=rt.preset,
                                        open_timeout=WAIT)
        harness.connections.append(client)
        assert client.sock.family == std_socket.AF_UNIX
        _exchange(client)
        client.close()
        assert rt.wait_until(lambda: server.closes)
        assert server.closes == [(1000, "")]
        request = server.requests[0]
        assert request.path == "/chat?room=1"
        assert request.headers["Host"] == "example.test"
    finally:
        server.stop()


def test_unix_socket_never_goes_through_a_proxy(harness, rt, tmp_path, monkeypatch):
    monkeypatch.setenv("ws_proxy", "http://127.0.0.1:9")  # nothing listens there
    path = tmp_path / "ws.sock"
    server = WSServer(rt, unix_path=path)
    try:
        client = greenws.Client.connect("ws://localhost/", unix_socket=str(path),
                                        preset=rt.preset, open_timeout=WAIT)
        harness.connections.append(client)
        client.send("hi")
        assert client.receive(timeout=WAIT) == "hi"
        client.close()
    finally:
        server.stop()


def test_unix_socket_missing_is_connection_error(rt, tmp_path):
    path = tmp_path / "nobody.sock"
    with pytest.raises(ConnectionError) as info:
        greenws.Client.connect("ws://localhost/", unix_socket=str(path),
                               preset=rt.preset, open_timeout=WAIT)
    assert info.value.status_code is None
    assert str(path) in str(info.value)


def test_unix_socket_behind_gunicorn(tmp_path):
    from servers import HostedServer

    path = str(tmp_path / "gunicorn.sock")
    server = HostedServer("gunicorn-gthread", unix=path)
    try:
        with greenws.Client.connect("ws://localhost/echo", unix_socket=path,
                                    subprotocols=["chat"],
                                    open_timeout=WAIT) as client:
            assert client.subprotocol == "chat"
            client.send("over unix")
            assert client.receive(timeout=WAIT) == "over unix"
    finally:
        server.stop_and_check()


def test_ws_unix_url_says_what_to_use():
    with pytest.raises(ValueError, match="unix_socket="):
        greenws.Client.connect("ws+unix:///tmp/x.sock")


# -- a refusal's headers and body -------------------------------------------------


@pytest.mark.parametrize("framing", ["length", "chunked", "until-close"])
def test_refusal_carries_headers_and_body(harness, rt, framing):
    task, sock = _connecting_client(harness, rt)
    body = b"go away\n" * 3
    head = "HTTP/1.1 403 Forbidden\r\nX-Why: quota\r\nContent-Type: text/plain\r\n"
    if framing == "length":
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    elif framing == "chunked":
        sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode()
                     + b"8\r\ngo away\n\r\n10\r\ngo away\ngo away\n\r\n0\r\n\r\n")
    else:
        sock.sendall(f"{head}Connection: close\r\n\r\n".encode() + body)
        sock.close()
    with pytest.raises(ConnectionError) as info:
        task.get()
    exc = info.value
    assert exc.status_code == 403
    assert ("X-Why", "quota") in [(k.title(), v) for k, v in exc.headers]
    assert exc.body == body


def test_refusal_body_is_cut_at_64_kib_without_waiting_for_the_rest(harness, rt):
    task, sock = _connecting_client(harness, rt)
    sock.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 1000000\r\n\r\n"
                 + b"x" * 70_000)  # and the rest never comes
    with pytest.raises(ConnectionError) as info:
        task.get()
    assert info.value.status_code == 500
    assert info.value.body == b"x" * 65536


def test_refusal_without_body(harness, rt):
    task, sock = _connecting_client(harness, rt)
    sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ConnectionError) as info:
        task.get()
    assert (info.value.status_code, info.value.body) == (404, b"")


# -- redirects --------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_followed(harness, rt, status):
    hops = {"/old": (status, "/new?x=1")}  # relative Location
    server = WSServer(rt, redirects=hops)
    try:
        client = greenws.Client.connect(f"ws://127.0.0.1:{server.port}/old",
                                        preset=rt.preset, open_timeout=WAIT)
        harness.connections.append(client)
        client.send("moved")
        assert client.receive(timeout=WAIT) == "moved"
        assert client.url == f"ws://127.0.0.1:{server.port}/new?x=1"
        assert client.path == "/new?x=1"
        assert [r.path for r in server.requests] == ["/new?x=1"]
        client.close()
    finally:
        server.stop()


def test_redirect_to_another_server_and_ten_in_a_row(harness, rt):
    target = WSServer(rt)
    hops = {f"/{n}": (302, f"/{n + 1}") for n in range(9)}
    hops["/9"] = (307, f"ws://localhost:{target.port}/final")
    hops["/loop"] = (302, "/loop")
    server = WSServer(rt, redirects=hops)
    try:
        client = greenws.Client.connect(f"ws://127.0.0.1:{server.port}/0",
                                        preset=rt.preset, open_timeout=WAIT)
        harness.connections.append(client)
        assert (client.host, client.port) == ("localhost", target.port)
        client.send("far")
        assert client.receive(timeout=WAIT) == "far"
        assert target.requests[0].headers["Host"] == f"localhost:{target.port}"
        client.close()
        with pytest.raises(ConnectionError, match="more than 10 redirects") as info:
            greenws.Client.connect(f"ws://127.0.0.1:{server.port}/loop",
                                   preset=rt.preset, open_timeout=WAIT)
        assert info.value.status_code == 302
        assert dict(info.value.headers)["location"] == "/loop"
    finally:
        server.stop()
        target.stop()


def test_redirect_keeps_credentials_on_the_same_server_only(harness, rt):
    other = WSServer(rt)
    hops = {"/a": (302, "/b"), "/b": (302, f"ws://localhost:{other.port}/c")}
    server = WSServer(rt, redirects=hops)
    headers = {"Authorization": "Bearer s3cret", "Cookie": "sid=1", "X-Trace": "7"}
    try:
        client = greenws.Client.connect(f"ws://127.0.0.1:{server.port}/a",
                                        headers=headers, preset=rt.preset,
                                        open_timeout=WAIT)
        harness.connections.append(client)
        client.send("x")
        assert client.receive(timeout=WAIT) == "x"  # the handler has run
        (seen,) = other.requests
        assert seen.headers["X-Trace"] == "7"
        assert "Authorization" not in seen.headers and "Cookie" not in seen.headers
        client.close()
    finally:
        server.stop()
        other.stop()


def test_redirect_from_wss_to_ws_refused(rt, tls):
    server_ctx, client_ctx = tls
    plain = WSServer(rt)
    server = WSServer(rt, server_ctx,
                      redirects={"/": (301, f"ws://localhost:{plain.port}/")})
    try:
        with pytest.raises(ConnectionError, match="wss:// for ws://") as info:
            greenws.Client.connect(f"wss://localhost:{server.port}/",
                                   preset=rt.preset, ssl_context=client_ctx,
                                   open_timeout=WAIT)
        assert info.value.status_code == 301
        assert info.value.body == b"moved\n"
        assert plain.requests == []
    finally:
        server.stop()
        plain.stop()


def test_redirect_on_a_unix_socket_stays_on_it(harness, rt, tmp_path):
    path = tmp_path / "ws.sock"
    server = WSServer(rt, unix_path=path, redirects={"/a": (308, "/b")})
    try:
        client = greenws.Client.connect("ws://localhost/a", unix_socket=str(path),
                                        preset=rt.preset, open_timeout=WAIT)
        harness.connections.append(client)
        client.send("x")
        assert client.receive(timeout=WAIT) == "x"
        assert [r.path for r in server.requests] == ["/b"]
        client.close()
    finally:
        server.stop()


def test_redirect_without_location_is_the_refusal(harness, rt):
    task, sock = _connecting_client(harness, rt)
    sock.sendall(b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ConnectionError) as info:
        task.get()
    assert info.value.status_code == 302


def test_send_utf8_bytes_as_text_to_websockets_server(harness, rt):
    """``send(bytes, text=True)``: a `websockets` server receives a str."""
    received = []

    def handler(conn):
        for message in conn:
            received.append(message)
            conn.send(message)

    server = serve(handler, "127.0.0.1", 0)
    thread = rt.spawn_thread(server.serve_forever)
    try:
        port = server.socket.getsockname()[1]
        client = greenws.Client.connect(f"ws://127.0.0.1:{port}/", preset=rt.preset)
        harness.connections.append(client)
        assert client.extensions and client.extensions[0].startswith(
            "permessage-deflate"
        )
        client.send(b"caf\xc3\xa9", text=True)
        assert client.receive(timeout=WAIT) == "caf\u00e9"
        client.send("caf\u00e9", text=False)
        assert client.receive(timeout=WAIT) == b"caf\xc3\xa9"
        client.close()
        assert received == ["caf\u00e9", b"caf\xc3\xa9"]
    finally:
        server.shutdown()
        thread.get()
