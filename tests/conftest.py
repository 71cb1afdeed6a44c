# ===========================================================================
# Section 1: unit-test fixtures and helpers (greenws core modules).
#
# ``rt`` is a *runtime* (threading, gevent or eventlet: the three presets)
# that knows how to spawn a background task, sleep cooperatively and which
# socket module never blocks its hub.  ``ws_pair`` opens a connected
# (server, client) pair of greenws objects over real loopback TCP; the server
# side is accepted from a fabricated WSGI environ ("gunicorn.socket").
# ``raw_client`` / ``raw_server`` give a greenws object whose peer is a raw
# socket driven by the test (see ``RawPeer``).  Everything is closed in
# teardown; under THREADING no thread may outlive a test.
# Keep server-launch fixtures below, in their own section.
# ===========================================================================

import base64
import hashlib
import os
import shutil
import signal
import socket as std_socket
import struct
import subprocess
import threading
import time

import pytest

import greenws
from greenws import presets

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WAIT = 10.0  # upper bound of every wait in the unit tests, seconds


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


class Task:
    """A background task; ``get(timeout)`` returns its result or re-raises."""

    def __init__(self, rt, fn, args, kwargs, os_thread=False):
        self.rt = rt
        self.result = None
        self.error = None
        self.done = threading.Event()

        def run():
            try:
                self.result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - re-raised in get()
                self.error = exc
            finally:
                self.done.set()

        if rt.name == "threading" or os_thread:
            self.handle = threading.Thread(target=run, daemon=True)
            self.handle.start()
        elif rt.name == "gevent":
            import gevent

            self.handle = gevent.spawn(run)
        else:
            import eventlet

            self.handle = eventlet.spawn(run)

    def ready(self):
        return self.done.is_set()

    def wait(self, timeout=WAIT):
        if not self.rt.wait_until(self.done.is_set, timeout):
            raise AssertionError(f"task did not finish within {timeout}s")

    def get(self, timeout=WAIT):
        self.wait(timeout)
        if self.error is not None:
            raise self.error
        return self.result


class Runtime:
    """What a test needs to know about one preset."""

    def __init__(self, name):
        self.name = name
        if name == "threading":
            self.preset = presets.THREADING
            self.socket = std_socket
            self._sleep = time.sleep
        elif name == "gevent":
            import gevent
            import gevent.socket

            self.preset = presets.GEVENT
            self.socket = gevent.socket
            self._sleep = gevent.sleep
        else:
            import eventlet
            import eventlet.green.socket

            self.preset = presets.EVENTLET
            self.socket = eventlet.green.socket
            self._sleep = eventlet.sleep

    def __repr__(self):
        return f"<Runtime {self.name}>"

    def spawn(self, fn, *args, **kwargs):
        """Run ``fn`` in a thread (THREADING) or a greenlet of this hub."""
        return Task(self, fn, args, kwargs)

    def spawn_thread(self, fn, *args, **kwargs):
        """Run ``fn`` in a real OS thread (for third-party blocking peers)."""
        return Task(self, fn, args, kwargs, os_thread=True)

    def sleep(self, seconds):
        self._sleep(seconds)

    def wait_until(self, condition, timeout=WAIT, step=0.005):
        """Poll ``condition`` cooperatively; True as soon as it holds."""
        deadline = time.monotonic() + timeout
        while True:
            if condition():
                return True
            if time.monotonic() >= deadline:
                return False
            self._sleep(step)

    def listener(self):
        sock = self.socket.socket(std_socket.AF_INET, std_socket.SOCK_STREAM)
        sock.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        return sock

    def connect(self, port):
        sock = self.socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        sock.setsockopt(std_socket.IPPROTO_TCP, std_socket.TCP_NODELAY, 1)
        return sock


