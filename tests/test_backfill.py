"""The backfill of new, changed and deleted audiences (``streams.worker.backfill``): customers'
current rows read back from ClickHouse, and only those whose membership moves read and decided."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from processors.conditions import parse_condition
from processors.config import ModelConfig
from schemas.audiences import Audience
from schemas.topics import partition_for
from sinks.clickhouse import ClickHouseSink, connect, migrate
from sinks.current import CurrentRows, read_current
from tests.test_models import feed, new_pipeline, purchase


class CountingTable(dict[bytes, Any]):
    """A customer table that counts the states read from it and written to it."""

    reads = writes = 0

    def get(self, key: bytes, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)

    def __setitem__(self, key: bytes, value: Any) -> None:
        self.writes += 1
        super().__setitem__(key, value)


def current_of(rows: list[dict[str, Any]], columns: list[str], members: set[tuple[str, str]]) -> CurrentRows:
    """The customers' last rows, as ClickHouse would give them back."""
    last = {row["customer_id"]: row for row in rows}
    wanted = ["customer_id", "as_of", "version", *columns]
    return CurrentRows(wanted, [[row.get(c, 1) for c in wanted] for row in last.values()], members)


def check(pipeline: Any, current: CurrentRows, partitions: set[int]) -> None:
    """What ``Backfill.run`` does, in one go."""
    due, changed = pipeline.unchecked(partitions)
    generation = pipeline.audiences.generation
    pipeline.start_backfill(due)
    pipeline.backfill(current.dicts(), current.members, changed)
    pipeline.end_backfill(generation)


def test_a_backfill_reads_only_the_customers_whose_membership_moves() -> None:
    pipeline, sink, _ = new_pipeline(ModelConfig(), partitions=2)
    table = pipeline.table = CountingTable()
    feed(pipeline, [purchase(f"c{i}", n, i / 100 + n) for i in range(30) for n in range(1 + i % 3)])
    assert len(table) == 30
    pipeline.audiences.define(Audience(name="repeat", condition="purchase_count >= 2", version=1))
    due, changed = pipeline.unchecked({0, 1})
    assert due == {0, 1} and changed == ["repeat"]

    table.reads = table.writes = 0
    current = current_of(sink.features, ["purchase_count"], set())
    pipeline.start_backfill(due)
    assert pipeline.backfill(current.dicts(), current.members, changed) == 20
    pipeline.end_backfill(pipeline.audiences.generation)
    assert table.reads == 20  # the 10 one-time buyers stay where they are
    # Memberships are a table of their own: no customer's state is written (sent, stored) again.
    assert table.writes == 0 and len(pipeline.memberships) == 20
    entered = {e["customer_id"] for e in pipeline.take_audience_events() if e["change"] == "entered"}
    assert entered == {f"c{i}" for i in range(30) if i % 3} and pipeline.unchecked({0, 1}) == (set(), [])

    # Changed: only those who leave or join are read; the members who stay are not.
    pipeline.audiences.define(Audience(name="repeat", condition="purchase_count >= 3", version=2))
    members = {("repeat", c) for c in entered}
    table.reads = 0
    check(pipeline, current_of(sink.features, ["purchase_count"], members), {0, 1})
    events = pipeline.take_audience_events()
    assert table.reads == 10 and {e["change"] for e in events} == {"exited"}
    assert {e["customer_id"] for e in events} == {f"c{i}" for i in range(30) if i % 3 == 1}
    assert {c.decode() for c, m in pipeline.memberships.items() if "repeat" in m.audiences} == {
        f"c{i}" for i in range(30) if i % 3 == 2
    }

    # Deleted: its members leave, and only they are read.
    pipeline.audiences.delete("repeat")
    table.reads = 0
    members = {("repeat", f"c{i}") for i in range(30) if i % 3 == 2}
    check(pipeline, current_of(sink.features, [], members), {0, 1})
    events = pipeline.take_audience_events()
    assert table.reads == 10 and {(e["change"], e["reason"]) for e in events} == {("exited", "deleted")}
    assert not pipeline.memberships  # in no audience: no record


