"""greenws.aio: AioServer and AioClient over loopback TCP.

Independent peers: the ``websockets`` library's asyncio client and server;
raw asyncio peers (tests/aiopeers.py) for exact and malformed bytes.  The
server side runs in a plain asyncio server (``AioServer.accept(sock=...)``);
aiohttp, uvicorn and hypercorn are in test_aio_servers.py.  Every body runs
through ``aiopeers.run``, which fails if a connection, a task or a timer is
left behind.
"""

import asyncio
import logging
import os
import ssl
import subprocess
import sys

import pytest
from aiopeers import RawPeer, RawServer, SockServer, echo, run
from conftest import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, frame
from conftest import close_payload as cp

import greenws
from greenws import AioClient, AioServer, ConnectionClosed, ConnectionError

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect as ws_connect  # noqa: E402
from websockets.asyncio.server import serve as ws_serve  # noqa: E402

# -- AioServer against websockets' client --------------------------------------


def test_server_echo_subprotocol_target_and_attributes():
    async def body():
        async with SockServer(echo, subprotocols=["chat"]) as server:
            url = server.url + "/room/1?x=%20y"
            async with ws_connect(url, subprotocols=["other", "chat"]) as client:
                await client.send("héllo")
                assert await client.recv() == "héllo"
                await client.send(b"\x00\xff" * 40000)
                assert await client.recv() == b"\x00\xff" * 40000
                ws = await server.first()
                assert ws.subprotocol == client.subprotocol == "chat"
                assert ws.target == "/room/1?x=%20y" and ws.mode == "custom"
                assert ws.connected
                assert ws.remote_address == client.local_address[:2]
                assert ws.local_address[1] == server.port
            # websockets closed with 1000: the loop ended quietly
            await server.handlers_done()
            assert ws.close_reason == 1000 and not ws.connected
            assert not server.errors

    run(body)


@pytest.mark.parametrize("who", ["server", "client"])
def test_close_code_and_reason_both_ways(who):
    async def handler(ws):
        if who == "server":
            await ws.receive()
            await ws.close(4001, "bye now")
        else:
            await echo(ws)

    async def body():
        async with SockServer(handler) as server:
            client = await ws_connect(server.url)
            await client.send("x")
            if who == "server":
                with pytest.raises(websockets.ConnectionClosed) as info:
                    await client.recv()
                assert info.value.rcvd.code == 4001
                assert info.value.rcvd.reason == "bye now"
            else:
                assert await client.recv() == "x"
                await client.close(4002, "client done")
            await client.wait_closed()
            ws = await server.first()
            await server.handlers_done()
            expected = (4001, "bye now") if who == "server" else (4002, "client done")
            assert (ws.close_reason, ws.close_message) == expected

    run(body)


def test_async_for_raises_on_an_abnormal_code_and_ends_on_a_normal_one():
    seen = []

    async def handler(ws):
        try:
            async for message in ws:
                seen.append(message)
        except ConnectionClosed as exc:
            seen.append(exc.reason)

    async def body():
        async with SockServer(handler) as server:
            async with ws_connect(server.url) as client:
                await client.send("a")
            async with ws_connect(server.url) as client:
                await client.send("b")
                await client.close(4000)
            await server.handlers_done()
        assert seen == ["a", "b", 4000]

    run(body)


def test_accept_needs_exactly_one_source():
    async def body():
        with pytest.raises(ValueError, match="exactly one"):
            await AioServer.accept()
        with pytest.raises(ValueError, match="exactly one"):
            await AioServer.accept(aiohttp=object(), asgi=(1, 2, 3))
        with pytest.raises(ValueError, match="headers="):
            await AioServer.accept(aiohttp=object(), headers={})

    run(body)


def test_origins_refused_with_403_on_the_socket():
    async def body():
        async with SockServer(echo, origins=["http://good.example"]) as server:
            with pytest.raises(websockets.InvalidStatus) as info:
                await ws_connect(server.url, origin="http://evil.example")
            assert info.value.response.status_code == 403
            async with ws_connect(server.url, origin="http://good.example") as c:
                await c.send("ok")
                assert await c.recv() == "ok"
            assert isinstance(server.errors[0], greenws.HandshakeError)
            assert server.errors[0].status_code == 403

    run(body)


def test_bad_upgrade_request_gets_400():
    async def body():
        async with SockServer(echo) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 400 "), answer
            writer.close()
            await server.handlers_done()

    run(body)


