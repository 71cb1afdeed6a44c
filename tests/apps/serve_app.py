"""Serve any app module of tests/apps: serve_app.py KIND PORT MODULE.

Like serve.py (which always serves echo_app), for the apps of the resource
and leak tests.  KIND: werkzeug | eventlet | gevent | gevent-patched.
"""

import importlib
import sys

kind, port, module = sys.argv[1], int(sys.argv[2]), sys.argv[3]

if kind == "eventlet":
    import eventlet

    eventlet.monkey_patch()
elif kind == "gevent-patched":
    from gevent import monkey

    monkey.patch_all()

app = importlib.import_module(module).app

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
