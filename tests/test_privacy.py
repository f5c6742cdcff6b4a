"""Erasure against the real broker, a two-process worker and chDB: a person known by an account
and a device is erased in the middle of a stream, given the device alone; then no table, state,
compacted-topic record or later audience event names them, a replay of their events does not
bring them back, the other customers stay exact, and all of it holds after the whole stack
restarts."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from processors.privacy import identifier_hash
from schemas.audiences import AudienceEvent
from schemas.topics import AUDIENCE_UPDATES, CUSTOMER_PROFILES, PURCHASES, SUPPRESSIONS, partition_for
from sinks.erasure import NAMING
from streams.local.until import until
from tests.conftest import assert_exact_purchases, publish, purchases

pytestmark = pytest.mark.integration

PERSON, DEVICE = "gone-person", "anonymous_id:gone-device"
T0 = 1_704_067_200.0


def person_events(tag: str) -> list[dict[str, Any]]:
    """The person's purchase, visits from their device, the login that links the two, and a profile."""
    base = {"ts": T0 + 86_400, "channel": "web"}
    device = {"identifiers": {"anonymous_id": "gone-device"}}
    return [
        base
        | {
            "type": "purchase",
            "event_id": f"gp{tag}",
            "customer_id": PERSON,
            "order_id": f"go{tag}",
            "amount": 40.0,
            "currency": "EUR",
        },
        base | device | {"type": "visit", "event_id": f"gv1{tag}", "session_id": "s1"},
        base | device | {"type": "visit", "event_id": f"gv2{tag}", "session_id": "s2"},
        base | device | {"type": "identify", "event_id": f"gi{tag}", "customer_id": PERSON},
        base | {"type": "customer_profile", "event_id": f"gr{tag}", "customer_id": PERSON, "region": "north"},
    ]


def naming_rows(worker: Any) -> dict[str, int]:
    """Per table, the rows (every version, not only the latest) that name the person."""
    found = {}
    for table in NAMING:
        hits = [row for row in worker.sql(f"SELECT * FROM {table}") if "gone-" in json.dumps(row, default=str)]
        if hits:
            found[table] = len(hits)
    return found


def records(broker: str, topic: str) -> list[tuple[bytes, bytes | None]]:
    """Every record on ``topic`` (key, value), in order within each partition."""
    consumer = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        found: list[tuple[bytes, bytes | None]] = []
        while any((consumer.position(tp) or 0) < ends[tp] for tp in partitions):
            for batch in consumer.poll(timeout_ms=1000).values():
                found += [(record.key, record.value) for record in batch]
        return found
    finally:
        consumer.close()


def last_records(broker: str, topic: str) -> dict[bytes, bytes | None]:
    """Each key's last record on ``topic`` (what compaction keeps)."""
    return dict(records(broker, topic))


def assert_forgotten(worker: Any, broker: str, app_id: str) -> None:
    assert naming_rows(worker) == {}
    for name in (PERSON, DEVICE):
        status, _ = worker.get(f"/customers/{name}")
        assert status == 404, name
    # The state's tombstone goes to the changelog at the next checkpoint (an offset commit).
    changelog = f"{app_id}-customers-changelog"
    until(
        lambda: all(last_records(broker, changelog).get(n.encode()) is None for n in (PERSON, DEVICE)),
        "tombstones of their states in the changelog",
        30,
    )
    assert last_records(broker, CUSTOMER_PROFILES).get(PERSON.encode(), b"") is None  # a tombstone
    suppressed = last_records(broker, SUPPRESSIONS)
    for name in (PERSON, DEVICE):
        assert not json.loads(suppressed[identifier_hash(name).encode()] or b"{}")["lifted"]


