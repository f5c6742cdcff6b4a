"""One truth per event id, through the real broker, real workers and chDB: an event id sent again
with other content is dead-lettered and the first content stands in the features, the raw
tables and the views alike; the same event again is no conflict."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from schemas.topics import PURCHASES, partition_for
from streams.local.until import until

DAY = 86_400.0
START = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
CONFLICT = "conflict: purchase event_id '{}' of customer 'ann' was applied before with other content; the first stands"


def purchase(event_id: str, ts: float, amount: float) -> dict[str, Any]:
    return {
        "type": "purchase",
        "event_id": event_id,
        "customer_id": "ann",
        "ts": ts,
        "channel": "pos",
        "order_id": event_id,
        "amount": amount,
        "currency": "EUR",
    }


def send(worker: Any, broker: str, path: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Over HTTP as one body (returns the answer), or over Kafka one message each, as a plain
    producer would."""
    if path == "http":
        status, answer = worker.request("POST", "/events", json.dumps(events).encode())
        assert status == 200, answer
        return answer
    producer = KafkaProducer(bootstrap_servers=broker)
    for event in events:
        producer.send(PURCHASES, key=b"ann", value=json.dumps(event).encode(), partition=partition_for("ann", 4))
    producer.flush()
    producer.close()
    return {}


def truth(worker: Any) -> dict[str, Any]:
    """What each place says of ann's purchases."""
    return {
        "features": worker.sql(
            "SELECT purchase_count, monetary_total FROM customer_features FINAL WHERE customer_id = 'ann'"
        ),
        "live": worker.get("/customers/ann")[1].get("customer", {}).get("monetary_total"),
        "purchases": worker.sql(
            "SELECT event_id, amount, toUnixTimestamp(ts) AS ts FROM purchases FINAL "
            "WHERE customer_id = 'ann' ORDER BY event_id"
        ),
        "revenue": worker.sql("SELECT toString(day) AS day, gross_revenue, orders FROM v_revenue_daily"),
        "dead_letters": sorted(
            r["reason"].removeprefix("body[1]: ")[: len(CONFLICT.format("o-1"))]
            for r in worker.sql("SELECT reason FROM dead_letters")
        ),
    }


def assert_eventually(worker: Any, expected: dict[str, Any], timeout: float = 30.0) -> None:
    with contextlib.suppress(TimeoutError):  # the comparison below says what differs
        until(lambda: truth(worker) == expected, "the expected truth", timeout, every=0.3)
    assert truth(worker) == expected


@pytest.mark.parametrize("path", ["kafka", "http"])
def test_an_event_id_sent_again_with_other_content_keeps_the_first_everywhere(
    start_worker: Any, broker: str, path: str
) -> None:
    """Amount 10, then the same id with 99: the features kept 10, `purchases FINAL` and
    `v_revenue_daily` showed 99. Over HTTP the answer tells the conflict (one process: it holds
    the customer; one that does not lets processing find it)."""
    worker = start_worker(CRM360_WORKER_PROCESSES="1")
    first = purchase("o-1", START, 10.0)
    send(worker, broker, path, [first])
    worker.wait_for("SELECT purchase_count FROM customer_features FINAL WHERE customer_id = 'ann'", 1)
    same = first | {"ts": "2024-01-01T01:00:00+01:00"}  # the same event (another notation of its time): no conflict
    answer = send(worker, broker, path, [same, first | {"amount": 99.0}])
    if path == "http":
        assert (answer["accepted"], answer["rejected"]) == (1, 1), answer
        assert answer["errors"][0].startswith("body[1]: " + CONFLICT.format("o-1")), answer
    assert_eventually(
        worker,
        {
            "features": [{"purchase_count": 1, "monetary_total": 10.0}],
            "live": 10.0,
            "purchases": [{"event_id": "o-1", "amount": 10.0, "ts": START}],
            "revenue": [{"day": "2024-01-01", "gross_revenue": 10.0, "orders": 1}],
            "dead_letters": [CONFLICT.format("o-1")],
        },
    )
    (letter,) = worker.sql("SELECT source, topic, offset, payload FROM dead_letters")
    assert '"amount":99.0' in letter["payload"], letter
    if path == "kafka":
        assert (letter["source"], letter["topic"], letter["offset"]) == ("kafka", PURCHASES, 2), letter  # its message
    else:
        assert (letter["source"], letter["topic"], letter["offset"]) == ("http", "http:/events", -1), letter
    worker.wait_for_metric("crm360_duplicates_skipped_total", 1)  # the same event: read, and skipped
    assert worker.metric("crm360_events_applied_total") == 1
    assert worker.get("/health")[0] == 200


def test_the_first_content_stands_across_a_restart_after_a_lost_write(start_worker: Any, broker: str) -> None:
    """A worker applies o-2 and dead-letters o-1 with other content, then stops with its write
    lost (ClickHouse refuses it, so no state is sent and no offset committed): the next start
    applies o-2 again and writes its raw row, and judges o-1 again; then both ids come again
    over HTTP."""
    worker = start_worker(CRM360_WORKER_PROCESSES="1", CRM360_COMMIT_INTERVAL_S="0.5")
    send(worker, broker, "kafka", [purchase("o-1", START, 10.0)])
    worker.wait_for("SELECT count() FROM purchases", 1)
    time.sleep(1.5)  # committed
    staging = Path(worker.env["CRM360_DATA_DIR"]) / "staging" / "main"
    staging.rename(staging.with_name("main.away"))
    staging.write_text("not a directory: every staged insert fails")
    try:
        send(worker, broker, "kafka", [purchase("o-2", START + DAY, 20.0), purchase("o-1", START + 40 * DAY, 99.0)])
        until(
            lambda: worker.metric("crm360_events_in_total") + worker.metric("crm360_dead_letters_total") >= 3,
            "the worker reading the events",
        )
        until(lambda: "ClickHouse writes failing" in str(worker.get("/health")[1]), "/health reporting the failure")
        time.sleep(2)  # a commit waits on the write (no state goes out ahead of its rows)
        worker.stop(signal.SIGTERM, grace_s=60)  # gives the write up: its rows are nowhere, its offsets uncommitted
    finally:
        staging.unlink()
        staging.with_name("main.away").rename(staging)
    restarted = start_worker(CRM360_WORKER_PROCESSES="1")
    restarted.wait_for("SELECT count() FROM dead_letters", 1)
    answer = send(restarted, broker, "http", [purchase("o-1", START, 10.0), purchase("o-2", START + DAY, 77.0)])
    assert (answer["accepted"], answer["rejected"]) == (1, 1), answer
    assert_eventually(
        restarted,
        {
            "features": [{"purchase_count": 2, "monetary_total": 30.0}],
            "live": 30.0,
            "purchases": [
                {"event_id": "o-1", "amount": 10.0, "ts": START},
                {"event_id": "o-2", "amount": 20.0, "ts": START + DAY},
            ],
            "revenue": [
                {"day": "2024-01-01", "gross_revenue": 10.0, "orders": 1},
                {"day": "2024-01-02", "gross_revenue": 20.0, "orders": 1},
            ],
            "dead_letters": [CONFLICT.format("o-1"), CONFLICT.format("o-2")],
        },
    )
    # o-2 read again was applied (its state had not been sent: its rows were unwritten); over
    # HTTP o-2 with other content is a conflict and o-1 with its first content a duplicate.
    restarted.wait_for_metric("crm360_duplicates_skipped_total", 1)
    assert restarted.metric("crm360_events_applied_total") == 1 and restarted.get("/health")[0] == 200
