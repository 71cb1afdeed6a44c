"""Graceful shutdown under a real gunicorn: peers see 1001, not a dropped line."""

from __future__ import annotations

import signal
import time

import pytest
from servers import HostedServer
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import greenws

HOOK = ["-c", "python:greenws.gunicorn"]


def expect_going_away(ws, timeout=15.0):
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=timeout)
    assert ws.close_code == 1001
    assert ws.close_reason == "server shutting down"


@pytest.mark.parametrize("worker", ["gevent", "gthread"])
def test_sigterm_closes_websockets_with_1001(worker):
    server = HostedServer(
        f"gunicorn-{worker}", options=HOOK + ["--graceful-timeout", "20"]
    )
    try:
        with connect(server.url + "/echo") as a, connect(server.url + "/echo") as b:
            a.send("x")
            assert a.recv(timeout=10) == "x"
            b.send("y")
            assert b.recv(timeout=10) == "y"
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            expect_going_away(a)
            expect_going_away(b)
            # Well before --graceful-timeout: the worker did not wait it out.
            assert server.proc.wait(15) == 0
            assert time.monotonic() - started < 15
    finally:
        output = server.stop()
    assert "Traceback" not in output


def test_max_requests_recycling_closes_with_1001():
    server = HostedServer(
        "gunicorn-gevent",
        options=HOOK + ["--max-requests", "2", "--graceful-timeout", "20"],
    )
    try:
        with connect(server.url + "/echo") as first:
            first.send("1")
            assert first.recv(timeout=10) == "1"
            # The second request makes the worker retire: both are told.
            second = greenws.Client.connect(server.url + "/echo")
            with pytest.raises(greenws.ConnectionClosed) as closed:
                second.receive(timeout=15)
            assert closed.value.reason == 1001
            expect_going_away(first)
            second.close()
    finally:
        output = server.stop()
    assert "Traceback" not in output
