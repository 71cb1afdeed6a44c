"""gunicorn integration: close WebSockets with 1001 when a worker stops.

Use it as (or import it into) a gunicorn configuration module::

    gunicorn -k gevent -c python:greenws.gunicorn app:app

or, in your own ``gunicorn.conf.py``::

    from greenws.gunicorn import post_worker_init  # noqa: F401

A worker stops on SIGTERM/SIGINT/SIGQUIT, on ``--max-requests`` recycling,
when its master dies, or when it is upgraded; in every case gunicorn sets
``worker.alive`` to False and then waits up to ``--graceful-timeout`` for
requests to finish.  A WebSocket request only finishes when the connection
closes, so a watcher started here notices ``alive`` turning False and closes
every open connection of the worker with 1001 Going Away.
"""

from __future__ import annotations

from typing import Any

from . import presets, registry

__all__ = ["post_worker_init", "watch_worker"]

#: Seconds between two looks at ``worker.alive``.
POLL_INTERVAL = 0.2


def watch_worker(worker: Any, reason: str = "server shutting down") -> None:
    """Start a watcher that closes all connections once ``worker`` stops."""
    preset = presets.detect()
    stopped = preset["event_class"]()

    def watch() -> None:
        # gunicorn flips a plain attribute and offers no event to wait on.
        while worker.alive:
            stopped.wait(POLL_INTERVAL)
        registry.close_all(registry.GOING_AWAY, reason)

    thread = preset["thread_class"](target=watch)
    try:
        thread.daemon = True
    except (AttributeError, RuntimeError):  # pragma: no cover
        pass
    thread.start()


def post_worker_init(worker: Any) -> None:
    """gunicorn hook: watch this worker and close its WebSockets on stop."""
    watch_worker(worker)
