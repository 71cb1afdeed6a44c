"""The workloads: each takes a running server (or a client factory), returns numbers.

Single-connection workloads run for a fixed time (bounded loops, socket
timeouts) and report a rate; the many-connections workload reports memory,
CPU and wall time.  Each function measures one repetition; the driver in
:mod:`bench.__main__` repeats and takes medians.
"""

from __future__ import annotations

import struct
import threading
import time
from typing import Callable, Dict

from .many import Many, wait_quiet
from .rawclient import (
    OP_BINARY,
    OP_CLOSE,
    OP_TEXT,
    BenchError,
    RawClient,
    RawTCP,
    frame,
)
from .servers import PHYSICAL, Running

SMALL = b"0123456789abcdef" * 2  # 32 bytes of text
BIG = bytes(range(256)) * 4096  # 1 MiB, binary
MIB = 1 << 20
#: Seconds any single wait of a client library may take.
TIMEOUT = 30.0


def _client_for(server: Running):
    return (RawTCP if server.spec.name == PHYSICAL else RawClient)(server.port)


def round_trips(server: Running, seconds: float) -> float:
    """Round trips per second of a 32-byte text message on one connection."""
    client = _client_for(server)
    try:
        if isinstance(client, RawTCP):
            data = frame(SMALL)
            n = len(data)

            def once() -> None:
                client.sock.sendall(data)
                client.recv_exact(n)
        else:
            data = frame(SMALL)

            def once() -> None:
                client.sock.sendall(data)
                if client.read_message()[1] != SMALL:
                    raise BenchError("wrong echo")

        for _ in range(20):  # warm up
            once()
        count = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(50):
                once()
            count += 50
            now = time.perf_counter()
            if now >= end:
                return count / (now - t0)
    finally:
        client.close()


def throughput(server: Running, seconds: float) -> float:
    """MiB/s of 1 MiB binary messages echoed one at a time on one connection."""
    client = _client_for(server)
    data = frame(BIG, OP_BINARY)
    try:
        if isinstance(client, RawTCP):
            # A TCP echo writes while we write: send from a helper thread so
            # that neither side's buffers can fill up and deadlock.
            def once() -> None:
                sender = threading.Thread(target=client.sock.sendall, args=(data,))
                sender.start()
                client.recv_exact(len(data))
                sender.join(30)
        else:

            def once() -> None:
                client.sock.sendall(data)
                opcode, echoed = client.read_message()
                if len(echoed) != MIB or opcode != OP_BINARY:
                    raise BenchError(f"wrong echo of {len(echoed)} bytes")

        once()  # warm up
        count = 0
        t0 = time.perf_counter()
        while True:
            once()
            count += 1
            now = time.perf_counter()
            if now - t0 >= seconds or count >= 10000:
                return count / (now - t0)
    finally:
        client.close()


def many(server: Running, n: int, deflate: bool, timeout: float) -> Dict[str, float]:
    """N idle connections: memory and CPU per connection, burst echo time."""
    rss0 = wait_quiet(server.rss, timeout=5)
    cpu0 = server.cpu()
    conns = Many(server.port, n, deflate, tls=server.spec.tls)
    try:
        t0 = time.perf_counter()
        conns.connect(timeout)
        connect_wall = time.perf_counter() - t0
        rss1 = wait_quiet(server.rss, timeout=10)
        cpu1 = server.cpu()
        burst = conns.burst(timeout)
        rss2 = wait_quiet(server.rss, timeout=10)
        if not server.alive():
            raise BenchError("server died")
        return {
            "kib_per_conn": (rss1 - rss0) / n / 1024,
            "kib_per_conn_after_echo": (rss2 - rss0) / n / 1024,
            "cpu_ms_per_conn": (cpu1 - cpu0) * 1000 / n,
            "connect_s": connect_wall,
            "burst_s": burst,
            "deflate_negotiated": conns.negotiated / n,
        }
    finally:
        conns.close()


