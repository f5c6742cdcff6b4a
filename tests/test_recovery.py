"""Exactly-once effects with at-least-once Kafka: replays and a SIGKILLed worker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from schemas.topics import partition_for
from streams.local.until import until
from streams.sdk.publisher import EventPublisher
from tests.conftest import CDNOW, CDNOW_DEVELOPMENT, ROOT, assert_exact_purchases, free_port, publish, purchases


def cdnow_truth() -> dict[str, dict[str, Any]]:
    """Per customer, straight from the file: count, sum, first and last purchase day."""
    truth: dict[str, dict[str, Any]] = {}
    with CDNOW.open() as handle:
        next(handle)
        for line in handle:
            customer, day, _, dollars = line.split()
            ts = datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC).timestamp()
            row = truth.setdefault(customer, {"n": 0, "total": 0.0, "first": ts, "last": ts})
            row["n"] += 1
            row["total"] += float(dollars)
            row["first"], row["last"] = min(row["first"], ts), max(row["last"], ts)
    return truth


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def test_cdnow_replayed_twice_gives_exact_customers(start_worker: Any) -> None:
    truth = cdnow_truth()
    lines = sum(row["n"] for row in truth.values())  # 35,304 in the development half
    worker = start_worker()
    command = [
        sys.executable,
        "-m",
        "streams.cli",
        "replay",
        str(CDNOW),
        "--format",
        "cdnow",
        "--wait",
        "--timeout",
        "300",
    ]
    for _ in range(2):
        done = subprocess.run(
            command, env=worker.env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"in ClickHouse: {lines}/{lines} events" in done.stdout
    with contextlib.suppress(TimeoutError):  # the assertion below says how many
        until(lambda: worker.metric("crm360_duplicates_skipped_total") >= lines, "the second replay skipped")
    assert worker.metric("crm360_duplicates_skipped_total") == lines  # the whole second replay, at any lateness
    assert worker.metric("crm360_events_applied_total") == lines
    assert worker.metric("crm360_late_events_total") == 0  # each customer's purchases are in order in the file
    rows = worker.sql(
        "SELECT customer_id, purchase_count, monetary_total, first_purchase_at, last_purchase_at "
        "FROM customer_features FINAL"
    )
    assert len(rows) == len(truth) == (11_785 if CDNOW == CDNOW_DEVELOPMENT else 2_357)
    for row in rows:
        want = truth[row["customer_id"]]
        assert row["purchase_count"] == want["n"]
        assert row["monetary_total"] == pytest.approx(want["total"], abs=0.005)
        assert _epoch(row["first_purchase_at"]) == want["first"]
        assert _epoch(row["last_purchase_at"]) == want["last"]
    assert worker.sql("SELECT count() AS n FROM purchases FINAL")[0]["n"] == lines


def test_a_purchase_two_weeks_late_counts_once_also_when_published_again(start_worker: Any, broker: str) -> None:
    """A till that was offline uploads a purchase two weeks late: counted once, like the raw row."""
    worker = start_worker()
    start = datetime(2024, 3, 1, tzinfo=UTC).timestamp()

    def bought(n: int, day: int, amount: float) -> dict[str, Any]:
        return {
            "type": "purchase",
            "event_id": f"till-7:{n}",
            "customer_id": "c-late",
            "ts": start + day * 86_400,
            "channel": "pos",
            "order_id": f"o{n}",
            "amount": amount,
            "currency": "EUR",
        }

    features = (
        "SELECT purchase_count, monetary_total, first_purchase_at, purchases_30d, revenue_30d "
        "FROM customer_features FINAL WHERE customer_id = 'c-late'"
    )
    publish(broker, [bought(1, 0, 10.0), bought(2, 10, 20.0), bought(3, 20, 30.0)])
    worker.wait_for(features, 3)
    late = bought(4, 6, 45.5)  # two weeks older than the newest purchase
    for delivery in (1, 2):
        publish(broker, [late])
        worker.wait_for_metric("crm360_duplicates_skipped_total", delivery - 1)
        worker.wait_for_metric("crm360_late_events_total", 1)
        status, live = worker.get("/customers/c-late")  # processed: the live profile is the state itself
        assert status == 200 and live["customer"]["purchase_count"] == 4
        worker.wait_for(features, 4, timeout=30)
        raw = worker.sql("SELECT count() AS n, sum(amount) AS total FROM purchases FINAL WHERE customer_id = 'c-late'")
        assert raw == [{"n": 4, "total": 105.5}]
        row = worker.sql(features)[0]
        assert row["monetary_total"] == 105.5 and _epoch(row["first_purchase_at"]) == start
        assert row["purchases_30d"] == 4 and row["revenue_30d"] == 105.5  # day 6 is inside the window at day 20
    assert worker.metric("crm360_events_applied_total") == 4


def _stops_answering(url: str, within_s: float) -> bool:
    def gone() -> bool:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).close()
        except urllib.error.HTTPError:
            return False  # answering, if not healthy
        except OSError:
            return True
        return False

    try:
        return until(gone, f"{url} gone", within_s)
    except TimeoutError:
        return False


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_worker_stopped_mid_stream_restarts_with_exact_state(
    start_worker: Any, broker: str, stop_signal: int, store: str
) -> None:
    """Killed, it loses nothing; stopped, its helper also writes its last rows and exits cleanly;
    with the customer states on disk (the default) or in memory."""
    worker = start_worker(CRM360_WORKER_PROCESSES="2", CRM360_STATE_STORE=store)
    helper = worker.get("/health")[1]["processes"][1]
    customers, rounds, per_round = 500, 40, 1_000
    expected: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])

    def produce() -> None:
        with EventPublisher(broker, partitions=4, envelope_size=100) as publisher:
            n = 0
            for r in range(rounds):
                for _ in range(per_round):
                    cid = f"k{n % customers}"
                    amount = float(n % 97)
                    publisher.publish(
                        {
                            "type": "purchase",
                            "event_id": f"e{n}",
                            "customer_id": cid,
                            "ts": 1_700_000_000 + n,
                            "channel": "web",
                            "order_id": f"o{n}",
                            "amount": amount,
                            "currency": "EUR",
                        }
                    )
                    expected[cid][0] += 1
                    expected[cid][1] += amount
                    n += 1
                publisher.flush()
                time.sleep(0.1)

    producer = threading.Thread(target=produce)
    producer.start()
    until(lambda: worker.metric("crm360_events_applied_total") >= 8_000, "8,000 events applied", every=0.05)
    applied_before_stop = worker.metric("crm360_events_applied_total")
    main_process = worker.process
    worker.stop(stop_signal)
    assert _stops_answering(helper, within_s=10), "the helper process outlived its main process"
    producer.join()
    assert 0 < applied_before_stop < rounds * per_round
    if stop_signal == signal.SIGTERM:
        log = worker.log_path.read_text()
        assert main_process.returncode == 0, log[-3000:]
        assert "did not stop within" not in log and "ClickHouse write failed" not in log, log[-3000:]
    restarted = start_worker(CRM360_STATE_STORE=store)
    restarted.wait_for("SELECT count() FROM purchases FINAL", rounds * per_round, timeout=120)

    def features() -> dict[str, Any]:
        query = "SELECT customer_id, purchase_count, monetary_total FROM customer_features FINAL"
        return {r["customer_id"]: r for r in restarted.sql(query)}

    with contextlib.suppress(TimeoutError):  # the assertions below say what differs
        until(
            lambda: sum(r["purchase_count"] for r in features().values()) == rounds * per_round,
            "every purchase counted",
            every=0.5,
        )
    rows = features()
    assert len(rows) == customers
    for cid, (count, total) in expected.items():
        assert rows[cid]["purchase_count"] == count, cid
        assert rows[cid]["monetary_total"] == pytest.approx(total)


def test_offsets_are_committed_only_after_their_rows_are_written(start_worker: Any, broker: str) -> None:
    """Rows wait up to CRM360_FLUSH_INTERVAL_S (here a minute) to share inserts, but an offset
    commit writes them first: ClickHouse never lags behind what the group has committed."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    worker = start_worker(CRM360_FLUSH_INTERVAL_S="60", CRM360_WORKER_PROCESSES="2")  # the helper's rows too
    events = 120
    producer = KafkaProducer(bootstrap_servers=broker)  # plain single-event messages
    for i in range(events):
        customer = f"c{i % 30}"
        value = json.dumps(
            {
                "type": "visit",
                "event_id": f"v{i}",
                "customer_id": customer,
                "ts": 1_700_000_000 + i,
                "channel": "web",
                "session_id": f"s{i}",
            }
        ).encode()
        producer.send("visits", key=customer.encode(), value=value)
    producer.flush()
    producer.close()
    worker.wait_for_metric("crm360_events_in_total", events)
    group = KafkaConsumer(bootstrap_servers=broker, group_id=worker.env["CRM360_APP_ID"], enable_auto_commit=False)
    partitions = [TopicPartition("visits", p) for p in range(4)]  # only reads the group's offsets
    with contextlib.suppress(TimeoutError):  # the assertion below says it
        until(lambda: sum(group.committed(tp) or 0 for tp in partitions) >= events, "offsets committed")
    committed = sum(group.committed(tp) or 0 for tp in partitions)
    group.close()
    assert committed == events, "the worker did not commit its offsets"
    assert worker.sql("SELECT count() AS n FROM visits")[0]["n"] == events
    assert worker.metric("crm360_flushes_total") >= 1


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def test_a_killed_helper_process_is_restarted_and_no_event_is_lost(start_worker: Any, broker: str) -> None:
    worker = start_worker(CRM360_WORKER_PROCESSES="2")
    assert worker.process is not None
    (helper,) = _children(worker.process.pid)
    customers, events = 200, 4_000
    expected: Counter[str] = Counter()
    with EventPublisher(broker, partitions=4, envelope_size=50) as publisher:
        for n in range(events):
            if n == events // 2:
                publisher.flush()
                worker.wait_for_metric("crm360_events_applied_total", n)
                os.kill(helper, signal.SIGKILL)  # its partitions move to the main process, then back
            customer = f"k{n % (customers // 2 if n < events // 2 else customers)}"  # half are new after the kill
            expected[customer] += 1
            publisher.publish(
                {
                    "type": "purchase",
                    "event_id": f"e{n}",
                    "customer_id": customer,
                    "ts": 1_700_000_000 + n,
                    "channel": "web",
                    "order_id": f"o{n}",
                    "amount": 1.0,
                    "currency": "EUR",
                }
            )
    with contextlib.suppress(TimeoutError):  # the assertions below say what is wrong
        until(
            lambda: worker.get("/health")[0] == 200 and _children(worker.process.pid) != [helper],
            "the helper replaced",
            every=0.5,
        )
    (restarted,) = _children(worker.process.pid)
    assert restarted != helper and worker.get("/health")[0] == 200
    worker.wait_for("SELECT sum(purchase_count) AS n FROM customer_features FINAL", events, timeout=90)
    rows = {
        r["customer_id"]: r["purchase_count"]
        for r in worker.sql("SELECT customer_id, purchase_count FROM customer_features FINAL")
    }
    assert rows == dict(expected)  # none lost, none counted twice
    # The main process gave the partitions back: it keeps no stale copy of their customers,
    # and each customer's live profile comes from its owner.
    assert worker.metric("crm360_customers") == customers
    for customer, count in expected.items():
        status, live = worker.get(f"/customers/{customer}")
        assert status == 200 and live["source"] == "live" and live["customer"]["purchase_count"] == count, customer


