"""The ``greenws`` logger: connection lifecycle, silent unless configured.

DEBUG: every connection opening and closing (with the close code).
INFO: connections that end abnormally (1006, 1011, protocol errors); an
application's own codes (3000-4999) are normal ends.
ERROR: a WebSocketWSGI handler that raised, and an error while reading that
is no I/O error -- a bug of greenws's, closed with 1011 (with tracebacks).

Enable it like any logger, e.g. ``logging.getLogger("greenws").setLevel("DEBUG")``
with a handler configured by your application or server.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("greenws")
# Libraries stay silent by default (no "no handlers" warning either).
logger.addHandler(logging.NullHandler())
