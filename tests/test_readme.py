"""The README's code runs: each of its Python blocks is a test's input.

Every ```` ```python ```` block of README.md has a marker on the line before
it, ``<!-- example: NAME -->`` (an HTML comment, invisible on GitHub and
PyPI).  The tests take the blocks from README.md itself, so the README and
what is tested cannot drift, and :func:`test_every_readme_example_runs`
fails for a block without a marker or a marker no test runs.

To add an example, put a marker before its block, then: a server script
gets an entry in :data:`SCRIPTS` (how to point it at a free port); a WSGI
app an entry in :func:`app_modules` (and :data:`ONLY_ON` if it runs on some
servers only) and a test taking the ``host`` fixture, decorated with
``@runs("NAME")``.

How a block runs depends on what it is:

* server scripts (eventlet.wsgi, gevent.pywsgi, Flask's ``app.run()``) are
  written to a temporary directory next to the README's ``myapp.py`` and run
  as they are, with the README's port 8000 replaced by a free one; a
  ``websockets`` client and the README's client example drive them;
* WSGI apps are modules that real hosting servers serve, through
  ``tests/apps/readme_app.py``, which mounts each under ``/NAME/`` and says
  when each call has ended, so that the test reads the server's log only
  once the server is done;
* blocks that use names from their surroundings (``handler``,
  ``valid_session``) get a prelude that defines them; blocks that list
  alternatives (``presets``, ``migrating``) have each statement run where it
  belongs: ``Server.accept(environ, ...)`` in a WSGI app, one statement per
  request, and ``Client.connect(url, ...)`` in a client script.

No server running a README example may log a traceback, a 500 or "Error".
"""

from __future__ import annotations

import ast
import functools
import json
import re
import socket
import struct
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Set, Tuple, TypeVar