def test_choose_subprotocol_override():
    class Picky(AioServer):
        def choose_subprotocol(self, request):
            return request.subprotocols[-1]

    async def body():
        async with SockServer(echo, server_class=Picky) as server:
            async with ws_connect(server.url, subprotocols=["a", "b"]) as client:
                assert client.subprotocol == "b"
            ws = await server.first()
            assert isinstance(ws, Picky)

    run(body)


# -- AioClient against websockets' server ---------------------------------------


async def _ws_echo(connection):
    async for message in connection:
        await connection.send(message)


def test_client_echo_headers_subprotocol_and_close():
    seen = {}

    def process_request(connection, request):
        seen["path"] = request.path
        seen["token"] = request.headers.get("X-Token")

    async def body():
        async with ws_serve(_ws_echo, "127.0.0.1", 0, subprotocols=["chat"],
                            process_request=process_request,
                            max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            ws = await AioClient.connect(
                f"ws://127.0.0.1:{port}/p?q=1", subprotocols="chat",
                headers=[("X-Token", "t1")],
            )
            async with ws:
                assert ws.subprotocol == "chat" and ws.connected
                await ws.send("text")
                assert await ws.receive() == "text"
                await ws.send(bytearray(b"bin"))
                assert await ws.receive() == b"bin"
                await ws.send(42)
                assert await ws.receive() == "42"
                big = bytes(range(256)) * 8192
                await ws.send(big)
                assert await ws.receive(timeout=5) == big
                assert 0 <= await ws.ping(b"p", timeout=5) < 5
                assert ws.latency is not None
            assert ws.close_reason == 1000 and not ws.connected
            with pytest.raises(ConnectionClosed):
                await ws.send("late")
            with pytest.raises(ConnectionClosed):
                await ws.receive()
        assert seen == {"path": "/p?q=1", "token": "t1"}

    run(body)


def test_client_sees_server_close_code():
    async def handler(connection):
        await connection.recv()
        await connection.close(4005, "server says")

    async def body():
        async with ws_serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            ws = await AioClient.connect(f"ws://127.0.0.1:{port}/", headers={"a": "b"})
            await ws.send("x")
            with pytest.raises(ConnectionClosed) as info:
                await ws.receive()
            assert (info.value.reason, info.value.message) == (4005, "server says")
            await ws.close()

    run(body)


def test_client_refused_unreachable_and_timeouts():
    async def reject(connection, request):
        return connection.respond(403, "no\n")

    async def silent(reader, writer):
        await reader.read()  # accepts TCP, never answers

    async def body():
        async with ws_serve(_ws_echo, "127.0.0.1", 0, process_request=reject) as s:
            port = s.sockets[0].getsockname()[1]
            with pytest.raises(ConnectionError) as info:
                await AioClient.connect(f"ws://127.0.0.1:{port}/")
            assert info.value.status_code == 403
        with pytest.raises(ConnectionError) as info:
            await AioClient.connect(f"ws://127.0.0.1:{port}/", open_timeout=2)
        assert info.value.status_code is None
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ConnectionError, match="timed out"):
            await AioClient.connect(f"ws://127.0.0.1:{port}/", open_timeout=0.3)
        server.close()
        await server.wait_closed()
        with pytest.raises(ValueError):
            await AioClient.connect("http:/nohost")

    run(body)


def test_wss_with_ssl_context():
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def body():
        async with ws_serve(_ws_echo, "localhost", 0, ssl=server_ctx) as server:
            port = server.sockets[0].getsockname()[1]
            async with await AioClient.connect(
                f"wss://localhost:{port}/", ssl_context=client_ctx
            ) as ws:
                await ws.send("secure")
                assert await ws.receive() == "secure"
                big = b"z" * (1 << 20)
                await ws.send(big)
                assert await ws.receive() == big
            with pytest.raises(ConnectionError, match="TLS"):
                await AioClient.connect(f"wss://localhost:{port}/")  # untrusted CA

    run(body)


@pytest.mark.parametrize("compression", [True, False])
def test_compression_negotiated_both_roles(compression):
    async def body():
        async with SockServer(echo, compression=compression) as server:
            async with await AioClient.connect(server.url, compression=True) as ws:
                await ws.send("a" * 10000)
                assert await ws.receive() == "a" * 10000
                protocol = ws._driver.protocol
                assert (protocol._deflate is not None) == compression

    run(body)


# -- bad peers: a raw client against AioServer ---------------------------------------


