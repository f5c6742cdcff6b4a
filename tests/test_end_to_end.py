"""Events of every type through the real broker, a real worker and chDB; exact features out."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

import pytest
from kafka import KafkaProducer

from schemas.topics import PURCHASES, VISITS, partition_for
from streams.sdk.publisher import EventPublisher
from streams.worker.web import MAX_BODY_BYTES

DAY = 86_400.0
START = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
PARTITIONS = 4


def make_events(seed: int = 7, customers: int = 40, per_customer: int = 25) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for c in range(customers):
        cid = f"cust-{c}"
        for n in range(per_customer):
            ts = START + rng.uniform(0, 200) * DAY
            base = {
                "event_id": f"{cid}-{n}",
                "customer_id": cid,
                "ts": ts,
                "channel": rng.choice(["web", "app", "pos"]),
            }
            kind = rng.random()
            if kind < 0.35:
                events.append(
                    base
                    | {
                        "type": "purchase",
                        "order_id": f"o-{cid}-{n}",
                        "amount": round(rng.uniform(5, 200), 2),
                        "currency": "EUR",
                        "kind": "refund" if rng.random() < 0.1 else "purchase",
                        "items": [
                            {
                                "sku": "s1",
                                "category": rng.choice(["books", "music", "games"]),
                                "quantity": rng.randint(1, 3),
                                "unit_price": 9.5,
                            }
                        ],
                    }
                )
            elif kind < 0.7:
                events.append(
                    base | {"type": "visit", "session_id": f"s{n}", "page": "/p", "duration_s": rng.uniform(1, 600)}
                )
            elif kind < 0.9:
                events.append(
                    base
                    | {
                        "type": "social_interaction",
                        "platform": "instagram",
                        "action": rng.choice(["like", "comment", "share", "follow"]),
                        "content_id": "post",
                    }
                )
            else:
                events.append(
                    base
                    | {
                        "type": "customer_profile",
                        "region": rng.choice(["north", "south"]),
                        "city": rng.choice(["Lyon", "Graz"]),
                    }
                )
    events.sort(key=lambda e: e["ts"])
    # Producers are not perfectly ordered: swap neighbours (well within the allowed lateness).
    for i in range(0, len(events) - 1, 7):
        events[i], events[i + 1] = events[i + 1], events[i]
    return events


def expected_features(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """An independent, direct recomputation of the features the worker must produce."""
    watermark: dict[int, float] = {}
    for e in events:
        p = partition_for(e["customer_id"], PARTITIONS)
        watermark[p] = max(watermark.get(p, 0.0), e["ts"])
    out: dict[str, dict[str, Any]] = {}
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_customer.setdefault(e["customer_id"], []).append(e)
    for cid, evs in by_customer.items():
        now = watermark[partition_for(cid, PARTITIONS)]
        buys = [e for e in evs if e["type"] == "purchase" and e["kind"] == "purchase"]
        refunds = [e for e in evs if e["type"] == "purchase" and e["kind"] == "refund"]
        visits = [e for e in evs if e["type"] == "visit"]
        social = [e for e in evs if e["type"] == "social_interaction"]
        profiles = sorted((e for e in evs if e["type"] == "customer_profile"), key=lambda e: e["ts"])
        first_day_30 = int(now // DAY) - 29
        first_day_90 = int(now // DAY) - 89
        in30 = lambda e, first=first_day_30: int(e["ts"] // DAY) >= first
        in90 = lambda e, first=first_day_90: int(e["ts"] // DAY) >= first
        categories: Counter[str] = Counter()
        for b in buys:
            for item in b["items"]:
                categories[item["category"]] += item["quantity"]
        channels = Counter(e["channel"] for e in evs)
        row: dict[str, Any] = {
            "purchase_count": len(buys),
            "monetary_total": round(sum(b["amount"] for b in buys), 2),
            "refund_count": len(refunds),
            "refund_total": round(sum(r["amount"] for r in refunds), 2),
            "visit_count": len(visits),
            "visits_30d": sum(1 for v in visits if in30(v)),
            "purchases_30d": sum(1 for b in buys if in30(b)),
            "purchases_90d": sum(1 for b in buys if in90(b)),
            "revenue_90d": round(
                sum(b["amount"] for b in buys if in90(b)) - sum(r["amount"] for r in refunds if in90(r)), 2
            ),
            "likes_30d": sum(1 for s in social if s["action"] == "like" and in30(s)),
            "shares_30d": sum(1 for s in social if s["action"] == "share" and in30(s)),
            "preferred_channel": min(channels, key=lambda ch: (-channels[ch], ch)),
            "as_of": now,
        }
        if buys:
            first, last = min(b["ts"] for b in buys), max(b["ts"] for b in buys)
            row |= {
                "first_purchase_at": first,
                "last_purchase_at": last,
                "recency_days": round((now - last) / DAY, 3),
                "top_category": min(categories, key=lambda c: (-categories[c], c)),
            }
        region = [p["region"] for p in profiles]
        row["region"] = region[-1] if region else None
        out[cid] = row
    return out


def process_figures(url: str) -> dict[str, float]:
    """The figures of one process of a worker."""
    with urllib.request.urlopen(f"{url}/internal/figures", timeout=10) as response:
        return json.loads(response.read())


@overload
def _epoch(value: str) -> float: ...
@overload
def _epoch(value: str | None) -> float | None: ...
def _epoch(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def _differences(rows: dict[str, Any], expected: dict[str, dict[str, Any]]) -> list[tuple[str, str, Any, Any]]:
    """(customer, column, actual, expected) of every column of ``rows`` that differs from ``expected``."""
    out: list[tuple[str, str, Any, Any]] = []
    for cid, want in expected.items():
        got = rows.get(cid)
        if got is None:
            out.append((cid, "row", None, want))
            continue
        for name, value in want.items():
            actual = _epoch(got[name]) if name.endswith("_at") or name == "as_of" else got[name]
            if isinstance(value, float):
                if actual is None or abs(actual - value) >= 1e-3:
                    out.append((cid, name, actual, value))
            elif actual != value:
                out.append((cid, name, actual, value))
    return out


def assert_exact_features(worker: Any, events: list[dict[str, Any]], settle_s: float = 15.0) -> dict[str, Any]:
    """Every customer's row in ``customer_features FINAL`` comes to equal :func:`expected_features`
    within ``settle_s``; returns the expected.

    The rows settle after the applied-events count: idle customers are aged to their
    partition's final watermark by the next aging pass, and the input topics are read
    independently, so one customer's profile update may be applied (and its row written)
    after its purchases of later event time."""
    expected = expected_features(events)
    worker.wait_for("SELECT count() FROM customer_features FINAL", len(expected))
    differences: list[tuple[str, str, Any, Any]] = []
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        differences = _differences(
            {r["customer_id"]: r for r in worker.sql("SELECT * FROM customer_features FINAL")}, expected
        )
        if not differences:
            break
        time.sleep(0.3)
    assert not differences, differences[:5]
    return expected


def test_every_event_type_gives_exact_features(start_worker: Any, broker: str) -> None:
    worker = start_worker(CRM360_WORKER_PROCESSES="2")  # the customers are shared by two processes
    events = make_events()
    half = len(events) // 2
    with EventPublisher(broker, partitions=PARTITIONS, envelope_size=50) as publisher:
        publisher.publish_many(events[:half])  # envelopes
        for event in events[half:]:
            publisher.publish_one(event)  # one event per message, as a plain Kafka client sends
    worker.wait_for_metric("crm360_events_applied_total", len(events))
    worker.wait_for("SELECT uniqExact(event_id) FROM purchases", sum(e["type"] == "purchase" for e in events))
    expected = assert_exact_features(worker, events)
    # Both processes did part of the work, and each customer's live profile is served by the
    # main process, from whichever process owns the customer.
    processes = worker.get("/health")[1]["processes"]
    applied = [process_figures(url)["crm360_events_applied_total"] for url in processes]
    assert len(applied) == 2 and min(applied) > 0 and sum(applied) == len(events)
    assert worker.metric("crm360_processes") == 2
    for cid, want in expected.items():
        status, live = worker.get(f"/customers/{cid}")
        assert status == 200 and live["source"] == "live", (cid, live)
        assert live["customer"]["purchase_count"] == want["purchase_count"], cid


def _helper_pid(worker: Any) -> int:
    """The pid of the worker's one helper process (a child started with the main's address)."""
    children = Path(f"/proc/{worker.process.pid}/task/{worker.process.pid}/children").read_text().split()
    (helper,) = [int(pid) for pid in children if b"CRM360_MAIN_URL=" in Path(f"/proc/{pid}/environ").read_bytes()]
    return helper


@pytest.mark.parametrize("first_pause_s", [0.8, 1.1, 1.4])
def test_a_process_paused_past_its_session_loses_no_event(start_worker: Any, broker: str, first_pause_s: float) -> None:
    """A helper stopped for longer than the session timeout (a pause, a starved CPU) is expelled
    from the consumer group and the main process takes its partitions over. When the helper
    runs again, the states it had not sent yet are older than those the main process sent
    meanwhile: sent then (at the revocation that follows), they were what the next recovery
    restored, without events whose offsets the main process had committed. Whether it happens
    depends on the timing: the old code lost events in 11 of 28 such runs."""
    worker = start_worker(CRM360_WORKER_PROCESSES="2", CRM360_LOG_LEVEL="info")
    helper = _helper_pid(worker)
    events = make_events()

    def pause_the_helper() -> None:
        time.sleep(first_pause_s)
        for _ in range(3):
            os.kill(helper, signal.SIGSTOP)
            time.sleep(3.5)  # the session timeout is 2 s
            os.kill(helper, signal.SIGCONT)
            time.sleep(1.5)

    pauses = threading.Thread(target=pause_the_helper)
    pauses.start()
    try:
        with EventPublisher(broker, partitions=PARTITIONS, envelope_size=50) as publisher:
            for n, event in enumerate(events):
                publisher.publish_one(event)
                if n % 20 == 0:
                    time.sleep(0.1)  # spread over the pauses
    finally:
        pauses.join()
    assert_exact_features(worker, events, settle_s=60.0)


def test_bad_input_goes_to_dead_letters_and_valid_events_all_land(start_worker: Any, broker: str) -> None:
    worker = start_worker()
    producer = KafkaProducer(bootstrap_servers=broker)
    good = {
        "type": "visit",
        "event_id": "ok-1",
        "customer_id": "alice",
        "ts": START,
        "channel": "web",
        "session_id": "s",
    }
    p_alice = partition_for("alice", PARTITIONS)
    bad_values = [
        b"{not json",
        json.dumps(good | {"duration_s": "long"}).encode(),  # wrong type
        json.dumps({k: v for k, v in good.items() if k != "event_id"}).encode(),  # missing id
        json.dumps(good | {"event_id": "x" * 10_000}).encode(),  # huge field
        json.dumps(good | {"type": "teleport"}).encode(),  # unknown type
        json.dumps({"events": [good | {"event_id": "ok-2"}, good | {"event_id": "bad", "ts": "yesterday"}]}).encode(),
        b"\xff\xfe",
    ]
    for value in bad_values:
        producer.send(VISITS, key=b"alice", value=value, partition=p_alice)
    producer.send(VISITS, key=b"alice", value=json.dumps(good).encode(), partition=p_alice)
    producer.send(PURCHASES, key=b"bob", value=b"[]", partition=partition_for("bob", PARTITIONS))
    producer.flush()
    worker.wait_for("SELECT count() FROM dead_letters", len(bad_values) + 1)
    reasons = [r["reason"] for r in worker.sql("SELECT reason FROM dead_letters ORDER BY reason")]
    assert any(r.startswith("invalid JSON") for r in reasons)
    assert any("duration_s" in r for r in reasons)
    assert any("event_id" in r for r in reasons)
    assert any("teleport" in r for r in reasons)
    worker.wait_for("SELECT visit_count FROM customer_features FINAL WHERE customer_id = 'alice'", 2)
    assert worker.get("/health")[0] == 200


def test_http_ingest_and_api_key(start_worker: Any) -> None:
    worker = start_worker(CRM360_API_KEY="s3cret")
    event = {
        "type": "purchase",
        "event_id": "h1",
        "customer_id": "carol",
        "ts": "2024-03-01T12:00:00+01:00",
        "channel": "pos",
        "order_id": "h1",
        "amount": 42.0,
        "currency": "EUR",
    }
    body = json.dumps(event).encode()
    assert worker.request("POST", "/events", body)[0] == 401
    assert worker.request("POST", "/events", body, {"Authorization": "Bearer wrong"})[0] == 401
    assert worker.request("POST", "/sql", b"SELECT 1")[0] == 401
    assert worker.get("/dashboard")[0] == worker.get("/dashboard/data")[0] == 401
    assert worker.get("/dashboard/data?key=wrong")[0] == 401
    assert worker.get("/dashboard?key=s3cret")[0] == 200
    status, board = worker.get("/dashboard/data?key=s3cret")
    assert status == 200 and board["headline"][0] == {"key": "customers", "label": "Customers", "value": 0, "text": "0"}
    auth = {"Authorization": "Bearer s3cret"}
    status, answer = worker.request("POST", "/events", b"{oops", auth)
    assert status == 400 and "malformed" in answer["error"]
    status, answer = worker.request("POST", "/events", b" " * MAX_BODY_BYTES + b"\n" + body, auth)
    assert status == 413 and answer["error"] == f"body over {MAX_BODY_BYTES} bytes: split it"
    ndjson = (json.dumps(event) + "\n" + json.dumps(event | {"event_id": "h2", "amount": -1}) + "\n").encode()
    status, answer = worker.request("POST", "/events", ndjson, auth)
    assert status == 200 and answer["accepted"] == 1 and answer["rejected"] == 1
    worker.wait_for("SELECT monetary_total FROM customer_features FINAL WHERE customer_id = 'carol'", 42.0)
    rows = worker.sql("SELECT source, reason FROM dead_letters")
    assert rows[0]["source"] == "http" and "amount" in rows[0]["reason"]
    status, live = worker.request("GET", "/customers/carol", None, auth)
    assert status == 200 and live["customer"]["purchase_count"] == 1
    assert live["customer"]["last_purchase_at"].startswith("2024-03-01T11:00:00")
    # faust's own table endpoints would answer a customer's state to anyone: not served.
    for path in ("/table/", "/table/customers/", "/table/customers/carol/"):
        assert worker.request("GET", path, None, auth)[0] == 404, path
