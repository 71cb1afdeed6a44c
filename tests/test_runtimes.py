"""Every runtime, monkey-patched and not, as a separate program.

The unit tests run all three presets side by side in one unpatched
process; a user's program is patched (or not) from its first line.  Here a
greenws Client runs in a subprocess under each runtime while the test,
a raw server, talks to it as the application is busy elsewhere: the ping
must be answered at once, the messages kept in order, the Close answered.
(The server role, under the same runtimes, is tests/test_views.py's
``test_peer_served_while_the_handler_is_busy`` on every hosting server.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawPeer,
    Runtime,
    close_payload,
    read_http_head,
    response_101,
)

APPS = Path(__file__).parent / "apps"

RUNTIMES = [
    "threading",
    "gevent",
    "gevent-patched",
    "eventlet",
    "eventlet-patched",
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_client_busy_elsewhere_still_answers(runtime, tmp_path):
    marker = tmp_path / "go"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(30)
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(APPS / "idle_client.py"), runtime,
         f"ws://127.0.0.1:{port}/", str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    try:
        sock, _ = listener.accept()
        sock.settimeout(10)
        sock.sendall(response_101(read_http_head(sock)))
        peer = RawPeer(Runtime("threading"), sock, is_client=False)
        first = json.loads(proc.stdout.readline())
        expected = runtime.split("-")[0]
        assert first["preset"] == expected

        peer.send_frame(OP_PING, b"are you there")
        assert peer.read_frame(timeout=5) == (True, False, OP_PONG, b"are you there")
        for n in range(5):
            peer.send_frame(OP_TEXT, f"m{n}")
        peer.send_frame(OP_PING, b"again")
        assert peer.read_frame(timeout=5) == (True, False, OP_PONG, b"again")
        peer.send_frame(OP_CLOSE, close_payload(4000, "done"))
        assert peer.read_frame(timeout=5) == (
            True, False, OP_CLOSE, close_payload(4000, "done")
        )
        sock.close()  # the server closes TCP first
        marker.touch()
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
    lines = out.decode().strip().splitlines()
    assert json.loads(lines[-1]) == {
        "messages": [f"m{n}" for n in range(5)],
        "code": 4000,
        "reason": "done",
    }, out.decode()
    assert "Traceback" not in out.decode()