def run_backfill(pipeline: Any, read: CurrentRows, after_slice: Callable[[], Awaitable[None]]) -> list[tuple[Any, ...]]:
    """``Backfill.run`` over partitions 0 and 1, reading ``read``; returns what it asked to read."""
    from streams.worker.backfill import Backfill

    asked: list[tuple[Any, ...]] = []

    class Reads:
        async def read(self, *ask: Any) -> CurrentRows:
            asked.append(ask)
            return read

    class Writer:
        async def flush(self) -> None:
            pass

    runner = Backfill(pipeline, asyncio.Lock(), asyncio.Event(), Writer(), Reads(), after_slice)  # type: ignore[arg-type]
    asyncio.run(runner.run(lambda: {0, 1}))
    return asked


def test_a_customer_emitted_while_the_backfill_goes_on_is_left_to_the_stream(monkeypatch: Any) -> None:
    """The rows are checked a slice at a time, with batches in between: a customer whose new
    row a batch emitted meanwhile was checked on it, and their older row read before is passed
    by (decided on it, they would enter an audience they no longer fit)."""
    from streams.worker import backfill as module

    monkeypatch.setattr(module, "SLICE", 10)
    pipeline, sink, _ = new_pipeline(ModelConfig(), partitions=2)
    feed(pipeline, [purchase(f"c{i}", 0, i / 100) for i in range(30)])
    pipeline.audiences.define(Audience(name="one_time", condition="purchase_count = 1", version=1))
    read = current_of(sink.features, ["purchase_count"], set())
    last = read.rows[-1][0]
    batches: list[int] = []

    async def after_slice() -> None:
        if not batches:  # a batch between the first two slices: the last customer buys again
            feed(pipeline, [purchase(last, 1, 5.0)])
        batches.append(len(batches))

    asked = run_backfill(pipeline, read, after_slice)
    assert asked == [(["purchase_count"], ["one_time"], ["purchase_count = 1"], [0, 1])]
    assert len(batches) == 3 and pipeline.unchecked({0, 1}) == (set(), [])
    entered = {e["customer_id"] for e in pipeline.take_audience_events() if e["change"] == "entered"}
    assert entered == {f"c{i}" for i in range(30)} - {last}
    assert last.encode() not in pipeline.memberships and pipeline.emitted_since_read is None


def test_a_partition_given_up_during_the_backfill_is_left_to_its_next_owner(monkeypatch: Any) -> None:
    """A rebalance between slices takes partition 1 away: its customers are not touched any
    more, and it is not marked checked (should it come back, the next backfill checks it)."""
    from streams.worker import backfill as module

    monkeypatch.setattr(module, "SLICE", 10)
    pipeline, sink, _ = new_pipeline(ModelConfig(), partitions=2)
    feed(pipeline, [purchase(f"c{i}", 0, i / 100) for i in range(40)])
    pipeline.audiences.define(Audience(name="buyers", condition="purchase_count >= 1", version=1))
    read = current_of(sink.features, ["purchase_count"], set())
    given_up: list[int] = []

    async def after_slice() -> None:
        if not given_up:
            pipeline.forget_partitions({1})
            given_up.append(1)

    run_backfill(pipeline, read, after_slice)
    entered = {e["customer_id"] for e in pipeline.take_audience_events()}
    first_slice = {row[0] for row in read.rows[:10]}
    assert entered == first_slice | {c for c, *_ in read.rows if pipeline.partition_of(c.encode()) == 0}
    assert pipeline.unchecked({0, 1}) == ({1}, ["buyers"])


