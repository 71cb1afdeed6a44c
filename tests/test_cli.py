"""greenws.cli: ``python -m greenws URL`` and the ``greenws`` script, run as
subprocesses against a `websockets` server (and once in tmux, typed into as
a person would)."""

import inspect
import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest
import trustme
from conftest import WAIT
from servers import BIN
from websockets.sync.server import serve, unix_serve

import greenws

pytestmark = pytest.mark.timeout(60)


class EchoServer:
    """A `websockets` echo server in a thread, recording what it saw.

    ``/close/N``: after the first message, close with code N.  ``/refuse``:
    refuse the handshake with 403.  It offers the subprotocol "chat".
    """

    def __init__(self, ssl_context=None, unix_path=None):
        self.requests = []
        self.closes = []
        self.received = []
        self._ended = threading.Condition()
        options = dict(
            ssl=ssl_context,
            process_request=self._process_request,
            select_subprotocol=lambda conn, offered: (
                "chat" if "chat" in offered else None
            ),
        )
        if unix_path is not None:
            self.server = unix_serve(self._handler, unix_path, **options)
        else:
            self.server = serve(self._handler, "127.0.0.1", 0, **options)
            self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/", scheme="ws"):
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def _process_request(self, connection, request):
        self.requests.append(request)
        if request.path == "/refuse":
            return connection.respond(403, "go away\n")
        return None

    def _handler(self, conn):
        path = conn.request.path
        try:
            for message in conn:
                self.received.append(message)
                if path.startswith("/close/"):
                    conn.close(int(path.split("/")[2]), "server says bye")
                    break
                conn.send(message)
        except Exception:  # noqa: BLE001 - the close is what the test checks
            pass
        with self._ended:
            self.closes.append(conn.close_code)
            self._ended.notify_all()

    def wait_closes(self, count=1):
        """The close codes, once ``count`` connections have ended (the
        server's handler may finish after the client has exited)."""
        with self._ended:
            assert self._ended.wait_for(lambda: len(self.closes) >= count, WAIT)
        return self.closes

    def stop(self):
        self.server.shutdown()
        self.thread.join(WAIT)


@pytest.fixture
def echo_server():
    server = EchoServer()
    yield server
    server.stop()


def cli(*args, input="", script=False, timeout=WAIT):
    """Run the client to the end; (exit status, stdout, stderr)."""
    command = [str(BIN / "greenws")] if script else [sys.executable, "-m", "greenws"]
    proc = subprocess.run(
        [*command, *args], input=input.encode(), capture_output=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def one_line_error(err):
    """The stderr of a failure: one line, no traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


class Interactive:
    """The client as a subprocess fed line by line; its output read as it
    comes (a thread per stream), so that a test can wait for a line."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "greenws", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.out = queue.Queue()
        self.err = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, put))
            for stream, put in [
                (self.proc.stdout, self.out.put), (self.proc.stderr, self.err.append)
            ]
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, put):
        for line in stream:
            put(line.decode().rstrip("\n"))

    def send(self, line):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def line(self):
        return self.out.get(timeout=WAIT)

    def end_input(self):
        self.proc.stdin.close()

    def wait(self):
        """The exit status (and everything read)."""
        try:
            status = self.proc.wait(WAIT)
        finally:
            self.proc.kill()
            self.proc.wait(WAIT)
            for reader in self._readers:
                reader.join(WAIT)
            if not self.proc.stdin.closed:
                self.proc.stdin.close()
        return status

    def stderr(self):
        return "\n".join(self.err)


def test_lines_echoed_headers_and_subprotocol_sent(echo_server):
    client = Interactive(
        echo_server.url("/room?x=1"), "--header", "X-Token: s3cret",
        "-H", "X-Other:  two words ", "--subprotocol", "other", "-s", "chat",
    )
    lines = ["hello", "caf\u00e9", "", "spaces  inside "]
    for line in lines:
        client.send(line)
        assert client.line() == line  # answered while input stays open
    client.end_input()
    assert client.wait() == 0, client.stderr()
    assert echo_server.received == lines
    (request,) = echo_server.requests
    assert request.path == "/room?x=1"
    assert request.headers["X-Token"] == "s3cret"
    assert request.headers["X-Other"] == "two words"
    assert request.headers["Sec-WebSocket-Protocol"] == "other, chat"
    assert "(subprotocol chat)" in client.stderr()
    assert "closed: 1000" in client.stderr()
    assert echo_server.wait_closes() == [1000]


