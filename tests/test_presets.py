"""greenws.presets: lazy imports, detection, and how presets are passed."""

import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import WAIT

import greenws
from greenws import presets


def run_python(code, timeout=60):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_greenws_imports_neither_gevent_nor_eventlet():
    out = run_python(
        """
        import sys
        import greenws, greenws.presets
        greenws.presets.THREADING
        greenws.presets.detect()
        print(sorted(m for m in sys.modules
                     if m.split(".")[0] in ("gevent", "eventlet")))
        """
    )
    assert out == "[]"


def test_gevent_preset_imports_gevent_lazily():
    out = run_python(
        """
        import sys
        import greenws
        assert "gevent" not in sys.modules
        p = greenws.presets.GEVENT
        print(p.name, "gevent" in sys.modules, "eventlet" in sys.modules)
        """
    )
    assert out == "gevent True False"


def test_detect_under_gevent_monkey_patching():
    out = run_python(
        """
        from gevent import monkey; monkey.patch_all()
        import greenws
        print(greenws.presets.detect().name)
        """
    )
    assert out == "gevent"


def test_detect_under_eventlet_monkey_patching():
    out = run_python(
        """
        import warnings; warnings.simplefilter("ignore")
        import eventlet; eventlet.monkey_patch()
        import greenws
        print(greenws.presets.detect().name)
        """
    )
    assert out == "eventlet"


def test_eventlet_readiness_waits_without_an_exception():
    # eventlet's trampoline() accepts an int fd by catching the
    # AttributeError of int.fileno(); that exception would keep a frame
    # object alive in every parked connection, so wait() adds its listener
    # to the hub itself.
    out = run_python(
        """
        import warnings; warnings.simplefilter("ignore")
        import eventlet, eventlet.hubs
        from eventlet.green import socket
        from greenws import presets
        seen = []
        real = eventlet.hubs.trampoline
        def trampoline(fd, *args, **kwargs):
            seen.append(fd)
            return real(fd, *args, **kwargs)
        eventlet.hubs.trampoline = trampoline
        a, b = socket.socketpair()
        readiness = presets.EVENTLET.readiness(a)
        waiter = eventlet.spawn(readiness.wait, 10)
        eventlet.sleep(0)
        b.sendall(b"x")
        print(waiter.wait(), seen, readiness.wait(0.01))
        """
    )
    assert out == "True [] True"


@pytest.mark.parametrize("name", ["GEVENT", "EVENTLET"])
def test_readiness_close_wakes_a_waiter(name):
    """close() stops watching at once, also for a greenlet parked in
    wait(): the socket may be closed next (gevent.pywsgi does so behind
    gevent's back, and libev aborts on a watcher of a closed fd), and the
    waiter must not stay parked."""
    out = run_python(
        f"""
        import warnings; warnings.simplefilter("ignore")
        import time
        from greenws import presets
        preset = presets.{name}
        if preset.name == "gevent":
            import gevent as lib
            from gevent import socket
        else:
            import eventlet as lib
            from eventlet.green import socket
        a, b = socket.socketpair()
        readiness = preset.readiness(a)
        started = time.monotonic()
        waiter = lib.spawn(readiness.wait, 10)
        lib.sleep(0.05)
        readiness.close()
        a.close()  # what a server does next
        result = waiter.get() if preset.name == "gevent" else waiter.wait()
        print(result, time.monotonic() - started < 5)
        """
    )
    assert out == "True True"


def test_detect_plain_program_is_threading():
    assert presets.detect() is presets.THREADING


def test_detect_from_socket_type():
    import eventlet.green.socket
    import gevent.socket

    with gevent.socket.socket() as s:
        assert presets.detect(s) is presets.GEVENT
    with eventlet.green.socket.socket() as s:
        assert presets.detect(s) is presets.EVENTLET


def test_detect_inside_a_gevent_greenlet():
    import gevent

    assert gevent.spawn(presets.detect).get(timeout=WAIT) is presets.GEVENT


@pytest.mark.parametrize("name", ["THREADING", "GEVENT", "EVENTLET"])
def test_presets_are_mappings(name):
    preset = getattr(presets, name)
    assert set(preset) >= {"thread_class", "event_class", "selector_class"}
    kwargs = dict(**preset)
    assert kwargs["thread_class"] is preset.thread_class
    ev = preset["event_class"]()
    assert not ev.is_set()
    ev.set()
    assert ev.is_set() and ev.wait(0)


