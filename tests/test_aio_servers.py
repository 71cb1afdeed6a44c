"""AioServer inside real servers, as subprocesses: aiohttp, uvicorn, hypercorn
(ASGI) and a plain asyncio server (sock=), serving tests/apps/aio_app.py.

Driven by the ``websockets`` library's client and by ``greenws.Client``:
echo, subprotocol, the request target, close codes and reasons both ways,
refusals (403 as an HTTP response, through ASGI's denial extension or, without
it, the 1008 close the server turns into a 403), ``receive(timeout)`` and
``max_message_size`` (1009).  Each server's log must stay free of errors.
"""

import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from servers import AIO_KINDS, HostedServer, free_port, wait_for_port

import greenws

websockets = pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosed as WsClosed  # noqa: E402
from websockets.exceptions import InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

for _name in ("aiohttp", "uvicorn", "hypercorn"):
    pytest.importorskip(_name)

TIMEOUT = 10


@pytest.fixture(scope="module", params=AIO_KINDS)
def host(request):
    server = HostedServer(request.param)
    yield server
    server.stop_and_check()


def _client(url, **kw):
    return greenws.Client.connect(url, preset=greenws.presets.THREADING,
                                  open_timeout=TIMEOUT, **kw)


def test_echo_with_websockets_and_greenws_clients(host):
    with connect(host.url + "/echo", open_timeout=TIMEOUT) as ws:
        ws.send("héllo")
        assert ws.recv(TIMEOUT) == "héllo"
        ws.send(b"\x00" * 300000)
        assert ws.recv(TIMEOUT) == b"\x00" * 300000
    with _client(host.url + "/echo") as ws:
        ws.send("text")
        assert ws.receive(TIMEOUT) == "text"
        ws.send(b"bin")
        assert ws.receive(TIMEOUT) == b"bin"
        assert ws.ping(timeout=TIMEOUT) >= 0  # the server answers pings


def test_subprotocol_and_the_real_target(host):
    with connect(host.url + "/info?a=b%20c&x=1", subprotocols=["superchat", "chat"],
                 open_timeout=TIMEOUT) as ws:
        info = json.loads(ws.recv(TIMEOUT))
        assert ws.subprotocol == "superchat"
    expected_mode = {"aio-sock": "custom", "aiohttp": "aiohttp"}.get(host.kind, "asgi")
    assert info["mode"] == expected_mode
    assert info["subprotocol"] == "superchat"
    assert info["target"] == "/info?a=b%20c&x=1"
    assert info["remote_address"][0] == "127.0.0.1"


def test_send_text_flag_state_and_extensions(host):
    """send(bytes, text=True) / send(str, text=False) on every host; ASGI
    servers negotiate (and apply) compression themselves: no extensions."""
    with connect(host.url + "/typed", open_timeout=TIMEOUT) as ws:
        assert ws.recv(TIMEOUT) == "caf\u00e9"
        assert ws.recv(TIMEOUT) == b"caf\xc3\xa9"
        info = json.loads(ws.recv(TIMEOUT))
    assert info["state"] == "OPEN"
    if host.kind in ("aio-sock", "aiohttp"):
        (value,) = info["extensions"]
        assert value.startswith("permessage-deflate; ")
    else:
        assert info["extensions"] == []


def test_server_closes_with_its_code_and_reason(host):
    with _client(host.url + "/close?code=4001&reason=bye") as ws:
        ws.send("go")
        with pytest.raises(greenws.ConnectionClosed) as info:
            ws.receive(TIMEOUT)
    assert (info.value.reason, info.value.message) == (4001, "bye")


def test_client_close_code_and_reason_reach_the_server(host):
    with connect(host.url + "/echo", open_timeout=TIMEOUT) as ws:
        ws.send("x")
        ws.recv(TIMEOUT)
        ws.close(4002, "client done")
    expected = {"code": 4002, "reason": "client done"}
    if host.kind == "hypercorn":
        # hypercorn 0.18 does not hand the client's Close to the application:
        # its websocket.disconnect says 1006 unless the application closed
        # first (hypercorn/protocol/ws_stream.py, StreamClosed).
        expected = {"code": 1006, "reason": None}
    with connect(host.url + "/lastclose", open_timeout=TIMEOUT) as ws:
        assert json.loads(ws.recv(TIMEOUT)) == expected


