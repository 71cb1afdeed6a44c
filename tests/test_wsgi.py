"""greenws.wsgi: WebSocketWSGI's options, checked when it is built."""

import inspect

import pytest
from conftest import WAIT, make_environ, read_http_head

import greenws


def handler(ws):
    pass


@pytest.mark.parametrize("name", ["bogus_option", "max_mesage_size", "environ"])
def test_unknown_option_fails_at_construction(name):
    """Not on every request later (as a TypeError inside the server)."""
    with pytest.raises(TypeError, match=repr(name)) as info:
        greenws.WebSocketWSGI(handler, max_queue=4, **{name: 3})
    assert "max_message_size" in str(info.value)  # the options it does take


def test_every_server_option_is_accepted():
    params = inspect.signature(greenws.Server.__init__).parameters
    options = {name: None for name in params if name not in ("self", "environ")}
    assert "origins" in options and "max_queue" in options
    app = greenws.WebSocketWSGI(handler, **options)
    assert app.options == options


class RoomServer(greenws.Server):
    """A Server subclass with an option of its own (accept() passes its own
    parameters on by position)."""

    def __init__(self, environ, *args, room="hall", preset=None):
        self.room = room
        super().__init__(environ, *args, preset=preset)


class AnythingServer(greenws.Server):
    """A subclass passing unknown options on: only it knows what it takes."""

    def __init__(self, environ, **options):
        super().__init__(environ, **options)


def test_subclass_options_are_its_own():
    greenws.WebSocketWSGI(
        handler, server_class=RoomServer, room="lobby", receive_bytes=1024
    )
    with pytest.raises(TypeError, match="'max_queue'"):
        greenws.WebSocketWSGI(handler, server_class=RoomServer, max_queue=4)
    greenws.WebSocketWSGI(handler, server_class=AnythingServer, whatever=1)


def test_subclass_option_reaches_the_server(harness, rt):
    """Served for real (gunicorn-style environ): the option gets there."""
    # It answers a message: a Close right behind the 101 would meet another
    # bug (eventlet: the client arms its watcher, then reads the socket).
    app = greenws.WebSocketWSGI(
        lambda ws: ws.send(f"{ws.receive(timeout=WAIT)} {ws.room}"),
        server_class=RoomServer, room="lobby", preset=rt.preset,
    )
    listener = harness.listener()
    port = listener.getsockname()[1]

    def client():
        with greenws.Client.connect(
            f"ws://127.0.0.1:{port}/", preset=rt.preset
        ) as ws:
            ws.send("hello")
            got = ws.receive(timeout=WAIT)
            with pytest.raises(greenws.ConnectionClosed):
                ws.receive(timeout=WAIT)
            return got

    task = rt.spawn(client)
    listener.settimeout(WAIT)
    sock, _ = listener.accept()
    harness.sockets.append(sock)
    sock.settimeout(WAIT)
    environ = make_environ(read_http_head(sock), sock)
    result = app(environ, None)
    with pytest.raises(StopIteration):  # how greenws ends a gunicorn request
        isinstance(result, environ["wsgi.file_wrapper"])
    assert task.get() == "hello lobby"
