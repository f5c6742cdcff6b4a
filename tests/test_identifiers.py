"""Events that name their person by identifiers besides (or instead of) a customer_id, and the
identify event that links identifiers seen together (``schemas.identifiers``)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from pydantic import ValidationError

from processors.config import FeatureConfig
from processors.features import CustomerState, apply, profile
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
