"""A chat served by several gunicorn workers, its rooms shared through Redis.

    REDIS_URL=redis://127.0.0.1:6379/0 python examples/rooms_chat.py [--port 8005]

runs ``gunicorn -k gevent -w 2`` on this module's ``app`` (the same as
``gunicorn -k gevent -w 2 --chdir examples rooms_chat:app``).  Connect to
``ws://127.0.0.1:8005/?room=NAME`` (default room: ``lobby``) and send text:
everyone in that room gets ``{"type": "message", "room", "text"}``, whichever
worker each of them is on.  On connecting, a client gets
``{"type": "welcome", "room", "worker"}`` (the worker's PID).  If Redis is
down, the sender gets ``{"type": "error", ...}``: the members on its own
worker got the message, the others did not.  Without ``REDIS_URL`` the rooms
are those of each worker alone.
"""

from __future__ import annotations

import json
import os
import sys
from urllib.parse import parse_qs

import greenws

rooms = greenws.Rooms(os.environ.get("REDIS_URL") or None)


def chat(ws: greenws.Server) -> None:
    query = parse_qs(ws.environ.get("QUERY_STRING", ""))
    room = query.get("room", ["lobby"])[0]
    rooms.join(ws, room)
    ws.send(json.dumps({"type": "welcome", "room": room, "worker": os.getpid()}))
    for text in ws:
        event = {"type": "message", "room": room, "text": str(text)}
        try:
            rooms.send(room, json.dumps(event))
        except greenws.BroadcastError as exc:
            ws.send(json.dumps({"type": "error", "text": str(exc)}))


app = greenws.WebSocketWSGI(chat)


def main() -> None:
    import argparse

    from gunicorn.app.base import BaseApplication

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8005)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    class RoomsChat(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("worker_class", "gevent")
            self.cfg.set("workers", args.workers)
            self.cfg.set("graceful_timeout", 5)
            if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 27
                self.cfg.set("control_socket_disable", True)

        def load(self):  # noqa: ANN201 - gunicorn's hook
            # Imported in each worker, after gevent patched it: each worker
            # has its own Redis link.
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from rooms_chat import app as worker_app

            return worker_app

    print(f"rooms chat on ws://{args.host}:{args.port}/?room=lobby", flush=True)
    RoomsChat().run()


if __name__ == "__main__":
    main()
