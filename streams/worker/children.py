"""Child processes that never outlive their parent, and a bounded way to stop them.

Every process crm360 starts (the local broker, its storage, the worker, the worker's helpers)
is started by :func:`spawn`: the kernel kills it when its parent ends, however the parent
ends (SIGKILL included), so no stop leaves a process behind. A child started in its own
process group does not receive the terminal's Ctrl-C: its parent decides when and in which
order it stops (the worker before the broker, the broker before its storage).

Examples
--------
>>> import sys
>>> child = spawn([sys.executable, "-c", "import time; time.sleep(30)"])
>>> stop_processes([child], signal.SIGTERM, grace_s=5.0), child.returncode
([], -15)
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel SIGKILL the calling process when the thread that started it ends
    (Linux; elsewhere a killed parent leaves its children to be stopped by hand).

    The parent must start its children from a thread that lives as long as it does (the main
    thread): the signal follows the thread, not the process.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def spawn(
    command: list[str], env: Mapping[str, str] | None = None, log_path: Path | None = None, own_group: bool = True
) -> subprocess.Popen[bytes]:
    """Start ``command`` as a child that dies with this process; its output goes to
    ``log_path`` (appended), or to this process's own output when None."""
    parent = os.getpid()

    def prepare() -> None:
        die_with_parent()
        if os.getppid() != parent:  # the parent ended before the line above took effect
            os._exit(1)

    log = log_path.open("ab") if log_path else None
    try:
        return subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
            start_new_session=own_group,
            preexec_fn=prepare,  # noqa: PLW1509 - the parent-death signal can only be set in the child
        )
    finally:
        if log:
            log.close()


def stop_processes(processes: Iterable[subprocess.Popen[bytes] | None], sig: int, grace_s: float) -> list[int]:
    """Send ``sig`` to every running child at once; kill those that have not exited after
    ``grace_s``. Returns the process ids it had to kill. Every child is reaped."""
    running = [p for p in processes if p is not None and p.poll() is None]
    for process in running:
        process.send_signal(sig)
    killed: list[int] = []
    deadline = time.monotonic() + grace_s
    for process in running:
        try:
            process.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            killed.append(process.pid)
    return killed
