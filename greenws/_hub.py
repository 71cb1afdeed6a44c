"""placeholder"""

from __future__ import annotations

import select
from typing import Any, Callable


def readable_now(fd: int, poll: Callable[[], Any]) -> bool:
    """Whether ``fd`` has data (or EOF) right now; never blocks.

    ``poll`` is the unpatched ``select.poll``: a monkey-patched program has
    a green one or none at all.
    """
    poller = poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
