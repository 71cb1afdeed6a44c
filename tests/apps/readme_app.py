"""Serves README examples, each mounted under its name (tests/test_readme.py).

$README_DIR holds the examples as modules (the README's code blocks, written
there by the test); $README_APPS names those to serve, comma-separated.
``/<name>/rest`` goes to module ``<name>``'s ``app`` with ``SCRIPT_NAME``
``/<name>`` and ``PATH_INFO`` ``/rest``, as any WSGI mount does.

Each call prints ``wsgi call started: <name>`` and, however it ends,
``wsgi call ended: <name> returned`` or ``... raised <module.Class>``: the
test waits until every started call has ended before it reads the server's
log, since the hosting server logs a failed call only after the app is done.
"""

import importlib
import os
import sys

sys.path.insert(0, os.environ["README_DIR"])

APPS = {
    name: importlib.import_module(name).app
    for name in os.environ["README_APPS"].split(",")
}


def app(environ, start_response):
    _, name, *rest = environ.get("PATH_INFO", "/").split("/", 2)
    print(f"wsgi call started: {name}", flush=True)
    outcome = "returned"
    try:
        mounted = APPS.get(name)
        if mounted is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no such README example\n"]
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + "/" + name
        environ["PATH_INFO"] = "/" + "".join(rest)
        return mounted(environ, start_response)
    except BaseException as exc:
        outcome = f"raised {type(exc).__module__}.{type(exc).__qualname__}"
        raise
    finally:
        print(f"wsgi call ended: {name} {outcome}", flush=True)