@pytest.mark.parametrize("bad, code", [
    (lambda p: p.send_frame(0x3, b"reserved opcode"), 1002),
    (lambda p: p.send_raw(b"\x81\x05hello"), 1002),  # unmasked from a client
    (lambda p: p.send_frame(OP_CONT, b"no start"), 1002),
    (lambda p: p.send_frame(OP_TEXT, b"\xff\xfe bad utf-8"), 1007),
    (lambda p: (p.send_frame(OP_TEXT, b"\xce", fin=False),
                p.send_frame(OP_CONT, b"\x00")), 1007),
    (lambda p: p.send_frame(OP_BINARY, b"x" * 1025), 1009),
    (lambda p: [p.send_frame(OP_BINARY if i == 0 else OP_CONT, b"y" * 300,
                             fin=False) for i in range(5)], 1009),
    (lambda p: p.send_frame(OP_PING, b"p" * 126), 1002),
], ids=["opcode", "unmasked", "continuation", "utf8", "utf8-fragments", "too-big",
        "too-big-fragments", "long-ping"])
def test_bad_input_closes_with_its_code(bad, code):
    closed = []

    async def handler(ws):
        try:
            await ws.receive(timeout=5)
        except ConnectionClosed as exc:
            closed.append(exc.reason)

    async def body():
        async with SockServer(handler, max_message_size=1024) as server:
            peer = await RawPeer.connect(server.port)
            bad(peer)
            assert (await peer.read_close())[0] == code
            assert await peer.read_eof() == b""
            await peer.close()
            await server.handlers_done()
        assert closed == [code]

    run(body)


def test_peer_vanishing_is_1006():
    closed = []

    async def handler(ws):
        try:
            await ws.receive(timeout=5)
        except ConnectionClosed as exc:
            closed.append((exc.reason, ws.close_reason, ws.connected))

    async def body():
        async with SockServer(handler) as server:
            peer = await RawPeer.connect(server.port)
            await server.first()
            await peer.close()
            await server.handlers_done()
        assert closed == [(1006, 1006, False)]

    run(body)


def test_messages_received_before_the_close_come_first():
    got = []

    async def handler(ws):
        await asyncio.sleep(0.2)  # let everything arrive first
        try:
            while True:
                got.append(await ws.receive())
        except ConnectionClosed as exc:
            got.append(exc.reason)

    async def body():
        async with SockServer(handler) as server:
            peer = await RawPeer.connect(server.port)
            peer.send_frame(OP_TEXT, "one")
            peer.send_frame(OP_BINARY, b"two")
            peer.send_frame(OP_CLOSE, cp(4000, "end"))
            assert await peer.read_close() == (4000, "end")
            assert await peer.read_eof() == b""
            await peer.close()
            await server.handlers_done()
        assert got == ["one", b"two", 4000]

    run(body)


def test_pings_answered_while_the_app_is_not_receiving():
    release = None

    async def handler(ws):
        await release.wait()

    async def body():
        nonlocal release
        release = asyncio.Event()
        async with SockServer(handler) as server:
            peer = await RawPeer.connect(server.port)
            for i in range(3):
                peer.send_frame(OP_PING, f"p{i}")
                assert await peer.read_frame() == (True, OP_PONG, f"p{i}".encode())
            release.set()
            assert (await peer.read_close())[0] == 1000
            peer.send_frame(OP_CLOSE, cp(1000))
            await peer.read_eof()
            await peer.close()

    run(body)


def test_reading_pauses_when_max_queue_is_full_and_resumes():
    """The queue holds max_queue messages plus what one read brought; then
    the transport stops reading (TCP pushes back) until receive() makes room.
    """
    count, size = 3000, 1024  # 3 MiB: more than one read, whatever the buffers
    state = {}
    release = None

    async def handler(ws):
        await release.wait()
        state["paused"] = ws._driver.read_paused
        state["queued"] = len(ws._driver.session.queue)
        for i in range(count):
            message = await ws.receive(timeout=5)
            assert message[:8] == b"%08d" % i, (i, message[:8])
        state["resumed"] = not ws._driver.read_paused

    async def body():
        nonlocal release
        release = asyncio.Event()
        async with SockServer(handler, max_queue=2) as server:
            peer = await RawPeer.connect(server.port)
            for i in range(count):
                peer.send_frame(OP_BINARY, b"%08d" % i + b"m" * (size - 8))
            ws = await server.first()
            for _ in range(500):  # bounded wait for the reader to pause
                if ws._driver.read_paused:
                    break
                await asyncio.sleep(0.01)
            release.set()
            assert (await peer.read_close(timeout=8))[0] == 1000
            peer.send_frame(OP_CLOSE, cp(1000))
            await peer.read_eof()
            await peer.close()
        assert state["paused"] and state["resumed"]
        # One read of the transport is at most 256 KiB: 2 + 256 messages.
        assert 2 <= state["queued"] <= 2 + 256 * 1024 // size + 1

    run(body, timeout=20)


