"""An asyncio WebSocket client: send a few messages, print the replies.

    python examples/aio_client.py [URL] [--count N]

URL defaults to ``ws://127.0.0.1:8004/`` (examples/aio_sock.py).  One task
prints replies while the main one sends; then the script measures a ping's
round trip and closes with the closing handshake.  Exit status 1 if a reply
is missing.
"""

import argparse
import asyncio
import sys

import greenws
from greenws import AioClient


async def read_replies(ws, expected):
    received = 0
    async for message in ws:
        print(f"< {message!r}", flush=True)
        received += 1
        if received == expected:
            break
    return received


async def main(url, count):
    try:
        ws = await AioClient.connect(url, open_timeout=5)
    except greenws.ConnectionError as exc:
        print(f"cannot connect to {url}: {exc}", file=sys.stderr)
        return 1
    async with ws:
        reader = asyncio.ensure_future(read_replies(ws, count + 1))
        for i in range(count):
            print(f"> 'hello {i}'", flush=True)
            await ws.send(f"hello {i}")
        await ws.send(b"\x00binary\xff")  # bytes go as a binary message
        try:
            received = await asyncio.wait_for(reader, 10)
        except asyncio.TimeoutError:
            received = 0
        rtt = await ws.ping(timeout=5)
        print(f"ping round trip: {rtt * 1000:.2f} ms", flush=True)
    print(f"closed with code {ws.close_reason}", flush=True)
    if received != count + 1:
        print("some replies did not arrive", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8004/")
    parser.add_argument("--count", type=int, default=3)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.url, args.count)))
