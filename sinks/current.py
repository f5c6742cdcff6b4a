"""Customers' current feature rows and audience memberships, as ClickHouse holds them, read
back for the backfill of new or changed audiences (``streams.worker.backfill``).

Only the customers of some partitions are read (a worker process's), picked in ClickHouse by
the partition Kafka gives their key (``kafkaMurmurHash``, as ``schemas.topics.partition_for``),
only those whose membership may move (ClickHouse evaluates the conditions), and only the
columns the audiences' conditions name, times as epoch seconds (as conditions compare them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from sinks.tables import DATABASE, TABLES

#: The type of each column of ``customer_features``.
_COLUMNS = dict(TABLES["customer_features"].columns)


@dataclass(frozen=True)
class CurrentRows:
    """``rows`` of ``columns`` (``customer_id``, ``as_of`` and ``version`` first), and the
    (audience, customer) pairs of the memberships."""

    columns: list[str]
    rows: list[list[Any]]
    members: set[tuple[str, str]]

    def dicts(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Rows ``start`` to ``stop`` as column name to value."""
        columns = self.columns
        return [dict(zip(columns, row, strict=True)) for row in self.rows[start:stop]]

    def to_json(self) -> bytes:
        return orjson.dumps({"columns": self.columns, "rows": self.rows, "members": sorted(self.members)})

    @classmethod
    def from_json(cls, raw: bytes) -> CurrentRows:
        data = orjson.loads(raw)
        return cls(data["columns"], data["rows"], {(a, c) for a, c in data["members"]})


def _partition_of_key(partitions: Sequence[int], partition_count: int) -> str:
    wanted = ", ".join(str(int(p)) for p in sorted(partitions))
    return f"kafkaMurmurHash(customer_id) % {int(partition_count)} IN ({wanted})"


def read_current(
    client: Client,
    columns: Sequence[str],
    audiences: Sequence[str],
    partitions: Sequence[int],
    partition_count: int,
    conditions: Sequence[str] = (),
) -> CurrentRows:
    """The current rows (``columns``: names of ``customer_features``) of the customers of
    ``partitions`` (of ``partition_count``) who may enter or leave: those for whom one of the
    ``conditions`` (SQL over ``customer_features``, from ``processors.conditions``, never a
    user's text) is true, and the members of ``audiences``; and those memberships.

    Column and audience names are checked, not trusted: columns must be those of
    ``customer_features``; audience names travel as a query parameter.
    """
    wanted = ["customer_id", "as_of", "version", *(c for c in columns if c not in ("customer_id", "as_of"))]
    unknown = [c for c in wanted if c not in _COLUMNS]
    if unknown:
        raise ValueError(f"not columns of customer_features: {unknown}")
    select = ", ".join(f"toUnixTimestamp64Milli({c}) / 1000 AS {c}" if "DateTime" in _COLUMNS[c] else c for c in wanted)
    mine = _partition_of_key(partitions, partition_count)
    members_of = (
        f"SELECT customer_id FROM {DATABASE}.audience_membership FINAL "
        f"WHERE is_deleted = 0 AND audience IN {{audiences:Array(String)}} AND {mine}"
    )
    who = " OR ".join([*(f"({sql})" for sql in conditions), f"customer_id IN ({members_of})"])
    parameters = {"audiences": list(audiences)}
    rows = client.query(
        f"SELECT {select} FROM {DATABASE}.customer_features FINAL WHERE is_deleted = 0 AND {mine} AND ({who})",
        parameters=parameters,
    ).result_rows
    found = client.query(
        f"SELECT audience, customer_id FROM {DATABASE}.audience_membership FINAL "
        f"WHERE is_deleted = 0 AND audience IN {{audiences:Array(String)}} AND {mine}",
        parameters=parameters,
    ).result_rows
    return CurrentRows(wanted, [list(row) for row in rows], {(audience, customer) for audience, customer in found})
