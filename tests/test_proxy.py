"""greenws.proxy: the client through HTTP (CONNECT) and SOCKS5 proxies.

The proxies are real: Debian's tinyproxy and pproxy's SOCKS5 server, each
started once per session on 127.0.0.1 with a username and password (see
``tinyproxy`` and ``socks5_proxy`` in conftest.py).  The WebSocket servers
are the ``websockets`` library's (tests/test_client.py's ``WSServer``).
"""

import base64
import json
import os
import socket as std_socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import WAIT
from test_client import WSServer

import greenws
from greenws import ConnectionError
from greenws.proxy import Proxy, parse_proxy, proxy_for, tunnel

APPS = Path(__file__).parent / "apps"


@pytest.fixture
def clean_env(monkeypatch):
    """No proxy variable from the machine running the tests."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name == "REQUEST_METHOD":
            monkeypatch.delenv(name)
    return monkeypatch


# -- which proxy (no I/O) ---------------------------------------------------------


@pytest.mark.parametrize("url, expected", [
    ("http://proxy.test:3128", Proxy("http", "proxy.test", 3128, None, None)),
    ("http://proxy.test", Proxy("http", "proxy.test", 80, None, None)),
    ("proxy.test:8080", Proxy("http", "proxy.test", 8080, None, None)),
    ("http://us%40er:p%3Ass@[::1]:8080/", Proxy("http", "::1", 8080, "us@er", "p:ss")),
    ("socks5://u:p@127.0.0.1", Proxy("socks5", "127.0.0.1", 1080, "u", "p")),
    ("SOCKS5H://h:1", Proxy("socks5h", "h", 1, None, None)),
])
def test_parse_proxy(url, expected):
    assert parse_proxy(url) == expected


@pytest.mark.parametrize("url", ["https://proxy.test", "socks4://h:1", "http://",
                                 "ftp://h"])
def test_parse_proxy_refuses_what_it_cannot_use(url):
    with pytest.raises(ValueError):
        parse_proxy(url)


@pytest.mark.parametrize("env, secure, expected", [
    ({"ws_proxy": "W", "https_proxy": "S", "http_proxy": "H"}, False, "W"),
    ({"https_proxy": "S", "http_proxy": "H"}, False, "S"),
    ({"http_proxy": "H"}, False, "H"),
    ({"HTTP_PROXY": "H"}, False, "H"),
    ({"WS_PROXY": "W", "http_proxy": "H"}, False, "W"),
    ({"wss_proxy": "WS", "ws_proxy": "W", "https_proxy": "S"}, True, "WS"),
    ({"HTTPS_PROXY": "S", "ws_proxy": "W"}, True, "S"),
    ({"http_proxy": "H", "ws_proxy": "W"}, True, None),  # never http_proxy for wss
    ({"ws_proxy": "lower", "WS_PROXY": "upper"}, False, "lower"),
    ({}, False, None),
])
def test_proxy_from_environment(clean_env, env, secure, expected):
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert proxy_for(secure, "example.test", 443 if secure else 80) == expected


@pytest.mark.parametrize("no_proxy, host, port, bypassed", [
    ("example.test", "example.test", 80, True),
    (".example.test", "www.example.test", 80, True),
    ("other.test,127.0.0.1", "127.0.0.1", 8080, True),
    ("127.0.0.1:9999", "127.0.0.1", 8080, False),
    ("*", "anything.test", 80, True),
    ("other.test", "example.test", 80, False),
])
def test_no_proxy(clean_env, no_proxy, host, port, bypassed):
    clean_env.setenv("ws_proxy", "http://proxy.test:3128")
    clean_env.setenv("NO_PROXY", no_proxy)
    assert (proxy_for(False, host, port) is None) is bypassed


def test_connect_request_with_basic_auth():
    exchange = tunnel(parse_proxy("http://us%40er:pa%3Ass@p:1"), "::1", 8443)
    request = exchange.data_to_send()
    token = base64.b64encode(b"us@er:pa:ss")
    assert request == (b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n"
                       b"Proxy-Authorization: Basic " + token + b"\r\n\r\n")
    assert exchange.data_to_send() == b""
    assert exchange.receive_data(b"HTTP/1.1 200 Connection established\r\n") is False
    assert exchange.receive_data(b"\r\n") is True


def test_connect_refusal_keeps_the_proxy_answer():
    exchange = tunnel(parse_proxy("http://p:1"), "h", 80)
    answer = (b"HTTP/1.0 403 Filtered\r\nX-Why: policy\r\nContent-Length: 4\r\n\r\n"
              b"nope")
    with pytest.raises(ConnectionError) as info:
        exchange.receive_data(answer)
    assert info.value.status_code == 403
    assert ("x-why", "policy") in info.value.headers
    assert info.value.body == b"nope"


def test_connect_proxy_speaking_first_in_the_tunnel_is_an_error():
    exchange = tunnel(parse_proxy("http://p:1"), "h", 80)
    with pytest.raises(ConnectionError, match="before the server"):
        exchange.receive_data(b"HTTP/1.1 200 OK\r\n\r\nextra")


@pytest.mark.parametrize("host, address", [
    ("example.test", b"\x03\x0cexample.test"),
    ("10.1.2.3", b"\x01\x0a\x01\x02\x03"),
    ("::1", b"\x04" + b"\x00" * 15 + b"\x01"),
])
def test_socks5_exchange(host, address):
    exchange = tunnel(parse_proxy("socks5://u:pw@p"), host, 443)
    assert exchange.data_to_send() == b"\x05\x02\x00\x02"
    assert exchange.receive_data(b"\x05\x02") is False
    assert exchange.data_to_send() == b"\x01\x01u\x02pw"
    assert exchange.receive_data(b"\x01\x00") is False
    assert exchange.data_to_send() == b"\x05\x01\x00" + address + b"\x01\xbb"
    assert exchange.receive_data(b"\x05\x00\x00\x01\x7f\x00") is False
    assert exchange.receive_data(b"\x00\x01\x04\x38") is True


def test_socks5_refusal_says_why():
    exchange = tunnel(parse_proxy("socks5://p"), "h", 80)
    assert exchange.data_to_send() == b"\x05\x01\x00"
    exchange.receive_data(b"\x05\x00")
    with pytest.raises(ConnectionError, match="connection refused"):
        exchange.receive_data(b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00")


# -- through a real HTTP proxy ----------------------------------------------------


def _proxied(server, client):
    """Whether the server saw the connection come from elsewhere than the
    client's own socket (that is, from the proxy)."""
    return server.remotes[-1][1] != client.sock.getsockname()[1]