# -- the client section -------------------------------------------------------

def _greenws_client(url: str):
    import greenws

    ws = greenws.Client.connect(url, max_message_size=None, compression=False)
    return ws.send, lambda: ws.receive(timeout=TIMEOUT), ws.close


def _simple_client(url: str):
    import simple_websocket

    ws = simple_websocket.Client.connect(url, max_message_size=None)
    return ws.send, lambda: ws.receive(timeout=TIMEOUT), ws.close


def _websockets_client(url: str):
    from websockets.sync.client import connect

    ws = connect(url, max_size=None, compression=None)
    return ws.send, lambda: ws.recv(timeout=TIMEOUT), ws.close


def _websocket_client(url: str):
    import websocket

    ws = websocket.create_connection(url, timeout=TIMEOUT, enable_multithread=True)

    def send(data):
        if isinstance(data, bytes):
            ws.send_binary(data)
        else:
            ws.send(data)

    return send, ws.recv, ws.close


def _raw_client(url: str):
    """The bench's own raw client, as the reference: what the server allows."""
    client = RawClient(int(url.rsplit(":", 1)[1].strip("/")))
    framed: Dict[bytes, bytes] = {}  # pre-masked frames, as in section 1

    def send(data):
        payload = data.encode() if isinstance(data, str) else data
        if payload not in framed:
            framed[payload] = frame(payload, OP_TEXT if isinstance(data, str)
                                    else OP_BINARY)
        client.sock.sendall(framed[payload])

    def recv():
        opcode, payload = client.read_message()
        return payload.decode() if opcode == OP_TEXT else payload

    return send, recv, client.close


# asyncio clients: coroutines returning async (send, recv, close).

async def _aio_greenws_client(url: str):
    import greenws

    ws = await greenws.AioClient.connect(url, max_message_size=None,
                                         compression=False)
    # No timeout, as the other asyncio clients here.
    return ws.send, ws.receive, ws.close


async def _aio_websockets_client(url: str):
    from websockets.asyncio.client import connect

    ws = await connect(url, max_size=None, compression=None)
    return ws.send, ws.recv, ws.close


async def _aio_aiohttp_client(url: str):
    import aiohttp

    session = aiohttp.ClientSession()
    ws = await session.ws_connect(url, max_msg_size=0, compress=0)

    async def send(data):
        if isinstance(data, str):
            await ws.send_str(data)
        else:
            await ws.send_bytes(data)

    async def recv():
        return (await ws.receive()).data

    async def close():
        await ws.close()
        await session.close()

    return send, recv, close


async def _aio_simple_client(url: str):
    import simple_websocket

    ws = await simple_websocket.AioClient.connect(url)
    return ws.send, ws.receive, ws.close


#: The client-section name of :func:`_raw_client` (a reference, not a peer).
RAW_CLIENT = "raw client"

#: asyncio client libraries (their rows' runtime is "asyncio").
AIO_CLIENTS: Dict[str, Callable] = {
    "greenws.AioClient": _aio_greenws_client,
    "websockets.asyncio.client": _aio_websockets_client,
    "aiohttp ws_connect": _aio_aiohttp_client,
    "simple_websocket.AioClient": _aio_simple_client,
}

CLIENTS: Dict[str, Callable] = {
    RAW_CLIENT: _raw_client,
    "greenws.Client": _greenws_client,
    "simple_websocket.Client": _simple_client,
    "websockets.sync.client": _websockets_client,
    "websocket-client": _websocket_client,
    **AIO_CLIENTS,
}


def _aio_run(name: str, port: int, body: Callable) -> float:
    """Run ``body(send, recv)`` with asyncio client ``name`` in a new loop."""
    import asyncio

    async def main() -> float:
        send, recv, close = await AIO_CLIENTS[name](f"ws://127.0.0.1:{port}/")
        try:
            return await body(send, recv)
        finally:
            await close()

    return asyncio.run(main())