import pytest
from rawws import RawClient, close_frame, frame
from servers import (
    BAD_LOG,
    ROOT,
    HostedServer,
    Proc,
    check_log,
    free_port,
    serving,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

pytestmark = pytest.mark.timeout(60)

README = ROOT / "README.md"
MARKER = re.compile(r"<!-- example: (\w+) -->")

#: What no server running a README example may log; ``raised greenws.errors.``
#: is readme_app.py saying that a greenws exception escaped an example app.
README_BAD_LOG = re.compile(BAD_LOG.pattern + r"|Error|raised greenws\.errors\.")


# --------------------------------------------------------------------------
# The README's blocks, and which tests run them
# --------------------------------------------------------------------------


def readme_examples(text: str) -> Dict[str, str]:
    """Each ```` ```python ```` block of ``text`` by its marker's name.

    Raises :class:`ValueError` for a Python block without a marker, a marker
    not directly followed by a Python block, or a name used twice.
    """
    examples: Dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        marker = MARKER.fullmatch(fence)
        if marker:
            if i + 1 >= len(lines) or lines[i + 1].strip() != "```python":
                raise ValueError(
                    f"README.md:{i + 1}: marker {marker.group(1)!r} is not "
                    "directly followed by a ```python block"
                )
        elif fence.startswith("```"):
            try:
                end = next(
                    j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"
                )
            except StopIteration:
                raise ValueError(f"README.md:{i + 1}: code block never closed")
            if fence[3:].strip() in ("python", "py", "python3"):
                named = MARKER.fullmatch(lines[i - 1].strip()) if i else None
                if named is None:
                    raise ValueError(
                        f"README.md:{i + 1}: Python block without an "
                        "<!-- example: NAME --> marker on the line before it"
                    )
                if named.group(1) in examples:
                    raise ValueError(
                        f"README.md:{i}: example {named.group(1)!r} named twice"
                    )
                examples[named.group(1)] = "\n".join(lines[i + 1 : end]) + "\n"
            i = end
        i += 1
    return examples


@functools.cache
def _examples() -> Dict[str, str]:
    return readme_examples(README.read_text(encoding="utf-8"))


def example(name: str) -> str:
    """The code of README example ``name``."""
    return _examples()[name]


#: The README examples some test runs (filled by :func:`runs` at import).
RUN: Set[str] = set()

_Test = TypeVar("_Test", bound=Callable[..., None])


def runs(*names: str) -> Callable[[_Test], _Test]:
    """Declare that the decorated test runs README examples ``names``."""
    RUN.update(names)
    return lambda test: test


def test_every_readme_example_runs() -> None:
    names = set(_examples())
    assert not names - RUN, f"README examples no test runs: {sorted(names - RUN)}"
    assert not RUN - names, f"tests run examples not in README: {sorted(RUN - names)}"


def test_unmarked_or_misplaced_blocks_are_refused() -> None:
    good = "<!-- example: a -->\n```python\nx = 1\n```\n\n```sh\nls\n```\n"
    assert readme_examples(good) == {"a": "x = 1\n"}
    for bad in (
        "```python\nx = 1\n```\n",
        "<!-- example: a -->\n\n```python\nx = 1\n```\n",
        "<!-- example: a -->\n```sh\nls\n```\n",
        good + "<!-- example: a -->\n```python\ny = 2\n```\n",
    ):
        with pytest.raises(ValueError):
            readme_examples(bad)


def replace_once(source: str, old: str, new: str) -> str:
    """``source`` with ``old`` replaced; fails unless it occurs exactly once."""
    assert source.count(old) == 1, f"expected {old!r} once in:\n{source}"
    return source.replace(old, new)


# --------------------------------------------------------------------------
# How fragments are completed
# --------------------------------------------------------------------------

#: Defines what the README's app fragments take from their surroundings.
HANDLER_PRELUDE = '''\
import greenws


def handler(ws):
    """Send the agreed subprotocol ("-" for none), then echo."""
    ws.send(ws.subprotocol or "-")
    for message in ws:
        ws.send(message)


def valid_session(cookie):
    return cookie == "session=valid"


'''

#: A flask-sock app after the README's drop-in imports.
DROPIN_EPILOGUE = '''

app = Flask(__name__)
sock = Sock(app)


@sock.route("/")
def echo(ws):
    ws.send(type(ws).__module__)    # which simple_websocket flask-sock got
    while True:
        ws.send(ws.receive())
'''

#: The README's presets block names ``MyEvent`` (and runs under gevent).
PRESETS_SERVER_PRELUDE = '''\
import gevent.event
import greenws


class MyEvent(gevent.event.Event):
    """An event class of the application's own."""
'''

#: Its clients run in an eventlet program that is not monkey-patched.
PRESETS_CLIENT_PRELUDE = "import eventlet  # noqa: F401\nimport greenws\n"


def split_alternatives(block: str) -> Tuple[str, List[str], List[str]]:
    """A block of alternatives: its imports, its ``Server.accept()``
    statements and its ``Client.connect()`` statements."""
    lines = block.splitlines()
    imports, servers, clients = [], [], []
    for node in ast.parse(block).body:
        text = "\n".join(lines[node.lineno - 1 : node.end_lineno])
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(text)
        elif "Server.accept(" in text:
            servers.append(text)
        elif "Client.connect(" in text:
            clients.append(text)
        else:
            raise ValueError(f"neither Server.accept() nor Client.connect():\n{text}")
    return "\n".join(imports), servers, clients


def _branches(statements: List[str], indent: str) -> str:
    """``if which == 0: <statement 0> elif which == 1: ...`` as source."""
    return "".join(
        f"{indent}{'el' if n else ''}if which == {n}:\n"
        + textwrap.indent(statement, indent + "    ")
        + "\n"
        for n, statement in enumerate(statements)
    )


def alternatives_app(prelude: str, imports: str, statements: List[str]) -> str:
    """A WSGI app running ``Server.accept()`` statement N (the query string).

    It sends what the connection is made of as JSON, then echoes.
    """
    return f'''{prelude}
{imports}
import json

import greenws


def app(environ, start_response):
    which = int(environ["QUERY_STRING"])
{_branches(statements, "    ")}
    with ws:
        ws.send(json.dumps({{
            "class": type(ws).__module__ + "." + type(ws).__name__,
            "preset": ws.preset.name,
            "event_class": ws.event_class.__name__,
        }}))
        try:
            for message in ws:
                ws.send(message)
        except greenws.ConnectionClosed:
            pass
    return greenws.end_response(ws.mode, start_response)
'''


def alternatives_client(prelude: str, imports: str, statements: List[str]) -> str:
    """A script running each ``Client.connect()`` statement against an echo
    server (``argv[1]``) and printing what it is made of as JSON."""
    return f'''import json
import sys

{prelude}
{imports}

url = sys.argv[1]
for which in range({len(statements)}):
{_branches(statements, "    ")}
    with ws:
        ws.send("hello")
        print(json.dumps({{
            "class": type(ws).__module__ + "." + type(ws).__name__,
            "preset": ws.preset.name,
            "echo": ws.receive(timeout=10),
        }}), flush=True)
'''


def run_client(script: Path, *args: str) -> str:
    """Run a client script to its end; its standard output."""
    result = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True, text=True, timeout=30, cwd=str(script.parent),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# --------------------------------------------------------------------------
# README apps on real hosting servers
# --------------------------------------------------------------------------

#: Hosting servers every README app runs on (one process each, shared).
HOSTS = ["werkzeug", "gunicorn-sync", "gunicorn-gthread", "gunicorn-gevent",
         "eventlet", "gevent"]
#: Apps that only run on some of them.
ONLY_ON = {
    "presets": ["gunicorn-gevent", "gevent"],  # it names presets.GEVENT
    # flask-sock's servers, as the README lists them.
    "dropin": ["werkzeug", "gunicorn-sync", "gunicorn-gthread", "gunicorn-gevent"],
    # Sets up logging for its whole process: served alone, by its test.
    "logging_setup": [],
    # Two clients at once: not on gunicorn's single sync worker.
    "rooms": [host for host in HOSTS if host != "gunicorn-sync"],
}


def app_modules() -> Dict[str, str]:
    """Every README example that is (or makes) a WSGI app, as module source."""
    presets = split_alternatives(example("presets"))
    migrating = split_alternatives(example("migrating"))
    return {
        "myapp": example("myapp"),
        "accept_yourself": example("accept_yourself"),
        "flask_view": example("flask_view"),
        "prefer_v2": HANDLER_PRELUDE + example("prefer_v2"),
        "origins": HANDLER_PRELUDE + example("origins"),
        "logged_in_only": HANDLER_PRELUDE + example("logged_in_only"),
        "presets": alternatives_app(PRESETS_SERVER_PRELUDE, presets[0], presets[1]),
        "migrating": alternatives_app("", migrating[0], migrating[1]),
        "dropin": example("dropin") + DROPIN_EPILOGUE,
        # Logging set up as the README says, for myapp.
        "logging_setup": example("logging_setup") + "\nfrom myapp import app\n",
        "rooms": example("rooms"),
    }


class ReadmeServer(HostedServer):
    """A hosting server serving README apps through tests/apps/readme_app.py."""

    def __init__(self, kind: str, directory: Path, names: List[str]) -> None:
        env = {"README_DIR": str(directory), "README_APPS": ",".join(names)}
        super().__init__(kind, env, module="readme_app")
        self._checked = 0

    def url_of(self, name: str, rest: str = "") -> str:
        return f"{self.url}/{name}/{rest}"

    def settle(self) -> str:
        """Wait until every call has ended; fail if the server logged an
        error since the last check.  Returns the output since then."""
        output = self.wait_for_output(
            lambda out: out.count("wsgi call started:") == out.count("wsgi call ended:")
        )
        new, self._checked = output[self._checked :], len(output)
        check_log(new, self.kind, README_BAD_LOG)
        return new


@pytest.fixture(scope="module")
def readme_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("readme")
    for name, source in app_modules().items():
        (directory / f"{name}.py").write_text(source)
    return directory


@pytest.fixture(scope="module", params=HOSTS)
def served(request: pytest.FixtureRequest, readme_dir: Path):
    kind = request.param
    names = [name for name in app_modules() if kind in ONLY_ON.get(name, HOSTS)]
    server = ReadmeServer(kind, readme_dir, names)
    try:
        yield server
    finally:
        server.settle()
        server.stop_and_check(README_BAD_LOG)


@pytest.fixture
def host(served: ReadmeServer):
    """The shared server; after the test, its log must be clean."""
    yield served
    served.settle()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def echo_round_trip(url: str, code: int = 1000, **options) -> None:
    """Text and binary come back; then close with ``code``."""
    with ws_connect(url, open_timeout=10, **options) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=10) == "héllo"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=10) == b"\x00\xff"
        ws.close(code)