def _echo(client):
    client.send("through")
    assert client.receive(timeout=WAIT) == "through"
    client.send(b"\x00" * 100_000)
    assert client.receive(timeout=WAIT) == b"\x00" * 100_000


def test_ws_through_http_proxy(harness, rt, tinyproxy, clean_env):
    server = WSServer(rt)
    try:
        client = greenws.Client.connect(f"ws://127.0.0.1:{server.port}/x",
                                        proxy=tinyproxy.url(), preset=rt.preset,
                                        open_timeout=WAIT)
        harness.connections.append(client)
        _echo(client)
        assert _proxied(server, client)
        assert server.requests[0].path == "/x"
        client.close()
    finally:
        server.stop()


def test_wss_through_http_proxy(harness, rt, tinyproxy, tls, clean_env):
    server_ctx, client_ctx = tls
    server = WSServer(rt, server_ctx)
    try:
        client = greenws.Client.connect(f"wss://127.0.0.1:{server.port}/",
                                        proxy=tinyproxy.url(), preset=rt.preset,
                                        ssl_context=client_ctx, open_timeout=WAIT)
        harness.connections.append(client)
        _echo(client)
        assert _proxied(server, client)
        client.close()
    finally:
        server.stop()


@pytest.mark.parametrize("auth, status", [
    ({"auth": False}, 407),                         # no credentials
    ({"password": "wrong"}, 401),                   # wrong ones
    ({}, 500),                                      # nothing on the port
])
def test_http_proxy_refusal_is_connection_error(rt, tinyproxy, clean_env, auth,
                                                status):
    closed = std_socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(ConnectionError) as info:
        greenws.Client.connect(f"ws://127.0.0.1:{port}/", preset=rt.preset,
                               proxy=tinyproxy.url(**auth), open_timeout=WAIT)
    exc = info.value
    assert exc.status_code == status
    assert b"tinyproxy" in exc.body
    assert "proxy" in str(exc)
    if status == 407:
        assert dict(exc.headers)["proxy-authenticate"].startswith("Basic")


