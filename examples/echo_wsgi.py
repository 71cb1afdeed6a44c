"""A plain WSGI echo server on gevent.pywsgi, WITHOUT monkey-patching.

    python examples/echo_wsgi.py [--port 8001]

WebSocket requests (any path) are echoed back; plain HTTP gets a short text.
Nothing is monkey-patched, so greenws must use gevent's own classes: the
``GEVENT`` preset, which auto-detection would also pick (the server hands
out gevent sockets).  Try it with ``python examples/client.py``.
"""

import argparse
import signal

import gevent
from gevent.pywsgi import WSGIServer

import greenws


def echo(ws: greenws.Server) -> None:
    """Send every message back, text as text and binary as binary."""
    for message in ws:
        ws.send(message)


def hello(environ, start_response):
    """The fallback for plain HTTP requests."""
    body = b"greenws echo server: connect a WebSocket client to this URL\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


app = greenws.WebSocketWSGI(echo, fallback=hello, preset=greenws.presets.GEVENT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    server = WSGIServer((args.host, args.port), app)
    print(f"echo server on ws://{args.host}:{args.port}/ (Ctrl-C to stop)",
          flush=True)
    # Ctrl-C stops the server from a greenlet of its own, rather than as a
    # KeyboardInterrupt raised in whatever greenlet happens to be running.
    gevent.signal_handler(signal.SIGINT, server.stop)
    server.serve_forever()
    print("echo server stopped", flush=True)


if __name__ == "__main__":
    main()
