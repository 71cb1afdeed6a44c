"""A threaded WebSocket client: send a few messages, print the replies.

    python examples/client.py [URL] [--count N]

URL defaults to ``ws://127.0.0.1:8001/``, where ``examples/echo_wsgi.py``
listens.  A reader thread prints every reply while the main thread sends;
then the script measures the ping round-trip time and closes with a proper
closing handshake.  It exits with status 1 if a reply is missing.
"""

import argparse
import sys
import threading

import greenws


def read_replies(ws: greenws.Client, expected: int, done: threading.Event) -> None:
    """Print replies until ``expected`` arrived or the connection closed."""
    received = 0
    try:
        for message in ws:
            received += 1
            print(f"< {message!r}", flush=True)
            if received == expected:
                break
    except greenws.ConnectionClosed as exc:
        print(f"connection closed: {exc.reason} {exc.message or ''}", flush=True)
    if received == expected:
        done.set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8001/")
    parser.add_argument("--count", type=int, default=3)
    args = parser.parse_args()

    try:
        ws = greenws.Client.connect(args.url, open_timeout=5)
    except greenws.ConnectionError as exc:
        print(f"cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 1
    with ws:  # closes (with the closing handshake) on exit
        print(f"connected to {args.url} from {ws.local_address}", flush=True)
        done = threading.Event()
        reader = threading.Thread(target=read_replies, args=(ws, args.count + 1, done))
        reader.start()
        for i in range(args.count):
            text = f"hello {i}"
            print(f"> {text!r}", flush=True)
            ws.send(text)
        data = b"\x00binary\xff"
        print(f"> {data!r}", flush=True)
        ws.send(data)  # bytes go as a binary message
        ok = done.wait(timeout=10)
        reader.join(timeout=1)
        rtt = ws.ping(timeout=5)
        print(f"ping round trip: {rtt * 1000:.2f} ms", flush=True)
    print(f"closed with code {ws.close_reason}", flush=True)
    if not ok:
        print("some replies did not arrive", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
