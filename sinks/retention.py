"""How long ClickHouse keeps raw events and dead letters: table TTLs on when they were written.

The TTLs follow the settings at every start (``apply_retention``): a retention set is
applied to the rows already there at once, one removed keeps every row from then on. A table's
rows leave when ClickHouse merges its parts (at the latest within a day:
``merge_with_ttl_timeout``), or at once with ``OPTIMIZE TABLE ... FINAL``.

>>> ttl_clause("ingested_at", 30)
'TTL toDateTime(ingested_at) + toIntervalDay(30)'
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from sinks.tables import DATABASE, RAW_EVENT_TABLES

#: The tables that hold raw personal data for a while, and the column saying when each row came.
WRITTEN_AT: dict[str, str] = {table: "ingested_at" for table in RAW_EVENT_TABLES.values()} | {
    "dead_letters": "received_at"
}


def ttl_clause(column: str, days: int) -> str:
    """The TTL clause as ClickHouse shows it in a table's ``engine_full``."""
    return f"TTL toDateTime({column}) + toIntervalDay({days})"


def apply_retention(client: Client, raw_events_days: int | None, dead_letters_days: int | None) -> list[str]:
    """Set each table's TTL to its retention (None: no TTL); returns the tables changed."""
    changed = []
    for table, column in WRITTEN_AT.items():
        days = dead_letters_days if table == "dead_letters" else raw_events_days
        engine = client.query(
            "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {table:String}",
            parameters={"db": DATABASE, "table": table},
        ).result_rows[0][0]
        has_ttl = " TTL " in engine
        if days is None and has_ttl:
            client.command(f"ALTER TABLE {DATABASE}.{table} REMOVE TTL")
        elif days is not None and ttl_clause(column, days) not in engine:
            client.command(f"ALTER TABLE {DATABASE}.{table} MODIFY TTL toDateTime({column}) + INTERVAL {days} DAY")
        else:
            continue
        changed.append(table)
    return changed