def test_console_script(echo_server):
    status, _, err = cli(echo_server.url(), input="one\r\ntwo", script=True)
    assert status == 0, err
    # Sent before our Close, so seen by the server whatever the timing.
    assert echo_server.wait_closes() == [1000]
    assert echo_server.received == ["one", "two"]


def _sequential_echo(listener):
    """One connection handled in order, frame by frame (wsproto): a ping is
    answered after every message that came before it."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import (
        AcceptConnection,
        CloseConnection,
        Message,
        Ping,
        Request,
    )

    sock, _ = listener.accept()
    sock.settimeout(WAIT)
    conn = WSConnection(ConnectionType.SERVER)
    with sock:
        while True:
            data = sock.recv(65536)
            conn.receive_data(data or None)
            for event in conn.events():
                if isinstance(event, Request):
                    sock.sendall(conn.send(AcceptConnection()))
                elif isinstance(event, Message):
                    sock.sendall(conn.send(Message(data=event.data)))
                elif isinstance(event, Ping):
                    sock.sendall(conn.send(event.response()))
                elif isinstance(event, CloseConnection):
                    sock.sendall(conn.send(event.response()))
                    return
            if not data:
                return


def test_piped_input_shows_the_answers_to_the_last_lines():
    """The end of input comes at once; the answers still get printed."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=_sequential_echo, args=(listener,))
        server.start()
        port = listener.getsockname()[1]
        lines = [f"line {n}" for n in range(20)]
        status, out, err = cli(f"ws://127.0.0.1:{port}/", input="\n".join(lines))
        server.join(WAIT)
    assert (status, out.splitlines()) == (0, lines), err


@pytest.mark.parametrize("code, expected", [(1000, 0), (1001, 0), (4002, 1), (1011, 1)])
def test_server_close_sets_the_exit_status(echo_server, code, expected):
    """The server closes while input is still open: the client, reading the
    socket while it waits for a line, exits at once with its status."""
    client = Interactive(echo_server.url(f"/close/{code}"))
    client.send("go")
    status = client.wait()  # input still open
    err = client.stderr()
    assert status == expected, err
    assert f"closed: {code} server says bye" in err and "Traceback" not in err


def test_ctrl_c_closes_with_1001(echo_server):
    client = Interactive(echo_server.url())
    client.send("before")
    assert client.line() == "before"
    client.proc.send_signal(signal.SIGINT)
    assert client.wait() == 130
    assert "Traceback" not in client.stderr()
    assert "closed: 1001" in client.stderr()
    assert echo_server.wait_closes() == [1001]


def test_refused_server_is_one_line_and_non_zero():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        status, out, err = cli(f"ws://127.0.0.1:{port}/")
    assert status == 1 and out == ""
    line = one_line_error(err)
    assert line.startswith(f"greenws: cannot connect to ws://127.0.0.1:{port}/: ")
    assert "refused" in line.lower()


def test_unresponsive_server_times_out():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        status, _, err = cli(f"ws://127.0.0.1:{port}/", "--open-timeout", "0.3")
    assert status == 1
    assert "timed out" in one_line_error(err)


def test_refused_handshake_shows_the_status(echo_server):
    status, _, err = cli(echo_server.url("/refuse"))
    assert status == 1
    assert "the server answered HTTP 403" in one_line_error(err)


@pytest.mark.parametrize("args, message", [
    (["http:/nohost"], "the URL has no host"),
    (["ftp://127.0.0.1/"], "not a WebSocket URL"),
    (["ws://127.0.0.1:1/", "--header", "no colon"], "not a header"),
])
def test_bad_arguments_exit_2(args, message):
    status, _, err = cli(*args)
    assert status == 2 and message in err and "Traceback" not in err


