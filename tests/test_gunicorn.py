"""Graceful shutdown under a real gunicorn: peers see 1001, not a dropped line."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from servers import HostedServer
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import greenws

HOOK = ["-c", "python:greenws.gunicorn"]
# gthread holds a thread per open WebSocket: room for every test client.
THREADS = ["--threads", "64"]
# For the tests with steady arrivals: they check that clients are told
# within a second, so a worker that lingers longer fails them anyway. Short,
# because gunicorn loses a SIGTERM that comes while a worker boots (before
# it sets its handlers), and the master then waits the whole graceful
# timeout at shutdown: recycled workers boot all the time there.
SHORT_GRACE = ["--graceful-timeout", "3"]


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


# -- every way a worker stops, with clients arriving all along --------------

WAIT = 10.0
GOING_AWAY = (1001, "server shutting down")


class Peer:
    """A ``websockets`` client on /info: which worker took it, how it ended.

    Opening it fails the test if the handshake does not complete in time.
    ``pid`` is None if the connection was closed before /info said anything
    (a stopping worker closes what it still accepts at once).
    """

    def __init__(self, url):
        self.opened = time.monotonic()
        self.ws = connect(url + "/info", open_timeout=WAIT, legacy=True)
        self.connected = time.monotonic()
        try:
            self.pid = json.loads(self.ws.recv(timeout=WAIT))["pid"]
        except ConnectionClosed:
            self.pid = None
        self.ended = None
        self.close = None
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self):
        try:
            while True:
                self.ws.recv()
        except ConnectionClosed:
            pass
        self.close = (self.ws.close_code, self.ws.close_reason)
        self.ended = time.monotonic()

    def finish(self):
        self.ws.close()
        self._watcher.join(WAIT)


def wait_until(condition, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)  # watching other processes and threads: polling
    return True


def pid_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def arrive(server, count, interval=0.05, before=None):
    """Open ``count`` peers one every ``interval`` s; call ``before(i)`` first."""
    peers = []
    try:
        for i in range(count):
            if before is not None:
                before(i)
            peers.append(Peer(server.url))
            time.sleep(interval)  # the arrival rate is the point here
    except BaseException:
        for peer in peers:
            peer.finish()
        raise
    return peers


def check_told_in_time(peers, stopped_at):
    """Every peer of a stopped worker heard 1001 within a second of the stop
    (or of its own handshake, for one the stopping worker still accepted)."""
    assert wait_until(lambda: all(peer.ended for peer in peers))
    late = [
        (peer.close, round(peer.ended - max(stopped_at, peer.connected), 2))
        for peer in peers
        if peer.close != GOING_AWAY or peer.ended - max(stopped_at, peer.connected) > 1
    ]
    assert not late, f"{len(late)} of {len(peers)} peers: {late}"


@pytest.mark.parametrize("worker", ["gevent", "gthread"])
def test_reload_closes_the_old_workers_websockets_with_1001(worker):
    """``kill -HUP``: the old worker's clients, also those it still accepts
    meanwhile, are told at once; the old worker exits, the new one serves."""
    server = HostedServer(
        f"gunicorn-{worker}", options=HOOK + THREADS + SHORT_GRACE
    )
    hup = []

    def reload_at_fifth(i):
        if i == 4:
            hup.append(time.monotonic())
            server.proc.send_signal(signal.SIGHUP)

    peers = []
    try:
        peers = arrive(server, 24, before=reload_at_fifth)
        old = peers[0].pid
        told = [peer for peer in peers if peer.pid in (old, None)]
        check_told_in_time(told, hup[0])
        assert wait_until(lambda: not pid_exists(old))
        served = [peer for peer in peers if peer not in told]
        assert served, "no client reached the new worker"
        assert all(peer.ended is None for peer in served)
    finally:
        for peer in peers:
            peer.finish()
        output = server.stop()
    assert "Traceback" not in output, output[-4000:]


def test_max_requests_recycling_under_steady_arrivals():
    """Two workers retiring over and over: each retired worker's clients are
    told at once, the worker exits, and no handshake times out.

    (gevent: its worker keeps accepting for up to a second after it began
    to stop; gthread stops accepting at once on SIGTERM.)
    """
    limit = 5
    server = HostedServer(
        "gunicorn-gevent",
        options=HOOK + SHORT_GRACE + ["-w", "2", "--max-requests", str(limit)],
    )
    peers = []
    try:
        peers = arrive(server, 24)
        by_worker = {}
        for peer in peers:
            by_worker.setdefault(peer.pid, []).append(peer)
        # Closed before they learnt which worker took them: a retired one.
        check_told_in_time(by_worker.pop(None, []), 0)
        retired = {pid: mine for pid, mine in by_worker.items() if len(mine) >= limit}
        assert len(retired) >= 2
        for pid, mine in retired.items():
            # The worker stopped on the request of its limit-th client.
            mine.sort(key=lambda peer: peer.opened)
            check_told_in_time(mine, mine[limit - 1].opened)
            assert wait_until(lambda pid=pid: not pid_exists(pid))
        for pid, mine in by_worker.items():
            if pid not in retired:
                assert all(peer.ended is None for peer in mine)
    finally:
        for peer in peers:
            peer.finish()
        output = server.stop()
    assert "Traceback" not in output, output[-4000:]


@pytest.mark.parametrize("worker", ["gevent", "gthread"])
def test_sigquit_closes_websockets_with_1001(worker):
    """Quick shutdown (SIGQUIT to the master): the workers exit at once,
    after telling their clients (greenws.gunicorn.worker_int)."""
    server = HostedServer(
        f"gunicorn-{worker}",
        options=["-c", "python:quit_conf", "--graceful-timeout", "20"],
    )
    peers = []
    try:
        peers = arrive(server, 3)
        quit_at = time.monotonic()
        server.proc.send_signal(signal.SIGQUIT)
        check_told_in_time(peers, quit_at)
        assert server.proc.wait(WAIT) == 0
        assert time.monotonic() - quit_at < 3
    finally:
        for peer in peers:
            peer.finish()
        output = server.stop()
    assert "Traceback" not in output, output[-4000:]
