"""A stand-in for ``collections.deque`` where only a few items ever wait.

An empty ``deque`` already holds a 64-slot block, about 600 bytes.  Some
objects kept for each connection (wsproto's event queue, eventlet's list of
a green thread's exit callbacks) use a deque that only ever holds one or two
items; with ten thousand idle connections that block is the larger part of
what they cost.  A list does the same job for so few items.
"""

from __future__ import annotations

from typing import List, TypeVar

T = TypeVar("T")


class SmallDeque(List[T]):
    """A list with the ``popleft`` of ``collections.deque``.

    ``popleft`` is O(n), which is cheaper than a deque's allocation while n
    stays in single figures.
    """

    __slots__ = ()

    def popleft(self) -> T:
        return self.pop(0)
