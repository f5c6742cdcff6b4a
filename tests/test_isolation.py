"""No single event can fail its batch: one that meets a bug is dead-lettered with its position,
its customer is rebuilt without it, and every other event is applied exactly once.

The bug is injected (a processor raising for one event, while applying it or while computing
its customer's feature row); the outcome is compared with a run that never saw that event.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict

import streams.worker.pipeline as pipeline_module
from processors.features import CustomerState, event_key
from schemas.envelope import encode_envelope
from streams.settings import Settings
from streams.worker.message import Message
from streams.worker.pipeline import CustomerPipeline
from streams.worker.statestore import DiskTable
from tests.conftest import ROOT, assert_exact_purchases, publish, purchases
from tests.memory_sink import MemorySink
from tests.test_fuzz import event_derived

DAY = 86_400.0
START = 1_700_000_000.0
#: The injected bug: applying these events raises; or a feature row of a customer who has one does.
POISON = {"poison-1", "poison-2"}


def purchase(event_id: str, customer: str, day: float, amount: float = 10.0, channel: str = "web") -> dict[str, Any]:
    return {
        "type": "purchase",
        "event_id": event_id,
        "customer_id": customer,
        "ts": START + day * DAY,
        "channel": channel,
        "order_id": event_id,
        "amount": amount,
        "currency": "EUR",
    }


def batches(with_poison: bool) -> list[list[Message]]:
    """Three batches of envelopes on partition 0 (one partition); the poisoned events, for
    customer "ann", sit between valid events of theirs and of others, in batches 2 and 3."""
    plan = [
        [[purchase("a1", "ann", 0), purchase("b1", "bob", 0)], [purchase("a2", "ann", 3, 25.0)]],
        [
            [
                purchase("c1", "cid", 4),
                purchase("a3", "ann", 5),
                purchase("poison-1", "ann", 6, 999.0),
                purchase("b2", "bob", 6),
                purchase("a4", "ann", 7, 5.0),
            ],
            [purchase("c2", "cid", 8)],
        ],
        [[purchase("poison-2", "ann", 9, 7.0), purchase("a5", "ann", 10)], [purchase("a6", "ann", 2)]],  # a6: late
    ]
    offset, out = 0, []
    for batch in plan:
        messages = []
        for events in batch:
            kept = [e for e in events if with_poison or e["event_id"] not in POISON]
            messages.append(Message("purchases", 0, offset, encode_envelope(kept)))
            offset += 1
        out.append(messages)
    return out


def run(tmp_path: Path, store: str, checkpoint: bool, with_poison: bool) -> tuple[CustomerPipeline, MemorySink]:
    settings = Settings()
    sink = MemorySink()
    table: Any = {}
    if store == "disk":
        database = Rdict(str(tmp_path / f"customers-{with_poison}"), Options(raw_mode=True))
        table = DiskTable(lambda p: database, lambda: {0}, lambda key: 0, cache_size=1, kind=CustomerState)
    pipeline = CustomerPipeline(
        settings.feature_config(),
        sink,  # type: ignore[arg-type]  # a MemorySink stands in for ClickHouse, as in the other tests
        table,
        1,
        settings.models_config(),
        clock=lambda: START + 30 * DAY,
    )
    for number, batch in enumerate(batches(with_poison)):
        pipeline.ingest(batch)
        if checkpoint and number == 0:
            if isinstance(table, DiskTable):
                table.persist(table.take_changes(lambda key: 0), {0: number})
            pipeline.checkpointed()
    return pipeline, sink


def last_rows(sink: MemorySink) -> dict[str, dict[str, Any]]:
    return {row["customer_id"]: row for row in sink.features}


def states(pipeline: CustomerPipeline) -> dict[str, dict[str, Any]]:
    table = pipeline.table
    return {key.decode(): event_derived(table[key]) for key in ([b"ann", b"bob", b"cid"])}


@pytest.mark.parametrize("store", ["memory", "disk"])
@pytest.mark.parametrize("checkpoint", [False, True], ids=["no-checkpoint", "checkpoint"])
@pytest.mark.parametrize("phase", ["applying", "scoring"])
def test_an_event_meeting_a_bug_is_left_out_and_its_neighbours_count_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str, checkpoint: bool, phase: str
) -> None:
    expected_pipeline, expected_sink = run(tmp_path, store, checkpoint, with_poison=False)
    if phase == "applying":
        count_event = pipeline_module.count_event

        def failing_count(state: CustomerState, event: Any, config: Any, ts: float) -> Any:
            if event.event_id in POISON:
                raise ZeroDivisionError("injected")
            return count_event(state, event, config, ts)

        monkeypatch.setattr(pipeline_module, "count_event", failing_count)
    else:
        profile = pipeline_module.profile

        def failing_profile(state: CustomerState, *args: Any) -> Any:
            if any(event_key("purchase", poison) in state.applied_ids for poison in POISON):
                raise ZeroDivisionError("injected")
            return profile(state, *args)

        monkeypatch.setattr(pipeline_module, "profile", failing_profile)
    pipeline, sink = run(tmp_path, store, checkpoint, with_poison=True)

    assert states(pipeline) == states(expected_pipeline)
    assert last_rows(sink) == last_rows(expected_sink)
    assert sorted(e.event_id for e in sink.events) == sorted(e.event_id for e in expected_sink.events)
    assert pipeline.counters.events_applied == expected_pipeline.counters.events_applied == 10
    dead = [(d.topic, d.partition, d.offset, json.loads(d.payload)["event_id"], d.reason) for d in sink.dead]
    assert [d[:4] for d in dead] == [("purchases", 0, 2, "poison-1"), ("purchases", 0, 4, "poison-2")]
    assert [d[4] for d in dead] == [
        f"processing failed on valid event {n} of the message: ZeroDivisionError: injected (a bug: please report it)"
        for n in (3, 1)
    ]


def test_a_customer_whose_row_always_fails_keeps_their_state_and_stops_no_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = pipeline_module.profile

    def failing_profile(state: CustomerState, *args: Any) -> Any:
        if state.customer_id == "bob":
            raise ZeroDivisionError("injected")
        return profile(state, *args)

    monkeypatch.setattr(pipeline_module, "profile", failing_profile)
    pipeline, sink = run(tmp_path, "memory", checkpoint=True, with_poison=False)
    pipeline.age({0}, min_advance_s=0)

    assert sorted(last_rows(sink)) == ["ann", "cid"]
    assert pipeline.table[b"bob"].purchase_count == 2
    assert pipeline.counters.rows_failed == 3  # two batches with bob's events, one aging pass
    assert pipeline.counters.events_applied == 10 and not sink.dead


def test_events_meeting_a_bug_in_a_running_worker_are_dead_lettered_and_the_rest_count_once(
    start_worker: Any, broker: str
) -> None:
    """Through the real broker, worker and chDB: two events meet an (injected) bug; before, the
    batch failed, faust restarted the processing, and the batch's other events took effect only
    after a restart."""
    failing = {"e3", "e10"}
    worker = start_worker(PYTHONPATH=f"{ROOT / 'tests' / 'faults'}:{ROOT}", FAULT_FAILING_EVENTS=",".join(failing))
    events, _ = purchases(40, 4)
    expected: dict[str, list[float]] = {}
    for event in events:
        if event["event_id"] not in failing:
            counted = expected.setdefault(event["customer_id"], [0, 0.0])
            counted[0] += 1
            counted[1] += event["amount"]
    publish(broker, events)
    assert_exact_purchases(worker, expected)
    worker.wait_for("SELECT count() AS n FROM dead_letters", 2)
    letters = worker.sql("SELECT topic, reason, payload FROM dead_letters ORDER BY payload")
    assert [json.loads(letter["payload"])["event_id"] for letter in letters] == ["e10", "e3"]
    assert all(
        letter["topic"] == "purchases"
        and letter["reason"].startswith("processing failed on valid event ")
        and "ZeroDivisionError: injected by tests/faults" in letter["reason"]
        for letter in letters
    ), letters
    assert worker.get("/health")[0] == 200
