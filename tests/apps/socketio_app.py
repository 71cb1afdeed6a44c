"""A python-socketio server whose websocket transport runs on greenws.

python-engineio's threading and gevent drivers do ``import simple_websocket``;
greenws.compat.install() makes that import give greenws.  The async mode comes
from ``$SIO_ASYNC_MODE`` (``threading`` or ``gevent``).

Socket.IO events:
  hello(data) -> ack ``{"echo": data, ...which()}``, and emits ``reply`` too.
HTTP:
  /which       JSON from :func:`which` (outside of any WebSocket)

With ``$GREENWS_LATE_INSTALL`` set, engineio's driver is imported (with the
real simple-websocket) before install(), which must still switch it over.

Run on werkzeug with ``python socketio_app.py PORT``; gunicorn imports
``socketio_app:app``.
"""

import os
import sys

if os.environ.get("GREENWS_LATE_INSTALL"):
    import engineio.async_drivers._websocket_wsgi  # noqa: F401

import greenws.compat  # noqa: E402

greenws.compat.install()  # before engineio imports simple_websocket

MODE = os.environ.get("SIO_ASYNC_MODE", "threading")

if MODE == "gevent":
    # engineio's gevent driver prefers gevent-websocket whenever
    # ``import geventwebsocket`` succeeds, and only falls back to
    # simple-websocket (here: greenws) when it fails.  gevent-websocket may be
    # installed in the test venv, so block it: a None entry in sys.modules
    # makes that import raise ImportError.
    sys.modules["geventwebsocket"] = None  # type: ignore[assignment]

import gc  # noqa: E402
import json  # noqa: E402

import engineio.async_drivers._websocket_wsgi as websocket_wsgi  # noqa: E402
import socketio  # noqa: E402

import greenws  # noqa: E402

sio = socketio.Server(async_mode=MODE)


def which():
    """Where engineio's websocket transport comes from, and what is open."""
    live = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, greenws.Server) and obj.connected
    ]
    websocket_class = sio.eio._async["websocket"]
    return {
        "async_mode": sio.async_mode,
        "simple_websocket": websocket_wsgi.simple_websocket.__name__,
        "websocket_class": f"{websocket_class.__module__}."
        f"{websocket_class.__qualname__}",
        "geventwebsocket_blocked": "geventwebsocket" in sys.modules
        and sys.modules["geventwebsocket"] is None,
        "live_greenws": [
            {
                "mode": ws.mode,
                "preset": ws.preset.name,
                "classes": {
                    key: f"{cls.__module__}.{cls.__qualname__}"
                    for key, cls in ws.preset.items()
                },
                "path": ws.environ.get("PATH_INFO"),
            }
            for ws in live
        ],
    }


@sio.event
def hello(sid, data):
    answer = {"echo": data, **which()}
    sio.emit("reply", answer, to=sid)
    return answer


def fallback(environ, start_response):
    body = json.dumps(which()).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


app = socketio.WSGIApp(sio, fallback)
