"""Events that name their person by identifiers besides (or instead of) a customer_id, and the
identify event that links identifiers seen together (``schemas.identifiers``)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from pydantic import ValidationError

from processors.config import FeatureConfig
from processors.features import CustomerState, apply, profile
from processors.identity_graph import Op
from schemas.events import parse_event, parse_event_json

VISIT = {"type": "visit", "event_id": "v1", "ts": 1_700_000_000, "channel": "web", "session_id": "s1"}


def test_an_event_without_a_customer_id_is_keyed_by_the_identifier_of_the_first_kind_by_name() -> None:
    event = parse_event(VISIT | {"identifiers": {"social_handle": "ada", "anonymous_id": "a9f3"}})
    assert event.customer_id == "anonymous_id:a9f3"
    assert event.others == ["social_handle:ada"]
    again = parse_event_json(event.model_dump_json().encode())  # as it travels on, keyed the same
    assert again == event and again.customer_id == "anonymous_id:a9f3"


def test_events_with_a_customer_id_only_keep_working_unchanged() -> None:
    event = parse_event(VISIT | {"customer_id": "c1"})
    assert event.customer_id == "c1" and event.identifiers == {} and event.others == []


def test_an_email_is_kept_only_as_the_digest_of_the_trimmed_lower_cased_address() -> None:
    event = parse_event(VISIT | {"customer_id": "c1", "identifiers": {"email": "  Ada@Example.COM"}})
    digest = hashlib.sha256(b"ada@example.com").hexdigest()
    assert event.others == [f"email:{digest}"]
    assert "example" not in event.model_dump_json().lower()
    hashed_by_the_producer = parse_event(VISIT | {"customer_id": "c1", "identifiers": {"email": digest}})
    assert hashed_by_the_producer.others == event.others


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({}, "an event names its person: give a customer_id, identifiers or both"),
        ({"identifiers": {"customer_id": "c1"}}, "give the customer_id as the event's customer_id"),
        ({"customer_id": ""}, "at least 1 character"),
        ({"customer_id": "c1", "identifiers": {"Loyalty Card": "7"}}, "should match pattern"),
        ({"customer_id": "c1", "identifiers": {f"k{i}": "x" for i in range(9)}}, "at most 8 items"),
    ],
)
def test_an_event_that_names_no_one_or_names_badly_is_rejected_with_the_reason(
    change: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        parse_event(VISIT | change)


def test_an_identify_event_links_at_least_two_identifiers_and_counts_in_no_feature() -> None:
    login = {"type": "identify", "event_id": "login-1", "customer_id": "c1", "ts": 1_700_000_000, "channel": "app"}
    with pytest.raises(ValidationError, match="at least two identifiers"):
        parse_event(login)
    event = parse_event(login | {"identifiers": {"anonymous_id": "a9f3", "loyalty_card": "L7"}})
    assert event.others == ["anonymous_id:a9f3", "loyalty_card:L7"]
    state = CustomerState("c1")
    assert apply(state, event, FeatureConfig()) == "applied"
    assert apply(state, event, FeatureConfig()) == "duplicate"
    row = profile(state, 1_700_000_000, FeatureConfig())
    assert row["preferred_channel"] is None and row["engagement_score"] == 0 and row["visit_count"] == 0


def test_the_simulation_names_people_as_each_channel_knows_them_with_the_truth_kept() -> None:
    from streams.local.simulate import Simulation
    from streams.measure.resolution import resolution_figures

    plain = list(Simulation(customers=300, days=200, seed=3).events())
    simulation = Simulation(customers=300, days=200, seed=3, identities=True)
    named = [parse_event(event) for event in simulation.events()]  # every one valid
    truth = simulation.ground_truth()
    person_of = {event_id: person for person, facts in truth.items() for event_id in facts["event_ids"]}
    assert len(person_of) == len(named)

    # The same behaviour with and without identities: the same purchases, to the cent.
    def purchases(events: list[Any]) -> list[tuple[float, float]]:
        return sorted((e.epoch, e.amount) for e in events if e.type == "purchase")

    assert purchases(named) == purchases([parse_event(e) for e in plain])
    # Every identifier an event names is one of its true person's.
    for event in named:
        assert {event.customer_id, *event.others} <= set(truth[person_of[event.event_id]]["identifiers"])
    kinds = {name.partition(":")[0] for event in named for name in event.others}
    assert kinds == {"anonymous_id", "email", "loyalty_card", "social_handle"}
    assert sum(1 for e in named if e.type == "identify") > 300  # sign-ups, cards linked, handles connected
    keyed = [{"event_id": e.event_id, "key": e.customer_id} for e in named]
    unresolved = resolution_figures(keyed, person_of, profile_of=lambda key: key)
    assert unresolved["people"] == 300 and unresolved["profiles"] > 2.5 * 300  # each channel's id: a person
    assert unresolved["people_as_one_profile"] < 0.1 * 300


def test_crm360_simulate_identities_writes_the_events_and_their_true_people(tmp_path: Any) -> None:
    import json

    from click.testing import CliRunner

    from streams.cli import main

    out, truth = tmp_path / "events.jsonl", tmp_path / "truth.json"
    args = ["simulate", "--customers", "20", "--days", "60", "--identities", "--out", str(out), "--truth", str(truth)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    event_ids = {json.loads(line)["event_id"] for line in out.read_text().splitlines()}
    people = json.loads(truth.read_text())
    assert {event_id for person in people.values() for event_id in person["event_ids"]} == event_ids


def test_a_pipeline_merges_a_device_into_a_new_card_through_its_own_identity_ops() -> None:
    """The worker's pipeline, its identity ops fed back to it as Kafka would (one process owns
    every partition): a card first seen in a link survives (a card outlasts a device) in a
    partition where no event ever came, takes the device's events, and the device leaves
    ``customer_features``. Its partition had no event time, and its first row failed the batch."""
    from schemas.envelope import encode_envelope
    from schemas.topics import IDENTITY_OPS, VISITS, partition_for
    from streams.worker.message import Message
    from streams.worker.pipeline import CustomerPipeline
    from tests.memory_sink import MemorySink

    sink = MemorySink()
    table: dict[bytes, CustomerState] = {}
    pipeline = CustomerPipeline(FeatureConfig(), sink, table, partitions=4)  # type: ignore[arg-type]
    visits = [parse_event(VISIT | {"event_id": f"v{n}", "identifiers": {"anonymous_id": "d1"}}) for n in range(3)]
    visits.append(parse_event(VISIT | {"event_id": "v3", "identifiers": {"anonymous_id": "d1", "loyalty_card": "L7"}}))
    device, card = "anonymous_id:d1", "loyalty_card:L7"
    assert partition_for(device, 4) != partition_for(card, 4)
    messages = [Message(VISITS, partition_for(device, 4), 0, encode_envelope(visits))]
    offset, rounds = 0, 0
    while messages:
        assert not pipeline.ingest(messages)
        ops, handled = pipeline.identities.take()
        pipeline.identities.sent(handled)
        messages = [
            Message(IDENTITY_OPS, partition_for(op.target, 4), offset + i, op.to_json()) for i, op in enumerate(ops)
        ]
        offset, rounds = offset + len(ops), rounds + 1
        assert rounds < 10
    assert table[card.encode()].visit_count == 4 and table[card.encode()].identity.identifiers == [card, device]  # type: ignore[union-attr]
    assert table[device.encode()].identity.merged_into == card  # type: ignore[union-attr]
    assert sink.deleted == [device] and sink.features[-1]["customer_id"] == card
    (merge,) = sink.rows["identity_merges"]
    assert (merge["survivor"], merge["absorbed"], merge["rule"]) == (card, device, "loyalty_card outlasts anonymous_id")


def test_a_merge_costs_one_surrender_one_absorb_however_often_its_link_repeats() -> None:
    """An account's visits name a device that already has a profile, again and again while the
    merge is under way: the account ranks first, so it unites at once (sent, the union would
    come back to it a hop later) and takes the device in one round trip."""
    from schemas.envelope import encode_envelope
    from schemas.topics import IDENTITY_OPS, VISITS, partition_for
    from streams.worker.message import Message
    from streams.worker.pipeline import CustomerPipeline
    from tests.memory_sink import MemorySink

    table: dict[bytes, CustomerState] = {}
    pipeline = CustomerPipeline(FeatureConfig(), MemorySink(), table, partitions=4)  # type: ignore[arg-type]
    device = [parse_event(VISIT | {"event_id": f"d{n}", "identifiers": {"anonymous_id": "d1"}}) for n in range(3)]
    logged_in = [
        parse_event(VISIT | {"event_id": f"c{n}", "customer_id": "c1", "identifiers": {"anonymous_id": "d1"}})
        for n in range(6)
    ]
    at_device, at_account = partition_for("anonymous_id:d1", 4), partition_for("c1", 4)
    batches = [
        Message(VISITS, at_device, 0, encode_envelope(device)),
        Message(VISITS, at_account, 0, encode_envelope(logged_in[:4])),
        Message(VISITS, at_account, 1, encode_envelope(logged_in[4:])),
    ]
    kinds: list[str] = []
    offset, messages = 0, [batches.pop(0)]
    while messages:
        assert not pipeline.ingest(messages)
        ops, handled = pipeline.identities.take()
        pipeline.identities.sent(handled)
        kinds += [op.kind for op in ops]
        # As the worker sends them: each partition's ops packed into records, in order.
        packed = [
            (partition, raw)
            for partition in range(4)
            for raw in Op.pack([op for op in ops if partition_for(op.target, 4) == partition])
        ]
        messages = [Message(IDENTITY_OPS, p, offset + i, raw) for i, (p, raw) in enumerate(packed)] + batches[:2]
        offset, batches = offset + len(packed), batches[2:]
    assert kinds == ["surrender", "absorb"]
    assert table[b"c1"].visit_count == 9 and table[b"anonymous_id:d1"].identity.merged_into == "c1"  # type: ignore[union-attr]
