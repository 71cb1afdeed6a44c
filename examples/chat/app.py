"""A small chat room: Flask serves the page, greenws serves the WebSocket.

The WSGI app is :func:`create_app`'s result: requests for ``/ws`` go to a
:class:`greenws.WebSocketWSGI` (which answers non-upgrade requests with 426),
everything else to the Flask app.  It runs unchanged under gunicorn's gevent
worker, eventlet.wsgi and werkzeug's threaded server (see ``run.py``).

Protocol: connect to ``/ws?name=alice`` and send text; every connected socket
receives JSON events ``{"type": "join" | "leave", "name", "online"}`` and
``{"type": "message", "name", "text"}``.
"""

from __future__ import annotations

import collections
import json
from typing import Any, Dict, List, Optional, Set

from flask import Flask

import greenws

#: Longest chat line accepted; longer messages close the socket with 1009.
MAX_MESSAGE = 16 * 1024
#: Events that may wait for one slow reader before its oldest ones are dropped.
OUTBOX_SIZE = 100


class Member:
    """One connected socket, with its own bounded outbox and writer.

    :meth:`post` never blocks: it appends to the outbox and wakes the writer,
    a thread (or greenlet) of the connection's own preset.  So a reader whose
    TCP window is full, or who vanished, only delays itself; if it falls more
    than ``OUTBOX_SIZE`` events behind, its oldest events are dropped.
    """

    def __init__(self, ws: greenws.Server, name: str) -> None:
        self.ws = ws
        self.name = name
        self._outbox: collections.deque[str] = collections.deque(maxlen=OUTBOX_SIZE)
        self._wakeup = ws.event_class()
        self._stopped = False
        self._writer = ws.thread_class(target=self._write_loop)
        self._writer.start()

    def post(self, text: str) -> None:
        """Queue ``text`` for this member (never blocks)."""
        self._outbox.append(text)
        self._wakeup.set()

    def stop(self) -> None:
        """Let the writer send what is queued, then end."""
        self._stopped = True
        self._wakeup.set()

    def _write_loop(self) -> None:
        while True:
            self._wakeup.wait()
            self._wakeup.clear()
            while self._outbox:
                try:
                    self.ws.send(self._outbox.popleft())
                except greenws.ConnectionClosed:
                    return
            if self._stopped:
                return


class Room:
    """The set of members; :meth:`broadcast` posts an event to each of them."""

    def __init__(self, lock: Any) -> None:
        self._members: Set[Member] = set()
        self._lock = lock

    def join(self, member: Member) -> None:
        with self._lock:
            self._members.add(member)
        self.broadcast({"type": "join", "name": member.name, "online": len(self)})

    def leave(self, member: Member) -> None:
        with self._lock:
            self._members.discard(member)
        member.stop()
        self.broadcast({"type": "leave", "name": member.name, "online": len(self)})

    def broadcast(self, event: Dict[str, Any]) -> None:
        text = json.dumps(event)
        with self._lock:  # iterate over a copy: members come and go meanwhile
            members: List[Member] = list(self._members)
        for member in members:
            member.post(text)

    def __len__(self) -> int:
        return len(self._members)


def _name(ws: greenws.Server, number: int) -> str:
    from urllib.parse import parse_qs

    query = parse_qs(ws.environ.get("QUERY_STRING", ""))
    name = (query.get("name") or [""])[0].strip()[:32]
    return name or f"guest-{number}"


def create_app(preset: Optional[greenws.presets.Preset] = None) -> Any:
    """Build the chat's WSGI app.

    ``preset`` defaults to :func:`greenws.presets.detect`, so call this after
    monkey-patching (gevent, eventlet), as every server in ``run.py`` does:
    the room's lock must be one that cooperates with the running hub.
    """
    preset = preset or greenws.presets.detect()
    room = Room(preset["lock_class"]())
    counter = iter(range(1, 1 << 62))

    flask_app = Flask(__name__)

    @flask_app.get("/")
    def index() -> Any:
        return flask_app.send_static_file("index.html")

    def chat(ws: greenws.Server) -> None:
        member = Member(ws, _name(ws, next(counter)))
        room.join(member)
        try:
            for message in ws:
                if isinstance(message, bytes):
                    message = message.decode("utf-8", "replace")
                room.broadcast({"type": "message", "name": member.name,
                                "text": message})
        finally:
            room.leave(member)

    ws_app = greenws.WebSocketWSGI(
        chat, preset=preset, max_message_size=MAX_MESSAGE, ping_interval=25
    )

    def app(environ: Dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/ws":
            return ws_app(environ, start_response)
        return flask_app(environ, start_response)

    app.room = room  # type: ignore[attr-defined]
    return app


#: For ``gunicorn -k gevent --chdir examples/chat app:app`` (imported by the
#: worker, after gevent has monkey-patched it).
app = create_app()