def test_send_waits_while_the_peer_does_not_read():
    state = {}

    async def handler(ws):
        chunk = b"x" * (256 * 1024)
        sent = 0
        try:
            while sent < 64:  # 16 MiB: far more than the socket buffers hold
                await asyncio.wait_for(ws.send(chunk), 0.5)
                sent += 1
        except asyncio.TimeoutError:
            state["blocked_after"] = sent
            transport = ws._driver.transport
            state["buffered"] = transport.get_write_buffer_size()
            state["high"] = transport.get_write_buffer_limits()[1]

    async def body():
        async with SockServer(handler, close_timeout=0.5) as server:
            # It never reads (its stream buffers 128 KiB at most).
            peer = await RawPeer.connect(server.port, limit=65536)
            await server.handlers_done()
            await peer.close()
        assert 0 < state["blocked_after"] < 64
        # The transport holds at most the high-water mark plus one frame.
        assert state["buffered"] <= state["high"] + 256 * 1024 + 16

    run(body)


def test_concurrent_sends_never_interleave():
    async def body():
        async with SockServer(echo) as server:
            async with await AioClient.connect(server.url, compression=False) as ws:
                payloads = [bytes([i]) * (70000 + i) for i in range(20)]
                await asyncio.gather(*(ws.send(p) for p in payloads))
                got = [await ws.receive(timeout=5) for _ in payloads]
                assert sorted(got) == sorted(payloads)

    run(body)


def test_receive_timeout_and_nonblocking():
    async def body():
        async with SockServer(echo) as server:
            async with await AioClient.connect(server.url) as ws:
                assert await ws.receive(timeout=0) is None
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                assert await ws.receive(timeout=0.2) is None
                assert 0.15 < loop.time() - t0 < 2
                await ws.send("x")
                assert await ws.receive(timeout=5) == "x"
                # Two tasks waiting at once both get a message.
                both = asyncio.gather(ws.receive(timeout=5), ws.receive(timeout=5))
                await asyncio.sleep(0.01)
                await ws.send("1")
                await ws.send("2")
                assert sorted(await both) == ["1", "2"]
                # A cancelled receive loses nothing.
                waiting = asyncio.ensure_future(ws.receive())
                await asyncio.sleep(0.01)
                waiting.cancel()
                await ws.send("kept")
                assert await ws.receive(timeout=5) == "kept"

    run(body)


def test_ping_timeout_and_close_wakes_a_waiting_ping():
    async def body():
        async with RawServer() as server:
            ws = await AioClient.connect(server.url, close_timeout=0.3)
            peer = await server.wait_peer()
            with pytest.raises(TimeoutError):
                await ws.ping(b"a", timeout=0.1)
            assert ws._driver.session.waiting_pings() == []  # forgotten
            assert (await peer.read_frame())[1] == OP_PING
            pending = asyncio.ensure_future(ws.ping())
            await asyncio.sleep(0.05)
            await ws.close()  # the peer never answers: close_timeout
            with pytest.raises(ConnectionClosed):
                await pending
            with pytest.raises(ValueError):
                await ws.ping(b"x" * 126)

    run(body)


def test_keepalive_fails_a_silent_peer_with_1011():
    async def body():
        async with RawServer() as server:
            ws = await AioClient.connect(server.url, ping_interval=0.1,
                                         ping_timeout=0.2)
            peer = await server.wait_peer()
            assert (await peer.read_frame())[1] == OP_PING  # never answered
            with pytest.raises(ConnectionClosed) as info:
                await ws.receive(timeout=5)
            assert info.value.reason == 1011
            assert ws.close_message == "keepalive ping timeout"
            await ws.close()

    run(body)


