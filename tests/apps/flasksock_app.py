"""A flask-sock application running on greenws through greenws.compat.

Nothing below the install() call knows about greenws: this is an ordinary
flask-sock app, served by tests/test_dropin.py on werkzeug (threaded) and
under ``gunicorn -k gevent``.

Routes:
  /echo                     WebSocket: echo every message back
  /close?code=N&reason=R    WebSocket: close with that code after one message
  /which                    HTTP: JSON naming the classes flask-sock really uses

With ``$GREENWS_LATE_INSTALL`` set, flask_sock is imported (with the real
simple-websocket) before install(), which must still switch it over.

Run on werkzeug with ``python flasksock_app.py PORT``; gunicorn imports
``flasksock_app:app``.
"""

import os
import sys

if os.environ.get("GREENWS_LATE_INSTALL"):
    import flask_sock  # noqa: F401

import greenws.compat  # noqa: E402

greenws.compat.install()  # before flask_sock imports simple_websocket

import json  # noqa: E402

import flask_sock  # noqa: E402
from flask import Flask, request  # noqa: E402

import greenws  # noqa: E402

app = Flask(__name__)
sock = flask_sock.Sock(app)


@sock.route("/echo")
def echo(ws):
    while True:
        ws.send(ws.receive())


@sock.route("/close")
def close(ws):
    ws.receive()
    code = int(request.args.get("code", "1000"))
    ws.close(code, request.args.get("reason"))


@app.get("/which")
def which():
    body = {
        "server_is_greenws": flask_sock.Server is greenws.Server,
        "closed_is_greenws": flask_sock.ConnectionClosed is greenws.ConnectionClosed,
        "server": f"{flask_sock.Server.__module__}.{flask_sock.Server.__qualname__}",
        "simple_websocket": getattr(sys.modules.get("simple_websocket"), "__name__",
                                    None),
    }
    return app.response_class(json.dumps(body), mimetype="application/json")