def test_origin_refused_with_403(host):
    with pytest.raises(InvalidStatus) as info:
        connect(host.url + "/origin", origin="http://evil.example",
                open_timeout=TIMEOUT)
    assert info.value.response.status_code == 403
    assert b"Origin not allowed" in info.value.response.body
    with pytest.raises(greenws.ConnectionError) as refused:
        _client(host.url + "/origin", headers={"Origin": "http://evil.example"})
    assert refused.value.status_code == 403
    with connect(host.url + "/origin", origin="http://good.example",
                 open_timeout=TIMEOUT) as ws:
        ws.send("ok")
        assert ws.recv(TIMEOUT) == "ok"


def test_asgi_refusal_without_the_denial_extension_is_403(host):
    if host.kind not in ("uvicorn", "hypercorn"):
        pytest.skip("ASGI only")
    with pytest.raises(InvalidStatus) as info:
        connect(host.url + "/origin-noext", origin="http://evil.example",
                open_timeout=TIMEOUT)
    assert info.value.response.status_code == 403


def test_receive_timeout(host):
    with _client(host.url + "/timeout") as ws:
        assert ws.receive(TIMEOUT) == "timeout"
        ws.send("still open")
        assert ws.receive(TIMEOUT) == "still open"


def test_max_message_size_closes_with_1009(host):
    with connect(host.url + "/limit", open_timeout=TIMEOUT) as ws:
        ws.send(b"x" * 1024)
        assert ws.recv(TIMEOUT) == b"x" * 1024
        ws.send(b"x" * 1025)
        with pytest.raises(WsClosed) as info:
            ws.recv(TIMEOUT)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


def test_plain_http_still_served(host):
    if host.kind == "aio-sock":
        pytest.skip("the plain asyncio server speaks WebSocket only")
    import urllib.request

    with urllib.request.urlopen(host.http_url + "/", timeout=TIMEOUT) as response:
        assert response.read() == b"hello"


def test_many_connections_one_after_another(host):
    """The server takes the next connection after each (nothing stuck)."""
    for i in range(20):
        with _client(host.url + "/echo") as ws:
            ws.send(str(i))
            assert ws.receive(TIMEOUT) == str(i)


# -- the README's asyncio examples (examples/aio_*.py) -----------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _example_server(kind, port):
    if kind == "aiohttp":
        return [sys.executable, "aio_aiohttp.py", "--port", str(port)], "/echo"
    if kind == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "aio_asgi:app", "--host",
                "127.0.0.1", "--port", str(port)], "/"
    if kind == "hypercorn":  # the README's command line, from the examples
        return [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}",
                str(EXAMPLES / "aio_asgi.py") + ":app"], "/"
    return [sys.executable, "aio_sock.py", "--port", str(port)], "/"


@pytest.mark.parametrize("kind", ["aio-sock", "aiohttp", "uvicorn", "hypercorn"])
def test_examples_aio_servers_with_aio_client(kind):
    port = free_port()
    command, path = _example_server(kind, port)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, cwd=str(EXAMPLES), stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, proc)
            result = subprocess.run(
                [sys.executable, str(EXAMPLES / "aio_client.py"),
                 f"ws://127.0.0.1:{port}{path}"],
                capture_output=True, text=True, timeout=60,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            for line in ("< 'hello 0'", "< 'hello 2'", "< b'\\x00binary\\xff'",
                         "closed with code 1000"):
                assert line in result.stdout, result.stdout
            assert "ping round trip:" in result.stdout
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.seek(0)
            output = log.read().decode(errors="replace")
        assert "Traceback" not in output.replace("KeyboardInterrupt", ""), output


def test_example_aio_client_reports_an_unreachable_server():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "aio_client.py"),
         f"ws://127.0.0.1:{free_port()}/"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1 and "cannot connect" in result.stderr
    assert "Traceback" not in result.stderr
