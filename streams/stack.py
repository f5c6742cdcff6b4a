"""A private local stack (broker + worker subprocess) for ``crm360 demo`` and ``crm360 bench``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from streams.broker import LocalBroker, stop_processes
from streams.settings import Settings
from streams.topics import ensure_topics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    """``crm360 worker`` in a subprocess, configured by ``CRM360_*`` variables in ``env``."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{env['CRM360_WEB_PORT']}"
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_settings(cls, settings: Settings, log_path: Path, **extra: str) -> WorkerProcess:
        """A worker for ``settings``; ``extra`` sets more ``CRM360_*`` variables (lower-case names)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM360_")} | {
            "CRM360_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "CRM360_DATA_DIR": str(settings.data_path),
            "CRM360_WEB_PORT": str(settings.web_port),
            "CRM360_APP_ID": settings.app_id,
            "CRM360_PARTITIONS": str(settings.partitions),
        } | {f"CRM360_{name.upper()}": value for name, value in extra.items()}
        return cls(env, log_path)

    def start(self, timeout: float = 90.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited at start: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the worker was not healthy within {timeout:.0f}s; see {self.log_path}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_processes([self.process], sig, grace_s=30.0)
        self.process = None

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            text = response.read().decode()
        return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and "{" not in line}

    def sql(self, query: str) -> list[list[Any]]:
        request = urllib.request.Request(f"{self.url}/sql", data=query.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["rows"]


@contextmanager
def private_stack(purpose: str, partitions: int = 4, **worker_env: str) -> Iterator[tuple[Settings, WorkerProcess]]:
    """A broker on a free port, topics, and a (not yet started) worker in a temporary
    directory; everything is stopped and removed at the end."""
    workdir = Path(tempfile.mkdtemp(prefix=f"crm360-{purpose}-"))
    address = f"127.0.0.1:{free_port()}"
    settings = Settings(kafka_bootstrap=address, data_dir=workdir, web_port=free_port(), partitions=partitions,
                        app_id=f"crm360-{purpose}-{uuid.uuid4().hex[:6]}")
    broker = LocalBroker(address, log_path=workdir / "broker.log")
    broker.start()
    worker = WorkerProcess.for_settings(settings, workdir / "worker.log", **worker_env)
    try:
        ensure_topics(address, partitions)
        yield settings, worker
    finally:
        worker.stop()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
