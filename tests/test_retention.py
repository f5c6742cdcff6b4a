"""Retention on embedded ClickHouse: raw events and dead letters leave once their days are past."""

from __future__ import annotations

from pathlib import Path

import pytest

from sinks.clickhouse import connect, migrate
from sinks.retention import WRITTEN_AT, apply_retention
from sinks.tables import DATABASE

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("release_clickhouse")]  # embedded ClickHouse


def test_rows_older_than_their_retention_leave_and_the_rest_stay(tmp_path: Path) -> None:
    client = connect(f"chdb://{tmp_path / 'ch'}")
    migrate(client)

    def write(table: str, key: str, days_ago: int) -> None:
        column = WRITTEN_AT[table]
        name = "event_id" if column == "ingested_at" else "reason"
        items = (", items", ", []") if table == "purchases" else ("", "")  # its item columns derive from items
        client.command(
            f"INSERT INTO {DATABASE}.{table} ({name}, {column}{items[0]}) "
            f"VALUES ('{key}', now64(3) - INTERVAL {days_ago} DAY{items[1]})"
        )

    def kept(table: str) -> list[str]:
        name = "event_id" if WRITTEN_AT[table] == "ingested_at" else "reason"
        client.command(f"OPTIMIZE TABLE {DATABASE}.{table} FINAL")  # what a merge does within a day
        return [row[0] for row in client.query(f"SELECT {name} FROM {DATABASE}.{table} ORDER BY {name}").result_rows]

    for table in WRITTEN_AT:
        write(table, "a-40-days-old", 40)
        write(table, "b-10-days-old", 10)
        write(table, "c-today", 0)
    assert apply_retention(client, raw_events_days=30, dead_letters_days=7) == list(WRITTEN_AT)
    assert apply_retention(client, raw_events_days=30, dead_letters_days=7) == []  # as set: nothing to do
    for table in WRITTEN_AT:
        expected = ["c-today"] if table == "dead_letters" else ["b-10-days-old", "c-today"]
        assert kept(table) == expected, table

    assert apply_retention(client, raw_events_days=None, dead_letters_days=7) == [
        t for t in WRITTEN_AT if t != "dead_letters"
    ]
    write("purchases", "d-400-days-old", 400)
    assert kept("purchases") == ["b-10-days-old", "c-today", "d-400-days-old"]  # no retention: kept
