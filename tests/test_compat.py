"""simple-websocket code runs with ``import greenws as simple_websocket``."""

import inspect
import selectors
import threading

import pytest
import simple_websocket as real_simple_websocket
from conftest import WAIT

import greenws
import greenws as simple_websocket


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (greenws.Server.accept, real_simple_websocket.Server.accept),
        (greenws.Client.connect, real_simple_websocket.Client.connect),
        (greenws.ConnectionError.__init__,
         real_simple_websocket.ConnectionError.__init__),
        (greenws.ConnectionClosed.__init__,
         real_simple_websocket.ConnectionClosed.__init__),
    ],
    ids=["Server.accept", "Client.connect", "ConnectionError", "ConnectionClosed"],
)
def test_signatures_are_a_superset(ours, theirs):
    """Same positional parameters, same order, same defaults."""
    mine = list(inspect.signature(ours).parameters.values())
    other = list(inspect.signature(theirs).parameters.values())
    for a, b in zip(mine, other):
        assert a.name == b.name
        assert a.kind == b.kind
        if b.default is not inspect.Parameter.empty:
            assert a.default == b.default
    assert len(mine) >= len(other)


def test_exception_attributes_match():
    for mod in (simple_websocket, real_simple_websocket):
        exc = mod.ConnectionClosed(4000, "bye")
        assert (exc.reason, exc.message) == (4000, "bye")
        assert mod.ConnectionClosed().reason == 1005
        assert mod.ConnectionError(403).status_code == 403
        assert mod.ConnectionError().status_code is None


def test_simple_websocket_style_code(threading_harness):
    """The usual simple-websocket program, positional arguments and all."""
    harness = threading_harness
    listener = harness.listener()
    port = listener.getsockname()[1]
    received = []

    def client_side():
        ws = simple_websocket.Client.connect(
            f"ws://127.0.0.1:{port}/echo", ["chat"], {"X-Hello": "1"}, 4096,
            None, 2**20, None, threading.Thread, threading.Event,
        )
        try:
            ws.send("hello")
            received.append(ws.receive(WAIT))
            ws.send(b"bin")
            received.append(ws.receive(WAIT))
        finally:
            ws.close()
        return ws

    task = harness.rt.spawn(client_side)
    listener.settimeout(WAIT)
    from conftest import make_environ, read_http_head

    sock, _ = listener.accept()
    harness.sockets.append(sock)
    sock.settimeout(WAIT)
    environ = make_environ(read_http_head(sock), sock)
    assert environ["HTTP_X_HELLO"] == "1"
    ws = simple_websocket.Server.accept(
        environ, ["chat"], 4096, None, 2**20,
        threading.Thread, threading.Event, selectors.DefaultSelector,
    )
    harness.connections.append(ws)
    assert ws.subprotocol == "chat"
    try:
        while True:
            data = ws.receive()
            ws.send(data)
    except simple_websocket.ConnectionClosed as exc:
        assert exc.reason == 1000
    client = task.get()
    harness.connections.append(client)
    assert received == ["hello", b"bin"]


def test_real_simple_websocket_client_against_greenws_server(threading_harness):
    harness = threading_harness
    listener = harness.listener()
    port = listener.getsockname()[1]

    def client_side():
        ws = real_simple_websocket.Client.connect(f"ws://127.0.0.1:{port}/")
        try:
            ws.send("ping?")
            return ws.receive(WAIT)
        finally:
            ws.close()

    task = harness.rt.spawn(client_side)
    server = harness.accept_server(listener)
    server.send(server.receive(timeout=WAIT))
    assert task.get() == "ping?"


def _run(code):
    """Run ``code`` in a fresh interpreter (module state must not leak)."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_install_after_the_libraries_were_imported():
    """flask-sock holds ``Server`` and ``ConnectionClosed``, engineio the
    module: install() switches them, uninstall() switches them back."""
    _run(
        "import flask_sock\n"
        "import engineio.async_drivers._websocket_wsgi as driver\n"
        "import simple_websocket as real\n"
        "import greenws, greenws.compat\n"
        "assert greenws.compat.install() is greenws\n"
        "greenws.compat.install()  # twice is the same\n"
        "assert flask_sock.Server is greenws.Server\n"
        "assert flask_sock.ConnectionClosed is greenws.ConnectionClosed\n"
        "assert driver.simple_websocket is greenws\n"
        "import simple_websocket\n"
        "assert simple_websocket is greenws\n"
        "greenws.compat.uninstall()\n"
        "assert flask_sock.Server is real.Server\n"
        "assert flask_sock.ConnectionClosed is real.ConnectionClosed\n"
        "assert driver.simple_websocket is real\n"
        "import simple_websocket\n"
        "assert simple_websocket is real\n"
    )


def test_install_refuses_what_it_cannot_switch():
    """A class derived from simple-websocket's already exists: an error that
    says what to do, and nothing changed."""
    out = _run(
        "import sys\n"
        "import flask_sock\n"
        "import simple_websocket\n"
        "class Mine(simple_websocket.Server):\n"
        "    pass\n"
        "import greenws.compat\n"
        "try:\n"
        "    greenws.compat.install()\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
        "assert flask_sock.Server is simple_websocket.Server\n"
        "assert sys.modules['simple_websocket'] is simple_websocket\n"
    )
    assert "__main__.Mine" in out and "call install() before" in out
