"""``python full_member.py RUNTIME``: a room member whose kernel send buffer
is full (its peer never reads), under monkey-patched gevent or eventlet.

``Rooms.send`` must not wait for it: the sends return at once, and the
member, its queue full too, is dropped as too slow.  Prints the seconds the
sends took and how many members are left; a send that waits for room is
stopped by the runtime's Timeout (exit status 1).
"""

import sys

RUNTIME = sys.argv[1]
if RUNTIME == "eventlet":
    import eventlet

    eventlet.monkey_patch()
    Timeout = eventlet.Timeout
    # The patched os.write waits for room; this one must not.
    os = eventlet.patcher.original("os")
else:
    from gevent import monkey

    monkey.patch_all()
    import os

    import gevent

    Timeout = gevent.Timeout

import socket  # noqa: E402
import time  # noqa: E402

import greenws  # noqa: E402

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
peer = socket.create_connection(listener.getsockname())  # never reads
sock, _ = listener.accept()
ws = greenws.Server.accept({
    "REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "",
    "HTTP_HOST": "127.0.0.1", "HTTP_UPGRADE": "websocket",
    "HTTP_CONNECTION": "Upgrade",
    "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
    "HTTP_SEC_WEBSOCKET_VERSION": "13",
    "gunicorn.socket": sock,  # the runtime's own socket, as its servers give
})
rooms = greenws.Rooms(max_pending=4)
rooms.join(ws, "r")
# Fill the kernel's send buffer, as the app's own large send may leave it.
fd = sock.fileno()
os.set_blocking(fd, False)
try:
    while True:
        os.write(fd, b"\0" * 65536)
except BlockingIOError:
    pass
started = time.monotonic()
try:
    with Timeout(10):
        for _ in range(20):
            rooms.send("r", b"x" * 65536)
except Timeout:
    sys.exit("Rooms.send waited for a member whose socket is full")
print(round(time.monotonic() - started, 3), len(rooms.members("r")))