def read_http_head(sock, peek=False):
    """Read one HTTP head (up to the blank line) byte-wise; never over-read."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"EOF inside HTTP head: {data!r}")
        data += byte
        if len(data) > 65536:
            raise AssertionError("HTTP head too long")
    return data


def parse_request(head):
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            name, value = line.split(":", 1)
            headers.append((name.strip(), value.strip()))
    return method, target, headers


def make_environ(head, sock, pending=b""):
    """A WSGI-like environ (gunicorn flavour) for the request in ``head``.

    ``pending`` are bytes the "server" read past the headers; they are handed
    over the way gunicorn does (``wsgi.input.reader.unreader``).
    """
    method, target, headers = parse_request(head)
    path, _, query = target.partition("?")
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "gunicorn.socket": sock,
        "wsgi.input": None,
    }
    for name, value in headers:
        key = "HTTP_" + name.upper().replace("-", "_")
        if key in environ:
            environ[key] += "," + value
        else:
            environ[key] = value
    if pending:
        environ["wsgi.input"] = _FakeGunicornInput(pending)
    return environ


class _FakeUnreader:
    def __init__(self, data):
        self.data = data

    def take_buffered(self):
        data, self.data = self.data, b""
        return data


class _FakeGunicornInput:
    def __init__(self, data):
        self.reader = type("Reader", (), {})()
        self.reader.unreader = _FakeUnreader(data)


# -- raw WebSocket frames ----------------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def frame(opcode, payload=b"", mask=False, fin=True, rsv1=False):
    if isinstance(payload, str):
        payload = payload.encode()
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        n_int = int.from_bytes(payload, "big") if payload else 0
        k = int.from_bytes((key * (n // 4 + 1))[:n], "big") if n else 0
        payload = (n_int ^ k).to_bytes(n, "big") if n else b""
        head += key
    return head + payload


def close_payload(code, reason=""):
    return struct.pack("!H", code) + reason.encode()


class RawPeer:
    """A hand-driven WebSocket endpoint on a plain (or green) socket."""

    def __init__(self, rt, sock, is_client, buffered=b""):
        self.rt = rt
        self.sock = sock
        self.is_client = is_client
        self.buf = bytearray(buffered)

    def send_frame(self, opcode, payload=b"", fin=True, rsv1=False):
        self.sock.sendall(frame(opcode, payload, self.is_client, fin, rsv1))

    def send_raw(self, data):
        self.sock.sendall(data)

    def _fill(self, n, timeout):
        self.sock.settimeout(timeout)
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("peer closed TCP")
            self.buf += data

    def _take(self, n, timeout):
        self._fill(n, timeout)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_frame(self, timeout=WAIT):
        """(fin, rsv1, opcode, payload) of the next frame from the peer."""
        b0, b1 = self._take(2, timeout)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._take(2, timeout))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._take(8, timeout))
        key = self._take(4, timeout) if b1 & 0x80 else None
        payload = self._take(n, timeout)
        if key is not None and n:
            k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
            payload = (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")
        return bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, payload

    def read_eof(self, timeout=WAIT):
        """True when the peer closes TCP (after any remaining frames)."""
        self.sock.settimeout(timeout)
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return True
            if not data:
                return True
            self.buf += data

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# -- building connections ------------------------------------------------------

CLIENT_REQUEST = (
    "GET {target} HTTP/1.1\r\n"
    "Host: 127.0.0.1:{port}\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: {key}\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "{extra}"
    "\r\n"
)


def raw_request(port, target="/", extra_headers=(), key=None):
    key = key or base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in extra_headers)
    text = CLIENT_REQUEST.format(target=target, port=port, key=key, extra=extra)
    return text.encode(), key


def response_101(request_head, extra_headers=()):
    _, _, headers = parse_request(request_head)
    key = dict((k.lower(), v) for k, v in headers)["sec-websocket-key"]
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
        *(f"{k}: {v}" for k, v in extra_headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Harness:
    """Creates connections for one runtime and cleans them all up."""

    def __init__(self, rt):
        self.rt = rt
        self.sockets = []
        self.peer_sockets = []  # raw peers: closed first in cleanup
        self.connections = []
        self.tasks = []

    # server side of a request already on ``listener``
    def accept_server(self, listener, server_class=None, pending_bytes=0, **kw):
        listener.settimeout(WAIT)
        sock, _ = listener.accept()
        self.sockets.append(sock)
        sock.settimeout(WAIT)
        head = read_http_head(sock)
        pending = b""
        if pending_bytes:
            sock.settimeout(WAIT)
            while len(pending) < pending_bytes:
                pending += sock.recv(pending_bytes - len(pending))
        environ = make_environ(head, sock, pending)
        kw.setdefault("preset", self.rt.preset)
        cls = server_class or greenws.Server
        ws = cls.accept(environ, **kw)
        self.connections.append(ws)
        return ws

    def listener(self):
        listener = self.rt.listener()
        self.sockets.append(listener)
        return listener

    def pair(self, server_kwargs=None, client_kwargs=None, path="/ws"):
        """A connected (server, client) pair of greenws objects."""
        listener = self.listener()
        port = listener.getsockname()[1]
        ckw = dict(client_kwargs or {})
        ckw.setdefault("preset", self.rt.preset)
        task = self.rt.spawn(
            greenws.Client.connect, f"ws://127.0.0.1:{port}{path}", **ckw
        )
        self.tasks.append(task)
        server = self.accept_server(listener, **(server_kwargs or {}))
        client = task.get()
        self.connections.append(client)
        return server, client

    def raw_client(self, target="/ws", extra_headers=(), **server_kwargs):
        """(greenws Server, RawPeer acting as the client)."""
        listener = self.listener()
        port = listener.getsockname()[1]
        sock = self.rt.connect(port)
        self.peer_sockets.append(sock)
        request, _ = raw_request(port, target, extra_headers)
        sock.sendall(request)
        server = self.accept_server(listener, **server_kwargs)
        sock.settimeout(WAIT)
        head = read_http_head(sock)
        assert head.startswith(b"HTTP/1.1 101"), head
        peer = RawPeer(self.rt, sock, is_client=True)
        peer.response_head = head
        return server, peer

    def raw_server(self, extra_response_headers=(), after_101=b"", **client_kwargs):
        """(greenws Client, RawPeer acting as the server)."""
        listener = self.listener()
        port = listener.getsockname()[1]
        client_kwargs.setdefault("preset", self.rt.preset)
        task = self.rt.spawn(
            greenws.Client.connect, f"ws://127.0.0.1:{port}/ws", **client_kwargs
        )
        self.tasks.append(task)
        listener.settimeout(WAIT)
        sock, _ = listener.accept()
        self.peer_sockets.append(sock)
        sock.settimeout(WAIT)
        head = read_http_head(sock)
        sock.sendall(response_101(head, extra_response_headers) + after_101)
        client = task.get()
        self.connections.append(client)
        peer = RawPeer(self.rt, sock, is_client=False)
        peer.request_head = head
        return client, peer

    def cleanup(self):
        for sock in self.peer_sockets:
            try:
                sock.close()
            except OSError:
                pass
        for ws in self.connections:
            ws.close_timeout = min(ws.close_timeout, 1.0)
        for ws in self.connections:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - best effort in teardown
                pass
        for sock in self.sockets:
            try:
                sock.close()
            except OSError:
                pass
        for task in self.tasks:
            task.wait(WAIT)
        for ws in self.connections:
            thread = getattr(ws, "_thread", None)
            if thread is not None:
                alive = getattr(thread, "is_alive", None)
                assert self.rt.wait_until(lambda a=alive: not a(), WAIT), (
                    f"reader of {ws!r} still running after close"
                )


PRESET_NAMES = ["threading", "gevent", "eventlet"]


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", r"ignore:\s*Eventlet is deprecated")
    # The tests talk to 127.0.0.1 only, and greenws clients take their proxy
    # from the environment: a proxy set on the machine running them must not
    # be asked for loopback (tests/test_proxy.py sets its own).
    for name in ("no_proxy", "NO_PROXY"):
        os.environ[name] = ",".join(
            filter(None, [os.environ.get(name), "127.0.0.1,localhost,::1"])
        )


@pytest.fixture(params=PRESET_NAMES)
def rt(request):
    """The runtime (preset) under test."""
    return Runtime(request.param)


@pytest.fixture
def harness(rt):
    baseline = threading.active_count()
    h = Harness(rt)
    yield h
    h.cleanup()
    if rt.name == "threading":
        deadline = time.monotonic() + WAIT
        while threading.active_count() > baseline and time.monotonic() < deadline:
            time.sleep(0.01)
        assert threading.active_count() <= baseline, (
            f"thread leak: {threading.enumerate()}"
        )


@pytest.fixture
def threading_harness():
    """A Harness for tests that need only the THREADING preset."""
    h = Harness(Runtime("threading"))
    yield h
    h.cleanup()


@pytest.fixture
def ws_pair(harness):
    """Factory: ``ws_pair(server_kwargs=, client_kwargs=)`` -> (server, client)."""
    return harness.pair


@pytest.fixture(params=["server", "client"])
def role(request):
    """Which side of a pair is under test."""
    return request.param


def pick(pair, role):
    """(side under test, its peer) from a (server, client) pair."""
    server, client = pair
    return (server, client) if role == "server" else (client, server)


# ===========================================================================
# End of section 1.
# ===========================================================================


# ====================================================================

# Section 2: real servers started once per test session.
# ===========================================================================


@pytest.fixture(scope="session")
def tls():
    """(server, client) SSL contexts: a certificate for localhost and
    127.0.0.1 from a CA made here, which the client context trusts."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


