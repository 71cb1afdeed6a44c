"""Run one benchmark server: ``python -m bench.serve NAME PORT``.

Each server runs in its own process so that its memory and CPU can be read
from /proc and so that monkey-patching (gevent, eventlet) never leaks into the
client.  gunicorn servers are started by :mod:`bench.servers` with gunicorn's
own command line instead.

With ``BENCH_PROFILE=path`` in the environment the server runs under cProfile
and writes its statistics to ``path`` when it gets SIGTERM or SIGINT.
"""

from __future__ import annotations

import sys

NAME = sys.argv[1] if len(sys.argv) > 1 else ""

# Monkey-patching must come before anything imports socket or threading.
if NAME.endswith("-eventlet"):
    import eventlet

    eventlet.monkey_patch()
elif "-pywsgi" in NAME:
    from gevent import monkey

    monkey.patch_all()

import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402

from bench import apps  # noqa: E402

BACKLOG = 4096
MAX_CONNECTIONS = 20000


def _werkzeug(app, port):
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    make_server("127.0.0.1", port, app, threaded=True).serve_forever()


def _eventlet(app, port):
    import eventlet
    import eventlet.wsgi

    listener = eventlet.listen(("127.0.0.1", port), backlog=BACKLOG)
    eventlet.wsgi.server(
        listener, app, max_size=MAX_CONNECTIONS, log_output=False, debug=False
    )


def _pywsgi(app, port):
    from gevent.pywsgi import WSGIServer

    WSGIServer(("127.0.0.1", port), app, log=None, backlog=BACKLOG).serve_forever()


def _geventws(port, **tls):
    from gevent.pywsgi import WSGIServer
    from geventwebsocket.handler import WebSocketHandler

    server = WSGIServer(
        ("127.0.0.1", port),
        apps.geventws_app,
        handler_class=WebSocketHandler,
        log=None,
        backlog=BACKLOG,
        **tls,
    )
    server.serve_forever()


def _geventws_tls(port):
    from bench.servers import CERT_ENV, KEY_ENV

    _geventws(port, certfile=os.environ[CERT_ENV], keyfile=os.environ[KEY_ENV])


def _websockets(port):
    from websockets.sync.server import serve

    def echo(ws):
        for message in ws:
            ws.send(message)

    with serve(
        echo, "127.0.0.1", port, max_size=None, compression=None, backlog=BACKLOG
    ) as server:
        server.serve_forever()


def _raw_tcp(port):
    """Threaded TCP echo: recv and sendall, nothing else (the physical floor)."""
    import socket
    import threading

    def echo(conn):
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                data = conn.recv(262144)
                if not data:
                    return
                conn.sendall(data)

    listener = socket.create_server(("127.0.0.1", port), backlog=BACKLOG)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


#: Servers named ``<app>-<host>``: how to start each host, and each app.
_HOSTS = {"werkzeug": _werkzeug, "eventlet": _eventlet, "pywsgi": _pywsgi}
_APPS = {
    "greenws": lambda: apps.greenws_app,
    "simple": lambda: apps.simple_app,
    "raw": lambda: apps.raw_app,
    "eventletws": apps.make_eventletws_app,  # only after monkey-patching
}
#: Servers that bring their own host.
_OWN_HOST = {"geventws-pywsgi": _geventws, "geventws-pywsgi-tls": _geventws_tls,
             "websockets-sync": _websockets,
             "raw-tcp": _raw_tcp}


def run(name: str, port: int) -> None:
    from bench import aioapps

    if name in aioapps.NAMES:
        aioapps.run(name, port)
        return
    if name in _OWN_HOST:
        _OWN_HOST[name](port)
        return
    app, _, host = name.partition("-")
    if app not in _APPS or host not in _HOSTS:
        raise SystemExit(f"unknown server {name!r}")
    _HOSTS[host](_APPS[app](), port)


def main() -> None:
    port = int(sys.argv[2])
    profile_path = os.environ.get("BENCH_PROFILE")
    if not profile_path:
        run(NAME, port)
        return
    import cProfile

    profiler = cProfile.Profile()

    def stop(signum, frame):
        profiler.disable()
        profiler.dump_stats(profile_path)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    profiler.enable()
    run(NAME, port)


if __name__ == "__main__":
    main()
