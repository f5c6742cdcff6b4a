"""Waiting for a condition in tools and tests: the one deadline loop."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

from streams.worker.children import stop_processes

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


def wait_ready(process: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``ready()``; RuntimeError naming ``what`` when the process exits first or
    ``timeout`` passes (then the process is killed).

    >>> import sys
    >>> wait_ready(subprocess.Popen([sys.executable, "-c", "pass"]), lambda: False, 30.0, "a child")
    Traceback (most recent call last):
    ...
    RuntimeError: a child exited at start (code 0)
    >>> sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    >>> wait_ready(sleeper, lambda: False, 1.0, "a sleeper")
    Traceback (most recent call last):
    ...
    RuntimeError: a sleeper did not answer within 1s
    >>> sleeper.returncode
    -9
    """

    def answered() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start (code {process.returncode})")
        return ready()

    try:
        until(answered, what, timeout, every=0.05)
    except TimeoutError:
        stop_processes([process], signal.SIGKILL, grace_s=1.0)
        raise RuntimeError(f"{what} did not answer within {timeout:.0f}s") from None
