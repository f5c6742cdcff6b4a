"""Bad input is dead-lettered with its reason, through the real broker, a real worker and chDB:
input outside the documented domains, payloads of any size; nothing else changes and the
worker stays healthy."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka import KafkaProducer

from schemas.topics import PURCHASES, partition_for
from tests.conftest import publish, purchases

DAY = 86_400.0
START = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
PARTITIONS = 4


def purchase(event_id: str, customer: str, ts: Any, amount: float = 20.0) -> dict[str, Any]:
    return {
        "type": "purchase",
        "event_id": event_id,
        "customer_id": customer,
        "ts": ts,
        "channel": "pos",
        "order_id": event_id,
        "amount": amount,
        "currency": "EUR",
    }


def test_out_of_domain_times_and_amounts_are_dead_lettered_and_change_nothing(start_worker: Any, broker: str) -> None:
    worker = start_worker()
    normal = [purchase(f"{c}-{n}", c, START + n * 10 * DAY) for c in ("ann", "ben", "cat", "dan") for n in range(3)]
    outliers = [
        purchase("far", "zed", "9999-01-01T00:00:00Z"),  # stopped every write of its process (version overflow)
        purchase("2200", "ann", "2200-01-01T00:00:00Z"),  # dragged its partition's watermark: everyone churned
        purchase("2100", "ann", "2100-01-01T00:00:00Z"),  # within what is stored, but ahead of the wall clock
        purchase("old", "ben", "1969-12-31T00:00:00Z"),  # before 1970: a negative version
        purchase("millis", "cat", (START + 25 * DAY) * 1000),  # read as milliseconds, silently
        purchase("huge-1", "dan", START + 25 * DAY, 1e308),  # two of them: an infinite total
        purchase("huge-2", "dan", START + 26 * DAY, 1e308),
        purchase("big", "dan", START + 27 * DAY, 2e9),
    ]
    status, answer = worker.request("POST", "/events", json.dumps(normal + outliers).encode())
    assert status == 200 and answer["accepted"] == len(normal) and answer["rejected"] == len(outliers), answer
    producer = KafkaProducer(bootstrap_servers=broker)  # the same through Kafka
    for event in (purchase("far-kafka", "zed", "9999-01-01T00:00:00Z"), purchase("soon", "zed", time.time() + 2 * DAY)):
        producer.send(
            PURCHASES, key=b"zed", value=json.dumps(event).encode(), partition=partition_for("zed", PARTITIONS)
        )
    producer.flush()
    worker.wait_for("SELECT count() FROM dead_letters", len(outliers) + 2)
    reasons = " | ".join(r["reason"] for r in worker.sql("SELECT reason FROM dead_letters"))
    assert reasons.count("ahead of the wall clock") == 2 and reasons.count("less than 2200-01-01") == 3, reasons
    assert "greater than or equal to 1970-01-01" in reasons and "dates after 9999" in reasons
    assert reasons.count("amount: Input should be less than or equal to") == 3
    worker.wait_for("SELECT count() FROM customer_features FINAL", 4)
    # Writes go on: a later event lands, and every partition's event time is the data's.
    status, answer = worker.request("POST", "/events", json.dumps(purchase("late", "ann", START + 30 * DAY)).encode())
    assert status == 200 and answer["accepted"] == 1
    worker.wait_for("SELECT purchase_count FROM customer_features FINAL WHERE customer_id = 'ann'", 4)
    rows = worker.sql(
        "SELECT customer_id, monetary_total, lifecycle_stage, toUnixTimestamp(as_of) AS as_of, version "
        "FROM customer_features FINAL ORDER BY customer_id"
    )
    newest: dict[int, float] = {}
    for event in normal + [purchase("late", "ann", START + 30 * DAY)]:
        home = partition_for(event["customer_id"], PARTITIONS)
        newest[home] = max(newest.get(home, 0.0), event["ts"])
    for row in rows:
        assert row["as_of"] <= newest[partition_for(row["customer_id"], PARTITIONS)], row
        assert row["lifecycle_stage"] != "churned" and 0 < int(row["version"]) < 1 << 64, row
    assert {r["customer_id"]: r["monetary_total"] for r in rows} == {"ann": 80.0, "ben": 60.0, "cat": 60.0, "dan": 60.0}
    for p, ts in newest.items():
        assert worker.metric(f'crm360_watermark_seconds{{partition="{p}"}}') == ts
    assert worker.get("/health")[0] == 200
    assert worker.sql("SELECT count() AS n FROM purchases")[0]["n"] == len(normal) + 1


def visit(event_id: str, customer: str, ts: float) -> dict[str, Any]:
    return {
        "type": "visit",
        "event_id": event_id,
        "customer_id": customer,
        "ts": ts,
        "channel": "web",
        "session_id": "s",
    }


def test_dead_letters_of_big_payloads_are_kept_clipped(start_worker: Any, broker: str) -> None:
    worker = start_worker()
    mega = "x" * (1 << 20)
    social = {
        "type": "social_interaction",
        "event_id": "s1",
        "customer_id": "ann",
        "ts": START,
        "channel": "social",
        "platform": "instagram",
        "action": "comment",
        "text": mega,
    }
    body = [visit(mega, "ann", START), visit("v1", mega, START), social, visit("v2", "ann", START)]
    status, answer = worker.request("POST", "/events", json.dumps(body).encode())  # was a 500
    assert status == 200 and answer["accepted"] == 1 and answer["rejected"] == 3, answer
    # 5 MB through Kafka between valid events of its partition: processing crashed and restarted.
    producer = KafkaProducer(bootstrap_servers=broker, max_request_size=8 << 20)
    home = partition_for("ann", PARTITIONS)
    for value in (
        visit("v3", "ann", START + 1),
        visit("x" * (5 << 20), "ann", START + 2),
        visit("v4", "ann", START + 3),
    ):
        producer.send("visits", key=b"ann", value=json.dumps(value).encode(), partition=home)
    producer.flush()
    worker.wait_for("SELECT count() FROM dead_letters", 4)
    worker.wait_for("SELECT visit_count FROM customer_features FINAL WHERE customer_id = 'ann'", 3)
    rows = worker.sql(
        "SELECT source, length(payload) AS size, payload LIKE '%...[truncated: % characters in all]' "
        "AS marked, reason FROM dead_letters ORDER BY source, size"
    )
    assert [(r["source"], r["marked"]) for r in rows] == [("http", 1)] * 3 + [("kafka", 1)], rows
    assert all(65_536 < r["size"] < 65_536 + 100 for r in rows), rows
    assert "event_id" in rows[-1]["reason"] and worker.metric("crm360_dead_letters_total") == 4
    assert worker.get("/health")[0] == 200


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_a_deeply_nested_record_is_isolated_and_its_neighbours_apply_once(start_worker: Any, broker: str) -> None:
    worker = start_worker()
    producer = KafkaProducer(bootstrap_servers=broker)
    home = partition_for("ann", PARTITIONS)
    values = [json.dumps(visit(f"v{n}", "ann", START + n)).encode() for n in range(3)]
    values += [nested(100_000).encode()]  # crashed processing (RecursionError): no dead letter, neighbours lost
    values += [json.dumps(visit(f"v{n}", "ann", START + n)).encode() for n in range(3, 6)]
    for value in values:
        producer.send("visits", key=b"ann", value=value, partition=home)
    producer.flush()
    worker.wait_for("SELECT visit_count FROM customer_features FINAL WHERE customer_id = 'ann'", 6)
    worker.wait_for("SELECT count() FROM dead_letters", 1)  # written after the features, table after table
    rows = worker.sql("SELECT source, offset, reason, length(payload) AS size FROM dead_letters")
    assert [(r["source"], r["offset"]) for r in rows] == [("kafka", 3)] and "invalid JSON" in rows[0]["reason"], rows
    assert worker.metric("crm360_events_applied_total") == 6 and worker.get("/health")[0] == 200
    # Over HTTP (was a 500): too deep to parse is a malformed body; deep in a field, a dead letter.
    for body in (nested(100_000), json.dumps(visit("h0", "ann", START)) + "\n" + nested(100_000)):
        status, answer = worker.request("POST", "/events", body.encode())
        assert status == 400 and "malformed body" in answer["error"], answer
    deep_items = json.dumps(purchase("h1", "ann", START)).replace('"currency"', f'"items": {nested(900)}, "currency"')
    deep_field = json.dumps(visit("h2", "ann", START)).replace('"session_id"', f'"page": {nested(900)}, "session_id"')
    good = json.dumps(visit("h3", "ann", START + 10))
    status, answer = worker.request("POST", "/events", f'{{"events": [{deep_items}, {good}, {deep_field}]}}'.encode())
    assert status == 200 and answer["accepted"] == 1 and answer["rejected"] == 2, answer
    assert answer["errors"][0].startswith("body[0]: invalid event: purchase.items") and answer["errors"][1].startswith(
        "body[2]: invalid event: visit.page"
    ), answer
    worker.wait_for("SELECT visit_count FROM customer_features FINAL WHERE customer_id = 'ann'", 7)
    worker.wait_for("SELECT count() FROM dead_letters", 3)
    payloads = [r["payload"] for r in worker.sql("SELECT payload FROM dead_letters WHERE source = 'http'")]
    assert all('"..."' in p and len(p) < 5_000 for p in payloads), payloads
    assert worker.get("/health")[0] == 200


def test_rows_clickhouse_refuses_are_dead_lettered_and_the_rest_written_once(
    start_worker: Any, broker: str, worker_env: dict[str, str]
) -> None:
    """A purchase the event bounds allow but its table refuses (an operator's constraint on
    ``purchases``): its raw row is dead-lettered with ClickHouse's reason, the rows written
    with it go in once each, and the worker stays healthy, in the main process and in a
    helper, whose rows the main one inserts (every write of the process failed for good)."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "from sinks.clickhouse import connect, migrate; import sys; client = connect(sys.argv[1]); migrate(client); "
                "client.command('ALTER TABLE crm360.purchases ADD CONSTRAINT amount_cap CHECK amount < 1000')"
            ),
            f"chdb://{worker_env['CRM360_DATA_DIR']}/clickhouse",
        ],
        check=True,
        env=worker_env,
        timeout=120,
    )
    worker = start_worker(CRM360_WORKER_PROCESSES="2")
    events, expected = purchases(400, 40)
    refused = [f"big-{p}" for p in range(PARTITIONS)]
    customers = {partition_for(f"k{n}", PARTITIONS): f"k{n}" for n in range(40)}
    events[100:100] = [
        purchase(event_id, customers[p], 1_700_000_000 + 6_000 + p, 5_000.0) for p, event_id in enumerate(refused)
    ]
    publish(broker, events)
    worker.wait_for("SELECT sum(purchase_count) FROM customer_features FINAL", len(events))  # features count them all
    worker.wait_for("SELECT count() FROM dead_letters", len(refused))
    letters = worker.sql("SELECT source, topic, partition, offset, reason, payload FROM dead_letters")
    assert sorted(json.loads(row["payload"])["event_id"] for row in letters) == refused
    for row in letters:
        assert (row["source"], row["topic"], row["partition"], row["offset"]) == (
            "clickhouse",
            "clickhouse:purchases",
            -1,
            -1,
        )
        assert row["reason"].startswith("ClickHouse refused this row of purchases: Code: 469.") and (
            "amount_cap" in row["reason"]
        ), row
    written = worker.sql("SELECT count() AS n, uniqExact(event_id) AS ids, sum(amount) AS total FROM purchases")
    assert written == [{"n": 400, "ids": 400, "total": pytest.approx(sum(t for _, t in expected.values()))}]
    assert worker.get("/health")[0] == 200 and worker.metric("crm360_dead_letters_total") == len(refused)
