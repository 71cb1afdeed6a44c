"""SmallDeque: the deque operations its users rely on, for less memory."""

import sys
from collections import deque

from greenws.smalldeque import SmallDeque


def test_popleft_is_first_in_first_out():
    queue = SmallDeque([1, 2])
    queue.append(3)
    assert [queue.popleft() for _ in range(3)] == [1, 2, 3]
    assert not queue


def test_eventlet_exit_funcs_operations():
    # What eventlet's GreenThread does with its exit callbacks: append,
    # remove, a truth test, then popleft until empty.
    funcs = SmallDeque(deque([("a", (), {})]))
    funcs.append(("b", (1,), {}))
    funcs.remove(("a", (), {}))
    seen = []
    while funcs:
        seen.append(funcs.popleft())
    assert seen == [("b", (1,), {})]


def test_smaller_than_a_deque():
    assert sys.getsizeof(SmallDeque([1])) * 4 < sys.getsizeof(deque([1]))
