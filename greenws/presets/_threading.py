"""The threading preset: the standard library's threads, events, selectors
and locks (reading in the receiving thread, else in a reader thread per
connection: :mod:`greenws._threads`)."""

from __future__ import annotations

import selectors
import threading

from . import Preset

__all__ = ["PRESET"]

PRESET = Preset(
    "threading",
    thread_class=threading.Thread,
    event_class=threading.Event,
    selector_class=selectors.DefaultSelector,
    lock_class=threading.Lock,
)
