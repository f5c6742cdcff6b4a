"""The worker as a child process, and a private local stack (broker + worker) for
``crm360 bench`` and ``crm360 evaluate``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from streams.local.broker import LocalKafka
from streams.local.until import until
from streams.sdk.client import WorkerClient
from streams.settings import Settings
from streams.worker.children import spawn, stop_processes
from streams.worker.ports import free_port
from streams.worker.topic_admin import ensure_topics


class WorkerProcess:
    """``crm360 worker`` in a child process of its own group (see :mod:`streams.worker.children`),
    configured by ``CRM360_*`` variables in ``env``; its output goes to ``log_path``, or to
    this process's output when None."""

    def __init__(self, env: dict[str, str], log_path: Path | None) -> None:
        self.env = env
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{env['CRM360_WEB_PORT']}"
        self.client = WorkerClient(self.url, env.get("CRM360_API_KEY"))
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_settings(cls, settings: Settings, log_path: Path | None, **extra: str) -> WorkerProcess:
        """A worker for ``settings``; ``extra`` sets more ``CRM360_*`` variables (lower-case names)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM360_")} | settings.environment(
            "kafka_bootstrap", "data_dir", "web_port", "clickhouse_http_port", "app_id", "partitions", **extra
        )
        return cls(env, log_path)

    def start(self, timeout: float = 90.0) -> None:
        """Start it and wait until it is healthy."""
        self.launch()

        def healthy() -> bool:
            if not self.running:
                assert self.process is not None
                said = self.log_path.read_text()[-2000:] if self.log_path else "see its output above"
                raise RuntimeError(f"the worker exited at start (code {self.process.returncode}): {said}")
            return self.health()[0] == 200

        until(healthy, f"the worker healthy (see {self.log_path or 'its output above'})", timeout)

    def launch(self) -> None:
        """Start it, without waiting."""
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process = spawn([sys.executable, "-m", "streams.cli", "worker"], env=self.env, log_path=self.log_path)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def health(self, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
        """The status and answer of ``GET /health``; status 0 when it does not answer."""
        return WorkerClient(self.url, self.client.api_key, timeout).health()

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 30.0) -> None:
        stop_processes([self.process], sig, grace_s=grace_s)
        self.process = None

    def metrics(self) -> dict[str, float]:
        return self.client.metrics()

    def sql(self, query: str) -> list[list[Any]]:
        return self.client.sql(query).rows


@contextmanager
def private_stack(purpose: str, partitions: int = 4, **worker_env: str) -> Iterator[tuple[Settings, WorkerProcess]]:
    """A broker (with its storage) on free ports, topics, and a (not yet started) worker in a
    temporary directory; everything is stopped and removed at the end."""
    workdir = Path(tempfile.mkdtemp(prefix=f"crm360-{purpose}-"))
    address = f"127.0.0.1:{free_port()}"
    settings = Settings(
        kafka_bootstrap=address,
        data_dir=workdir,
        web_port=free_port(),
        clickhouse_http_port=0,  # private: analysts' clients have nothing to do here
        partitions=partitions,
        app_id=f"crm360-{purpose}-{uuid.uuid4().hex[:6]}",
    )
    kafka = LocalKafka(address, workdir)
    worker = WorkerProcess.for_settings(settings, workdir / "worker.log", **worker_env)
    try:
        kafka.start()
        ensure_topics(address, partitions, settings.topic_retention_days)
        yield settings, worker
    finally:
        worker.stop()
        kafka.stop()
        shutil.rmtree(workdir, ignore_errors=True)
