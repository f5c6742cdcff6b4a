"""One person across web, till and social, resolved in the stream: real broker, real worker
processes (two, so identifiers and profiles sit in partitions of different processes) and chDB.
A device, a loyalty card and an account are three profiles until an identify event links them;
then one profile holds every event of the three, exactly, later events of the merged
identifiers reach it, the others leave ``customer_features``, and a tablet two accounts share
is refused, not glued."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from schemas.topics import partition_for
from streams.local.until import until
from streams.sdk.subscriber import MergeSubscriber
from tests.conftest import publish

pytestmark = pytest.mark.integration  # the broker, two worker processes, chDB

DAY = 86_400.0
T0 = 1_704_067_200.0  # 2024-01-01


def event(kind: str, n: int, day: float, named: dict[str, Any], **fields: Any) -> dict[str, Any]:
    base = {"event_id": f"{kind}-{n}", "ts": T0 + day * DAY, "channel": "web"} | named
    if kind == "purchase":
        return base | {"type": "purchase", "order_id": f"o{n}", "currency": "EUR"} | fields
    if kind == "visit":
        return base | {"type": "visit", "session_id": f"s{n}"} | fields
    return base | {"type": "identify"} | fields


DEVICE, CARD, TABLET = {"anonymous_id": "d1"}, {"loyalty_card": "L1"}, {"anonymous_id": "tablet"}


def features(worker: Any) -> dict[str, dict[str, Any]]:
    rows = worker.sql(
        "SELECT customer_id, purchase_count, monetary_total, visit_count, first_purchase_at "
        "FROM customer_features FINAL ORDER BY customer_id"
    )
    return {row.pop("customer_id"): row for row in rows}


def test_an_identify_event_merges_three_profiles_into_one_exactly_and_later_events_follow(
    start_worker: Any, broker: str
) -> None:
    names = ["c1", "anonymous_id:d1", "loyalty_card:L1"]
    assert len({partition_for(name, 4) for name in names}) > 1  # the merge crosses partitions
    worker = start_worker()
    publish(
        broker,
        [
            event("purchase", 1, 10, {"customer_id": "c1"}, amount=30.0),
            event("visit", 2, 2, {"identifiers": DEVICE}),
            event("visit", 3, 3, {"identifiers": DEVICE}),
            event("purchase", 4, 5, {"identifiers": CARD}, amount=12.5, channel="pos"),
            event("purchase", 5, 7, {"customer_id": "c2"}, amount=8.0),
        ],
    )
    worker.wait_for("SELECT count() FROM customer_features FINAL", 4)  # a profile per identifier
    publish(broker, [event("identify", 6, 11, {"customer_id": "c1", "identifiers": DEVICE | CARD})])
    worker.wait_for("SELECT count() FROM customer_features FINAL", 2)
    worker.wait_for("SELECT purchase_count FROM customer_features FINAL WHERE customer_id = 'c1'", 2)
    # The device leaves customer_features as it surrenders, before c1 absorbs it: wait for that too.
    worker.wait_for("SELECT visit_count FROM customer_features FINAL WHERE customer_id = 'c1'", 2)
    got = features(worker)
    assert got["c1"]["monetary_total"] == 42.5 and got["c1"]["visit_count"] == 2
    assert got["c1"]["first_purchase_at"].startswith("2024-01-06")  # the card's purchase, day 5
    assert set(got) == {"c1", "c2"}  # the device and the card left customer_features
    merges = worker.sql(
        "SELECT survivor, absorbed, outcome FROM identity_merges FINAL WHERE outcome = 'merged' ORDER BY absorbed"
    )
    assert merges == [
        {"survivor": "c1", "absorbed": "anonymous_id:d1", "outcome": "merged"},
        {"survivor": "c1", "absorbed": "loyalty_card:L1", "outcome": "merged"},
    ]
    links = worker.sql("SELECT identifier, profile_id FROM identities FINAL ORDER BY identifier")
    assert {row["identifier"]: row["profile_id"] for row in links} == dict.fromkeys(names, "c1")

    # Later events of the merged identifiers reach the profile, however they are keyed.
    publish(
        broker,
        [
            event("visit", 7, 12, {"identifiers": DEVICE}),
            event("purchase", 8, 13, {"identifiers": CARD}, amount=7.5, channel="pos"),
        ],
    )
    worker.wait_for("SELECT purchase_count FROM customer_features FINAL WHERE customer_id = 'c1'", 3)
    worker.wait_for("SELECT visit_count FROM customer_features FINAL WHERE customer_id = 'c1'", 3)
    assert features(worker)["c1"]["monetary_total"] == 50.0
    status, answer = worker.get("/customers/anonymous_id:d1")  # any identifier answers with the profile
    assert status == 200 and answer["customer"]["customer_id"] == "c1", answer
    assert answer["customer"]["purchase_count"] == 3
    assert set(answer["identifiers"]) == set(names)
    assert sorted(merge["absorbed"] for merge in answer["merges"]) == ["anonymous_id:d1", "loyalty_card:L1"]
    shown = subprocess.run(
        [sys.executable, "-m", "streams.cli", "customer", "loyalty_card:L1"],
        env=worker.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "purchase_count  3" in shown and "merged anonymous_id:d1 (customer_id outlasts anonymous_id)" in shown

    # A tablet both accounts log in on: the second link is refused, not glued.
    publish(
        broker,
        [
            event("identify", 9, 14, {"customer_id": "c1", "identifiers": TABLET}),
            event("identify", 10, 15, {"customer_id": "c2", "identifiers": TABLET}),
        ],
    )
    worker.wait_for("SELECT count() FROM identity_merges FINAL WHERE outcome = 'refused'", 1)
    (refusal,) = worker.sql("SELECT survivor, absorbed, rule FROM identity_merges FINAL WHERE outcome = 'refused'")
    assert refusal["rule"] == "unique kind customer_id: 'c1' and 'c2'" or "'c2' and 'c1'" in refusal["rule"], refusal
    got = features(worker)
    assert set(got) == {"c1", "c2"} and got["c2"]["purchase_count"] == 1
    assert worker.metric("crm360_profiles_merged_total") >= 3 and worker.metric("crm360_links_refused_total") == 1
    # The graph's work is done: every op it sent was handled, none waits.
    figures = until(
        lambda: (
            (m := worker.client.metrics())["crm360_identity_ops_in_total"] == m["crm360_identity_ops_out_total"] and m
        ),
        "every identity op handled",
    )
    assert figures["crm360_identity_ops_in_total"] >= 8 and figures["crm360_identity_ops_waiting"] == 0
    # Tools that follow identity-merges got every decision the table holds, keyed by the survivor.
    with MergeSubscriber(broker, group_id=None, from_beginning=True, idle_timeout_s=5) as subscriber:
        published = {merge.merge_id: merge for merge in subscriber}
    decided = worker.sql("SELECT outcome, survivor, absorbed FROM identity_merges FINAL")
    assert set(published) == {f"{row['outcome']}:{row['survivor']}:{row['absorbed']}" for row in decided}
    assert {"merged:c1:anonymous_id:d1", f"refused:{refusal['survivor']}:{refusal['absorbed']}"} <= set(published)
    assert published["merged:c1:loyalty_card:L1"].identifiers == ["loyalty_card:L1"]

    # Merges hold across a restart: a later event of the device still reaches c1.
    worker.stop()
    worker = start_worker()
    publish(broker, [event("purchase", 11, 16, {"identifiers": DEVICE}, amount=5.0)])
    worker.wait_for("SELECT purchase_count FROM customer_features FINAL WHERE customer_id = 'c1'", 4)
    assert features(worker)["c1"]["monetary_total"] == 55.0
    assert set(features(worker)) == {"c1", "c2"}