@pytest.mark.parametrize("variable, scheme", [
    ("ws_proxy", "ws"), ("WS_PROXY", "ws"), ("http_proxy", "ws"),
    ("HTTP_PROXY", "ws"), ("https_proxy", "ws"), ("wss_proxy", "wss"),
    ("HTTPS_PROXY", "wss"),
])
def test_proxy_from_the_environment(harness, rt, tinyproxy, tls, clean_env,
                                    variable, scheme):
    server_ctx, client_ctx = tls
    server = WSServer(rt, server_ctx if scheme == "wss" else None)
    clean_env.setenv(variable, tinyproxy.url())
    try:
        client = greenws.Client.connect(f"{scheme}://127.0.0.1:{server.port}/",
                                        preset=rt.preset, ssl_context=client_ctx,
                                        open_timeout=WAIT)
        harness.connections.append(client)
        _echo(client)
        assert _proxied(server, client)
        client.close()
    finally:
        server.stop()


@pytest.mark.parametrize("how", ["no_proxy", "proxy=None"])
def test_environment_proxy_bypassed(harness, rt, tinyproxy, clean_env, how):
    server = WSServer(rt)
    # Wrong credentials: going through the proxy would fail with 401.
    clean_env.setenv("ws_proxy", tinyproxy.url(password="wrong"))
    options = {}
    if how == "no_proxy":
        clean_env.setenv("no_proxy", "localhost,127.0.0.1")
    else:
        options["proxy"] = None
    try:
        client = greenws.Client.connect(f"ws://127.0.0.1:{server.port}/",
                                        preset=rt.preset, open_timeout=WAIT,
                                        **options)
        harness.connections.append(client)
        _echo(client)
        assert not _proxied(server, client)
        client.close()
    finally:
        server.stop()
    clean_env.delenv("no_proxy", raising=False)
    with pytest.raises(ConnectionError) as info:  # and the proxy is really there
        greenws.Client.connect("ws://127.0.0.1:9/", preset=rt.preset,
                               open_timeout=WAIT)
    assert info.value.status_code == 401


# -- through a real SOCKS5 proxy --------------------------------------------------


@pytest.mark.parametrize("scheme, secure", [("socks5", False), ("socks5h", True)])
def test_through_socks5_proxy(harness, rt, socks5_proxy, tls, clean_env, scheme,
                              secure):
    server_ctx, client_ctx = tls
    server = WSServer(rt, server_ctx if secure else None)
    host = "localhost" if secure else "127.0.0.1"  # a name: the proxy resolves it
    try:
        client = greenws.Client.connect(
            f"{'wss' if secure else 'ws'}://{host}:{server.port}/",
            proxy=socks5_proxy.url(scheme=scheme), preset=rt.preset,
            ssl_context=client_ctx, open_timeout=WAIT,
        )
        harness.connections.append(client)
        _echo(client)
        assert _proxied(server, client)
        client.close()
    finally:
        server.stop()


@pytest.mark.parametrize("auth", [{"auth": False}, {"password": "wrong"}])
def test_socks5_refusal_is_connection_error(rt, socks5_proxy, clean_env, auth):
    with pytest.raises(ConnectionError, match="SOCKS5 proxy") as info:
        greenws.Client.connect("ws://127.0.0.1:9/", preset=rt.preset,
                               proxy=socks5_proxy.url(**auth), open_timeout=WAIT)
    assert info.value.status_code is None


# -- never blocks the hub, bounded by open_timeout --------------------------------


