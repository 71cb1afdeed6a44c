"""echo_app (and slow_app) plus what the leak tests need.

  /stats      (?trim: after giving the C heap's free memory back to the OS)
              one JSON message: this process's open fds, threads, live
              greenlets (under gevent/eventlet), greenws reader threads and
              registered connections, pid, RSS and C heap in use (the /stats connection
              itself is included in every count)
  /closefast  close_timeout=0.002: receive one message, then close; a peer
              that never answers the Close is dropped after 2 ms
Everything else goes to slow_app.app (which falls back to echo_app.app).
"""

import ctypes
import gc
import json
import os
import sys
import threading

import slow_app

import greenws
from greenws import registry


def _rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _live_greenlets():
    if "greenlet" not in sys.modules:
        return None
    import greenlet

    return sum(
        1 for obj in gc.get_objects()
        if isinstance(obj, greenlet.greenlet) and not obj.dead
    )


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def _heap_kib():
    """KiB the C heap has handed out and not got back (glibc's mallinfo2):
    under PYTHONMALLOC=malloc, every live object; -1 where unknown."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):  # pragma: no cover - not glibc >= 2.33
        return -1
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) // 1024


def _malloc_trim():
    """Give the C heap's free memory back to the OS (glibc), so that RSS
    shows what is in use rather than what the allocator kept."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def stats(ws):
    gc.collect()
    if "trim" in ws.environ.get("QUERY_STRING", ""):
        _malloc_trim()
    ws.send(json.dumps({
        "pid": os.getpid(),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "thread_names": sorted(t.name for t in threading.enumerate()),
        "greenlets": _live_greenlets(),
        "connections": len(registry.connections()),
        "rss_kib": _rss_kib(),
        "heap_kib": _heap_kib(),
    }))


def closefast(ws):
    ws.receive(timeout=10)
    ws.close(1000, "fast")


_stats = greenws.WebSocketWSGI(stats)
_closefast = greenws.WebSocketWSGI(closefast, close_timeout=0.002)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/stats":
        return _stats(environ, start_response)
    if path == "/closefast":
        return _closefast(environ, start_response)
    return slow_app.app(environ, start_response)
