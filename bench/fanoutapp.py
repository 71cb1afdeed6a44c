"""The fan-out server (bench.fanout): gunicorn -k gevent serves ``app``.

``/member`` connections join the room "all" and read until closed.  One
``/trigger`` connection drives it: each text message it sends is a command,
answered once the server has done it (not when the members have it):

* ``count``: the number of members in this process;
* ``rooms N`` / ``broadcast N`` / ``loop N``: send N times one message of
  :data:`PAYLOAD` (:data:`LARGE_PAYLOAD` with ``$FANOUT_LARGE``) to every
  member, with ``Rooms.send`` (locally and, with ``$FANOUT_REDIS``, to the
  other processes through Redis), ``greenws.broadcast``, or a plain
  ``ws.send()`` loop over the members;
* ``floor N``: the least any fan-out costs, the reference: one
  non-blocking ``send()`` per member of a frame built beforehand, with
  nothing checked or locked (right only while the members are idle, as
  in the bench).
"""

from __future__ import annotations

import os

from .apps import raise_nofile  # noqa: F401 - raises the fd limit


def _update(items: int) -> str:
    """JSON-like text of ``items`` sensor readings."""
    return '{"type": "update", "values": [' + ", ".join(
        f'{{"id": {i}, "name": "sensor-{i}", "value": {i * 7 % 101}}}'
        for i in range(items)
    ) + "]}"


#: One dashboard-sized update: ~600 bytes of JSON-like text.
PAYLOAD = _update(12)
#: A state snapshot: ~7.3 KiB (1.2 KiB compressed).
LARGE_PAYLOAD = _update(160)


def message() -> str:
    """The message this server fans out."""
    return LARGE_PAYLOAD if os.environ.get("FANOUT_LARGE") else PAYLOAD


_rooms = None
_members: list = []
# member -> (its raw socket's send, flags, its window): the floor's targets
_floor: dict = {}


def _get_rooms():
    global _rooms
    if _rooms is None:
        import greenws

        _rooms = greenws.Rooms(os.environ.get("FANOUT_REDIS") or None)
    return _rooms


def app(environ, start_response):
    import greenws
    from greenws.protocol import Shared
    from greenws.rooms import _raw_socket

    rooms = _get_rooms()
    payload = message()
    ws = greenws.Server.accept(environ, max_message_size=None)
    try:
        if environ.get("PATH_INFO") == "/member":
            rooms.join(ws, "all")
            _members.append(ws)
            raw, flags = _raw_socket(ws)
            _floor[ws] = (raw.send, flags, ws._protocol.shared_bits())
            try:
                while ws.receive() is not None:
                    pass
            finally:
                _members.remove(ws)
                _floor.pop(ws, None)
        else:
            while True:
                command = ws.receive()
                verb, _, count = str(command).partition(" ")
                if verb == "count":
                    ws.send(str(len(rooms.members("all"))))
                    continue
                for _ in range(int(count or 1)):
                    if verb == "rooms":
                        rooms.send("all", payload)
                    elif verb == "broadcast":
                        greenws.broadcast(_members, payload)
                    elif verb == "floor":
                        shared = Shared(payload)
                        frames = {bits: shared.frame(bits, False)
                                  for _, _, bits in _floor.values()}
                        for send, flags, bits in list(_floor.values()):
                            send(frames[bits], flags)
                    else:
                        for member in list(_members):
                            try:
                                member.send(payload)
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

    payload = message()

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
                    sio.emit("update", payload, to="all")
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