def test_threading_preset_classes():
    assert presets.THREADING["thread_class"] is threading.Thread
    assert presets.THREADING["event_class"] is threading.Event


def test_resolve_rules():
    class MyEvent(threading.Event):
        pass

    assert presets.resolve(presets.GEVENT).name == "gevent"
    # a class of a preset picks that preset
    assert presets.resolve(event_class=presets.GEVENT["event_class"]).name == "gevent"
    # explicit classes override the preset
    r = presets.resolve(presets.THREADING, event_class=MyEvent)
    assert r["event_class"] is MyEvent and r["thread_class"] is threading.Thread
    # a plain mapping works as a preset
    r = presets.resolve(dict(presets.EVENTLET))
    assert r["thread_class"] is presets.EVENTLET["thread_class"]
    with pytest.raises(TypeError):
        presets.resolve(bogus_class=object)


def test_star_star_preset_and_preset_keyword(harness, rt):
    """``**preset`` and ``preset=`` give the same classes, on both roles."""
    harness_kw = {"preset": None}
    server, client = harness.pair(
        server_kwargs={**rt.preset, **harness_kw},
        client_kwargs={**rt.preset, **harness_kw},
    )
    for ws in (server, client):
        assert ws.thread_class is rt.preset["thread_class"]
        assert ws.event_class is rt.preset["event_class"]
        assert ws.selector_class is rt.preset["selector_class"]
        assert ws.preset.name == rt.name
    client.send("star-star")
    assert server.receive(timeout=WAIT) == "star-star"
    server2, client2 = harness.pair()  # preset=rt.preset (harness default)
    assert server2.preset.name == client2.preset.name == rt.name


def test_explicit_classes_override_preset(threading_harness):
    harness = threading_harness
    created = []

    class CountingEvent(threading.Event):
        def __init__(self):
            super().__init__()
            created.append(self)

    class NamedThread(threading.Thread):
        pass

    server, client = harness.pair(
        server_kwargs={"event_class": CountingEvent, "thread_class": NamedThread},
        client_kwargs={"event_class": CountingEvent},
    )
    assert server.event_class is CountingEvent and client.event_class is CountingEvent
    assert isinstance(server._thread, NamedThread)
    assert created  # the connection really uses the overriding class
    client.send("x")
    assert server.receive(timeout=WAIT) == "x"


def test_gevent_pair_does_not_block_the_hub():
    """With GEVENT and nothing patched, another greenlet keeps running."""
    import gevent
    from conftest import Harness, Runtime

    h = Harness(Runtime("gevent"))
    try:
        ticks = []

        def ticker():
            while True:
                ticks.append(1)
                gevent.sleep(0.01)

        t = gevent.spawn(ticker)
        server, client = h.pair()
        before = len(ticks)
        assert server.receive(timeout=0.3) is None
        assert client.ping(timeout=WAIT) > 0
        assert len(ticks) - before >= 5
        t.kill()
    finally:
        h.cleanup()


def test_greenws_exports_presets():
    assert greenws.presets is presets


_INJECTED_GEVENT_CLASSES = """
import gevent, gevent.event, gevent.selectors
from greenws import presets
# What simple-websocket users (and engineio's gevent driver) pass, here from
# the main greenlet of a program that did not monkey-patch.
preset = presets.resolve(
    thread_class=gevent.Greenlet,
    event_class=gevent.event.Event,
    selector_class=gevent.selectors.DefaultSelector,
)
print(preset.name, preset.lock_class.__module__, preset.create_connection.__module__)
"""


def test_injected_gevent_classes_get_the_rest_of_the_gevent_preset():
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", _INJECTED_GEVENT_CLASSES],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    name, lock_module, connect_module = result.stdout.split()
    assert lock_module.startswith("gevent"), result.stdout
    assert connect_module.startswith("gevent"), result.stdout
    assert name == "gevent"


def test_socket_class_is_the_hubs_and_survives_replace():
    """A client's Unix socket is made with it: it must cooperate with the hub."""
    import socket

    import eventlet.green.socket
    import gevent.socket

    assert presets.THREADING.socket_class is socket.socket
    assert presets.GEVENT.socket_class is gevent.socket.socket
    assert presets.EVENTLET.socket_class is eventlet.green.socket.socket
    custom = presets.GEVENT.replace(lock_class=object)
    assert custom.socket_class is gevent.socket.socket
