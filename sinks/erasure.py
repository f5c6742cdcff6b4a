"""Erasing a person's rows from every ClickHouse table that names them.

Each table that can hold an identifier has its condition (:data:`NAMING`): a row names the
person when a column of identifiers holds one of theirs, a raw event's ``identifiers`` map
included (``kind:value``, as identifiers are written), and a dead letter when its payload holds
one as a JSON string. Rows are counted, then deleted with lightweight ``DELETE`` (gone from
every query at once; the parts are rewritten by later merges). Erasing again finds nothing:
the erasure is idempotent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from sinks.tables import DATABASE, RAW_EVENT_TABLES

_IN_IDENTIFIERS = (
    "hasAny(arrayMap((k, v) -> concat(k, ':', v), mapKeys(identifiers), mapValues(identifiers)), {ids:Array(String)})"
)
_CUSTOMER = "has({ids:Array(String)}, customer_id)"

#: Per table, the condition of a row that names one of ``{ids}`` (``{quoted}``: the same as JSON strings).
NAMING: dict[str, str] = {
    **{table: f"{_CUSTOMER} OR {_IN_IDENTIFIERS}" for table in RAW_EVENT_TABLES.values()},
    "customer_features": _CUSTOMER,
    "churn_alerts": _CUSTOMER,
    "audience_membership": _CUSTOMER,
    "audience_events": f"{_CUSTOMER} OR hasAny(identifiers, {{ids:Array(String)}})",
    "identities": "has({ids:Array(String)}, identifier) OR has({ids:Array(String)}, profile_id)",
    "identity_merges": (
        "has({ids:Array(String)}, survivor) OR has({ids:Array(String)}, absorbed) "
        "OR hasAny(identifiers, {ids:Array(String)})"
    ),
    "dead_letters": "multiSearchAny(payload, {quoted:Array(String)})",
}


def erase_rows(client: Client, identifiers: list[str]) -> dict[str, int]:
    """Delete every row naming one of ``identifiers``; returns the rows removed per table
    (tables with none left out)."""
    parameters: dict[str, Any] = {"ids": identifiers, "quoted": [f'"{name}"' for name in identifiers]}
    removed = {}
    for table, condition in NAMING.items():
        count = client.query(f"SELECT count() FROM {DATABASE}.{table} WHERE {condition}", parameters=parameters)
        rows = int(count.result_rows[0][0])
        if rows:
            client.command(f"DELETE FROM {DATABASE}.{table} WHERE {condition}", parameters=parameters)
            removed[table] = rows
    return removed


@dataclass(frozen=True, slots=True)
class RowErasure:
    """An erasure of rows, queued by the owner of ``identifier_hash``'s partition after the
    rows it wrote before: the rows naming any of ``identifiers``, for request ``request_id``;
    ``customer_states``: how many states of the identifier it erased (0 or 1)."""

    request_id: str
    identifier_hash: str
    identifiers: list[str]
    customer_states: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RowErasure:
        """
        >>> erasure = RowErasure("r1", "ab", ["c1"], 1)
        >>> RowErasure.from_dict(erasure.to_dict()) == erasure
        True
        """
        return cls(
            str(data["request_id"]),
            str(data["identifier_hash"]),
            [str(i) for i in data["identifiers"]],
            int(data["customer_states"]),
        )