@runs("rooms")
@pytest.mark.parametrize("served", ONLY_ON["rooms"], indirect=True)
def test_rooms(host: ReadmeServer) -> None:
    """Two clients in one room: each gets what the other says."""
    url = host.url_of("rooms", "?readme")
    with ws_connect(url, open_timeout=10) as bob:
        bob.send("bob is in")
        assert bob.recv(timeout=10) == "bob is in"  # so bob has joined
        with ws_connect(url, open_timeout=10) as alice:
            alice.send("hello")
            assert alice.recv(timeout=10) == "hello"
            assert bob.recv(timeout=10) == "hello"
            bob.send(b"\x00bytes")
            assert alice.recv(timeout=10) == b"\x00bytes"


@runs("myapp")
def test_myapp(host: ReadmeServer) -> None:
    echo_round_trip(host.url_of("myapp"))
    # "Plain HTTP requests go to fallback, or get 426 Upgrade Required"
    assert http_status(host.http_url + "/myapp/") == 426


@runs("accept_yourself")
def test_accept_yourself_survives_any_close(host: ReadmeServer) -> None:
    """Whatever way the client leaves, the call ends cleanly: no traceback,
    no 500 (readme_app.py reports a ConnectionClosed escaping the app)."""
    url = host.url_of("accept_yourself")
    for code in (1000, 1001, 1011, 4000):
        echo_round_trip(url, code)
    for linger in (False, True):  # a FIN, then a RST
        raw = RawClient(host.port, "/accept_yourself/")
        assert raw.status == 101
        raw.send(frame(0x1, b"hi"))
        assert raw.read_frame() == (0x1, True, b"hi")
        if linger:
            raw.sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        raw.close()
    # The refusal is the 4xx answer.
    assert http_status(host.http_url + "/accept_yourself/") == 426
    host.settle()


