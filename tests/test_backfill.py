"""The backfill of new, changed and deleted audiences (``streams.worker.backfill``): customers'
current rows read back from ClickHouse, and only those whose membership moves read and decided."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from processors.config import ModelConfig
from schemas.audiences import Audience
from schemas.topics import partition_for
from sinks.clickhouse import ClickHouseSink, connect, migrate
from sinks.current import CurrentRows, read_current
from tests.test_models import feed, new_pipeline, purchase


class CountingTable(dict[bytes, Any]):
    """A customer table that counts the states read from it."""

    reads = 0

    def get(self, key: bytes, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)


def current_of(rows: list[dict[str, Any]], columns: list[str], members: set[tuple[str, str]]) -> CurrentRows:
    """The customers' last rows, as ClickHouse would give them back."""
    last = {row["customer_id"]: row for row in rows}
    wanted = ["customer_id", "as_of", "version", *columns]
    return CurrentRows(wanted, [[row.get(c, 1) for c in wanted] for row in last.values()], members)


def test_a_backfill_reads_only_the_customers_whose_membership_moves() -> None:
    pipeline, sink, _ = new_pipeline(ModelConfig(), partitions=2)
    table = pipeline.table = CountingTable()
    feed(pipeline, [purchase(f"c{i}", n, i / 100 + n) for i in range(30) for n in range(1 + i % 3)])
    assert len(table) == 30
    pipeline.audiences.define(Audience(name="repeat", condition="purchase_count >= 2", version=1))
    due, changed = pipeline.unchecked({0, 1})
    assert due == {0, 1} and changed == ["repeat"]

    table.reads = 0
    current = current_of(sink.features, ["purchase_count"], set())
    assert pipeline.backfill(current, {0, 1}, pipeline.audiences.generation, changed) == 20
    assert table.reads == 20  # the 10 one-time buyers stay where they are
    entered = {e.customer_id for e in pipeline.take_audience_events() if e.change == "entered"}
    assert entered == {f"c{i}" for i in range(30) if i % 3} and pipeline.unchecked({0, 1}) == (set(), [])

    # Changed: only those who leave or join are read; the members who stay are not.
    pipeline.audiences.define(Audience(name="repeat", condition="purchase_count >= 3", version=2))
    members = {("repeat", c) for c in entered}
    table.reads = 0
    _, changed = pipeline.unchecked({0, 1})
    pipeline.backfill(
        current_of(sink.features, ["purchase_count"], members), {0, 1}, pipeline.audiences.generation, changed
    )
    events = pipeline.take_audience_events()
    assert table.reads == 10 and {e.change for e in events} == {"exited"}
    assert {e.customer_id for e in events} == {f"c{i}" for i in range(30) if i % 3 == 1}
    assert {c.decode() for c, s in table.items() if "repeat" in s.audiences} == {
        f"c{i}" for i in range(30) if i % 3 == 2
    }

    # Deleted: its members leave, and only they are read.
    pipeline.audiences.delete("repeat")
    table.reads = 0
    _, changed = pipeline.unchecked({0, 1})
    members = {("repeat", f"c{i}") for i in range(30) if i % 3 == 2}
    pipeline.backfill(current_of(sink.features, [], members), {0, 1}, pipeline.audiences.generation, changed)
    events = pipeline.take_audience_events()
    assert table.reads == 10 and {(e.change, e.reason) for e in events} == {("exited", "deleted")}


@pytest.fixture
def release_clickhouse() -> Iterator[None]:
    yield
    gc.collect()  # chDB holds its directory until its last client is gone


@pytest.mark.integration
def test_the_current_rows_of_some_partitions_come_back_as_written(tmp_path: Path, release_clickhouse: None) -> None:
    """The rows read back are the last written of each customer of the partitions asked for
    (picked by ClickHouse as Kafka picks partitions), times as epoch seconds, merged profiles'
    rows left out; and the memberships of the audiences asked for."""
    client = connect(f"chdb://{tmp_path / 'ch'}")
    migrate(client)
    pipeline, _, _ = new_pipeline(ModelConfig(), partitions=4)
    pipeline.sink = sink = ClickHouseSink(client)
    feed(pipeline, [purchase(f"c{i}", n, i / 10 + n) for i in range(40) for n in range(1 + i % 2)])
    sink.write(sink.take())
    pipeline.audiences.define(Audience(name="repeat", condition="purchase_count >= 2", version=1))
    _, changed = pipeline.unchecked({0, 1, 2, 3})
    everyone = read_current(client, ["purchase_count"], changed, [0, 1, 2, 3], 4)
    assert len(everyone.rows) == 40 and everyone.members == set()
    pipeline.backfill(everyone, {0, 1, 2, 3}, pipeline.audiences.generation, changed)
    sink.write(sink.take())

    client.command(  # c3 merged into another profile: its row is deleted
        "INSERT INTO crm360.customer_features SELECT * REPLACE (18446744073709551615 AS version, 1 AS is_deleted) "
        "FROM crm360.customer_features FINAL WHERE customer_id = 'c3'"
    )
    current = read_current(client, ["purchase_count", "last_purchase_at"], ["repeat"], [1, 3], 4)
    mine = {f"c{i}" for i in range(40) if partition_for(f"c{i}", 4) in (1, 3)} - {"c3"}
    rows = {row["customer_id"]: row for row in current.dicts()}
    assert set(rows) == mine and current.columns[:3] == ["customer_id", "as_of", "version"]
    state = pipeline.table[b"c1"]
    assert rows["c1"]["purchase_count"] == 2 and rows["c1"]["last_purchase_at"] == pytest.approx(
        state.last_purchase_at, abs=1e-3
    )
    assert partition_for("c3", 4) in (1, 3) and current.members == {
        ("repeat", c) for c in mine | {"c3"} if int(c[1:]) % 2
    }
    assert CurrentRows.from_json(current.to_json()) == current
    with pytest.raises(ValueError, match="not columns of customer_features"):
        read_current(client, ["purchase_count; DROP TABLE x"], [], [0], 4)
