"""Riding out server restarts: :func:`reconnecting`, an iterator of clients.

::

    for ws in greenws.reconnecting("wss://example.com/feed"):
        for message in ws:          # ends quietly on 1000/1001
            handle(message)
    # reached when the server closed with 1000

Which ends are worth another try follows the ``websockets`` library's
reconnecting ``connect()``: a server that is down, restarting or overloaded
comes back; a server that refuses this client (any other 4xx) will refuse it
again, so that is raised.
"""

from __future__ import annotations

import random
from typing import Any, Iterator, Optional, cast

from . import presets as _presets
from . import registry as _registry
from .client import Client
from .errors import ConnectionError
from .log import logger
from .protocol import NORMAL_CLOSURE

__all__ = ["reconnecting", "ReconnectingClient", "RETRY_STATUSES"]

#: HTTP answers to the handshake after which :func:`reconnecting` tries
#: again (too many requests, and a server or its proxy down or restarting);
#: ``None`` is no answer at all: refused, unreachable, timed out.
RETRY_STATUSES = frozenset({None, 429, 500, 502, 503, 504})

# The preset keywords of Client.connect: the wait between tries must be the
# connections' own kind of wait (a plain sleep would block a gevent hub).
_CLASS_KEYS = ("thread_class", "event_class", "selector_class", "lock_class")


class ReconnectingClient(Client):
    """The :class:`~greenws.Client` that :func:`reconnecting` yields: it
    remembers whether the application closed it (a 1000 close then does not
    end the iteration: only the server's does)."""

    __slots__ = ("closed_here",)

    def close(
        self, reason: Optional[int] = None, message: Optional[str] = None
    ) -> None:
        if self.connected:
            self.closed_here = True
        super().close(reason, message)


def backoff_delays(
    initial_delay: float, max_delay: float, rand: Any = random.random
) -> Iterator[float]:
    """The waits before each new try: ``initial_delay``, doubling up to
    ``max_delay``, each one drawn between half and all of that (jitter, so
    that the clients of a restarted server do not all come back at once)."""
    delay = initial_delay
    while True:
        yield delay * (0.5 + rand() / 2)
        delay = min(delay * 2, max_delay)


def reconnecting(
    url: str,
    *,
    initial_delay: float = 1.0,
    max_delay: float = 60.0,
    **client_options: Any,
) -> Iterator[ReconnectingClient]:
    """Yield a connected :class:`~greenws.Client` to ``url``, again and again.

    ``client_options`` are :meth:`Client.connect`'s keywords.  Each client is
    yielded once open; ask for the next one when it has ended (say, when
    ``for message in ws`` is over).  Then:

    - the server closed it with 1000: the iteration ends;
    - it ended any other way (1001 from a restarting server, a dropped
      connection, an error code) or could not be opened (refused,
      unreachable, timed out, HTTP 429, 500, 502, 503, 504): the next try
      comes after a delay that starts at ``initial_delay`` seconds and
      doubles, up to ``max_delay``, with random jitter; the delay starts
      over once a connection opens;
    - the server refused the handshake with any other status:
      :class:`~greenws.ConnectionError` with that ``status_code`` is raised.

    A client still open when the next one is asked for is closed (1000) and
    replaced at once.  Once the process is stopping
    (:func:`greenws.close_all_on_signals`, :func:`greenws.registry.stop`),
    the iteration ends.  A bad URL or option raises at the first try.
    """
    if initial_delay < 0 or max_delay < initial_delay:
        raise ValueError("need 0 <= initial_delay <= max_delay")
    preset = _presets.resolve(
        client_options.get("preset"),
        **{key: client_options[key] for key in _CLASS_KEYS if key in client_options},
    )
    delays = backoff_delays(initial_delay, max_delay)
    wait = 0.0  # none before the first try
    while not _registry.stopping():
        if wait:
            # An event nobody sets: the preset's own way to sleep.
            preset["event_class"]().wait(wait)
            if _registry.stopping():
                return
        try:
            ws = cast(
                ReconnectingClient, ReconnectingClient.connect(url, **client_options)
            )
        except ConnectionError as exc:
            if exc.status_code not in RETRY_STATUSES:
                raise
            wait = next(delays)
            logger.info("%s: %s; next try in %.2f s", url, exc, wait)
            continue
        delays = backoff_delays(initial_delay, max_delay)  # start over
        yield ws
        if ws.connected:
            # The consumer moved on while it was open: it wants another.
            ws.close()
            wait = 0.0
            continue
        if ws.close_reason == NORMAL_CLOSURE and not getattr(
            ws, "closed_here", False
        ):
            return
        wait = next(delays)
        logger.info(
            "%s: closed with %s; reconnecting in %.2f s", url, ws.close_reason, wait
        )
