"""The ClickHouse connection, versioned migrations and the batched, idempotent writer.

One code path serves embedded chDB (``chdb:///abs/dir``) and a ClickHouse server
(``http://user:pass@host:8123/db``). Rows are collected in memory and inserted per table
at a checkpoint (:meth:`ClickHouseSink.flush`), which the worker calls before offsets are
committed. Re-inserting a row is harmless: raw events are deduplicated by ``event_id``
(ReplacingMergeTree) and ``customer_features`` keeps the highest ``version``.
"""

from __future__ import annotations

import operator
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from schemas.events import BaseEvent, Purchase
from schemas.rows import FEATURE_COLUMNS, FEATURE_TIME_COLUMNS
from sinks.tables import DATABASE, RAW_EVENT_TABLES, TABLES
from sinks.views import VIEWS

#: Each migration: (version, description, statements). Append only; never edit a shipped one.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "raw events, customer features, dead letters", [TABLES[name].ddl() for name in (*RAW_EVENT_TABLES.values(),
                                                         "customer_features", "dead_letters")]),
    (2, "models: churn alerts, model metrics, segments, segment membership, CLV and model version",
     [TABLES[name].ddl() for name in ("churn_alerts", "model_metrics", "segments", "segment_membership")]
     + [f"ALTER TABLE {DATABASE}.customer_features ADD COLUMN IF NOT EXISTS `{name}` {kind}"
        for name, kind in TABLES["customer_features"].columns if name in ("clv_estimate", "model_version")]),
    (5, "analyst views", [v.ddl() for v in VIEWS.values()]),
]


def connect(dsn: str, database: str | None = None) -> Client:
    """Open a client; ``chdb://`` DSNs get their data directory created first."""
    if dsn.startswith("chdb://") and dsn != "chdb://memory":
        Path(dsn.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
    if database is None:
        return clickhouse_connect.get_client(dsn=dsn)
    return clickhouse_connect.get_client(dsn=dsn, database=database)


def migrate(client: Client) -> list[int]:
    """Apply the migrations not yet applied; returns the versions applied now."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {DATABASE}.schema_migrations "
        "(version UInt32, description String, applied_at DateTime64(3, 'UTC')) "
        "ENGINE = MergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query(f"SELECT version FROM {DATABASE}.schema_migrations").result_rows}
    applied = []
    for version, description, statements in MIGRATIONS:
        if version in done:
            continue
        for statement in statements:
            client.command(statement)
        client.insert(
            f"{DATABASE}.schema_migrations",
            [[version, description, int(time.time() * 1000)]],
            column_names=["version", "description", "applied_at"],
        )
        applied.append(version)
    return applied


def to_ms(value: float | datetime | None) -> int | None:
    """Epoch seconds or a datetime as DateTime64(3) ticks (milliseconds)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.timestamp()
    return int(round(value * 1000))


def _item_columns(event: Purchase) -> list[list[Any]]:
    items = event.items
    return [
        [i.sku for i in items],
        [i.category or "" for i in items],
        [i.quantity for i in items],
        [i.unit_price for i in items],
    ]


class _RawLayout:
    """How one event model becomes a row of its raw table."""

    def __init__(self, model: type[BaseEvent], table: str) -> None:
        self.table = table
        self.has_items = model is Purchase
        types = dict(TABLES[table].columns)
        self.names = [n for n in types if not n.startswith("item_") and n != "ingested_at"]
        self.time_positions = [i for i, n in enumerate(self.names) if "DateTime64" in types[n]]
        self.values = operator.itemgetter(*self.names)

    def row(self, event: BaseEvent, ingested_ms: int) -> list[Any]:
        values = list(self.values(event.__dict__))  # pydantic keeps validated field values there
        for i in self.time_positions:
            value = values[i]
            if value is not None:
                values[i] = int(value.timestamp() * 1000)
        if self.has_items:
            values += _item_columns(event)  # type: ignore[arg-type]
        values.append(ingested_ms)
        return values


_RAW_LAYOUTS = {model: _RawLayout(model, table) for model, table in RAW_EVENT_TABLES.items()}
_feature_values = operator.itemgetter(*FEATURE_COLUMNS)
_FEATURE_TIME_POSITIONS = [i for i, name in enumerate(FEATURE_COLUMNS) if name in FEATURE_TIME_COLUMNS]


class ClickHouseSink:
    """Collects rows per table; :meth:`flush` inserts each table's batch in one call."""

    def __init__(self, client: Client) -> None:
        self.client = client
        # Feature rows go first: once an event's raw row is visible, its customer's row is too.
        order = ["customer_features", "segment_membership", "churn_alerts", "dead_letters",
                 *RAW_EVENT_TABLES.values(), "model_metrics", "segments"]
        self.pending: dict[str, list[list[Any]]] = {name: [] for name in order}
        self.last_flush_seconds = 0.0
        self.rows_written = 0

    @property
    def pending_rows(self) -> int:
        return sum(len(rows) for rows in self.pending.values())

    def add_event(self, event: BaseEvent, ingested_ms: int) -> None:
        layout = _RAW_LAYOUTS[type(event)]
        self.pending[layout.table].append(layout.row(event, ingested_ms))

    def add_features(self, row: dict[str, Any], version: int, updated_ms: int) -> None:
        values = list(_feature_values(row))
        for i in _FEATURE_TIME_POSITIONS:
            values[i] = to_ms(values[i])
        values += [version, updated_ms]
        self.pending["customer_features"].append(values)

    def add_membership_change(self, dimension: str, name: str, customers: int) -> None:
        self.pending["segment_membership"].append([dimension, name, customers])

    def add_row(self, table: str, row: dict[str, Any]) -> None:
        """Queue one row of a table written from a pydantic model's fields (times as datetimes)."""
        self.pending[table].append(
            [to_ms(value) if isinstance(value, datetime) else value for value in (row[c] for c in TABLES[table].column_names)]
        )

    def add_dead_letter(
        self, source: str, topic: str, partition: int, offset: int, reason: str, payload: str, received_ms: int
    ) -> None:
        self.pending["dead_letters"].append([received_ms, source, topic, partition, offset, reason, payload])

    def flush(self) -> int:
        """Insert everything pending; returns the number of rows written."""
        started = time.perf_counter()
        written = 0
        for name, rows in self.pending.items():
            if rows:
                self.client.insert(f"{DATABASE}.{name}", rows, column_names=TABLES[name].column_names)
                written += len(rows)
                self.pending[name] = []
        self.last_flush_seconds = time.perf_counter() - started
        self.rows_written += written
        return written
