"""greenws.reconnect: reconnecting() against a real server restarted under it.

The server is tests/apps/reconnect_app.py on gevent's pywsgi (started with
greenws.close_all_on_signals(), so SIGTERM closes its WebSockets with 1001),
stopped and started again on the same port while the loop runs.
"""

import logging
import queue
import signal
import threading
import time

import pytest
from conftest import WAIT
from servers import HostedServer, free_port

import greenws
from greenws import presets
from greenws.reconnect import RETRY_STATUSES, backoff_delays

OPTIONS = {
    "initial_delay": 0.02,
    "max_delay": 0.1,
    "preset": presets.THREADING,
    "open_timeout": WAIT,
    "close_timeout": 2,
}


def start(port, status=None):
    env = {"GREENWS_TEST_CLOSE_ON_SIGNALS": "1"}
    if status is not None:
        env["GREENWS_TEST_STATUS"] = str(status)
    return HostedServer("gevent", env=env, module="reconnect_app", port=port)


class Consumer:
    """A reconnecting() loop in a thread, reporting what it sees."""

    def __init__(self, url):
        self.events = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self.thread.start()

    def _run(self, url):
        try:
            for ws in greenws.reconnecting(url, **OPTIONS):
                self.events.put(("open", int(ws.receive(timeout=WAIT)), ws))
                try:
                    for _ in ws:
                        pass  # ends quietly on 1000 and 1001
                except greenws.ConnectionClosed:
                    pass  # other codes
                self.events.put(("end", ws.close_reason))
        except greenws.ConnectionError as exc:
            self.events.put(("error", exc.status_code))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.events.put(("bug", exc))
        else:
            self.events.put(("done",))

    def next(self):
        return self.events.get(timeout=WAIT)

    def opened(self, server):
        kind, pid, ws = self.next()
        assert (kind, pid) == ("open", server.proc.pid)
        return ws

    def join(self):
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        assert self.events.empty()


def test_reconnecting_across_restarts_and_refusals(caplog):
    caplog.set_level(logging.INFO, logger="greenws")
    port = free_port()
    url = f"ws://127.0.0.1:{port}/"
    servers = [start(port)]
    try:
        loop = Consumer(url)
        loop.opened(servers[-1])
        # A restarting server says 1001: back to it once it listens again,
        # through refused connections and 503s meanwhile.
        servers[-1].stop_and_check()
        assert loop.next() == ("end", 1001)
        servers.append(start(port, status=503))
        servers[-1].wait_for_output(lambda out: out.count('" 503 ') >= 2)
        servers[-1].stop_and_check()
        servers.append(start(port))
        ws = loop.opened(servers[-1])
        # Any close code but the server's 1000: another connection.
        ws.send("close 1011")
        assert loop.next() == ("end", 1011)
        ws = loop.opened(servers[-1])
        # A dropped connection (the server process killed): the same.
        servers[-1].proc.send_signal(signal.SIGKILL)
        assert loop.next() == ("end", 1006)
        servers[-1].stop()
        servers.append(start(port))
        ws = loop.opened(servers[-1])
        # The application's own close (1000 too): another connection.
        ws.close()
        assert loop.next() == ("end", 1000)
        ws = loop.opened(servers[-1])
        # The server's 1000: the end.
        ws.send("close 1000")
        assert loop.next() == ("end", 1000)
        assert loop.next() == ("done",)
        loop.join()

        # A refusal that will not change (403) is raised, mid-loop too.
        loop = Consumer(url)
        loop.opened(servers[-1])
        servers[-1].stop_and_check()
        assert loop.next() == ("end", 1001)
        servers.append(start(port, status=403))
        assert loop.next() == ("error", 403)
        loop.join()
        # Each new try is logged, with why.
        messages = [r.getMessage() for r in caplog.records if r.name == "greenws"]
        assert any("closed with 1001; reconnecting in" in m for m in messages)
        assert any("503" in m and "next try in" in m for m in messages)
    finally:
        for server in servers:
            server.stop()


def test_reconnecting_raises_a_4xx_at_once_and_retries_the_others():
    port = free_port()
    server = start(port, status=401)
    try:
        with pytest.raises(greenws.ConnectionError) as info:
            next(greenws.reconnecting(f"ws://127.0.0.1:{port}/", **OPTIONS))
        assert info.value.status_code == 401
    finally:
        server.stop_and_check()
    assert RETRY_STATUSES == {None, 429, 500, 502, 503, 504}


def test_reconnecting_ends_when_the_process_is_stopping(monkeypatch):
    monkeypatch.setattr(greenws.registry, "_stopping", (1001, "bye"))
    assert list(greenws.reconnecting("ws://127.0.0.1:1/", **OPTIONS)) == []


def test_reconnecting_checks_its_delays():
    with pytest.raises(ValueError):
        next(greenws.reconnecting("ws://127.0.0.1:1/", initial_delay=2, max_delay=1))


def test_backoff_doubles_up_to_the_cap_with_jitter():
    low = backoff_delays(1.0, 5.0, rand=lambda: 0.0)
    assert [next(low) for _ in range(5)] == [0.5, 1.0, 2.0, 2.5, 2.5]
    high = backoff_delays(1.0, 5.0, rand=lambda: 1.0)
    assert [next(high) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    real = backoff_delays(0.1, 1.0)
    delays = [next(real) for _ in range(50)]
    assert all(0.05 <= d <= 1.0 for d in delays) and len(set(delays)) > 1


def test_reconnecting_waits_with_the_presets_own_sleep():
    """Under a gevent hub that is not monkey-patched, the wait between tries
    must not block the hub: another greenlet keeps running meanwhile."""
    gevent = pytest.importorskip("gevent")
    port = free_port()  # nothing listens: every try is refused
    ticks = []

    def loop():
        for _ in greenws.reconnecting(
            f"ws://127.0.0.1:{port}/", initial_delay=1.0, max_delay=1.0,
            preset=presets.GEVENT,
        ):
            pass  # pragma: no cover - never connects

    looping = gevent.spawn(loop)
    try:
        # A blocked hub would stall this for a second per try.
        deadline = time.monotonic() + 1.0
        while len(ticks) < 20 and time.monotonic() < deadline:
            ticks.append(1)
            gevent.sleep(0.01)
        assert len(ticks) == 20
        assert not looping.dead
    finally:
        looping.kill()