def test_keepalive_keeps_a_live_peer():
    async def body():
        async with ws_serve(_ws_echo, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with await AioClient.connect(
                f"ws://127.0.0.1:{port}/", ping_interval=0.05, ping_timeout=1
            ) as ws:
                assert await ws.receive(timeout=0.4) is None
                assert ws.connected and ws.latency is not None

    run(body)


def test_close_validates_before_sending_and_is_idempotent():
    async def body():
        async with SockServer(echo) as server:
            ws = await AioClient.connect(server.url)
            for code, exc in ((999, ValueError), (1005, ValueError),
                              (5000, ValueError), ("1000", TypeError)):
                with pytest.raises(exc):
                    await ws.close(code)
            with pytest.raises(ValueError):
                await ws.close(1000, "x" * 124)
            assert ws.connected
            await ws.close(3001, "ok")
            await ws.close()
            assert (ws.close_reason, ws.close_message) == (3001, "ok")

    run(body)


def test_close_timeout_when_the_peer_never_answers():
    async def body():
        async with RawServer() as server:
            ws = await AioClient.connect(server.url, close_timeout=0.2)
            peer = await server.wait_peer()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await ws.close(1000)
            assert loop.time() - t0 < 2
            assert (await peer.read_close()) == (1000, "")
            assert ws._driver.done

    run(body)


def test_client_waits_for_the_server_to_close_tcp_after_the_handshake():
    async def body():
        async with RawServer() as server:
            ws = await AioClient.connect(server.url, close_timeout=3)
            peer = await server.wait_peer()
            peer.send_frame(OP_CLOSE, cp(1000, "srv"))
            assert await peer.read_close() == (1000, "srv")
            await asyncio.sleep(0.1)
            assert not ws._driver.done  # it leaves closing TCP to the server
            await peer.close()
            await ws.close()
            assert ws.close_reason == 1000

    run(body)


def test_frame_pipelined_with_the_101_is_delivered():
    from conftest import frame

    async def body():
        early = frame(OP_TEXT, "early") + frame(OP_PING, "p")
        async with RawServer(after_101=early) as server:
            ws = await AioClient.connect(server.url, close_timeout=0.3)
            peer = await server.wait_peer()
            assert await ws.receive(timeout=5) == "early"
            assert await peer.read_frame() == (True, OP_PONG, b"p")
            await ws.close()

    run(body)


def test_a_reader_bug_is_logged_and_closes_with_1011(caplog, monkeypatch):
    from greenws.protocol import Protocol

    real = Protocol.receive_data

    def buggy(self, data):
        if b"boom" in data:
            raise RuntimeError("bug in greenws")
        return real(self, data)

    monkeypatch.setattr(Protocol, "receive_data", buggy)

    async def body():
        async with RawServer() as server:
            ws = await AioClient.connect(server.url, close_timeout=0.3)
            peer = await server.wait_peer()
            peer.send_raw(b"\x81\x04boom")
            assert await peer.read_close() == (1011, "internal error")
            with pytest.raises(ConnectionClosed) as info:
                await ws.receive(timeout=5)
            assert info.value.reason == 1011
            await ws.close()

    with caplog.at_level(logging.DEBUG, logger="greenws"):
        run(body)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "error while reading" in errors[0].getMessage()
    assert errors[0].exc_info[0] is RuntimeError


def test_lifecycle_logging(caplog):
    async def body():
        async with SockServer(echo) as server:
            async with await AioClient.connect(server.url) as ws:
                await ws.send("x")
                await ws.receive()
            await server.handlers_done()

    with caplog.at_level(logging.DEBUG, logger="greenws"):
        run(body)
    messages = [r.getMessage() for r in caplog.records if r.name == "greenws"]
    assert any(m.startswith("AioClient open") for m in messages)
    assert any(m.startswith("AioServer closed") and ": 1000" in m for m in messages)


# -- packaging -------------------------------------------------------------------


def test_import_greenws_loads_no_async_server_library():
    code = (
        "import sys, greenws\n"
        "bad = [m for m in ('aiohttp', 'uvicorn', 'hypercorn', 'gevent', 'eventlet',"
        " 'greenws.aio') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "assert greenws.AioServer.__module__ == 'greenws.aio.server'\n"
        "bad = [m for m in ('aiohttp', 'uvicorn', 'hypercorn') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_compat_gives_greenws_aio_classes():
    import greenws.compat

    greenws.compat.install()
    try:
        from simple_websocket import AioClient as C
        from simple_websocket import AioServer as S
        from simple_websocket.aiows import AioServer as S2

        assert (S, C, S2) == (AioServer, AioClient, AioServer)
    finally:
        greenws.compat.uninstall()


# -- the ASGI driver, against an in-memory ASGI server (narrow unit tests) ---------


class FakeAsgi:
    """What an ASGI server gives an application: receive() and send()."""

    def __init__(self, extensions=None, path="/ws", query=b""):
        self.incoming = asyncio.Queue()
        self.sent = []
        self.sent_event = asyncio.Event()
        self.fail_send = False
        self.scope = {
            "type": "websocket", "path": path, "raw_path": path.encode(),
            "query_string": query, "headers": [(b"host", b"x"),
                                               (b"origin", b"http://o.example")],
            "subprotocols": ["b", "a"], "client": ("127.0.0.1", 5),
            "server": ("127.0.0.1", 80),
            "extensions": {} if extensions is None else extensions,
        }
        self.incoming.put_nowait({"type": "websocket.connect"})

    async def receive(self):
        return await self.incoming.get()

    async def send(self, event):
        if self.fail_send:
            raise OSError("client gone")
        self.sent.append(event)
        self.sent_event.set()

    async def next_sent(self):
        while not self.sent:
            self.sent_event.clear()
            await asyncio.wait_for(self.sent_event.wait(), 5)
        return self.sent.pop(0)

    def put(self, **event):
        self.incoming.put_nowait(event)

    async def accept(self, **options):
        return await AioServer.accept(asgi=(self.scope, self.receive, self.send),
                                      **options)


def test_asgi_accept_messages_close_and_limits():
    async def body():
        fake = FakeAsgi(query=b"q=1")
        ws = await fake.accept(subprotocols=["a"], max_message_size=4, max_queue=2)
        assert await fake.next_sent() == {"type": "websocket.accept",
                                          "subprotocol": "a"}
        assert (ws.mode, ws.target, ws.subprotocol) == ("asgi", "/ws?q=1", "a")
        assert ws.remote_address == ("127.0.0.1", 5)
        fake.put(type="websocket.receive", text="t")
        fake.put(type="websocket.receive", bytes=b"b")
        fake.put(type="websocket.receive", bytes=b"c")
        assert await ws.receive(timeout=5) == "t"
        assert await ws.receive(timeout=5) == b"b"
        assert await ws.receive(timeout=5) == b"c"
        assert await ws.receive(timeout=0.05) is None
        await ws.send("out")
        await ws.send(b"out")
        assert await fake.next_sent() == {"type": "websocket.send", "text": "out"}
        assert await fake.next_sent() == {"type": "websocket.send", "bytes": b"out"}
        with pytest.raises(NotImplementedError, match="ASGI has no ping"):
            await ws.ping()
        fake.put(type="websocket.receive", text="\u20ac\u20ac")  # 6 bytes > 4
        assert await fake.next_sent() == {"type": "websocket.close", "code": 1009,
                                          "reason": "message too big"}
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive(timeout=5)
        assert info.value.reason == 1009
        fake.put(type="websocket.disconnect", code=1009)
        await ws.close()
        assert ws._driver.done and ws.close_reason == 1009

    run(body)


def test_asgi_reader_pauses_on_a_full_queue():
    async def body():
        fake = FakeAsgi()
        ws = await fake.accept(max_queue=2)
        for i in range(5):
            fake.put(type="websocket.receive", text=str(i))
        for _ in range(50):
            if ws._driver.read_paused:
                break
            await asyncio.sleep(0.005)
        assert ws._driver.read_paused and fake.incoming.qsize() == 3
        assert [await ws.receive(timeout=5) for _ in range(5)] == list("01234")
        fake.put(type="websocket.disconnect", code=4000, reason="peer")
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive(timeout=5)
        assert (info.value.reason, info.value.message) == (4000, "peer")
        await ws.close()

    run(body)


def test_asgi_close_timeout_and_lost_send():
    async def body():
        fake = FakeAsgi()
        ws = await fake.accept(close_timeout=0.1)
        await fake.next_sent()
        await ws.close(4001, "x")  # no disconnect ever comes: bounded
        assert await fake.next_sent() == {"type": "websocket.close", "code": 4001,
                                          "reason": "x"}
        assert ws._driver.done and ws.close_reason == 4001

        fake = FakeAsgi()
        ws = await fake.accept()
        fake.fail_send = True
        with pytest.raises(ConnectionClosed) as info:
            await ws.send("x")
        assert info.value.reason == 1006
        fake.put(type="websocket.disconnect", code=1006)
        await ws.close()

    run(body)


def test_asgi_refusals():
    async def body():
        fake = FakeAsgi(extensions={"websocket.http.response": {}})
        with pytest.raises(greenws.HandshakeError):
            await fake.accept(origins=["http://good.example"])
        start, body_event = await fake.next_sent(), await fake.next_sent()
        assert start["type"] == "websocket.http.response.start"
        assert start["status"] == 403
        assert b"Origin not allowed" in body_event["body"]

        fake = FakeAsgi()  # no denial extension: close before accepting
        with pytest.raises(greenws.HandshakeError):
            await fake.accept(origins=["http://good.example"])
        assert await fake.next_sent() == {"type": "websocket.close", "code": 1008}

        fake = FakeAsgi()
        fake.scope["type"] = "http"
        with pytest.raises(greenws.HandshakeError):
            await fake.accept()
        assert (await fake.next_sent())["status"] == 426

        fake = FakeAsgi()
        fake.incoming.get_nowait()
        fake.put(type="websocket.disconnect", code=1006)
        with pytest.raises(ConnectionError):
            await fake.accept()

    run(body)


def test_a_cancelled_ping_is_forgotten():
    async def body():
        async with RawServer() as server:
            ws = await AioClient.connect(server.url, close_timeout=0.2)
            await server.wait_peer()
            pending = asyncio.ensure_future(ws.ping(b"c"))
            await asyncio.sleep(0.05)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            assert ws._driver.session.waiting_pings() == []
            await ws.close()

    run(body)


def test_a_ping_flood_from_a_peer_that_does_not_read_stays_bounded():
    """Pongs that cannot be written make reading pause: the write buffer
    cannot grow with what a non-reading peer asks for."""
    state = {}
    release = None

    async def handler(ws):
        await release.wait()
        transport = ws._driver.transport
        state["buffered"] = transport.get_write_buffer_size()
        state["high"] = transport.get_write_buffer_limits()[1]
        state["paused"] = ws._driver.read_paused

    async def body():
        nonlocal release
        release = asyncio.Event()
        async with SockServer(handler, close_timeout=0.3) as server:
            peer = await RawPeer.connect(server.port, limit=65536, rcvbuf=65536)
            ping = frame(OP_PING, b"p" * 125, mask=True)
            for _ in range(100):  # up to 100,000 pings: 12 MiB of pongs
                peer.send_raw(ping * 1000)
                try:
                    await asyncio.wait_for(peer.writer.drain(), 0.2)
                except asyncio.TimeoutError:
                    break  # the server stopped reading: TCP pushes back
            ws = await server.first()
            for _ in range(200):
                if ws._driver.read_paused:
                    break
                await asyncio.sleep(0.01)
            release.set()
            await server.handlers_done()
            peer.writer.transport.abort()
        assert state["paused"], state
        assert state["buffered"] <= state["high"] + 65536

    run(body, timeout=30)


# -- Unix sockets, refusals, redirects, proxies (greenws.client's, shared) ------


def test_client_over_a_unix_socket(tmp_path):
    from websockets.asyncio.server import unix_serve

    path = str(tmp_path / "ws.sock")
    seen = {}

    def process_request(connection, request):
        seen.update(path=request.path, host=request.headers["Host"])

    async def body():
        async with unix_serve(_ws_echo, path, process_request=process_request):
            async with await AioClient.connect("ws://example.test/u?x=1",
                                               unix_socket=path) as ws:
                await ws.send("unix")
                assert await ws.receive() == "unix"
        with pytest.raises(ConnectionError, match="ws.sock"):
            await AioClient.connect("ws://localhost/", unix_socket=path)

    run(body)
    assert seen == {"path": "/u?x=1", "host": "example.test"}


def test_client_refusal_headers_body_and_redirects():
    paths = []

    def process_request(connection, request):
        if request.path == "/deny":
            response = connection.respond(403, "not you\n")
            response.headers["X-Why"] = "quota"
            return response
        if request.path in ("/old", "/loop"):
            response = connection.respond(307, "")
            response.headers["Location"] = "new" if request.path == "/old" else "/loop"
            return response
        paths.append(request.path)
        return None

    async def body():
        async with ws_serve(_ws_echo, "127.0.0.1", 0,
                            process_request=process_request) as server:
            base = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            with pytest.raises(ConnectionError) as info:
                await AioClient.connect(f"{base}/deny")
            assert info.value.status_code == 403
            assert ("x-why", "quota") in info.value.headers
            assert info.value.body == b"not you\n"
            async with await AioClient.connect(f"{base}/old") as ws:
                assert ws.url == f"{base}/new"
                await ws.send("moved")
                assert await ws.receive() == "moved"
            with pytest.raises(ConnectionError, match="more than 10") as info:
                await AioClient.connect(f"{base}/loop")
            assert info.value.status_code == 307

    run(body)
    assert paths == ["/new"]


def test_client_through_http_and_socks5_proxies(tinyproxy, socks5_proxy, tls,
                                                monkeypatch):
    server_ctx, client_ctx = tls
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    remotes = []

    def process_request(connection, request):
        remotes.append(connection.remote_address[1])

    async def echo_through(url, **options):
        async with await AioClient.connect(url, ssl_context=client_ctx,
                                           **options) as ws:
            await ws.send("through")
            assert await ws.receive() == "through"
            local = ws._driver.transport.get_extra_info("sockname")[1]
        assert remotes[-1] != local  # the server saw the proxy

    async def body():
        async with ws_serve(_ws_echo, "127.0.0.1", 0,
                            process_request=process_request) as plain, \
                ws_serve(_ws_echo, "127.0.0.1", 0, ssl=server_ctx,
                         process_request=process_request) as secure:
            ws_url = f"ws://127.0.0.1:{plain.sockets[0].getsockname()[1]}/"
            wss_url = f"wss://127.0.0.1:{secure.sockets[0].getsockname()[1]}/"
            await echo_through(ws_url, proxy=tinyproxy.url())
            await echo_through(wss_url, proxy=tinyproxy.url())
            await echo_through(ws_url, proxy=socks5_proxy.url())
            await echo_through(wss_url, proxy=socks5_proxy.url(scheme="socks5h"))
            monkeypatch.setenv("WSS_PROXY", tinyproxy.url())
            await echo_through(wss_url)
            with pytest.raises(ConnectionError) as info:
                await AioClient.connect(ws_url, proxy=tinyproxy.url(auth=False))
            assert info.value.status_code == 407
            assert b"Proxy Authentication Required" in info.value.body


# -- state, extensions, send(text=...) -------------------------------------------


def test_state_through_a_connections_life():
    seen = []

    class Watching(AioServer):
        def choose_subprotocol(self, request):
            seen.append(self.state)  # during the handshake
            return None

    async def body():
        async with RawServer() as server:
            ws = await AioClient.connect(server.url, close_timeout=5)
            peer = await server.wait_peer()
            assert ws.state is greenws.State.OPEN
            closing = asyncio.ensure_future(ws.close(4000, "bye"))
            assert await peer.read_close() == (4000, "bye")
            assert ws.state is greenws.State.CLOSING and not closing.done()
            peer.send_frame(OP_CLOSE, cp(4000, "bye"))
            await peer.close()
            await closing
            assert ws.state is greenws.State.CLOSED
        async with SockServer(echo, server_class=Watching) as server:
            async with ws_connect(server.url):
                ws = await server.first()
                assert ws.state is greenws.State.OPEN
            await server.handlers_done()
            assert ws.state is greenws.State.CLOSED
        assert seen == [greenws.State.CONNECTING]

    run(body)


@pytest.mark.parametrize("compression", [True, False])
def test_extensions(compression):
    async def body():
        async with SockServer(echo, compression=compression) as server:
            async with await AioClient.connect(server.url) as ws:
                assert await ws.receive(timeout=0) is None
                if compression:
                    (value,) = ws.extensions
                    assert value.startswith("permessage-deflate; ")
                    assert (await server.first()).extensions == [value]
                else:
                    assert ws.extensions == (await server.first()).extensions == []

    run(body)


def test_send_utf8_bytes_as_text_to_websockets_server():
    received = []

    async def handler(connection):
        async for message in connection:
            received.append(message)
            await connection.send(message)

    async def body():
        async with ws_serve(handler, "127.0.0.1", 0, max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            async with await AioClient.connect(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send(b"caf\xc3\xa9", text=True)
                assert await ws.receive() == "caf\u00e9"
                await ws.send(memoryview(b"\xe2\x82\xac"), text=True)
                assert await ws.receive() == "\u20ac"
                await ws.send("caf\u00e9", text=False)
                assert await ws.receive() == b"caf\xc3\xa9"
                big = "\u00e9" * (600 * 1024)
                await ws.send(big.encode("utf-8"), text=True)
                assert await ws.receive() == big
        assert received[:3] == ["caf\u00e9", "\u20ac", b"caf\xc3\xa9"]

    run(body)
