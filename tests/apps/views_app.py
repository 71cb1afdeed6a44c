"""Framework views and plain WSGI functions that call ``Server.accept()``
themselves and end the request however their authors like.

Served by tests/test_views.py on every hosting server.  None of these use
WebSocketWSGI or end_response: after the WebSocket, each returns what its
framework or its author returns, and the hosting server must still write
nothing, log no error and go on serving.

Routes (path prefix picks the kind of view):
  /flask/echo        simple-websocket's own Flask example (through
                     greenws.compat): loop until ConnectionClosed, return ""
  /flask/origin      a Flask view with origins=["http://good.example"]
  /flask/auth        a Flask view whose Server refuses with 401 (check_request)
  /sock/echo         a flask-sock route (SOCK_SERVER_OPTIONS: origins)
  /plain/list        a plain WSGI function: accept, loop, return []
  /plain/none        the same, returning None
  /plain/noclose     returns [] after the first message, without closing
  /plain/flasksock   ends like flask-sock (close() errors ignored) but
                     never calls close(): returns [] once ConnectionClosed
  /django/echo       a Django view: accept, loop, return HttpResponse()
  /idle?marker=PATH  sleeps (cooperatively) until PATH exists, then
                     receives everything and records it for /idleresult
  /idleresult        sends the JSON of what the last /idle connection got
Plain HTTP: "hello" from the Flask app.
"""

import greenws.compat

greenws.compat.install()  # before flask_sock and simple_websocket imports

import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import flask_sock  # noqa: E402
from flask import Flask, request  # noqa: E402
from simple_websocket import ConnectionClosed, Server  # noqa: E402

import greenws  # noqa: E402

# -- Flask ---------------------------------------------------------------------

flask_app = Flask(__name__)
flask_app.config["SOCK_SERVER_OPTIONS"] = {"origins": ["http://good.example"]}
sock = flask_sock.Sock(flask_app)


@flask_app.route("/flask/echo", websocket=True)
def flask_echo():
    ws = Server.accept(request.environ)
    try:
        while True:
            data = ws.receive()
            ws.send(data)
    except ConnectionClosed:
        pass
    return ""


@flask_app.route("/flask/origin", websocket=True)
def flask_origin():
    ws = Server.accept(request.environ, origins=["http://good.example"])
    try:
        while True:
            ws.send(ws.receive())
    except ConnectionClosed:
        pass
    return ""


class TokenServer(greenws.Server):
    def check_request(self, environ):
        if request.args.get("token") != "secret":
            raise greenws.HandshakeError(
                401, "login required", [("WWW-Authenticate", "Token")]
            )


@flask_app.route("/flask/auth", websocket=True)
def flask_auth():
    ws = TokenServer.accept(request.environ)
    with ws:
        for message in ws:
            ws.send(message)
    return ""


@sock.route("/sock/echo")
def sock_echo(ws):
    while True:
        ws.send(ws.receive())


@flask_app.get("/")
def index():
    return "hello"


# -- plain WSGI functions ----------------------------------------------------------


def plain_loop(environ):
    ws = greenws.Server.accept(environ)
    try:
        while True:
            ws.send(ws.receive())
    except greenws.ConnectionClosed:
        pass
    return ws


def plain_list(environ, start_response):
    plain_loop(environ)
    return []


def plain_none(environ, start_response):
    plain_loop(environ)


def plain_noclose(environ, start_response):
    ws = greenws.Server.accept(environ)
    ws.send(ws.receive())
    return []


def plain_flasksock(environ, start_response):
    ws = greenws.Server.accept(environ)
    try:
        while True:
            ws.send(ws.receive())
    except greenws.ConnectionClosed:
        pass
    return []


IDLE = {}


def _sleep(ws, seconds):
    """Sleep without blocking the hub of a server that is not patched."""
    if ws.preset.name == "gevent":
        import gevent

        gevent.sleep(seconds)
    elif ws.preset.name == "eventlet":
        import eventlet

        eventlet.sleep(seconds)
    else:
        time.sleep(seconds)


def idle(environ, start_response):
    marker = environ.get("QUERY_STRING", "").partition("marker=")[2]
    ws = greenws.Server.accept(environ)
    IDLE.clear()
    deadline = time.monotonic() + 20
    while not os.path.exists(marker) and time.monotonic() < deadline:
        _sleep(ws, 0.02)  # "busy elsewhere": no receive() for a while
    got = []
    try:
        for message in ws:
            got.append(message)
    except greenws.ConnectionClosed:
        pass
    IDLE.update(messages=got, code=ws.close_reason, reason=ws.close_message)
    return []


def idle_result(environ, start_response):
    with greenws.Server.accept(environ) as ws:
        ws.send(json.dumps(IDLE))
    return []


# -- Django ----------------------------------------------------------------------

_django = None


def django_app(environ, start_response):
    global _django
    if _django is None:
        from django.conf import settings

        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=[],
            LOGGING_CONFIG=None,
        )
        import django
        from django.core.wsgi import get_wsgi_application

        django.setup()
        _django = get_wsgi_application()
    return _django(environ, start_response)


def django_echo(request):
    from django.http import HttpResponse

    ws = greenws.Server.accept(request.environ)
    try:
        for message in ws:
            ws.send(message)
    except greenws.ConnectionClosed:
        pass
    return HttpResponse()


def _urls():
    try:
        from django.urls import path
    except ImportError:  # pragma: no cover - Django not installed
        return []
    return [path("django/echo", django_echo)]


urlpatterns = _urls()


PLAIN = {
    "/plain/list": plain_list,
    "/plain/none": plain_none,
    "/plain/noclose": plain_noclose,
    "/plain/flasksock": plain_flasksock,
    "/idle": idle,
    "/idleresult": idle_result,
}


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path in PLAIN:
        return PLAIN[path](environ, start_response)
    if path.startswith("/django/"):
        return django_app(environ, start_response)
    return flask_app.wsgi_app(environ, start_response)
