"""The SDK's subscribers against a real broker: a record that is not what the topic holds is
passed by and reported, and the records after it still arrive."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from kafka import KafkaProducer

from schemas.audiences import AudienceEvent
from schemas.topics import AUDIENCE_UPDATES
from streams.sdk.subscriber import AudienceSubscriber, Unreadable

pytestmark = pytest.mark.integration  # a real broker


def test_an_unreadable_record_is_passed_by_and_reported(broker: str) -> None:
    event = AudienceEvent(
        audience="at_risk",
        version=1,
        change="entered",
        customer_id="c1",
        identifiers=["c1"],
        features={"churn_probability": 0.7},
        as_of=datetime(2026, 1, 1, tzinfo=UTC),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    producer = KafkaProducer(bootstrap_servers=broker)
    for value in (b"not json", b'{"audience": "at_risk"}', event.model_dump_json().encode()):
        producer.send(AUDIENCE_UPDATES, key=b"c1", value=value)
    producer.flush()
    producer.close()

    told: list[Unreadable] = []
    with AudienceSubscriber(
        broker, group_id=None, from_beginning=True, idle_timeout_s=5, on_unreadable=told.append
    ) as subscriber:
        received = list(subscriber)
    assert received == [event] and subscriber.skipped == 2
    assert [(r.topic, r.offset) for r in told] == [(AUDIENCE_UPDATES, 0), (AUDIENCE_UPDATES, 1)]
    assert told[0].reason.startswith("not a valid AudienceEvent: the record: Invalid JSON")
    assert told[1].reason == "not a valid AudienceEvent: version: Field required"
    assert str(told[1]) == f"skipped audience-updates record {told[1].partition}@1: {told[1].reason}"
