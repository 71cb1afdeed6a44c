"""Serve an app module of tests/apps on one hosting server.

    serve.py KIND PORT [MODULE]     (MODULE defaults to echo_app)

KIND: werkzeug | eventlet (monkey-patched) | eventlet-plain (not patched) |
gevent (not monkey-patched) | gevent-patched.
GREENWS_TEST_CLOSE_ON_SIGNALS=1 in the environment: greenws.close_all_on_signals().
SERVE_CERTFILE and SERVE_KEYFILE (eventlet and gevent kinds): serve over TLS.
gunicorn is started with its own command line (see tests/servers.py).
"""

import importlib
import os
import sys

kind, port = sys.argv[1], int(sys.argv[2])
module = sys.argv[3] if len(sys.argv) > 3 else "echo_app"

# Patching must come before the app (and greenws) import socket or threading.
if kind == "eventlet":
    import eventlet

    eventlet.monkey_patch()
elif kind == "gevent-patched":
    from gevent import monkey

    monkey.patch_all()

app = importlib.import_module(module).app

if os.environ.get("GREENWS_TEST_CLOSE_ON_SIGNALS"):
    # What the README's Deployment section tells users of these servers.
    import greenws

    unpatched = {"gevent": "GEVENT", "eventlet-plain": "EVENTLET"}
    greenws.close_all_on_signals(
        preset=getattr(greenws.presets, unpatched[kind]) if kind in unpatched else None
    )

tls = {}
if os.environ.get("SERVE_CERTFILE"):
    tls = {"certfile": os.environ["SERVE_CERTFILE"],
           "keyfile": os.environ["SERVE_KEYFILE"]}

if kind == "werkzeug":
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", port, app, threaded=True)
elif kind in ("eventlet", "eventlet-plain"):
    import eventlet
    import eventlet.wsgi

    listener = eventlet.listen(("127.0.0.1", port))
    if tls:
        listener = eventlet.wrap_ssl(listener, server_side=True, **tls)
    eventlet.wsgi.server(listener, app)
elif kind in ("gevent", "gevent-patched"):
    from gevent.pywsgi import WSGIServer

    WSGIServer(("127.0.0.1", port), app, **tls).serve_forever()
else:
    raise SystemExit(f"unknown server kind {kind!r}")
