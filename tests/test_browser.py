"""The chat example in a real browser: headless Chromium, two tabs.

``examples/chat/run.py`` (gunicorn with a gevent worker, what ``make demo``
runs) serves the page; Chromium is driven over the DevTools protocol with the
``websockets`` library's sync client, so no browser-automation package is
needed.  Two tabs join the room under different names (and a greenws.Client
joins too); what is typed in one tab shows up in the other tab's DOM.

Chromium is Debian's ``chromium`` package.  When it is missing, the
``chromium`` fixture installs it with apt-get (as root) and skips the test
only if that fails.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest
from websockets.sync.client import connect as ws_connect

import greenws

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
APT_TIMEOUT = 300  # seconds for apt-get update + install on a fresh machine
WAIT = 15.0  # upper bound of every wait on the browser or the server

pytestmark = pytest.mark.timeout(APT_TIMEOUT + 120)


def _which_browser() -> Optional[str]:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _install_chromium() -> str:
    """apt-get install chromium; returns why it failed ('' on success)."""
    if not shutil.which("apt-get"):
        return "no apt-get on this machine"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "not root, cannot apt-get install chromium"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    deadline = time.monotonic() + APT_TIMEOUT
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
    ):
        try:
            result = subprocess.run(
                cmd, env=env, capture_output=True, text=True,
                timeout=max(deadline - time.monotonic(), 1),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(cmd)} failed: {exc}"
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip()[-800:]
            return f"{' '.join(cmd)} exited with {result.returncode}:\n{tail}"
    return ""


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a Chromium binary, installed from Debian's package if missing."""
    path = _which_browser()
    if path is None:
        problem = _install_chromium()
        path = _which_browser()
        if path is None:
            pytest.skip(
                "headless Chromium is needed and could not be installed "
                f"(apt-get install chromium): {problem or 'no binary after install'}"
            )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A subprocess in its own session, output to a file, killed as a group."""

    def __init__(self, args: List[str], cwd: Optional[str] = None) -> None:
        self.log = tempfile.TemporaryFile()
        self.popen = subprocess.Popen(
            args, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"),
            start_new_session=True,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
            except ProcessLookupError:  # pragma: no cover - exited meanwhile
                pass
        # Children that outlived their leader (renderers, gunicorn's worker).
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()


def wait_until(
    check: Callable[[], Any], what: str, timeout: float = WAIT,
    context: Callable[[], str] = lambda: "",
) -> Any:
    """Poll ``check()`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{context()}")
        time.sleep(0.05)  # polling another process: there is no event to await


class DevTools:
    """The DevTools protocol over one browser-level WebSocket (flat sessions)."""

    def __init__(self, url: str) -> None:
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            ws_connect(url, max_size=None, open_timeout=WAIT, compression=None)
        )
        self.next_id = 0
        self.exceptions: List[Dict[str, Any]] = []

    def call(self, method: str, session: Optional[str] = None, **params: Any) -> Any:
        self.next_id += 1
        message: Dict[str, Any] = {"id": self.next_id, "method": method,
                                   "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + WAIT
        while True:
            reply = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(),
                                                        0.01)))
            if reply.get("method") == "Runtime.exceptionThrown":
                self.exceptions.append(reply["params"]["exceptionDetails"])
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def close(self) -> None:
        self._stack.close()


class Tab:
    """One page, attached through its own session."""

    def __init__(self, devtools: DevTools, url: str) -> None:
        self.dt = devtools
        target = devtools.call("Target.createTarget", url="about:blank",
                               newWindow=True)
        self.session = devtools.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )["sessionId"]
        self.call("Runtime.enable")
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def call(self, method: str, **params: Any) -> Any:
        return self.dt.call(method, self.session, **params)

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def log_lines(self) -> List[str]:
        return self.js("[...document.querySelectorAll('#log p')]"
                       ".map(p => p.textContent)") or []

    def status(self) -> str:
        return self.js("document.getElementById('status').textContent") or ""

    def type_into(self, element_id: str, text: str) -> None:
        """Focus the field, type ``text`` and press Enter (submits its form)."""
        self.js(f"document.getElementById({json.dumps(element_id)}).focus()")
        self.call("Input.insertText", text=text)
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key="Enter",
                      code="Enter", windowsVirtualKeyCode=13,
                      nativeVirtualKeyCode=13,
                      **({"text": "\r"} if kind == "keyDown" else {}))

    def describe(self) -> str:
        return f"status={self.status()!r} log={self.log_lines()!r}"


def launch(chromium: str, profile: str) -> Proc:
    return Proc([
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank",
    ])


def devtools_url(browser: Proc, profile: str) -> str:
    """The browser's DevTools WebSocket URL, from the DevToolsActivePort file."""
    active = Path(profile) / "DevToolsActivePort"

    def read() -> Optional[str]:
        if browser.popen.poll() is not None:
            pytest.fail(f"chromium exited with {browser.popen.returncode}:\n"
                        + browser.output()[-3000:])
        try:
            lines = active.read_text().split()
        except OSError:
            return None
        return f"ws://127.0.0.1:{lines[0]}{lines[1]}" if len(lines) >= 2 else None

    return wait_until(read, "Chromium's DevTools port", 30,
                      lambda: browser.output()[-3000:])


def png_size(data: bytes) -> tuple:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    assert data[12:16] == b"IHDR"
    return struct.unpack("!II", data[16:24])


def test_chat_in_two_chromium_tabs(chromium, tmp_path):
    port = free_port()
    base = f"127.0.0.1:{port}"
    server = Proc([sys.executable, str(EXAMPLES / "chat" / "run.py"),
                   "--server", "gunicorn", "--port", str(port)],
                  cwd=str(EXAMPLES.parent))
    profile = tempfile.mkdtemp(prefix="greenws-chromium-")
    browser: Optional[Proc] = None
    devtools: Optional[DevTools] = None
    carol: Optional[greenws.Client] = None
    try:
        def listening() -> bool:
            if server.popen.poll() is not None:
                pytest.fail("chat server exited:\n" + server.output())
            try:
                with urllib.request.urlopen(f"http://{base}/", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(listening, "the chat server", 30, server.output)

        browser = launch(chromium, profile)
        devtools = DevTools(devtools_url(browser, profile))
        version = devtools.call("Browser.getVersion")
        assert "Chrome" in version["product"] or "Chromium" in version["product"]

        alice = Tab(devtools, f"http://{base}/")
        bob = Tab(devtools, f"http://{base}/")
        for tab in (alice, bob):
            wait_until(lambda tab=tab: tab.js(
                "document.readyState === 'complete' && "
                "document.title === 'greenws chat'"), "the chat page to load")

        def joined(tab: Tab, who: str) -> Callable[[], bool]:
            return lambda: any(line.startswith(f"{who} joined")
                               for line in tab.log_lines())

        alice.type_into("name", "alice")
        wait_until(lambda: alice.status() == "Connected.", "alice to connect",
                   context=alice.describe)
        wait_until(joined(alice, "alice"), "alice's own join", context=alice.describe)
        bob.type_into("name", "bob")
        wait_until(lambda: bob.status() == "Connected.", "bob to connect",
                   context=bob.describe)
        # Once alice's page shows bob joining, both are in the room.
        wait_until(joined(alice, "bob"), "alice to see bob join",
                   context=alice.describe)

        alice.type_into("text", "hello from alice")
        wait_until(lambda: "alice: hello from alice" in bob.log_lines(),
                   "alice's message in bob's tab", context=bob.describe)
        assert alice.js("document.getElementById('text').value") == ""

        bob.type_into("text", "hi alice, bob here")
        wait_until(lambda: "bob: hi alice, bob here" in alice.log_lines(),
                   "bob's message in alice's tab", context=alice.describe)

        # A greenws.Client in the same room: the browsers see it, and it them.
        carol = greenws.Client.connect(f"ws://{base}/ws?name=carol",
                                       open_timeout=WAIT)
        wait_until(joined(bob, "carol"), "bob to see carol join",
                   context=bob.describe)
        carol.send("carol, from Python")
        for tab in (alice, bob):
            wait_until(lambda tab=tab: "carol: carol, from Python"
                       in tab.log_lines(), "carol's message in a tab",
                       context=tab.describe)
        alice.type_into("text", "welcome carol")
        deadline = time.monotonic() + WAIT
        while True:
            message = carol.receive(timeout=max(deadline - time.monotonic(), 0))
            assert message is not None, "carol never got alice's message"
            event = json.loads(message)
            if event.get("type") == "message" and event["name"] == "alice":
                assert event["text"] == "welcome carol"
                break
        carol.close()
        wait_until(lambda: any(line.startswith("carol left")
                               for line in alice.log_lines()),
                   "alice to see carol leave", context=alice.describe)

        shot = base64.b64decode(alice.call("Page.captureScreenshot",
                                           format="png")["data"])
        path = tmp_path / "chat.png"
        path.write_bytes(shot)
        if os.environ.get("GREENWS_SCREENSHOT"):  # keep it to look at
            shutil.copyfile(path, os.environ["GREENWS_SCREENSHOT"])
        width, height = png_size(path.read_bytes())
        assert width > 0 and height > 0 and path.stat().st_size > 1000

        assert devtools.exceptions == [], devtools.exceptions
        assert alice.status() == bob.status() == "Connected."
    finally:
        if carol is not None:
            carol.close()
        if devtools is not None:
            try:
                devtools.call("Browser.close")
            except Exception:  # noqa: BLE001 - the browser may already be gone
                pass
            devtools.close()
        if browser is not None:
            browser.stop()
        server.stop()
        shutil.rmtree(profile, ignore_errors=True)
