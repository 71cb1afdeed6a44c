"""Handlers that misbehave on purpose, for tests/test_resources.py.

Every route takes ``?id=NAME``; what the handler saw is kept in ``STATE[NAME]``
and read back with the ``/state?id=NAME`` route (one JSON message).

  /slow       max_queue=4, max_message_size=1 MiB: receive one message, then
              stop reading until ``/release?id=NAME`` (or 60 s)
  /release    wakes the /slow handler of the same id
  /limited    echo with max_queue=4, max_message_size=1 MiB
  /sender     sends 64 KiB messages in a loop; STATE counts completed sends
  /wait       blocks in receive() until the connection ends (close_timeout=1)
  /keepalive  the same with ping_interval=0.3
  /keepalive1 the same with ping_interval=1
  /kill       closes the /wait connection of the same id with 4000 from this
              (other) thread or greenlet
  /closeall   greenws.registry.close_all(): every connection, this one too
  /stuck      close_timeout=1: sends 1 MiB messages until send() raises
              ConnectionClosed, then returns (STATE: sending, then done)
  /stuck-raw  the same in a plain WSGI app calling Server.accept(), which
              returns without closing the WebSocket
Anything else goes to echo_app.app.
"""

import json
import os
import time
from urllib.parse import parse_qs

import echo_app

import greenws
from greenws import registry

MIB = 1 << 20
CHUNK = 64 << 10

STATE = {}
EVENTS = {}
WAITERS = {}


def _id(ws):
    return parse_qs(ws.environ.get("QUERY_STRING", "")).get("id", ["-"])[0]


def _ended(state, ws, exc, started):
    state.update(
        done=True,
        error=type(exc).__name__ if exc is not None else None,
        code=getattr(exc, "reason", ws.close_reason),
        reason=getattr(exc, "message", ws.close_message),
        elapsed=time.monotonic() - started,
    )


def slow(ws):
    key = _id(ws)
    state = STATE[key] = {"pid": os.getpid(), "received": 0}
    event = EVENTS.setdefault(key, ws.event_class())
    ws.receive(timeout=30)
    state["received"] = 1
    state["released"] = bool(event.wait(60))


def release(ws):
    key = _id(ws)
    EVENTS.setdefault(key, ws.event_class()).set()
    ws.send("released")


def limited(ws):
    key = _id(ws)
    state = STATE[key] = {"pid": os.getpid()}
    started = time.monotonic()
    try:
        for message in ws:
            ws.send(message)
    except greenws.ConnectionClosed as exc:
        _ended(state, ws, exc, started)
        raise
    _ended(state, ws, None, started)


def sender(ws):
    key = _id(ws)
    state = STATE[key] = {"pid": os.getpid(), "sent": 0}
    started = time.monotonic()
    payload = b"\x00" * CHUNK
    try:
        for _ in range(4000):  # 250 MiB at most, whatever happens
            ws.send(payload)
            state["sent"] += 1
    except greenws.ConnectionClosed as exc:
        _ended(state, ws, exc, started)
        raise
    _ended(state, ws, None, started)


def wait(ws):
    key = _id(ws)
    state = STATE[key] = {"pid": os.getpid(), "waiting": True}
    WAITERS[key] = ws
    started = time.monotonic()
    try:
        while True:
            ws.receive()
    except greenws.ConnectionClosed as exc:
        _ended(state, ws, exc, started)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        _ended(state, ws, exc, started)
    finally:
        WAITERS.pop(key, None)


def kill(ws):
    target = WAITERS.get(_id(ws))
    if target is None:
        ws.send("missing")
        return
    target.close(4000, "killed")
    ws.send("killed")


def stuck(ws):
    key = _id(ws)
    STATE[key] = {"pid": os.getpid(), "sending": True}
    payload = b"\x00" * MIB
    try:
        while True:
            ws.send(payload)
    except greenws.ConnectionClosed as exc:
        STATE[key] = {"done": True, "code": exc.reason}


def stuck_raw(environ, start_response):
    ws = greenws.Server.accept(environ, close_timeout=1)
    stuck(ws)
    return greenws.end_response(ws.mode, start_response)


def closeall(ws):
    STATE[_id(ws)] = {"closed": registry.close_all(timeout=3)}


def state(ws):
    ws.send(json.dumps(STATE.get(_id(ws))))


_ROUTES = {
    "/slow": greenws.WebSocketWSGI(slow, max_queue=4, max_message_size=MIB),
    "/release": greenws.WebSocketWSGI(release),
    "/limited": greenws.WebSocketWSGI(limited, max_queue=4, max_message_size=MIB),
    "/sender": greenws.WebSocketWSGI(sender, max_queue=4, max_message_size=MIB),
    "/wait": greenws.WebSocketWSGI(wait, close_timeout=1),
    "/keepalive": greenws.WebSocketWSGI(wait, close_timeout=1, ping_interval=0.3),
    "/keepalive1": greenws.WebSocketWSGI(wait, close_timeout=1, ping_interval=1),
    "/kill": greenws.WebSocketWSGI(kill),
    "/closeall": greenws.WebSocketWSGI(closeall),
    "/stuck": greenws.WebSocketWSGI(stuck, close_timeout=1),
    "/stuck-raw": stuck_raw,
    "/state": greenws.WebSocketWSGI(state),
}


def app(environ, start_response):
    route = _ROUTES.get(environ.get("PATH_INFO", ""))
    if route is None:
        return echo_app.app(environ, start_response)
    return route(environ, start_response)