def test_a_worker_that_gives_partitions_away_keeps_no_copy_of_their_customers(
    start_worker: Any, broker: str, tmp_path: Path
) -> None:
    first = start_worker(CRM360_WORKER_PROCESSES="1")
    customers = [f"c{n}" for n in range(200)]
    with EventPublisher(broker, partitions=4, envelope_size=50) as publisher:
        for n, customer in enumerate(customers):
            publisher.publish(
                {
                    "type": "visit",
                    "event_id": f"v{n}",
                    "customer_id": customer,
                    "ts": 1_700_000_000 + n,
                    "channel": "web",
                    "session_id": f"s{n}",
                }
            )
    first.wait_for_metric("crm360_customers", len(customers))
    # A second worker joins the group (its own ClickHouse: only the first one's figures matter).
    start_worker(
        CRM360_WORKER_PROCESSES="1", CRM360_DATA_DIR=str(tmp_path / "second"), CRM360_WEB_PORT=str(free_port())
    )

    def kept_partitions() -> set[int]:
        _, text = first.get("/metrics")
        return {
            int(line.split('partition="')[1].split('"')[0])
            for line in text.splitlines()
            if line.startswith('crm360_consumer_lag{topic="purchases"')
        }

    with contextlib.suppress(TimeoutError):  # the second is up; the first may still be taking its share
        until(lambda: 0 < len(kept_partitions()) < 4, "the partitions shared", timeout=30)
    kept = kept_partitions()
    assert 0 < len(kept) < 4, kept
    first.wait_for_metric("crm360_customers", sum(partition_for(c.encode(), 4) in kept for c in customers))