@pytest.fixture(scope="module")
def self_signed():
    """A server context with a certificate no default trust store knows."""
    cert = trustme.CA().issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def test_insecure_against_a_self_signed_wss_server(self_signed):
    server = EchoServer(ssl_context=self_signed)
    try:
        url = server.url(scheme="wss")
        status, out, err = cli(url, input="secret\n")
        assert status == 1 and out == ""
        assert "certificate verify failed" in one_line_error(err)
        status, out, err = cli(url, "--insecure", input="secret\n")
        assert (status, out) == (0, "secret\n"), err
    finally:
        server.stop()


def _client_has(keyword):
    """Whether Client.connect takes ``keyword`` (added by another branch)."""
    return any(
        keyword in inspect.signature(function).parameters
        for function in (greenws.Client.__init__, greenws.Client.connect)
    )


def test_unix_socket():
    """Passed to Client.connect(unix_socket=...) when the Client has it."""
    path = os.path.join(tempfile.mkdtemp(), "ws.sock")
    server = EchoServer(unix_path=path)
    try:
        status, out, err = cli("ws://localhost/", "--unix-socket", path, input="x\n")
        if _client_has("unix_socket"):
            assert (status, out) == (0, "x\n"), err
        else:
            assert status == 2 and "no unix_socket=" in one_line_error(err)
    finally:
        server.stop()
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def test_proxy_none_connects_directly(echo_server):
    """``--proxy none`` is Client.connect(proxy=None) when the Client has it."""
    env_proxy = "http://127.0.0.1:1"  # nothing there: must not be used
    proc = subprocess.run(
        [sys.executable, "-m", "greenws", echo_server.url(), "--proxy", "none"],
        input=b"direct\n", capture_output=True, timeout=WAIT,
        env=dict(os.environ, http_proxy=env_proxy, HTTP_PROXY=env_proxy),
    )
    err = proc.stderr.decode()
    if _client_has("proxy"):
        assert (proc.returncode, proc.stdout) == (0, b"direct\n"), err
    else:
        assert proc.returncode == 2 and "no proxy=" in one_line_error(err)


# -- in tmux, typed as a person would ------------------------------------------


class Tmux:
    """A detached tmux session on its own server socket, running one command."""

    def __init__(self, command):
        self.socket = f"greenws-test-{uuid.uuid4().hex[:8]}"
        self._tmux("new-session", "-d", "-x", "120", "-y", "30", "-s", "t",
                   *command)

    def _tmux(self, *args):
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, timeout=WAIT,
            check=True,
        ).stdout.decode()

    def type(self, text):
        self._tmux("send-keys", "-t", "t", "-l", text)

    def press(self, key):
        self._tmux("send-keys", "-t", "t", key)

    def screen(self):
        return self._tmux("capture-pane", "-p", "-t", "t")

    def wait_for(self, condition, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while not condition(screen := self.screen()):
            if time.monotonic() > deadline:
                raise AssertionError(f"screen after {timeout}s:\n{screen}")
            time.sleep(0.05)  # a screen has no event to wait on
        return screen

    def kill(self):
        subprocess.run(["tmux", "-L", self.socket, "kill-server"],
                       capture_output=True, timeout=WAIT)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_typed_in_tmux(echo_server, tmp_path):
    status_file = tmp_path / "status"
    # The shell keeps the pane open and records the exit status.
    command = (
        f"{sys.executable} -m greenws {echo_server.url()}; "
        f"echo $? > {status_file}; sleep 60"
    )
    tmux = Tmux(["sh", "-c", command])
    try:
        tmux.wait_for(lambda s: "* connected to" in s)
        tmux.type("hello from tmux")
        tmux.press("Enter")
        tmux.wait_for(lambda s: s.count("hello from tmux") == 2)  # typed, echoed
        tmux.type("caf\u00e9")
        tmux.press("Enter")
        tmux.wait_for(lambda s: s.count("caf\u00e9") == 2)
        tmux.press("C-d")  # end of input
        screen = tmux.wait_for(lambda s: "closed: 1000" in s)
        deadline = time.monotonic() + WAIT
        while not status_file.exists() or not status_file.read_text().strip():
            assert time.monotonic() < deadline, screen
            time.sleep(0.05)  # the file has no event to wait on
        assert status_file.read_text().strip() == "0"
    finally:
        tmux.kill()
    assert echo_server.received == ["hello from tmux", "caf\u00e9"]
    assert echo_server.wait_closes() == [1000]