def test_an_erased_person_is_gone_everywhere_stays_gone_and_the_others_stay_exact(
    start_worker: Any, broker: str, kafka: Any, worker_env: dict[str, str]
) -> None:
    worker = start_worker()
    status, answer = worker.request(
        "POST", "/audiences", json.dumps({"name": "buyers", "condition": "purchase_count >= 1"}).encode()
    )
    assert status == 200, answer
    others, expected = purchases(60, 20)
    publish(broker, others[:30] + person_events("") + others[30:])
    producer = KafkaProducer(bootstrap_servers=broker)
    bad = {"type": "purchase", "event_id": "gbad", "customer_id": PERSON, "ts": T0, "channel": "pos", "amount": "lots"}
    producer.send(PURCHASES, key=PERSON.encode(), value=json.dumps(bad).encode(), partition=partition_for(PERSON, 4))
    producer.flush()
    worker.wait_for(
        f"SELECT count() FROM identities FINAL WHERE identifier = '{DEVICE}' AND profile_id = '{PERSON}'", 1
    )
    worker.wait_for(f"SELECT count() FROM audience_membership FINAL WHERE customer_id = '{PERSON}'", 1)
    worker.wait_for(f"SELECT count() FROM dead_letters WHERE position(payload, '{PERSON}') > 0", 1)
    assert set(naming_rows(worker)) >= {
        "purchases",
        "visits",
        "identify_events",
        "customer_profiles",
        "customer_features",
        "identities",
        "identity_merges",
        "audience_membership",
        "audience_events",
        "dead_letters",
    }

    erased_at = time.time()
    status, answer = worker.request("DELETE", f"/customers/{DEVICE}")
    assert status == 200, answer
    assert answer["complete"] and answer["identifiers"] == answer["identifiers_erased"] == 2
    assert answer["customer_states"] == 2  # the profile and the merged device
    assert answer["removed"]["purchases"] == 1 and answer["removed"]["visits"] == 2
    assert answer["removed"]["customer_features"] >= 1 and answer["removed"]["dead_letters"] == 1
    assert_forgotten(worker, broker, worker_env["CRM360_APP_ID"])
    assert_exact_purchases(worker, expected)
    log = worker.sql(f"SELECT action, identifier_hashes FROM privacy_log WHERE request_id = '{answer['request_id']}'")
    assert {h for row in log for h in row["identifier_hashes"]} == {identifier_hash(PERSON), identifier_hash(DEVICE)}
    assert "gone-" not in json.dumps(worker.sql("SELECT * FROM privacy_log"), default=str)

    again_status, again = worker.request("DELETE", f"/customers/{PERSON}")  # idempotent
    assert again_status == 200 and again["complete"] and again["removed"] == {}, again

    suppressed = worker.metric("crm360_suppressed_total")
    publish(broker, others + person_events(""))  # a replay of the whole stream
    publish(broker, person_events("-new"))  # and new events of theirs
    until(lambda: worker.metric("crm360_suppressed_total") >= suppressed + 10, "their events suppressed", 60)
    time.sleep(3)  # a flush, an aging pass
    assert_forgotten(worker, broker, worker_env["CRM360_APP_ID"])
    assert_exact_purchases(worker, expected)

    worker.stop()
    kafka.stop()
    kafka.start()
    worker = start_worker()
    publish(broker, person_events("-after-restart"))
    until(lambda: worker.metric("crm360_suppressed_total") >= 5, "their events suppressed after the restart", 90)
    time.sleep(3)
    assert_forgotten(worker, broker, worker_env["CRM360_APP_ID"])
    assert_exact_purchases(worker, expected)
    told = [AudienceEvent.model_validate_json(value or b"") for _, value in records(broker, AUDIENCE_UPDATES)]
    assert any(PERSON in event.identifiers for event in told)  # they entered "buyers" before the erasure
    assert all(event.created_at.timestamp() < erased_at for event in told if "gone-" in event.model_dump_json())

    status, lifted = worker.request("DELETE", f"/suppressions/{DEVICE}")  # the operator lets the device back
    assert status == 200 and lifted["was_suppressed"], lifted
    publish(broker, [person_events("-lifted")[1]])  # a visit of the device: a new profile
    until(lambda: worker.get(f"/customers/{DEVICE}")[0] == 200, "the device's new profile", 30)
    assert worker.get(f"/customers/{DEVICE}")[1]["customer"]["visit_count"] == 1
    assert worker.get(f"/customers/{PERSON}")[0] == 404  # still suppressed
    actions = [row["action"] for row in worker.sql("SELECT action FROM privacy_log ORDER BY at")]
    assert actions == ["suppressed", "erased", "erased", "suppressed", "erased", "lifted"]  # two requests, a lift
