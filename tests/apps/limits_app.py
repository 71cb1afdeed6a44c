"""An echo app with a small ``max_message_size``, for the 1009 conformance cases.

Every WebSocket path echoes each message back; the limit is
``GREENWS_TEST_LIMIT`` bytes (default 16384) and permessage-deflate is on (the
server default), so compression bombs can be tried too.

gunicorn serves it as ``limits_app:app``; the other servers with
``python limits_app.py KIND PORT`` (KIND as in serve.py).
"""

import os
import sys

if __name__ == "__main__" and len(sys.argv) > 1:
    # Patch before greenws (and its socket/threading imports) is loaded.
    if sys.argv[1] == "eventlet":
        import eventlet

        eventlet.monkey_patch()
    elif sys.argv[1] == "gevent-patched":
        from gevent import monkey

        monkey.patch_all()

import greenws  # noqa: E402

LIMIT = int(os.environ.get("GREENWS_TEST_LIMIT", "16384"))


def echo(ws):
    for message in ws:
        ws.send(message)


def fallback(environ, start_response):
    body = b"limits"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


app = greenws.WebSocketWSGI(echo, fallback=fallback, max_message_size=LIMIT)


def main(kind, port):
    if kind == "werkzeug":
        from werkzeug.serving import run_simple

        run_simple("127.0.0.1", port, app, threaded=True)
    elif kind == "eventlet":
        import eventlet.wsgi

        eventlet.wsgi.server(eventlet.listen(("127.0.0.1", port)), app)
    elif kind in ("gevent", "gevent-patched"):
        from gevent.pywsgi import WSGIServer

        WSGIServer(("127.0.0.1", port), app).serve_forever()
    else:
        raise SystemExit(f"unknown server kind {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
