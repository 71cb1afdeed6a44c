"""A greenws Client that is busy elsewhere while its peer talks to it.

    idle_client.py RUNTIME URL MARKER

RUNTIME: threading | gevent | gevent-patched | eventlet | eventlet-patched.
Connects to URL, then does not call receive() until the file MARKER exists
(sleeping cooperatively, as an application busy with other work would);
then receives everything until the connection closes and prints one JSON
line: the messages, the close code and reason.
"""

import sys

runtime, url, marker = sys.argv[1:4]

if runtime == "gevent-patched":
    from gevent import monkey

    monkey.patch_all()
elif runtime == "eventlet-patched":
    import eventlet

    eventlet.monkey_patch()

import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import greenws  # noqa: E402


def main(sleep, preset=None):
    ws = greenws.Client.connect(url, preset=preset)
    print(json.dumps({"preset": ws.preset.name}), flush=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(marker) and time.monotonic() < deadline:
        sleep(0.02)
    got = []
    try:
        for message in ws:
            got.append(message)
    except greenws.ConnectionClosed:
        pass
    return {"messages": got, "code": ws.close_reason, "reason": ws.close_message}


if runtime.startswith("gevent"):
    import gevent

    # Not patched: everything runs in a greenlet, with the gevent preset.
    preset = None if runtime.endswith("patched") else greenws.presets.GEVENT
    result = gevent.spawn(main, gevent.sleep, preset).get()
elif runtime.startswith("eventlet"):
    import eventlet

    preset = None if runtime.endswith("patched") else greenws.presets.EVENTLET
    result = eventlet.spawn(main, eventlet.sleep, preset).wait()
else:
    result = main(time.sleep)
print(json.dumps(result), flush=True)
