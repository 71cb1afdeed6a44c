"""Stand in for simple-websocket inside libraries that import it.

flask-sock and python-engineio (hence python-socketio) do
``import simple_websocket``.  greenws keeps simple-websocket's API, so making
that import return greenws is all it takes::

    import greenws.compat
    greenws.compat.install()      # before flask_sock / socketio are imported

    from flask_sock import Sock  # now runs on greenws

Your own code can simply ``import greenws as simple_websocket``.
"""

from __future__ import annotations

import sys
from types import ModuleType

__all__ = ["install", "uninstall"]

_NAMES = (
    "simple_websocket",
    "simple_websocket.ws",
    "simple_websocket.aiows",
    "simple_websocket.errors",
)


def install() -> ModuleType:
    """Make ``import simple_websocket`` (and its submodules) give greenws.

    Returns the greenws module.  Libraries that imported simple-websocket
    before this call keep the module they already have, so call it first.
    """
    import greenws

    for name in _NAMES:
        sys.modules[name] = greenws
    return greenws


def uninstall() -> None:
    """Undo :func:`install` (the real simple-websocket imports again)."""
    import greenws

    for name in _NAMES:
        if sys.modules.get(name) is greenws:
            del sys.modules[name]