@pytest.mark.parametrize("kind", ["http", "socks5", "unix"])
def test_silent_proxy_or_socket_neither_blocks_the_hub_nor_outlasts_open_timeout(
        harness, rt, tmp_path, clean_env, kind):
    """A proxy (or Unix socket server) that accepts and never answers."""
    options = {}
    if kind == "unix":
        listener = rt.socket.socket(std_socket.AF_UNIX, std_socket.SOCK_STREAM)
        harness.sockets.append(listener)
        listener.bind(str(tmp_path / "silent.sock"))
        listener.listen(4)
        options["unix_socket"] = str(tmp_path / "silent.sock")
    else:
        listener = harness.listener()
        options["proxy"] = f"{kind}://127.0.0.1:{listener.getsockname()[1]}"
    ticks = []

    def ticker():
        while len(ticks) < 1000 and not done:
            ticks.append(time.monotonic())
            rt.sleep(0.01)

    done = False
    task = rt.spawn(ticker)
    harness.tasks.append(task)
    start = time.monotonic()
    try:
        with pytest.raises(ConnectionError, match="timed out") as info:
            greenws.Client.connect("ws://127.0.0.1:9/", preset=rt.preset,
                                   open_timeout=0.5, **options)
    finally:
        done = True
    elapsed = time.monotonic() - start
    assert 0.4 < elapsed < 0.5 + 2
    assert info.value.status_code is None
    # The hub ran the ticker all along (it would not tick while blocked).
    during = [t for t in ticks if start <= t <= start + elapsed]
    assert len(during) >= 10, len(during)


# -- monkey-patched runtimes, as a program would run --------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("runtime", ["gevent-patched", "eventlet-patched"])
@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_monkey_patched_program_through_proxy(request, tls, clean_env, runtime,
                                              kind):
    from conftest import Runtime

    proxy = request.getfixturevalue("tinyproxy" if kind == "http" else
                                    "socks5_proxy")
    server = WSServer(Runtime("threading"))
    try:
        out = subprocess.run(
            [sys.executable, str(APPS / "proxy_client.py"), runtime,
             f"ws://127.0.0.1:{server.port}/", proxy.url()],
            capture_output=True, timeout=30, env=dict(os.environ,
                                                      PYTHONWARNINGS="ignore"),
        )
        text = out.stdout.decode() + out.stderr.decode()
        assert out.returncode == 0, text
        result = json.loads(out.stdout.decode().strip().splitlines()[-1])
        assert (result["preset"], result["echo"]) == (runtime.split("-")[0], "hello")
        assert server.remotes[0][1] != result["local_port"], text
        assert "Traceback" not in text
    finally:
        server.stop()


def test_failed_connections_leave_no_socket_open(tinyproxy, socks5_proxy, tmp_path,
                                                 clean_env):
    """Every way of failing closes the socket it opened (an unclosed socket
    warns when collected)."""
    import gc
    import warnings

    silent = std_socket.create_server(("127.0.0.1", 0))
    attempts = [
        {"proxy": tinyproxy.url(auth=False)},                       # 407
        {"proxy": tinyproxy.url(password="wrong")},                  # 401
        {"proxy": socks5_proxy.url(password="wrong")},               # SOCKS5 auth
        {"proxy": f"http://127.0.0.1:{silent.getsockname()[1]}",     # timeout
         "open_timeout": 0.2},
        {"unix_socket": str(tmp_path / "missing.sock")},
        {"proxy": "http://" + "u" * 300 + ":p@127.0.0.1:9"},  # fine for HTTP
    ]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            for options in attempts:
                options.setdefault("open_timeout", WAIT)
                with pytest.raises(ConnectionError):
                    greenws.Client.connect("ws://127.0.0.1:9/", **options)
            with pytest.raises(ValueError):  # refused before connecting
                greenws.Client.connect("ws://127.0.0.1:9/",
                                       proxy="socks5://" + "u" * 300 + ":p@h:1")
            gc.collect()
    finally:
        silent.close()
    # Sockets only: gc.collect() may also finalise another test's leftovers.
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)
             and "socket" in str(w.message)]
    assert not leaks, [str(w.message) for w in leaks]
