"""gunicorn integration: close WebSockets with 1001 when a worker stops.

Use it as (or import it into) a gunicorn configuration module::

    gunicorn -k gevent -c python:greenws.gunicorn app:app

or, in your own ``gunicorn.conf.py``::

    from greenws.gunicorn import post_worker_init, worker_int  # noqa: F401

A worker stops gracefully on SIGTERM, on ``--max-requests`` recycling, on
a reload (``kill -HUP`` of the master), when its master dies, or when it
is upgraded: gunicorn sets ``worker.alive`` to False, keeps accepting for
up to a second, and then waits up to ``--graceful-timeout`` for requests
to finish.  A WebSocket request only finishes when the connection closes,
so a watcher started by :func:`post_worker_init` notices ``alive`` turning
False and calls :func:`greenws.registry.stop`: every open connection of the
worker is closed with 1001 Going Away, and so is every one the worker still
accepts, so that the worker exits as soon as gunicorn looks again.

SIGQUIT and SIGINT (gunicorn's quick shutdown, which the master also sends
its workers on its own SIGQUIT and SIGINT) make a worker call the
``worker_int`` hook and exit 0.1 s later; :func:`worker_int` first closes
every connection with 1001, giving the closing handshakes up to
:data:`QUICK_CLOSE_TIMEOUT` seconds.
"""

from __future__ import annotations

from typing import Any

from . import presets, registry

__all__ = ["post_worker_init", "watch_worker", "worker_int"]

#: Seconds between two looks at ``worker.alive``.
POLL_INTERVAL = 0.2
#: Seconds :func:`worker_int` gives the closing handshakes (the master
#: kills workers 2 s after a quick shutdown is requested).
QUICK_CLOSE_TIMEOUT = 1.0


def watch_worker(worker: Any, reason: str = registry.SHUTTING_DOWN) -> None:
    """Start a watcher that closes all connections once ``worker`` stops."""
    preset = presets.detect()
    stopped = preset["event_class"]()

    def watch() -> None:
        # gunicorn flips a plain attribute and offers no event to wait on.
        while worker.alive:
            stopped.wait(POLL_INTERVAL)
        registry.stop(registry.GOING_AWAY, reason)

    thread = preset["thread_class"](target=watch)
    try:
        thread.daemon = True
    except (AttributeError, RuntimeError):  # pragma: no cover
        pass
    thread.start()


def post_worker_init(worker: Any) -> None:
    """gunicorn hook: watch this worker and close its WebSockets on stop."""
    watch_worker(worker)


def worker_int(worker: Any) -> None:
    """gunicorn hook: a worker quits at once; close its WebSockets first.

    gunicorn calls it from the SIGQUIT/SIGINT handler (in a greenlet of its
    own under the gevent worker) and from ``--reload``.
    """
    registry.stop(registry.GOING_AWAY, registry.SHUTTING_DOWN, QUICK_CLOSE_TIMEOUT)
