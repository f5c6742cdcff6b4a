"""Waiting for a condition in tools and tests: the one deadline loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(check: Callable[[], T | None], what: str, timeout: float = 60.0, every: float = 0.2) -> T:
    """The first true value of ``check()``, asked every ``every`` seconds; TimeoutError naming
    ``what`` and the last value once ``timeout`` seconds passed.

    >>> answers = iter([0, 0, 7])
    >>> until(lambda: next(answers), "an answer", every=0)
    7
    >>> until(lambda: [], "a row", timeout=0.05, every=0.01)
    Traceback (most recent call last):
    ...
    TimeoutError: a row: not within 0.05 s (last: [])
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s (last: {value!r})")
        time.sleep(every)
