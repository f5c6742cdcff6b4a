"""One worker on several cores: helper processes in the worker's consumer group.

A Python process runs the pipeline on one core. ``crm360 worker`` therefore starts
``processes - 1`` helpers (``CRM360_WORKER_PROCESSES``; by default one process per core, at
most one per partition). Each helper is a whole worker in the same Kafka consumer group, so
Kafka shares the partitions, and with them the customers and their table changelogs, among
the processes, exactly as among workers on different machines. The main process stays the
one address users talk to: ``/metrics`` adds up every process's figures, ``/health`` is
healthy only when every process is, and ``/customers/{id}`` is answered by the process that
owns the customer.

Embedded ClickHouse can be opened by one process only: a helper stages each write's inserts
in files and names them to the main process in one request (:class:`RemoteRows`, ``POST
/internal/rows``), which has ClickHouse read them before answering, so a helper still commits
offsets only after its rows are written, and the rows never pass through the main process.
With a ClickHouse server every process writes itself. Helpers die with the main process,
however it ends (:func:`~streams.worker.children.spawn`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from sinks.clickhouse import Insert, StagedInsert, stage
from sinks.erasure import RowErasure
from streams.sdk.client import bearer
from streams.settings import Role, Settings
from streams.worker.children import spawn, stop_processes
from streams.worker.ports import claim, free_port


def auth_headers(settings: Settings) -> dict[str, str]:
    """What a helper sends to the main process with its requests."""
    return bearer(settings.key)


def rows_request(directory: Path, staged: list[StagedInsert], erasures: list[RowErasure]) -> bytes:
    """The body of ``POST /internal/rows``: a helper's staged inserts, by the name of its
    staging directory, and the erasures of rows to run after them."""
    return orjson.dumps(
        {
            "directory": directory.name,
            "inserts": [
                {"table": i.table, "columns": i.columns, "format": i.fmt, "rows": i.rows, "bytes": i.size}
                for i in staged
            ],
            "erasures": [erasure.to_dict() for erasure in erasures],
        }
    )


def erasures_in(body: bytes) -> list[RowErasure]:
    """The erasures of rows a body made by :func:`rows_request` holds; ValueError when it is
    not such a body."""
    try:
        return [RowErasure.from_dict(part) for part in orjson.loads(body).get("erasures", [])]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"not a body of erasures: {error}") from error


def staged_inserts(body: bytes, staging: Path) -> list[StagedInsert]:
    """The staged inserts a body made by :func:`rows_request` names, in a helper's directory under
    ``staging``; ValueError when it is not such a body, or a file is not as described."""
    try:
        request = orjson.loads(body)
        name = str(request["directory"])
        if not name.isdigit():  # a helper's web port
            raise ValueError(f"not a helper's staging directory: {name!r}")
        directory = staging / name
        staged = []
        for part in request["inserts"]:
            table = str(part["table"])
            if not table.isidentifier():
                raise ValueError(f"not a table name: {table!r}")
            staged.append(
                StagedInsert(
                    table,
                    [str(c) for c in part["columns"]],
                    str(part["format"]),
                    int(part["rows"]),
                    directory / table,
                    int(part["bytes"]),
                )
            )
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"not a body of staged inserts: {error}") from error
    for insert in staged:
        try:
            size = insert.path.stat().st_size
        except FileNotFoundError:
            raise ValueError(f"no staged insert at {insert.path}") from None
        if size != insert.size:
            raise ValueError(f"staged insert {insert.path} holds {size} bytes, not {insert.size}")
    return staged


class RemoteRows:
    """A helper's :class:`~sinks.clickhouse.Forwarder`: each write's inserts are staged in
    ``directory`` and named to the main process in one request, answered once they are in
    ClickHouse."""

    def __init__(self, settings: Settings, directory: Path) -> None:
        assert settings.role is Role.HELPER
        self.url = f"{settings.main_url}/internal/rows"
        self.headers = auth_headers(settings)
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def forward(self, inserts: list[Insert], erasures: list[RowErasure]) -> None:
        staged = [stage(insert, self.directory) for insert in inserts]
        request = urllib.request.Request(
            self.url, data=rows_request(self.directory, staged, erasures), headers=self.headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                response.read()
        except Exception:
            # The main process may still be reading them (a timeout): the retry stages new files
            # rather than rewrite these.
            for insert in staged:
                insert.path.unlink(missing_ok=True)
            raise


class Helpers:
    """The helper processes of a main worker: started, watched, restarted, asked, stopped."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        claim(settings.web_port, settings.clickhouse_http_port)  # this process's own, bound later
        self.ports = [free_port() for _ in range(count)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False

    @property
    def urls(self) -> list[str]:
        return [f"http://{self.settings.web_host}:{port}" for port in self.ports]

    def _start(self, port: int) -> None:
        env = os.environ | self.settings.environment(
            "data_dir",
            "kafka_bootstrap",
            "app_id",
            "partitions",
            web_port=port,
            helper_number=self.ports.index(port) + 1,
            worker_processes=1,
            main_url=self.settings.web_url,
        )
        # In the main process's group: a Ctrl-C reaches them as it reaches the main process.
        self.processes[port] = spawn([sys.executable, "-m", "streams.cli", "worker"], env=env, own_group=False)

    def start(self) -> None:
        for port in self.ports:
            self._start(port)

    def restart_exited(self) -> list[str]:
        """Start again every helper that exited (none once :meth:`stop` began); returns what
        happened, for the log."""
        restarted: list[str] = []
        if self.stopping:
            return restarted
        for port, process in self.processes.items():
            if process.poll() is not None:
                restarted.append(f"worker process on port {port} exited with code {process.returncode}; restarted")
                self._start(port)
        return restarted

    def stop(self, grace_s: float = 30.0) -> list[str]:
        """Stop every helper cleanly (all at once), killing one that takes over ``grace_s``;
        returns what went wrong, for the log."""
        self.stopping = True
        killed = stop_processes(self.processes.values(), signal.SIGTERM, grace_s)
        return [f"worker process {pid} did not stop within {grace_s:.0f} s; killed" for pid in killed]

    async def ask(self, session: aiohttp.ClientSession, path: str) -> list[tuple[int, Any]]:
        """GET ``path`` from every helper through ``session`` (the app's HTTP client): (status,
        JSON answer); status 0 when it did not answer."""
        return list(await asyncio.gather(*(self._get(session, url + path) for url in self.urls)))

    async def _get(self, session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
        try:
            timeout = aiohttp.ClientTimeout(total=10)
            async with session.get(url, headers=auth_headers(self.settings), timeout=timeout) as response:
                return response.status, await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as error:
            return 0, {"reason": f"no answer from {url}: {type(error).__name__}"}