@pytest.fixture(scope="session")
def tinyproxy(tmp_path_factory):
    """Debian's tinyproxy with Basic auth (``make test`` installs it)."""
    import shutil

    from servers import ProxyServer

    executable = shutil.which("tinyproxy") or (
        "/usr/bin/tinyproxy" if os.path.exists("/usr/bin/tinyproxy") else None
    )
    if executable is None:
        pytest.skip("tinyproxy is not installed (`make proxy` installs it)")
    server = ProxyServer.tinyproxy(executable, tmp_path_factory.mktemp("tinyproxy"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def socks5_proxy():
    """A SOCKS5 server with username/password auth (the pproxy package)."""
    pytest.importorskip("pproxy", reason="pproxy (a test extra) is not installed")
    from servers import ProxyServer

    server = ProxyServer.socks5()
    yield server
    server.stop()
# -- a real redis-server (greenws.Rooms across processes) ----------------------


class RedisServer:
    """``redis-server`` on 127.0.0.1 on a free port, no persistence.

    The tests kill it, restart it on the same port, freeze and thaw it; it
    is always stopped by its PID.
    """

    def __init__(self, binary):
        from servers import free_port

        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.start()

    def start(self):
        from servers import wait_for_port

        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a frozen one too
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(WAIT)

    def freeze(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self):
        os.kill(self.proc.pid, signal.SIGCONT)


@pytest.fixture
def redis_server():
    """A fresh redis-server (``make test`` installs Debian's package)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(
            "redis-server is not installed (make redis: apt-get install redis-server)"
        )
    server = RedisServer(binary)
    yield server
    server.kill()
