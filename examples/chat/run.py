"""Run the chat example: ``python examples/chat/run.py [--server S] [--port N]``.

Servers (``--server`` or ``$CHAT_SERVER``):

* ``gunicorn`` (default): gunicorn with one ``gevent`` worker, the usual
  production setup for WebSockets on WSGI;
* ``eventlet``: ``eventlet.wsgi.server``, monkey-patched;
* ``werkzeug``: werkzeug's threaded development server (what Flask's
  ``app.run()`` uses).

It listens on 127.0.0.1:8000 by default (``--host``, ``--port`` or
``$CHAT_PORT``), prints the URL to open, and stops on Ctrl-C.
"""

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVERS = ("gunicorn", "eventlet", "werkzeug")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the greenws chat example.")
    parser.add_argument("--server", choices=SERVERS,
                        default=os.environ.get("CHAT_SERVER", "gunicorn"))
    parser.add_argument("--host", default=os.environ.get("CHAT_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int,
                        default=int(os.environ.get("CHAT_PORT", "8000")))
    return parser.parse_args()


def run_gunicorn(host: str, port: int) -> None:
    """gunicorn, one gevent worker; the app is imported in the worker."""
    from gunicorn.app.base import BaseApplication

    class Chat(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("worker_class", "gevent")
            self.cfg.set("workers", 1)
            # Open WebSockets are long requests: don't wait 30 s for them
            # on shutdown (Ctrl-C does not wait at all).
            self.cfg.set("graceful_timeout", 5)
            if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 27
                self.cfg.set("control_socket_disable", True)

        def load(self):  # noqa: ANN201 - gunicorn's hook
            # Imported here, in the worker, after gevent monkey-patched it.
            from app import app

            return app

    Chat().run()


def run_eventlet(host: str, port: int) -> None:
    """eventlet.wsgi, monkey-patched before anything else is imported."""
    import eventlet

    eventlet.monkey_patch()
    import signal

    import eventlet.hubs
    import eventlet.wsgi
    from app import app

    # Python runs a signal handler in whichever green thread happens to be
    # running: a KeyboardInterrupt raised there can kill a connection's green
    # thread half-way, and eventlet.wsgi.server() waits for every open
    # connection before it returns.  So Ctrl-C (or SIGTERM) runs a no-op
    # handler, and the signal number that Python writes to a wake-up pipe
    # wakes this green thread, which returns and ends the program.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: None)
    eventlet.spawn(eventlet.wsgi.server, eventlet.listen((host, port)), app)
    eventlet.hubs.trampoline(wake_r, read=True)


def run_werkzeug(host: str, port: int) -> None:
    """werkzeug's threaded dev server: one OS thread per connection."""
    from app import app
    from werkzeug.serving import run_simple

    run_simple(host, port, app, threaded=True)


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(HERE))
    print(f"greenws chat on {args.server}: open http://{args.host}:{args.port}/ "
          "in a browser (Ctrl-C to stop)", flush=True)
    runner = {"gunicorn": run_gunicorn, "eventlet": run_eventlet,
              "werkzeug": run_werkzeug}[args.server]
    pid = os.getpid()
    try:
        runner(args.host, args.port)
    except KeyboardInterrupt:
        pass
    finally:
        # gunicorn's master ends with sys.exit(); its forked worker also
        # unwinds through here, and must stay quiet.
        if os.getpid() == pid:
            print("chat stopped", flush=True)


if __name__ == "__main__":
    main()