def test_a_worker_whose_writes_keep_failing_stops_in_seconds_and_loses_nothing(start_worker: Any, broker: str) -> None:
    """ClickHouse refuses every write (its staging directory made unusable): a SIGTERM gives the
    write up instead of retrying it for ever, commits no offset past it, and the next start
    writes every row."""
    worker = start_worker(CRM360_WORKER_PROCESSES="1")
    events, expected = purchases(2_000, 100)
    publish(broker, events[:1_000])
    worker.wait_for("SELECT count() FROM purchases", 1_000)
    staging = Path(worker.env["CRM360_DATA_DIR"]) / "staging" / "main"
    staging.rename(staging.with_name("main.away"))
    staging.write_text("not a directory: every staged insert fails")
    try:
        publish(broker, events[1_000:])
        until(lambda: "ClickHouse writes failing" in str(worker.get("/health")[1]), "/health reporting the failure")
        process = worker.process
        started = time.monotonic()
        worker.stop(signal.SIGTERM, grace_s=60)
        took = time.monotonic() - started
        assert process is not None and process.returncode != -signal.SIGKILL
        assert took < 15, f"the stop took {took:.1f} s"
    finally:
        staging.unlink()
        staging.with_name("main.away").rename(staging)
    assert_exact_purchases(start_worker(CRM360_WORKER_PROCESSES="1"), expected)
