"""Read-only queries from the command line: through the running worker, or directly.

With embedded ClickHouse only one process may open the data directory, so while a worker
owns it, queries go through the worker's ``POST /sql``; when nothing runs, the directory
is opened here. With a ClickHouse server, queries go straight to the server.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sinks.query import QueryResult, connect_readonly, run_readonly
from streams.settings import Settings


class QueryError(RuntimeError):
    """The query failed; the message is ClickHouse's (or says how to reach it)."""


def _post(url: str, body: bytes, api_key: str | None, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(url, data=body, method="POST")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read()).get("error", str(error))
        except ValueError:
            message = str(error)
        raise QueryError(message) from None


class QueryClient:
    """Runs read-only SQL wherever the data is reachable."""

    def __init__(self, settings: Settings, timeout: float = 120.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._direct: Any = None

    def query(self, sql: str) -> QueryResult:
        settings = self.settings
        if not settings.embedded_clickhouse:
            return self._query_direct(sql)
        key = settings.api_key.get_secret_value() if settings.api_key else None
        try:
            data = _post(f"{settings.web_url}/sql", sql.encode(), key, self.timeout)
            return QueryResult(data["columns"], data["rows"])
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
