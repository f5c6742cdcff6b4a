"""Talking to a running worker over HTTP, and read-only queries from the command line.

:class:`WorkerClient` is the one client of a worker's endpoints: it owns the worker's URL and
its API key (sent as :func:`bearer`). :class:`QueryClient` runs read-only SQL wherever the
data is reachable: with embedded ClickHouse only one process may open the data directory, so
while a worker owns it, queries go through the worker's ``POST /sql``; when nothing runs, the
directory is opened here. With a ClickHouse server, queries go straight to the server.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from sinks.query import QueryResult, connect_readonly, run_readonly
from streams.settings import Settings


class QueryError(RuntimeError):
    """The query failed; the message is ClickHouse's (or says how to reach it)."""


def bearer(api_key: str | None) -> dict[str, str]:
    """The header that carries the API key; none without a key.

    >>> bearer("s3cret")
    {'Authorization': 'Bearer s3cret'}
    >>> bearer(None)
    {}
    """
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class WorkerClient:
    """A running worker's HTTP endpoints, at ``url``, with its API key.

    :meth:`request` raises :class:`urllib.error.URLError` when no worker answers; the other
    methods raise :class:`QueryError` with the worker's own message when it refuses.
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.url, self.api_key, self.timeout = url, api_key, timeout

    @classmethod
    def for_settings(cls, settings: Settings, timeout: float = 60.0) -> WorkerClient:
        return cls(settings.web_url, settings.key, timeout)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """The status and answer (JSON, else text) of one request; ``headers`` None sends the
        client's API key."""
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers=bearer(self.api_key) if headers is None else headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw, status = response.read(), response.status
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode()

    def _answer(self, method: str, path: str, body: bytes | None = None, ok: tuple[int, ...] = (200,)) -> Any:
        status, answer = self.request(method, path, body)
        if status not in ok:
            raise QueryError(answer.get("error", f"HTTP {status}") if isinstance(answer, dict) else f"HTTP {status}")
        return answer

    def health(self) -> tuple[int, dict[str, Any]]:
        """The status and answer of ``GET /health``; status 0 when it does not answer."""
        try:
            status, answer = self.request("GET", "/health")
        except (OSError, ValueError) as error:
            return 0, {"reason": f"not answering ({type(error).__name__})"}
        return status, answer if isinstance(answer, dict) else {}

    def metrics(self) -> dict[str, float]:
        """``GET /metrics``: each series (with its labels, e.g. ``crm360_consumer_lag{...}``) and its value."""
        text = self._answer("GET", "/metrics")
        series = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        return {name: float(value) for name, value in series}

    def sql(self, query: str) -> QueryResult:
        """A read-only query through ``POST /sql``."""
        answer = self._answer("POST", "/sql", query.encode())
        return QueryResult(answer["columns"], answer["rows"])

    def audiences(self) -> list[dict[str, Any]]:
        """Every audience's definition (``GET /audiences``)."""
        answer: list[dict[str, Any]] = self._answer("GET", "/audiences")["audiences"]
        return answer

    def save_audience(self, audience: dict[str, Any], create: bool = False) -> dict[str, Any]:
        """Create (``create``: refused if it exists) or create-or-change an audience; its saved
        definition, with its version."""
        body = json.dumps(audience).encode()
        name = urllib.parse.quote(str(audience.get("name", "")), safe="")
        answer: dict[str, Any] = (
            self._answer("POST", "/audiences", body) if create else self._answer("PUT", f"/audiences/{name}", body)
        )
        return answer

    def delete_audience(self, name: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._answer("DELETE", f"/audiences/{urllib.parse.quote(name, safe='')}")
        return answer

    def customer(self, customer_id: str) -> dict[str, Any]:
        """One customer's live profile (``GET /customers/{id}``)."""
        answer: dict[str, Any] = self._answer("GET", f"/customers/{urllib.parse.quote(customer_id, safe='')}")
        return answer

    def forget(self, identifier: str) -> dict[str, Any]:
        """Erase the person ``identifier`` names (``DELETE /customers/{id}``): what was erased
        where, ``complete`` False while it is still under way."""
        path = f"/customers/{urllib.parse.quote(identifier, safe='')}"
        answer: dict[str, Any] = self._answer("DELETE", path, ok=(200, 202))
        return answer

    def lift_suppression(self, identifier: str) -> dict[str, Any]:
        """Lift the suppression of ``identifier`` (``DELETE /suppressions/{id}``): its events
        start a new profile from now on."""
        answer: dict[str, Any] = self._answer("DELETE", f"/suppressions/{urllib.parse.quote(identifier, safe='')}")
        return answer


class QueryClient:
    """Runs read-only SQL wherever the data is reachable."""

    def __init__(self, settings: Settings, timeout: float = 120.0) -> None:
        self.settings = settings
        self.worker = WorkerClient.for_settings(settings, timeout)
        self._direct: Any = None

    def query(self, sql: str) -> QueryResult:
        if not self.settings.embedded_clickhouse:
            return self._query_direct(sql)
        try:
            return self.worker.sql(sql)
        except urllib.error.URLError:
            return self._query_direct(sql)

    def _query_direct(self, sql: str) -> QueryResult:
        if self._direct is None:
            url = self.settings.clickhouse_url
            if self.settings.embedded_clickhouse and not Path(url.removeprefix("chdb://")).exists():
                raise QueryError(f"no crm360 data at {url}: run 'crm360 up' first (or pass --data-dir)")
            try:
                self._direct = connect_readonly(self.settings.clickhouse_reader_url)
            except Exception as error:  # noqa: BLE001 - e.g. locked by a worker on another port
                first = str(error).strip().splitlines()[0]
                raise QueryError(f"cannot open ClickHouse at {url}: {first}") from None
        try:
            return run_readonly(self._direct, sql)
        except Exception as error:  # noqa: BLE001
            raise QueryError(str(error).strip().splitlines()[0]) from None
