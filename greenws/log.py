"""The ``greenws`` logger: connection lifecycle, silent unless configured.

DEBUG: every connection opening and closing (with the close code).
INFO: connections that end abnormally (1006, 1011, protocol errors); an
application's own codes (3000-4999) are normal ends.
ERROR: a WebSocketWSGI handler that raised (with its traceback).

Enable it like any logger, e.g. ``logging.getLogger("greenws").setLevel("DEBUG")``
with a handler configured by your application or server.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("greenws")
# Libraries stay silent by default (no "no handlers" warning either).
logger.addHandler(logging.NullHandler())

#: Close codes that are a normal end of a connection (logged at DEBUG): the
#: usual ones, and those libraries and applications define for themselves.
NORMAL_CODES = frozenset({1000, 1001, 1005, *range(3000, 5000)})