@runs("flask_view")
def test_flask_view(host: ReadmeServer) -> None:
    """A Flask view that returns "" after the WebSocket: nothing follows our
    Close frame on the wire, and no error or 500 is logged."""
    url = host.url_of("flask_view", "echo")
    for code in (1000, 1001, 4000):
        echo_round_trip(url, code)
    raw = RawClient(host.port, "/flask_view/echo")
    assert raw.status == 101
    raw.send(frame(0x1, b"hi"))
    assert raw.read_frame() == (0x1, True, b"hi")
    raw.send(close_frame(1000))
    assert raw.read_until_eof() == b"\x88\x02\x03\xe8"
    raw.close()
    host.settle()


def refusal(url: str, **options) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, open_timeout=10, **options)
    return refused.value


@runs("prefer_v2")
def test_prefer_v2(host: ReadmeServer) -> None:
    url = host.url_of("prefer_v2")
    for offered, chosen in ((["chat.v1", "chat.v2"], "chat.v2"), (["chat.v1"], None)):
        with ws_connect(url, subprotocols=offered, open_timeout=10) as ws:
            assert ws.subprotocol == chosen
            assert ws.recv(timeout=10) == (chosen or "-")


@runs("origins")
def test_origins(host: ReadmeServer) -> None:
    url = host.url_of("origins")
    with ws_connect(url, origin="https://chat.example.com", open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "-"
        ws.send("ok")
        assert ws.recv(timeout=10) == "ok"
    for origin in ("https://evil.example", None):
        assert refusal(url, origin=origin).response.status_code == 403


@runs("logged_in_only")
def test_logged_in_only(host: ReadmeServer) -> None:
    url = host.url_of("logged_in_only")
    refused = refusal(url, additional_headers={"Cookie": "session=stolen"})
    assert refused.response.status_code == 401
    assert refused.response.headers["WWW-Authenticate"] == "Cookie"
    assert refused.response.body.strip() == b"login required"
    cookie = {"Cookie": "session=valid"}
    with ws_connect(url, additional_headers=cookie, open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "-"
        ws.send("in")
        assert ws.recv(timeout=10) == "in"


def accepted_as(url: str) -> dict:
    """What the alternatives app says the connection is made of; it echoes."""
    with ws_connect(url, open_timeout=10) as ws:
        made_of = json.loads(ws.recv(timeout=10))
        ws.send("still echoes")
        assert ws.recv(timeout=10) == "still echoes"
    return dict(made_of)


@runs("presets")
@pytest.mark.parametrize("served", ONLY_ON["presets"], indirect=True)
def test_presets_server(host: ReadmeServer) -> None:
    statements = split_alternatives(example("presets"))[1]
    assert len(statements) >= 2
    for which, statement in enumerate(statements):
        made_of = accepted_as(host.url_of("presets", f"?{which}"))
        assert made_of["preset"] == "gevent", statement
        expected = "MyEvent" if "MyEvent" in statement else "Event"
        assert made_of["event_class"] == expected, statement


@runs("presets")
@pytest.mark.parametrize("served", ["gevent"], indirect=True)
def test_presets_client(host: ReadmeServer, tmp_path: Path) -> None:
    imports, _, statements = split_alternatives(example("presets"))
    script = tmp_path / "presets_client.py"
    script.write_text(alternatives_client(PRESETS_CLIENT_PRELUDE, imports, statements))
    assert len(statements) >= 2
    lines = run_client(script, host.url_of("myapp")).splitlines()
    assert [json.loads(line) for line in lines] == [
        {"class": "greenws.client.Client", "preset": "eventlet", "echo": "hello"}
    ] * len(statements)


@runs("migrating")
def test_migrating_server(host: ReadmeServer) -> None:
    statements = split_alternatives(example("migrating"))[1]
    assert statements
    for which in range(len(statements)):
        made_of = accepted_as(host.url_of("migrating", f"?{which}"))
        assert made_of["class"] == "greenws.server.Server"


@runs("migrating")
@pytest.mark.parametrize("served", ["werkzeug"], indirect=True)
def test_migrating_client(host: ReadmeServer, tmp_path: Path) -> None:
    imports, _, statements = split_alternatives(example("migrating"))
    script = tmp_path / "migrating_client.py"
    script.write_text(alternatives_client("", imports, statements))
    assert statements
    lines = run_client(script, host.url_of("myapp")).splitlines()
    assert [json.loads(line) for line in lines] == [
        {"class": "greenws.client.Client", "preset": "threading", "echo": "hello"}
    ] * len(statements)


@runs("dropin")
@pytest.mark.parametrize("served", ONLY_ON["dropin"], indirect=True)
def test_dropin_flask_sock(host: ReadmeServer) -> None:
    with ws_connect(host.url_of("dropin"), open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "greenws.server"
        ws.send("via flask-sock")
        assert ws.recv(timeout=10) == "via flask-sock"


@runs("logging_setup")
def test_logging_setup(readme_dir: Path) -> None:
    server = ReadmeServer("gevent", readme_dir, ["logging_setup"])
    try:
        url = server.url_of("logging_setup")
        echo_round_trip(url, 1000)
        echo_round_trip(url, 1011)
        output = server.settle()
    finally:
        server.stop_and_check(README_BAD_LOG)
    lines = output.splitlines()
    # Opening and normal closes at DEBUG, abnormal ends at INFO.
    assert sum("DEBUG:greenws:Server open" in line for line in lines) == 2, output
    assert any(
        line.startswith("DEBUG:greenws:Server closed") and ": 1000" in line
        for line in lines
    ), output
    assert any(
        line.startswith("INFO:greenws:Server closed") and ": 1011" in line
        for line in lines
    ), output


# --------------------------------------------------------------------------
# README server scripts, and the README's client against each
# --------------------------------------------------------------------------

#: Server scripts: how each is pointed at a free port instead of 8000.
SCRIPTS: Dict[str, Tuple[str, str]] = {
    "eventlet_wsgi": ("8000", "{port}"),
    "gevent_patched": ("8000", "{port}"),
    "gevent_unpatched": ("8000", "{port}"),
    "flask_app": ("app.run()", "app.run(port={port})"),
}


@runs(*SCRIPTS, "myapp", "client")
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_server_script(name: str, tmp_path: Path) -> None:
    port = free_port()
    old, new = SCRIPTS[name]
    (tmp_path / "myapp.py").write_text(example("myapp"))
    script = tmp_path / f"{name}.py"
    script.write_text(replace_once(example(name), old, new.format(port=port)))
    client = tmp_path / "client.py"
    client.write_text(
        replace_once(example("client"), "ws://127.0.0.1:8000/", f"ws://127.0.0.1:{port}/")
    )
    with serving([script.name], port, cwd=tmp_path) as proc:
        echo_round_trip(f"ws://127.0.0.1:{port}/")
        if name == "flask_app":
            url = f"http://127.0.0.1:{port}/"
            with urllib.request.urlopen(url, timeout=10) as page:
                assert page.read() == b"<h1>hello</h1>"
        out = run_client(client).splitlines()
        assert out[0] == "hello", out
        assert re.fullmatch(r"round trip: \d+\.\d ms", out[1]), out
        check_log(proc.output(), name, README_BAD_LOG)


# --------------------------------------------------------------------------
# asyncio
# --------------------------------------------------------------------------


def aio_client_for(tmp_path: Path, url: str) -> Path:
    client = tmp_path / "aio_client.py"
    client.write_text(replace_once(example("aio_client"), "ws://127.0.0.1:8004/", url))
    return client


def check_aio_client(client: Path) -> None:
    out = run_client(client).splitlines()
    assert out[0] == "hello", out
    assert re.fullmatch(r"round trip: \d+\.\d ms", out[1]), out


@runs("aio_aiohttp", "aio_client")
def test_aio_aiohttp_and_client(tmp_path: Path) -> None:
    port = free_port()
    script = tmp_path / "aio_aiohttp.py"
    script.write_text(replace_once(example("aio_aiohttp"), "port=8002", f"port={port}"))
    with serving([script.name], port, cwd=tmp_path) as proc:
        url = f"ws://127.0.0.1:{port}/echo"
        echo_round_trip(url)
        check_aio_client(aio_client_for(tmp_path, url))
        check_log(proc.output(), "aio_aiohttp", README_BAD_LOG)


@runs("aio_asgi")
def test_aio_asgi_under_uvicorn(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "aio_asgi.py").write_text(example("aio_asgi"))
    args = ["-m", "uvicorn", "aio_asgi:app", "--port", str(port)]
    with serving(args, port, cwd=tmp_path) as proc:
        url = f"ws://127.0.0.1:{port}/"
        for code in (1000, 4000):
            echo_round_trip(url, code)
        check_aio_client(aio_client_for(tmp_path, url))
        check_log(proc.output(), "aio_asgi", README_BAD_LOG)


@runs("aio_sock")
def test_aio_sock_fragment_is_the_tested_example() -> None:
    """The plain-asyncio fragment is the accept call of examples/aio_sock.py,
    which tests/test_aio_servers.py runs."""
    squeeze = " ".join
    source = (ROOT / "examples" / "aio_sock.py").read_text()
    assert squeeze(example("aio_sock").split()) in squeeze(source.split())


@runs("close_on_signals")
def test_close_on_signals_under_eventlet(tmp_path: Path) -> None:
    """The Deployment section's eventlet.wsgi lines: SIGTERM closes the
    open WebSocket with 1001 before the process ends."""
    import signal

    port = free_port()
    (tmp_path / "myapp.py").write_text(example("myapp"))
    prelude = (
        "import eventlet\neventlet.monkey_patch()\n"
        "import eventlet.wsgi\nimport greenws\nfrom myapp import app\n"
    )
    script = tmp_path / "signals.py"
    block = replace_once(example("close_on_signals"), "8000", str(port))
    script.write_text(prelude + block)
    with serving([script.name], port, cwd=tmp_path) as proc:
        with ws_connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
            ws.send("before")
            assert ws.recv(timeout=10) == "before"
            proc.popen.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
        assert ws.close_code == 1001
        proc.popen.wait(10)


# --------------------------------------------------------------------------
# The client over a Unix socket and through a proxy
# --------------------------------------------------------------------------


@runs("client_unix")
def test_client_unix_against_gunicorn(tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    server = HostedServer("gunicorn-gthread", unix=path)
    try:
        client = tmp_path / "client_unix.py"
        client.write_text(replace_once(example("client_unix"), "/run/app.sock", path))
        assert run_client(client).splitlines() == ["over a Unix socket"]
    finally:
        server.stop_and_check()


@runs("client_proxy")
def test_client_proxy_through_tinyproxy(tmp_path: Path, tinyproxy) -> None:
    server = HostedServer("gunicorn-gthread")
    try:
        code = replace_once(example("client_proxy"), "ws://127.0.0.1:8000/",
                            f"ws://127.0.0.1:{server.port}/")
        for password, expected in ((tinyproxy.PASSWORD, "through the proxy"),
                                   ("wrong", "refused: 401")):
            client = tmp_path / "client_proxy.py"
            client.write_text(replace_once(
                code, "http://user:secret@127.0.0.1:3128",
                tinyproxy.url(user=tinyproxy.USER, password=password)))
            assert run_client(client).splitlines() == [expected]
    finally:
        server.stop_and_check()


# Reconnecting
# --------------------------------------------------------------------------


@runs("reconnecting")
def test_reconnecting(tmp_path: Path) -> None:
    """The example waits out a server answering 503, reconnects once one
    that works listens on the port, and ends on its 1000 close."""
    port = free_port()
    source = replace_once(
        example("reconnecting"), '"ws://127.0.0.1:8000/"', f'"ws://127.0.0.1:{port}/bye"'
    )
    source = replace_once(source, "max_delay=30", "initial_delay=0.05, max_delay=0.2")
    (tmp_path / "reconnecting.py").write_text(source)
    app = {"module": "reconnect_app", "port": port}
    refusing = HostedServer("gevent", env={"GREENWS_TEST_STATUS": "503"}, **app)
    client = Proc(["reconnecting.py"], cwd=tmp_path)
    try:
        refusing.wait_for_output(lambda out: out.count('" 503 ') >= 2)
        refusing.stop_and_check()
        server = HostedServer("gevent", **app)
        try:
            assert client.popen.wait(30) == 0, client.output()
            output = client.output()
        finally:
            server.stop_and_check(README_BAD_LOG)
    finally:
        client.kill()
        refusing.stop()
    assert output.splitlines() == [
        str(server.proc.pid), "subscribe", "the server closed with 1000"
    ]
