"""The examples run as documented: each started as a real subprocess.

* ``examples/chat/run.py`` under each of its servers: the page is served,
  two greenws clients on ``/ws`` both receive what one of them says, and
  Ctrl-C (SIGINT) stops the server cleanly.
* ``examples/client.py`` against ``examples/echo_wsgi.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Dict

import pytest
from servers import ROOT, free_port, serving

import greenws

EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.timeout(60)


def next_event(ws: greenws.Client, kind: str, timeout: float = 10.0) -> Dict[str, Any]:
    """The next chat event of type ``kind`` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        message = ws.receive(timeout=max(remaining, 0))
        if message is None:
            pytest.fail(f"no {kind!r} event within {timeout}s")
        event = json.loads(message)
        if event["type"] == kind:
            return event


@pytest.mark.parametrize("server", ["gunicorn", "eventlet", "werkzeug"])
def test_chat(server: str) -> None:
    port = free_port()
    args = [str(EXAMPLES / "chat" / "run.py"), "--server", server, "--port", str(port)]
    with serving(args, port) as proc:
        base = f"127.0.0.1:{port}"
        with urllib.request.urlopen(f"http://{base}/", timeout=10) as response:
            page = response.read().decode()
        assert response.status == 200
        assert "<title>greenws chat</title>" in page
        assert 'id="send-form"' in page and "new WebSocket(" in page
        assert "src=" not in page and "href=" not in page  # no external resources

        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{base}/ws", timeout=10)
        assert refused.value.code == 426

        alice = greenws.Client.connect(f"ws://{base}/ws?name=alice", open_timeout=10)
        # Alice's own join means her handler is in the room and will see bob's.
        while next_event(alice, "join")["name"] != "alice":
            pass
        bob = greenws.Client.connect(f"ws://{base}/ws?name=bob", open_timeout=10)
        try:
            # Once alice sees bob join, bob is in the room.
            while next_event(alice, "join")["name"] != "bob":
                pass
            alice.send("hello from alice")
            expected = {"type": "message", "name": "alice", "text": "hello from alice"}
            assert next_event(bob, "message") == expected
            assert next_event(alice, "message") == expected
            bob.close()
            assert next_event(alice, "leave")["name"] == "bob"
            assert alice.ping(timeout=5) >= 0
        finally:
            alice.close()
            bob.close()
        assert alice.close_reason == 1000

        status = proc.interrupt()
        output = proc.output()
        assert status == 0, output
        assert f"open http://{base}/" in output
        assert "chat stopped" in output


def test_client_against_echo_wsgi() -> None:
    port = free_port()
    with serving([str(EXAMPLES / "echo_wsgi.py"), "--port", str(port)], port) as proc:
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / "client.py"), f"ws://127.0.0.1:{port}/"],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        for line in ("< 'hello 0'", "< 'hello 2'", "< b'\\x00binary\\xff'",
                     "ping round trip:", "closed with code 1000"):
            assert line in result.stdout, result.stdout

        status = proc.interrupt()
        assert status == 0, proc.output()
        assert "echo server stopped" in proc.output()


@pytest.mark.parametrize("server", ["gunicorn", "eventlet", "werkzeug"])
def test_chat_slow_reader_delays_nobody(server: str) -> None:
    """A member that stops reading does not hold up the broadcast to others.

    ``slow`` reads nothing (``max_queue=1``, so its reader stops and TCP
    buffers fill); alice sends ~6 MB that the server must push to slow too.
    Bob must still get alice's last message (events for slow are dropped
    instead of blocking the room).
    """
    port = free_port()
    args = [str(EXAMPLES / "chat" / "run.py"), "--server", server, "--port", str(port)]
    with serving(args, port):
        url = f"ws://127.0.0.1:{port}/ws"
        slow = greenws.Client.connect(url + "?name=slow", max_queue=1,
                                      compression=False, open_timeout=10)
        bob = greenws.Client.connect(url + "?name=bob", open_timeout=10)
        while next_event(bob, "join")["name"] != "bob":
            pass
        alice = greenws.Client.connect(url + "?name=alice", open_timeout=10)
        try:
            while next_event(bob, "join")["name"] != "alice":
                pass
            for _ in range(400):
                alice.send(os.urandom(7000).hex())  # 14 KB of text each
            alice.send("the end")
            deadline = time.monotonic() + 20
            while next_event(bob, "message", deadline - time.monotonic())[
                "text"
            ] != "the end":
                pass
        finally:
            for ws in (alice, bob, slow):
                ws.close()


def test_rooms_chat_two_workers_share_a_redis(redis_server, monkeypatch) -> None:
    """examples/rooms_chat.py: gunicorn -k gevent -w 2, rooms through a real
    Redis; a message said on one worker reaches the room on the other."""
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    port = free_port()
    url = f"ws://127.0.0.1:{port}/?room=lobby"
    with serving([str(EXAMPLES / "rooms_chat.py"), "--port", str(port)], port) as proc:
        by_worker: Dict[int, greenws.Client] = {}
        extra = []
        try:
            for _ in range(40):
                ws = greenws.Client.connect(url, open_timeout=10)
                welcome = json.loads(ws.receive(timeout=10))
                assert welcome["type"] == "welcome" and welcome["room"] == "lobby"
                if welcome["worker"] in by_worker:
                    extra.append(ws)
                else:
                    by_worker[welcome["worker"]] = ws
                if len(by_worker) == 2:
                    break
            assert len(by_worker) == 2, "every connection went to one worker"
            first, second = by_worker.values()
            # Each worker subscribes in the background once it started.
            deadline = time.monotonic() + 15
            n = 0
            while True:
                n += 1
                first.send(f"hello {n}")
                event = json.loads(second.receive(timeout=0.5) or "{}")
                if event.get("text", "").startswith("hello"):
                    break
                assert time.monotonic() < deadline, proc.output()
            second.send("and back")
            while (event := json.loads(first.receive(timeout=10) or "{}")).get(
                "text", ""
            ).startswith("hello"):
                pass
            assert event == {"type": "message", "room": "lobby", "text": "and back"}
        finally:
            for ws in [*by_worker.values(), *extra]:
                ws.close()
        assert proc.interrupt() == 0, proc.output()
