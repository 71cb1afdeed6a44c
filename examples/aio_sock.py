"""A plain asyncio WebSocket echo server: no framework, AioServer(sock=...).

    python examples/aio_sock.py [--port 8004]

Each connection's HTTP request head is read here; AioServer.accept() gets the
socket, the headers, the request target and any bytes read past the head.
"""

import argparse
import asyncio
import socket

import greenws
from greenws import AioServer


async def read_request(loop, sock):
    """The request head: (target, [(name, value)], bytes read past it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > 65536:
            raise ConnectionError("request head too long")
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise ConnectionError("closed before the request")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    request_line, *lines = head.decode("latin-1").split("\r\n")
    target = request_line.split(" ")[1]
    headers = [tuple(p.strip() for p in line.split(":", 1)) for line in lines]
    return target, headers, rest


async def handle(loop, sock):
    try:
        target, headers, rest = await read_request(loop, sock)
        ws = await AioServer.accept(sock=sock, headers=headers, target=target,
                                    pending=rest)
    except (greenws.HandshakeError, ConnectionError, OSError, IndexError):
        sock.close()  # a refusal has already been sent on it
        return
    async with ws:
        async for message in ws:
            await ws.send(message)


async def main(host, port):
    loop = asyncio.get_running_loop()
    listener = socket.create_server((host, port))
    listener.setblocking(False)
    print(f"echo server on ws://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    tasks = set()
    with listener:
        while True:
            sock, _ = await loop.sock_accept(listener)
            task = loop.create_task(handle(loop, sock))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8004)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.host, args.port))
    except KeyboardInterrupt:
        print("echo server stopped", flush=True)
