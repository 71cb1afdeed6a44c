"""The fan-out server (bench.fanout): gunicorn -k gevent serves ``app``.

``/member`` connections join the room "all" and read until closed.  One
``/trigger`` connection drives it: each text message it sends is a command,
answered once the server has done it (not when the members have it):

* ``count``: the number of members in this process;
* ``rooms N`` / ``broadcast N`` / ``loop N``: send N times one message of
  :data:`PAYLOAD` to every member, with ``Rooms.send`` (locally and, with
  ``$FANOUT_REDIS``, to the other processes through Redis),
  ``greenws.broadcast``, or a plain ``ws.send()`` loop over the members.
"""

from __future__ import annotations

import os

from .apps import raise_nofile  # noqa: F401 - raises the fd limit

#: One dashboard-sized update: ~600 bytes of JSON-like text.
PAYLOAD = ('{"type": "update", "values": [' + ", ".join(
    f'{{"id": {i}, "name": "sensor-{i}", "value": {i * 7 % 101}}}' for i in range(12)
) + "]}")

_rooms = None
_members: list = []


def _get_rooms():
    global _rooms
    if _rooms is None:
        import greenws

        _rooms = greenws.Rooms(os.environ.get("FANOUT_REDIS") or None)
    return _rooms


def app(environ, start_response):
    import greenws

    rooms = _get_rooms()
    ws = greenws.Server.accept(environ, max_message_size=None)
    try:
        if environ.get("PATH_INFO") == "/member":
            rooms.join(ws, "all")
            _members.append(ws)
            try:
                while ws.receive() is not None:
                    pass
            finally:
                _members.remove(ws)
        else:
            while True:
                command = ws.receive()
                verb, _, count = str(command).partition(" ")
                if verb == "count":
                    ws.send(str(len(rooms.members("all"))))
                    continue
                for _ in range(int(count or 1)):
                    if verb == "rooms":
                        rooms.send("all", PAYLOAD)
                    elif verb == "broadcast":
                        greenws.broadcast(_members, PAYLOAD)
                    else:
                        for member in list(_members):
                            try:
                                member.send(PAYLOAD)
                            except greenws.ConnectionClosed:
                                pass
                ws.send("done")
    except greenws.ConnectionClosed:
        pass
    finally:
        ws.close()
    return []


# -- the peer: python-socketio's emit(to=room), gevent mode ------------------

_sio_wsgi = None


def _build_sio():
    import sys

    # Under a plain gunicorn gevent worker engineio's gevent driver must use
    # simple-websocket: with gevent-websocket importable it would look for
    # that worker's environ key instead.
    sys.modules["geventwebsocket"] = None  # type: ignore[assignment]
    import socketio

    import greenws

    # No engine.io pings during a run (the bench's members do not answer).
    sio = socketio.Server(async_mode="gevent", ping_interval=600, ping_timeout=600)

    @sio.event
    def connect(sid, environ):
        sio.enter_room(sid, "all")

    def trigger(environ, start_response):
        ws = greenws.Server.accept(environ)
        try:
            while True:
                verb, _, count = str(ws.receive()).partition(" ")
                if verb == "count":
                    members = sio.manager.get_participants("/", "all")
                    ws.send(str(sum(1 for _ in members)))
                    continue
                for _ in range(int(count or 1)):
                    sio.emit("update", PAYLOAD, to="all")
                ws.send("done")
        except greenws.ConnectionClosed:
            pass
        finally:
            ws.close()
        return []

    return socketio.WSGIApp(sio, trigger)


def sio_app(environ, start_response):
    """python-socketio (gevent mode) with ``/trigger`` as for :func:`app`
    (``emit N``); built on first use, in the worker."""
    global _sio_wsgi
    if _sio_wsgi is None:
        _sio_wsgi = _build_sio()
    return _sio_wsgi(environ, start_response)
