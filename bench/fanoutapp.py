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
