"""Stand in for simple-websocket inside libraries that import it.

flask-sock and python-engineio (hence python-socketio) do
``import simple_websocket``.  greenws keeps simple-websocket's API, so making
that import return greenws is all it takes::

    import greenws.compat
    greenws.compat.install()

    from flask_sock import Sock  # now runs on greenws

Calling it first is simplest; called later, it also switches the references
that modules already imported hold (flask-sock's ``Server`` and
``ConnectionClosed``, engineio's ``simple_websocket``) to greenws's.

Your own code can simply ``import greenws as simple_websocket``.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, Dict, List, Tuple

__all__ = ["install", "uninstall"]

_NAMES = (
    "simple_websocket",
    "simple_websocket.ws",
    "simple_websocket.aiows",
    "simple_websocket.errors",
)

# (module, name, the simple-websocket object it held, greenws's) for each
# reference install() switched, so that uninstall() can switch it back.
_REBOUND: List[Tuple[ModuleType, str, Any, Any]] = []
# The real simple-websocket modules install() took out of sys.modules.
_SAVED: Dict[str, ModuleType] = {}


def install() -> ModuleType:
    """Make ``import simple_websocket`` (and its submodules) give greenws.

    Returns the greenws module.  If simple-websocket was imported already,
    every module that holds it, or one of its classes, under some name gets
    greenws's in its place.  Classes derived from simple-websocket's cannot
    be switched: then :class:`RuntimeError` is raised, before any change.
    """
    import greenws

    real = [
        module
        for name, module in list(sys.modules.items())
        if _is_simple_websocket(name) and module is not greenws
    ]
    replacements = _replacements(real, greenws)
    _refuse_subclasses(replacements)
    for name in _NAMES:
        module = sys.modules.get(name)
        if module is not None and module is not greenws:
            _SAVED[name] = module
        sys.modules[name] = greenws
    if replacements:
        _rebind(replacements)
    return greenws


def uninstall() -> None:
    """Undo :func:`install` (the real simple-websocket imports again)."""
    import greenws

    for name in _NAMES:
        if sys.modules.get(name) is greenws:
            del sys.modules[name]
            if name in _SAVED:
                sys.modules[name] = _SAVED[name]
    _SAVED.clear()
    while _REBOUND:
        module, name, original, ours = _REBOUND.pop()
        if module.__dict__.get(name) is ours:
            module.__dict__[name] = original


def _is_simple_websocket(name: str) -> bool:
    return name == "simple_websocket" or name.startswith("simple_websocket.")


def _replacements(real: List[ModuleType], greenws: ModuleType) -> Dict[int, Any]:
    """id(simple-websocket object) -> (that object, greenws's stand-in)."""
    replacements: Dict[int, Any] = {}
    for module in real:
        replacements[id(module)] = (module, greenws)
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and _is_simple_websocket(value.__module__)
                and hasattr(greenws, name)
            ):
                replacements[id(value)] = (value, getattr(greenws, name))
    return replacements


def _refuse_subclasses(replacements: Dict[int, Any]) -> None:
    """Raise if a class outside simple-websocket derives from one of its."""
    derived = set()
    for original, _ in replacements.values():
        if isinstance(original, type):
            subclasses: List[type] = type.__subclasses__(original)
            for sub in subclasses:
                if not _is_simple_websocket(sub.__module__):
                    derived.add(f"{sub.__module__}.{sub.__qualname__}")
    if derived:
        raise RuntimeError(
            "greenws.compat.install() cannot switch classes already derived "
            f"from simple-websocket's: {', '.join(sorted(derived))}; call "
            "install() before the modules defining them are imported"
        )


def _rebind(replacements: Dict[int, Any]) -> None:
    """Switch module-level references to simple-websocket objects."""
    for module_name, module in list(sys.modules.items()):
        if (
            not isinstance(module, ModuleType)
            or _is_simple_websocket(module_name)
            or module_name == "greenws"
            or module_name.startswith("greenws.")
        ):
            continue
        namespace = module.__dict__
        for name, value in list(namespace.items()):
            found = replacements.get(id(value))
            if found is not None and found[0] is value:
                namespace[name] = found[1]
                _REBOUND.append((module, name, value, found[1]))
