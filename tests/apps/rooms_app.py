"""Rooms on a real hosting server (tests/test_rooms.py).

WebSocket routes:
  /chat      joins the room "lobby", answers "joined PID", then passes every
             message it receives to the room (an "error: ..." answer when
             Redis did not take it)
  /status    answers {"pid": ..., "connected": ..., "direct": ...} once per
             message received ("direct": how many members of "lobby" the
             sender writes to itself, without a writer, when they keep up)
Environment: ROOMS_REDIS (a redis:// URL; else rooms of this process only),
ROOMS_INTERVAL (health_check_interval), ROOMS_TIMEOUT, ROOMS_PRESET (a
preset name, for servers that are not monkey-patched).
"""

import json
import os

import greenws
from greenws.rooms import _members

_preset = os.environ.get("ROOMS_PRESET")
rooms = greenws.Rooms(
    os.environ.get("ROOMS_REDIS") or None,
    health_check_interval=float(os.environ.get("ROOMS_INTERVAL", "5")),
    timeout=float(os.environ.get("ROOMS_TIMEOUT", "5")),
    preset=getattr(greenws.presets, _preset) if _preset else None,
)


def handler(ws):
    if ws.environ.get("PATH_INFO") == "/status":
        for _ in ws:
            direct = sum(
                1 for m in rooms.members("lobby")
                if getattr(_members.get(m), "raw", None) is not None
            )
            ws.send(json.dumps(
                {"pid": os.getpid(), "connected": rooms.connected, "direct": direct}
            ))
        return
    rooms.join(ws, "lobby")
    ws.send(f"joined {os.getpid()}")
    for message in ws:
        try:
            rooms.send("lobby", message)
        except greenws.BroadcastError as exc:
            ws.send(f"error: {exc}")


app = greenws.WebSocketWSGI(handler)
