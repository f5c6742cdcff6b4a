"""Erasing a person's rows on embedded ClickHouse: every table naming one of their identifiers
loses those rows, the others keep theirs, the log says what went, and erasing again is harmless."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.privacy import identifier_hash
from sinks.clickhouse import ClickHouseSink, connect, migrate
from sinks.erasure import NAMING, RowErasure
from sinks.tables import DATABASE

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("release_clickhouse")]  # embedded ClickHouse

#: Per table, rows (column -> SQL value) naming the person ("gone", "anonymous_id:dev") and one naming another.
ROWS: dict[str, tuple[list[dict[str, str]], dict[str, str]]] = {
    "purchases": (
        [
            {"event_id": "'e1'", "customer_id": "'gone'", "items": "[]"},
            {"event_id": "'e2'", "customer_id": "'x9'", "identifiers": "{'anonymous_id': 'dev'}", "items": "[]"},
        ],
        {"event_id": "'e3'", "customer_id": "'gone-not'", "identifiers": "{'anonymous_id': 'gone'}", "items": "[]"},
    ),
    "visits": (
        [{"event_id": "'v1'", "customer_id": "'anonymous_id:dev'"}],
        {"event_id": "'v2'", "customer_id": "'c2'"},
    ),
    "customer_features": ([{"customer_id": "'gone'"}], {"customer_id": "'c2'"}),
    "churn_alerts": ([{"customer_id": "'gone'", "alert_id": "'a1'"}], {"customer_id": "'c2'", "alert_id": "'a2'"}),
    "audience_membership": ([{"customer_id": "'gone'", "audience": "'b'"}], {"customer_id": "'c2'", "audience": "'b'"}),
    "audience_events": (
        [{"customer_id": "'x'", "identifiers": "['x', 'anonymous_id:dev']", "event_id": "'ae1'"}],
        {"customer_id": "'c2'", "identifiers": "['c2']", "event_id": "'ae2'"},
    ),
    "identities": (
        [{"identifier": "'anonymous_id:dev'", "profile_id": "'gone'"}],
        {"identifier": "'c2'", "profile_id": "'c2'"},
    ),
    "identity_merges": (
        [{"survivor": "'gone'", "absorbed": "'anonymous_id:dev'", "identifiers": "['anonymous_id:dev']"}],
        {"survivor": "'c2'", "absorbed": "'anonymous_id:other'", "identifiers": "['anonymous_id:other']"},
    ),
    "dead_letters": (
        [{"payload": '\'{"customer_id":"gone","ts":"bad"}\'', "reason": "'r1'"}],
        {"payload": '\'{"customer_id":"gone-not"}\'', "reason": "'r2'"},
    ),
}


def test_an_erasure_removes_every_row_naming_the_person_and_only_those(tmp_path: Path) -> None:
    client = connect(f"chdb://{tmp_path / 'ch'}")
    migrate(client)
    assert set(ROWS) - {"purchases", "visits"} <= set(NAMING)
    for table, (named, other) in ROWS.items():
        for row in [*named, other]:
            client.command(f"INSERT INTO {DATABASE}.{table} ({', '.join(row)}) VALUES ({', '.join(row.values())})")

    sink = ClickHouseSink(client)
    people = ["gone", "anonymous_id:dev"]
    sink.add_erasure(RowErasure("r1", identifier_hash("gone"), people, 1))
    sink.flush()

    for table, (named, _) in ROWS.items():
        left = client.query(f"SELECT count() FROM {DATABASE}.{table}").result_rows[0][0]
        assert left == 1, table  # the other person's row
    log = client.query(
        f"SELECT request_id, action, identifier_hashes, customer_states, removed FROM {DATABASE}.privacy_log"
    ).result_rows
    assert log == [("r1", "erased", [identifier_hash("gone")], 1, {t: len(named) for t, (named, _) in ROWS.items()})]
    assert "gone" not in str(client.query(f"SELECT * FROM {DATABASE}.privacy_log").result_rows)

    sink.add_erasure(RowErasure("r2", identifier_hash("gone"), people, 0))  # again: nothing left to remove
    sink.flush()
    again = client.query(f"SELECT removed FROM {DATABASE}.privacy_log WHERE request_id = 'r2'").result_rows
    assert again == [({},)]
