"""The pipeline's part of an erasure, without broker or database: a person known by a device
merged into a card is erased given the device alone; the card is found and erased too, their
events replayed never rebuild them, and another customer is untouched."""

from __future__ import annotations

from datetime import UTC, datetime

from processors.config import FeatureConfig
from processors.features import CustomerState
from processors.privacy import identifier_hash
from schemas.envelope import encode_envelope
from schemas.events import parse_event
from schemas.privacy import Erasure
from schemas.topics import ERASURES, IDENTITY_OPS, VISITS, partition_for
from streams.worker.message import Message
from streams.worker.pipeline import CustomerPipeline
from tests.memory_sink import MemorySink

VISIT = {"type": "visit", "ts": 1_700_000_000, "channel": "web", "session_id": "s1"}
DEVICE, CARD = "anonymous_id:d1", "loyalty_card:L7"


def settle(pipeline: CustomerPipeline, messages: list[Message]) -> None:
    """Ingest ``messages`` and the identity ops they lead to, as Kafka would bring them back."""
    offset = 100
    while messages:
        pipeline.ingest(messages)
        ops, handled = pipeline.identities.take()
        pipeline.identities.sent(handled)
        messages = [
            Message(IDENTITY_OPS, partition_for(op.target, 4), offset + i, op.to_json()) for i, op in enumerate(ops)
        ]
        offset += len(ops)


def erasure(identifier: str, identifiers: list[str]) -> Message:
    record = Erasure(request_id="r1", identifier=identifier, identifiers=identifiers, asked_at=datetime.now(tz=UTC))
    return Message(ERASURES, partition_for(identifier, 4), 0, record.model_dump_json().encode())


def test_an_erasure_by_one_identifier_erases_the_whole_person_and_keeps_them_out() -> None:
    sink = MemorySink()
    table: dict[bytes, CustomerState] = {}
    pipeline = CustomerPipeline(FeatureConfig(), sink, table, partitions=4)  # type: ignore[arg-type]
    visits = [parse_event(VISIT | {"event_id": f"v{n}", "identifiers": {"anonymous_id": "d1"}}) for n in range(3)]
    visits.append(parse_event(VISIT | {"event_id": "v3", "identifiers": {"anonymous_id": "d1", "loyalty_card": "L7"}}))
    other = parse_event(VISIT | {"event_id": "o1", "customer_id": "c2"})
    person = [Message(VISITS, partition_for(DEVICE, 4), 0, encode_envelope(visits))]
    settle(pipeline, [*person, Message(VISITS, partition_for("c2", 4), 1, encode_envelope([other]))])
    assert table[DEVICE.encode()].identity.merged_into == CARD  # type: ignore[union-attr]
    counted = dict(sink.membership)

    settle(pipeline, [erasure(DEVICE, [DEVICE])])  # the request knew the device only
    outgoing = pipeline.privacy.take()
    assert [s.identifier_hash for s in outgoing.suppressions] == [identifier_hash(CARD)]
    onward = outgoing.erasures
    assert [(e.identifier, e.identifiers) for e in onward] == [(CARD, [DEVICE, CARD])]
    settle(pipeline, [Message(ERASURES, partition_for(CARD, 4), 1, onward[0].model_dump_json().encode())])

    assert set(table) == {b"c2"}
    erased = sink.erasures
    assert [(e.identifier_hash, e.identifiers, e.customer_states) for e in erased] == [
        (identifier_hash(DEVICE), [DEVICE, CARD], 1),
        (identifier_hash(CARD), [DEVICE, CARD], 1),
    ]
    assert sum(sink.membership.values()) == sum(counted.values()) - 2  # the card's segment and RFM group
    assert pipeline.counters.erasures == 2

    rows, letters = len(sink.features), len(sink.dead)
    settle(pipeline, [Message(VISITS, partition_for(DEVICE, 4), 5, encode_envelope(visits))])  # replayed
    assert set(table) == {b"c2"} and len(sink.features) == rows
    assert pipeline.counters.suppressed == 4
    (letter,) = sink.dead[letters:]
    assert letter.payload == "" and "suppressed" in letter.reason
