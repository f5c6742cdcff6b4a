"""The read-only query path analysts use (``crm360 sql``, ``POST /sql``, the dashboard).

Queries run with ClickHouse's ``readonly=1``: anything that writes, changes settings or
reads files is refused by the engine itself, not by parsing SQL here.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client


MAX_RESULT_ROWS = 100_000
READONLY_SETTINGS = {
    "readonly": 1,
    "max_execution_time": 60,
    "max_result_rows": MAX_RESULT_ROWS,
    "result_overflow_mode": "break",
}


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of a query, with JSON-ready values."""

    columns: list[str]
    rows: list[list[Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows}


def sql_string(value: str) -> str:
    """A ClickHouse string literal.

    >>> print(sql_string("it's"))
    'it\\'s'
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def run_readonly(client: Client, sql: str) -> QueryResult:
    """Run one read-only query; errors come from ClickHouse.

    Open ``client`` with ``database="crm360"`` so analysts can write bare table names.
    """
    result = client.query(sql, settings=READONLY_SETTINGS)
    return QueryResult(list(result.column_names), [[_plain(v) for v in row] for row in result.result_rows])