def test_an_aging_pass_waits_while_a_backfill_is_under_way(monkeypatch: Any) -> None:
    """An audience created while an aging pass walked a million customers took minutes: their
    slices took turns, and the pass (which nobody waits for) had as many turns as the backfill
    (which the marketer does). Now the pass waits between its slices until the backfill is over."""
    from streams.worker import backfill as module
    from streams.worker.aging import AgingSchedule
    from streams.worker.backfill import Backfill

    monkeypatch.setattr(module, "SLICE", 10)
    pipeline, sink, _ = new_pipeline(ModelConfig(), partitions=2)
    feed(pipeline, [purchase(f"c{i}", 0, i / 100) for i in range(200)])
    order: list[str] = []

    async def backfilled() -> None:
        order.append("backfill")

    async def aged() -> None:
        order.append("aging")

    class Reads:
        async def read(self, *ask: Any) -> CurrentRows:
            return current_of(sink.features, ["purchase_count"], set())

    class Writer:
        async def flush(self) -> None:
            pass

    async def main() -> None:
        lock = asyncio.Lock()
        backfill = Backfill(pipeline, lock, asyncio.Event(), Writer(), Reads(), backfilled)  # type: ignore[arg-type]
        aging = AgingSchedule(
            pipeline.start_aging,
            lock,
            asyncio.Event(),
            aged,
            way_clear=backfill.idle,
            slice_size=10,
            min_advance_s=0.0,
            max_share=0.5,
        )
        walking = asyncio.create_task(aging.run(lambda: {0, 1}))
        while len(order) < 3:
            await asyncio.sleep(0)
        pipeline.audiences.define(Audience(name="buyers", condition="purchase_count >= 1", version=1))
        await backfill.run(lambda: {0, 1})
        await walking

    asyncio.run(main())
    first, last = order.index("backfill"), len(order) - order[::-1].index("backfill") - 1
    assert order[first : last + 1] == ["backfill"] * 20, order  # 200 customers, 10 at a time
    assert order[:first] == ["aging"] * 3 and order[last + 1 :].count("aging") > 10
    assert {e["customer_id"] for e in pipeline.take_audience_events()} == {f"c{i}" for i in range(200)}


@pytest.mark.integration
def test_the_current_rows_of_those_who_may_move_come_back_as_written(tmp_path: Path, release_clickhouse: None) -> None:
    """The rows read back are the last written of the customers of the partitions asked for
    (picked by ClickHouse as Kafka picks partitions) for whom a condition holds or who are
    members of the audiences asked for, times as epoch seconds, merged profiles' rows left out;
    and those memberships."""
    client = connect(f"chdb://{tmp_path / 'ch'}")
    migrate(client)
    pipeline, _, _ = new_pipeline(ModelConfig(), partitions=4)
    pipeline.sink = sink = ClickHouseSink(client)
    feed(pipeline, [purchase(f"c{i}", n, i / 10 + n) for i in range(40) for n in range(1 + i % 2)])
    sink.write(sink.take())
    repeat = "purchase_count >= 2"
    pipeline.audiences.define(Audience(name="repeat", condition=repeat, version=1))
    _, changed = pipeline.unchecked({0, 1, 2, 3})
    entering = read_current(client, ["purchase_count"], changed, [0, 1, 2, 3], 4, [parse_condition(repeat).sql])
    assert {row["customer_id"] for row in entering.dicts()} == {f"c{i}" for i in range(40) if i % 2}
    assert entering.members == set()
    check(pipeline, entering, {0, 1, 2, 3})
    sink.write(sink.take())
    client.command(  # c3 merged into another profile: its row is deleted
        "INSERT INTO crm360.customer_features SELECT * REPLACE (18446744073709551615 AS version, 1 AS is_deleted) "
        "FROM crm360.customer_features FINAL WHERE customer_id = 'c3'"
    )
    mine = {f"c{i}" for i in range(40) if partition_for(f"c{i}", 4) in (1, 3)} - {"c3"}
    assert partition_for("c3", 4) in (1, 3)
    anyone = parse_condition("purchase_count >= 1").sql
    current = read_current(client, ["purchase_count", "last_purchase_at"], ["repeat"], [1, 3], 4, [anyone])
    rows = {row["customer_id"]: row for row in current.dicts()}
    assert set(rows) == mine and current.columns[:3] == ["customer_id", "as_of", "version"]
    state = pipeline.table[b"c1"]
    assert rows["c1"]["purchase_count"] == 2
    assert rows["c1"]["last_purchase_at"] == pytest.approx(state.last_purchase_at, abs=1e-3)
    assert current.members == {("repeat", c) for c in mine | {"c3"} if int(c[1:]) % 2}
    # Nobody the condition holds for: the members alone come back (their exit is checked).
    nobody = parse_condition("purchase_count >= 5").sql
    members = read_current(client, ["purchase_count"], ["repeat"], [1, 3], 4, [nobody])
    assert {row["customer_id"] for row in members.dicts()} == {c for c in mine if int(c[1:]) % 2}
    assert CurrentRows.from_json(current.to_json()) == current
    with pytest.raises(ValueError, match="not columns of customer_features"):
        read_current(client, ["purchase_count; DROP TABLE x"], [], [0], 4)