def client_round_trips(name: str, port: int, seconds: float) -> float:
    """Round trips/s of 32-byte text messages with client library ``name``."""
    text = SMALL.decode()
    if name in AIO_CLIENTS:

        async def body(send, recv) -> float:
            for _ in range(20):
                await send(text)
                await recv()
            count = 0
            t0 = time.perf_counter()
            while True:
                for _ in range(50):
                    await send(text)
                    if await recv() != text:
                        raise BenchError("wrong echo")
                count += 50
                now = time.perf_counter()
                if now - t0 >= seconds:
                    return count / (now - t0)

        return _aio_run(name, port, body)
    send, recv, close = CLIENTS[name](f"ws://127.0.0.1:{port}/")
    try:
        for _ in range(20):
            send(text)
            recv()
        count = 0
        t0 = time.perf_counter()
        while True:
            for _ in range(50):
                send(text)
                if recv() != text:
                    raise BenchError("wrong echo")
            count += 50
            now = time.perf_counter()
            if now - t0 >= seconds:
                return count / (now - t0)
    finally:
        close()


def client_throughput(name: str, port: int, seconds: float) -> float:
    """MiB/s of 1 MiB binary echoes with client library ``name``."""
    if name in AIO_CLIENTS:

        async def body(send, recv) -> float:
            await send(BIG)
            await recv()
            count = 0
            t0 = time.perf_counter()
            while True:
                await send(BIG)
                if len(await recv()) != MIB:
                    raise BenchError("wrong echo")
                count += 1
                now = time.perf_counter()
                if now - t0 >= seconds or count >= 10000:
                    return count / (now - t0)

        return _aio_run(name, port, body)
    send, recv, close = CLIENTS[name](f"ws://127.0.0.1:{port}/")
    try:
        send(BIG)
        recv()
        count = 0
        t0 = time.perf_counter()
        while True:
            send(BIG)
            if len(recv()) != MIB:
                raise BenchError("wrong echo")
            count += 1
            now = time.perf_counter()
            if now - t0 >= seconds or count >= 10000:
                return count / (now - t0)
    finally:
        close()


def _raw_connect_close(port: int) -> None:
    """The raw client's cycle: handshake, Close sent, the server's Close and
    its end of the TCP connection awaited."""
    client = RawClient(port)
    try:
        client.sock.sendall(frame(struct.pack("!H", 1000), OP_CLOSE))
        while client.sock.recv(4096):
            pass
    finally:
        client.sock.close()


def client_connects(name: str, port: int, seconds: float) -> float:
    """Connect+close cycles/s with client library ``name``: TCP, the opening
    handshake, the closing handshake, the TCP close (no message)."""
    url = f"ws://127.0.0.1:{port}/"
    if name in AIO_CLIENTS:
        import asyncio

        async def cycle() -> None:
            _, _, close = await AIO_CLIENTS[name](url)
            await close()

        async def main() -> float:
            for _ in range(10):
                await cycle()
            count = 0
            t0 = time.perf_counter()
            while True:
                await cycle()
                count += 1
                now = time.perf_counter()
                if now - t0 >= seconds:
                    return count / (now - t0)

        return asyncio.run(main())

    def sync_cycle() -> None:
        if name == RAW_CLIENT:
            _raw_connect_close(port)
        else:
            CLIENTS[name](url)[2]()

    for _ in range(10):
        sync_cycle()
    count = 0
    t0 = time.perf_counter()
    while True:
        sync_cycle()
        count += 1
        now = time.perf_counter()
        if now - t0 >= seconds:
            return count / (now - t0)


#: The client workloads: kind -> (metric, function(name, port, seconds)).
CLIENT_KINDS = {
    "client-rt": ("rt_per_s", client_round_trips),
    "client-mib": ("mib_per_s", client_throughput),
    "client-connect": ("connects_per_s", client_connects),
}
