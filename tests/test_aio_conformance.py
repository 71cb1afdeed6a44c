"""The RFC 6455 / RFC 7692 conformance cases of test_conformance.py, run
against the asyncio flavour in both roles.

Only the harness is new: the cases, the raw peer and the runner are
test_conformance.py's.

* ``server``: ``AioServer.accept(sock=...)`` in a plain asyncio server
  subprocess (tests/apps/aio_app.py; a representative subset also under
  aiohttp), with ``GREENWS_TEST_LIMIT`` for the 1009 cases;
* ``client``: an ``AioClient`` in its own event loop in a thread, echoing
  every message back, against test_conformance's raw server.

uvicorn and hypercorn are not here: under ASGI the server does the framing,
so these cases would test the server (test_aio_servers.py covers what greenws
does there).
"""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest
from servers import HostedServer
from test_conformance import (
    CASES,
    LIMIT,
    TIMEOUT,
    ClientRole,
    ServerRole,
    _params,
)
from test_conformance import run as run_case

import greenws


class AioClientRole(ClientRole):
    """ClientRole with an AioClient: connect and echo in a thread's own loop."""

    def _connect_and_echo(self) -> None:
        options = dict(self.options)
        options.pop("preset")
        asyncio.run(self._main(options))

    async def _main(self, options: dict) -> None:
        try:
            self.ws = await greenws.AioClient.connect(
                f"ws://127.0.0.1:{self.server.port}/echo", **options
            )
            self.connected.set()
            while True:
                message = await self.ws.receive(timeout=3 * TIMEOUT)
                if message is None:
                    raise TimeoutError("no message and no close")
                await self.ws.send(message)
        except greenws.ConnectionClosed as exc:
            self.closed = exc
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            if self.ws is not None:
                self.ws.close_timeout = 1.0
                await self.ws.close()
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if left and self.error is None:
                self.error = AssertionError(f"tasks left behind: {left}")

    def cleanup(self) -> None:
        self.peer.close()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the AioClient's loop did not end"
        self.server.close()
        if self.ws is not None:
            assert self.ws._driver.done, "the AioClient's connection is still open"


def _server(kind: str, limits: bool) -> HostedServer:
    env = {"GREENWS_TEST_LIMIT": str(LIMIT)} if limits else {}
    return HostedServer(kind, env)


@pytest.fixture(scope="module")
def hosts():
    """Servers by (kind, limits), started on first use."""
    started: dict = {}

    def get(kind: str, limits: bool) -> HostedServer:
        if (kind, limits) not in started:
            started[(kind, limits)] = _server(kind, limits)
        return started[(kind, limits)]

    yield get
    for server in started.values():
        server.stop_and_check()


@pytest.fixture
def aio_connect(hosts):
    made: List[Any] = []

    def factory(role: str, use_deflate: bool, case, kind: str = "aio-sock") -> Any:
        early = b""
        if case.with_handshake:
            early = b"".join(f.build(role == "server") for f in case.steps[0].frames)
        if role == "server":
            server = hosts(kind, case.limits)
            conn: Any = ServerRole(server.port, use_deflate, trailing=early)
        else:
            conn = AioClientRole(use_deflate, LIMIT if case.limits else None, early)
        made.append(conn)
        return conn

    yield factory
    for conn in made:
        conn.cleanup()


@pytest.mark.parametrize("case, role, use_deflate", _params(CASES))
def test_aio_conformance(aio_connect, case, role, use_deflate):
    run_case(aio_connect(role, use_deflate, case), case)


# Under aiohttp: the same subset the sync suite runs on every hosting server.
_SUBSET = {
    "1.2-binary-len-65536", "1.3-fast-wsproto-fast-one-write",
    "1.6-handshake-plus-fragments-and-ping", "2.4-ping-125", "3.1-text-rsv2",
    "5.6-text-2-fragments-ping-between", "6.5-invalid-in-later-fragment",
    "7.1.4-text-after-close-ignored", "7.3.1-close-empty-payload",
    "7.9-close-invalid-code-1005", "10.2-binary-over-limit-single-frame",
    "10.6-compression-bomb-1MiB", "12.4-compressed-in-3-fragments",
}


@pytest.mark.parametrize(
    "case, role, use_deflate",
    [p for p in _params([c for c in CASES if c.cid in _SUBSET])
     if p.values[1] == "server"],
)
def test_aio_conformance_aiohttp(aio_connect, case, role, use_deflate):
    run_case(aio_connect(role, use_deflate, case, kind="aiohttp"), case)


def test_subset_exists():
    assert {c.cid for c in CASES} >= _SUBSET


