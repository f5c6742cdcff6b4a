"""Live audiences against the real broker, worker and chDB: membership equals each condition
evaluated independently over ``customer_features FINAL``, after a stream with aging, a
backfill on create and on change, and deletion; entries and exits once per change, in
ClickHouse and on ``audience-updates``; a bad condition answered with a clear error."""

from __future__ import annotations

import http.server
import json
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kafka import KafkaProducer

from schemas.alerts import ChurnAlert
from schemas.audiences import AudienceEvent
from schemas.topics import AUDIENCE_UPDATES, CHURN_ALERTS
from streams.local.until import until
from streams.sdk.subscriber import AudienceSubscriber
from tests.conftest import publish

pytestmark = pytest.mark.integration

DAY = 86_400.0
T0 = 1_704_067_200.0  # 2024-01-01
CUSTOMERS = 150

#: Each audience's condition, and the same written by hand in ClickHouse SQL.
LOYAL_POS = ("purchase_count >= 2 AND preferred_channel = 'pos'", "purchase_count >= 2 AND preferred_channel = 'pos'")
LAPSED = ("recency_days > 60", "recency_days > 60")
MID_OR_NORTH = (
    "monetary_total BETWEEN 50 AND 150 OR region IN ('north')",
    "(monetary_total BETWEEN 50 AND 150) OR (region IS NOT NULL AND region IN ('north'))",
)
BIG = (
    "monetary_total > 100 AND NOT region = 'south'",
    "monetary_total > 100 AND region IS NOT NULL AND region != 'south'",
)


def stream(first_day: int, days: int, seed: int) -> list[dict[str, Any]]:
    """Purchases of every customer over ``days``, and some profiles with a region."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n in range(CUSTOMERS * 2):
        customer = f"a{rng.randrange(CUSTOMERS)}"
        events.append(
            {
                "type": "purchase",
                "event_id": f"p{seed}-{n}",
                "customer_id": customer,
                "ts": T0 + (first_day + rng.uniform(0, days)) * DAY,
                "channel": rng.choice(["pos", "pos", "web"]),
                "order_id": f"o{seed}-{n}",
                "amount": round(rng.uniform(5, 90), 2),
                "currency": "EUR",
            }
        )
    for n in range(0, CUSTOMERS, 3):
        events.append(
            {
                "type": "customer_profile",
                "event_id": f"r{seed}-{n}",
                "customer_id": f"a{n}",
                "ts": T0 + first_day * DAY,
                "channel": "web",
                "region": rng.choice(["north", "south", "east"]),
            }
        )
    return events


def purchase(customer: str, day: float, amount: float = 20.0) -> dict[str, Any]:
    """A web purchase of ``customer`` on ``day`` (days after T0)."""
    return {
        "type": "purchase",
        "event_id": f"buy-{customer}-{day}",
        "customer_id": customer,
        "ts": T0 + day * DAY,
        "channel": "web",
        "order_id": f"o-{customer}-{day}",
        "amount": amount,
        "currency": "EUR",
    }


def streamed(worker: Any, broker: str, events: list[dict[str, Any]]) -> None:
    """Publish ``events`` and wait until they are applied and an aging pass has begun and ended
    since (it re-emits every customer at the partitions' new watermarks)."""
    before = worker.metric("crm360_events_applied_total")
    publish(broker, events)
    until(lambda: worker.metric("crm360_events_applied_total") >= before + len(events), "events applied", 60)
    passes = worker.metric("crm360_aging_passes_total")
    until(lambda: worker.metric("crm360_aging_passes_total") >= passes + 2, "an aging pass after them", 60)


def members(worker: Any, audience: str) -> set[str]:
    rows = worker.sql(f"SELECT customer_id FROM audience_membership FINAL WHERE audience = '{audience}'")
    return {r["customer_id"] for r in rows}


def expected(worker: Any, sql_condition: str) -> set[str]:
    return {
        r["customer_id"] for r in worker.sql(f"SELECT customer_id FROM customer_features FINAL WHERE {sql_condition}")
    }


def assert_matches(worker: Any, audience: str, sql_condition: str) -> set[str]:
    """The audience's members equal the condition over ``customer_features FINAL`` (once the
    stream and the aging pass have reached every customer)."""
    try:
        until(lambda: members(worker, audience) == expected(worker, sql_condition), f"{audience} complete", 90, every=1)
    except TimeoutError:
        pass  # the assertion says what differs
    found, wanted = members(worker, audience), expected(worker, sql_condition)
    assert found == wanted, f"{audience}: extra {sorted(found - wanted)[:10]}, missing {sorted(wanted - found)[:10]}"
    return found


def create(worker: Any, name: str, condition: str, **fields: Any) -> dict[str, Any]:
    status, answer = worker.request(
        "POST", "/audiences", json.dumps({"name": name, "condition": condition} | fields).encode()
    )
    assert status == 200, answer
    return answer


def test_audiences_follow_the_stream_and_their_definitions(start_worker: Any, broker: str) -> None:
    worker = start_worker(CRM360_AGING_MIN_ADVANCE_S="3600")
    assert create(worker, "loyal_pos", LOYAL_POS[0], description="came back at the till")["version"] == 1
    assert create(worker, "mid_or_north", MID_OR_NORTH[0])["version"] == 1

    # A wrong column or type is answered with what is wrong, and nothing is saved.
    status, answer = worker.request(
        "POST", "/audiences", json.dumps({"name": "bad", "condition": "churn_probabilty > 0.5"}).encode()
    )
    assert status == 400 and answer["error"] == (
        "unknown column 'churn_probabilty' at 1 (did you mean churn_probability?)"
    ), answer
    status, answer = worker.request(
        "POST", "/audiences", json.dumps({"name": "bad", "condition": "region > 3"}).encode()
    )
    assert status == 400 and "region is text" in answer["error"], answer
    assert worker.get("/audiences/bad")[0] == 404

    streamed(worker, broker, stream(0, 120, seed=1))
    assert assert_matches(worker, "loyal_pos", LOYAL_POS[1])
    assert assert_matches(worker, "mid_or_north", MID_OR_NORTH[1])

    # Created over the customers already there: backfilled over their current rows.
    create(worker, "lapsed", LAPSED[0])
    lapsed_before = assert_matches(worker, "lapsed", LAPSED[1])
    assert lapsed_before, "the stream leaves some customers idle for 60 days"

    # Changed: every customer checked against the new condition.
    status, changed = worker.request(
        "PUT", "/audiences/mid_or_north", json.dumps({"condition": BIG[0], "min_stay_days": 0}).encode()
    )
    assert status == 200 and changed["version"] == 2, changed
    assert assert_matches(worker, "mid_or_north", BIG[1])

    # A second wave, later in event time: some lapsed customers buy again and leave, the idle
    # ones' recency grows with the watermark (aging) and others enter.
    streamed(worker, broker, stream(150, 20, seed=2))
    lapsed_after = assert_matches(worker, "lapsed", LAPSED[1])
    assert lapsed_after != lapsed_before
    assert_matches(worker, "loyal_pos", LOYAL_POS[1])

    # Deleted: every member leaves.
    assert worker.request("DELETE", "/audiences/loyal_pos")[0] == 200
    until(lambda: not members(worker, "loyal_pos"), "loyal_pos emptied", 60, every=1)
    assert [a["name"] for a in worker.get("/audiences")[1]["audiences"]] == ["lapsed", "mid_or_north"]

    # Every change once: per customer and audience, entries and exits alternate to the membership.
    rows = worker.sql("SELECT audience, customer_id, change, event_id FROM audience_events FINAL")
    balance: Counter[tuple[str, str]] = Counter()
    for row in rows:
        balance[row["audience"], row["customer_id"]] += 1 if row["change"] == "entered" else -1
    current = {(name, c) for name in ("lapsed", "mid_or_north", "loyal_pos") for c in members(worker, name)}
    assert {key for key, n in balance.items() if n == 1} == current
    assert set(balance.values()) <= {0, 1}
    # The views: sizes over time end at the live size; overlap is the members' intersection.
    daily = worker.sql("SELECT audience, day, members FROM v_audience_sizes_daily ORDER BY audience, day")
    last = {row["audience"]: row["members"] for row in daily}
    assert last == {name: len(members(worker, name)) for name in ("lapsed", "mid_or_north", "loyal_pos")}
    (pair,) = worker.sql("SELECT * FROM v_audience_overlap WHERE audience = 'lapsed' AND other = 'mid_or_north'")
    lapsed, big = members(worker, "lapsed"), members(worker, "mid_or_north")
    assert (pair["audience_members"], pair["other_members"], pair["both"]) == (len(lapsed), len(big), len(lapsed & big))
    assert pair["jaccard"] == pytest.approx(len(lapsed & big) / len(lapsed | big), abs=1e-4)
    # Tools following audience-updates received exactly those events.
    with AudienceSubscriber(broker, group_id=None, from_beginning=True, idle_timeout_s=5) as subscriber:
        published = [event.event_id for event in subscriber]
    assert sorted(published) == sorted(r["event_id"] for r in rows)


def crm360(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], check=False, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_audience_commands(start_worker: Any, broker: str, worker_env: dict[str, str], tmp_path: Path) -> None:
    """create, change, list, apply a file (and prune), delete; recent entries and exits; and
    one line saying what is wrong when something is."""
    worker = start_worker()
    made = crm360(worker_env, "audience", "create", "buyers", "purchase_count >= 1", "--description", "bought once")
    assert made.returncode == 0 and made.stdout == "buyers (v1): purchase_count >= 1\n", made.stderr
    again = crm360(worker_env, "audience", "create", "buyers", "purchase_count >= 2")
    assert again.returncode == 1
    assert again.stderr == "crm360: audience 'buyers' exists: change it with PUT /audiences/buyers\n"
    wrong = crm360(worker_env, "audience", "create", "typo", "purchase_cnt >= 2")
    assert wrong.returncode == 1
    assert wrong.stderr == "crm360: unknown column 'purchase_cnt' at 1 (did you mean purchase_count?)\n"
    streamed(worker, broker, stream(0, 30, seed=3))
    until(lambda: members(worker, "buyers"), "buyers backfilled", 60)
    listed = crm360(worker_env, "audience", "list")
    size = len(expected(worker, "purchase_count >= 1"))
    assert listed.stdout == f"buyers (v1)  {size} members: purchase_count >= 1\n", listed.stderr

    changed = crm360(worker_env, "audience", "change", "buyers", "--min-stay-days", "7")
    assert changed.stdout == "buyers (v2)  min stay 7 d: purchase_count >= 1\n", changed.stderr
    assert crm360(worker_env, "audience", "change", "nobody", "--min-stay-days", "1").stderr == (
        "crm360: no audience 'nobody': create it with 'crm360 audience create'\n"
    )

    file = tmp_path / "audiences.toml"
    file.write_text(
        '[[audience]]\nname = "buyers"\ncondition = "purchase_count >= 1"\nmin_stay_days = 7\ndescription = "bought once"\n\n'
        '[[audience]]\nname = "big"\ncondition = "monetary_total > 100"\ndescription = "spent over 100"\n',
        encoding="utf-8",
    )
    applied = crm360(worker_env, "audience", "apply", str(file), "--prune")
    assert applied.stdout.splitlines() == [
        "unchanged buyers (v2)  min stay 7 d: purchase_count >= 1",
        "created big (v1): monetary_total > 100",
    ], applied.stderr
    file.write_text('[[audience]]\nname = "big"\ncondition = "monetary_total > 150"\n', encoding="utf-8")
    pruned = crm360(worker_env, "audience", "apply", str(file), "--prune")
    assert pruned.stdout.splitlines() == ["changed big (v2): monetary_total > 150", "deleted buyers"], pruned.stderr
    file.write_text('[[audience]]\nname = "Big Spenders"\ncondition = "monetary_total > 150"\n', encoding="utf-8")
    refused = crm360(worker_env, "audience", "apply", str(file))
    assert refused.returncode == 1 and refused.stderr.startswith(f"crm360: {file}: name: String should match pattern")
    until(lambda: not members(worker, "buyers") and members(worker, "big"), "buyers left, big filled", 60)

    recent = crm360(worker_env, "audiences", "--limit", "500").stdout.splitlines()
    assert {line.split()[2:4][0] for line in recent} == {"entered", "exited"}
    assert any(line.endswith("exited buyers (v2)") for line in recent), recent[:5]
    assert crm360(worker_env, "audience", "delete", "big").stdout == "deleted big (v3)\n"


def test_consent_decides_what_destinations_are_told(start_worker: Any, broker: str) -> None:
    """Members without consent for the audience's purpose are counted but never published;
    consent given later publishes their entry, consent withdrawn their exit."""
    worker = start_worker()
    create(worker, "emailable", "purchase_count >= 1", purpose="marketing_email")
    create(worker, "buyers", "purchase_count >= 1")

    def profile(customer: str, day: float, given: bool) -> dict[str, Any]:
        return {
            "type": "customer_profile",
            "event_id": f"consent-{customer}-{day}",
            "customer_id": customer,
            "ts": T0 + day * DAY,
            "channel": "web",
            "consents": {"marketing_email": given},
        }

    applied = 0

    def step(*events: dict[str, Any]) -> None:  # in order: profiles and purchases are two topics
        nonlocal applied
        publish(broker, list(events))
        applied += len(events)
        until(lambda: worker.metric("crm360_events_applied_total") >= applied, "applied", 60)

    step(profile("c1", 1, True), profile("c3", 1, True), profile("c4", 1, False))
    step(*(purchase(c, 2) for c in ("c1", "c2", "c3", "c4")))
    step(profile("c3", 3, False), profile("c4", 3, True))
    step(profile("c4", 2.5, False))  # older than its consent: changes nothing
    until(lambda: len(members(worker, "emailable")) == 4, "every buyer counted", 60)
    assert members(worker, "emailable") == members(worker, "buyers") == {"c1", "c2", "c3", "c4"}
    assert worker.request("DELETE", "/audiences/emailable")[0] == 200
    until(lambda: not members(worker, "emailable"), "emailable emptied", 60)

    told = "SELECT customer_id, change, reason FROM audience_events FINAL WHERE audience = 'emailable' AND published"
    until(lambda: len(worker.sql(told)) == 6, "six told", 30, every=0.5)
    with AudienceSubscriber(broker, group_id=None, from_beginning=True, idle_timeout_s=5) as subscriber:
        published = [e for e in subscriber if e.audience == "emailable"]
    assert sorted((e.customer_id, e.change, e.reason) for e in published) == [
        ("c1", "entered", "condition"),
        ("c1", "exited", "deleted"),
        ("c3", "entered", "condition"),
        ("c3", "exited", "consent"),
        ("c4", "entered", "consent"),
        ("c4", "exited", "deleted"),
    ]
    assert sorted(tuple(r.values()) for r in worker.sql(told)) == sorted(
        (e.customer_id, e.change, e.reason) for e in published
    )
    withheld = worker.sql(
        "SELECT customer_id FROM audience_events FINAL WHERE audience = 'emailable' AND NOT published"
    )
    assert {r["customer_id"] for r in withheld} == {"c2", "c3", "c4"}  # counted, never told


class Receiver(http.server.BaseHTTPRequestHandler):
    """A marketing tool's webhooks: ``/flaky`` answers 503 to the first two tries of each event,
    ``/broken`` always 500, ``/gone`` 404."""

    tries: ClassVar[Counter[tuple[str, str]]] = Counter()
    bodies: ClassVar[dict[str, bytes]] = {}

    def do_POST(self) -> None:
        key = self.headers["Idempotency-Key"]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.tries[self.path, key] += 1
        status = {"/broken": 500, "/gone": 404}.get(self.path, 503 if self.tries[self.path, key] <= 2 else 200)
        if status == 200:
            self.bodies[key] = body
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhooks_get_every_entry_with_retries_and_dead_letters(start_worker: Any, broker: str) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        worker = start_worker(CRM360_WEBHOOK_TRIES="3", CRM360_WEBHOOK_BACKOFF_S="0.05")
        create(worker, "buyers", "purchase_count >= 1", webhook=f"{base}/flaky")
        create(worker, "big", "monetary_total > 100", webhook=f"{base}/broken")
        create(worker, "repeat", "purchase_count >= 2", webhook=f"{base}/gone")
        status, answer = worker.request(
            "POST",
            "/audiences",
            json.dumps({"name": "x", "condition": "purchase_count > 1", "webhook": "ftp://x"}).encode(),
        )
        assert status == 400 and answer["error"].startswith("webhook: String should match pattern"), answer
        streamed(worker, broker, stream(0, 30, seed=4))
        with AudienceSubscriber(broker, group_id=None, from_beginning=True, idle_timeout_s=5) as subscriber:
            published = [e for e in subscriber]
        buyers = {e.event_id: e for e in published if e.audience == "buyers"}
        big = {e.event_id for e in published if e.audience == "big"}
        repeat = {e.event_id for e in published if e.audience == "repeat"}
        assert buyers and big and repeat
        until(lambda: set(Receiver.bodies) == set(buyers), "every buyers entry delivered", 60)
        # A record some other producer wrote there: a dead letter, and the deliveries go on.
        stranger = KafkaProducer(bootstrap_servers=broker)
        stranger.send(AUDIENCE_UPDATES, key=b"x", value=b'{"not": "an entry"}', partition=0).get(timeout=30)
        stranger.close()
        assert {Receiver.tries["/flaky", key] for key in buyers} == {3}  # two 503s, then taken
        assert all(AudienceEvent.model_validate_json(Receiver.bodies[key]) == e for key, e in buyers.items())

        def letters() -> list[dict[str, Any]]:
            query = "SELECT reason, payload FROM dead_letters WHERE source = 'webhook' AND payload != '{\"not\": \"an entry\"}'"
            return worker.sql(query)

        stray = "SELECT reason FROM dead_letters WHERE source = 'webhook' AND payload = '{\"not\": \"an entry\"}'"
        until(lambda: worker.sql(stray), "a dead letter for the stranger's record", 60)
        assert worker.sql(stray)[0]["reason"].startswith("not an audience event: ")

        until(lambda: len(letters()) == len(big) + len(repeat), "a dead letter for every undelivered entry", 60)
        for letter in letters():
            event = AudienceEvent.model_validate_json(letter["payload"])
            if event.audience == "big":  # a server error: tried again, then given up
                assert letter["reason"] == f"{base}/broken did not take {event.event_id} after 3 tries: HTTP 500"
            else:  # refused: not tried again
                assert letter["reason"] == f"{base}/gone refused {event.event_id}: HTTP 404"
        assert {Receiver.tries["/broken", key] for key in big} == {3}
        assert {Receiver.tries["/gone", key] for key in repeat} == {1}
        metrics = worker.metrics()
        assert metrics["crm360_webhook_deliveries_total"] == len(buyers)
        assert metrics["crm360_webhook_failures_total"] == len(big) + len(repeat) + 1
    finally:
        server.shutdown()


def test_churn_alerts_go_to_their_webhook_by_the_same_machinery(start_worker: Any, broker: str) -> None:
    """With ``CRM360_ALERT_WEBHOOK`` every alert on ``churn-alerts`` is POSTed there with its
    ``alert_id`` as idempotency key and the same retries; a record there that is no alert is a
    dead letter, and the deliveries go on."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        worker = start_worker(
            CRM360_ALERT_WEBHOOK=f"{base}/flaky", CRM360_WEBHOOK_TRIES="3", CRM360_WEBHOOK_BACKOFF_S="0.05"
        )
        alerts = [
            ChurnAlert(
                alert_id=f"c{n}:86400",
                customer_id=f"c{n}",
                churn_probability=0.8,
                previous_probability=0.4,
                threshold=0.6,
                drivers={"log_recency": 0.9},
                segment=2,
                segment_description="low spend · lapsed",
                value_tier="gold",
                monetary_total=120.0,
                last_purchase_at=datetime(2025, 10, 1, tzinfo=UTC),
                model_version=3,
                as_of=datetime(2026, 1, 1, tzinfo=UTC),
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
            )
            for n in range(3)
        ]
        producer = KafkaProducer(bootstrap_servers=broker)
        for alert in alerts[:2]:
            producer.send(CHURN_ALERTS, key=alert.customer_id.encode(), value=alert.model_dump_json().encode())
        producer.send(CHURN_ALERTS, key=b"x", value=b'{"not": "an alert"}', partition=0)
        producer.send(CHURN_ALERTS, key=b"c2", value=alerts[2].model_dump_json().encode())
        producer.flush()
        producer.close()
        until(lambda: {a.alert_id for a in alerts} <= set(Receiver.bodies), "every alert delivered", 60)
        assert all(ChurnAlert.model_validate_json(Receiver.bodies[a.alert_id]) == a for a in alerts)
        assert {Receiver.tries["/flaky", a.alert_id] for a in alerts} == {3}  # two 503s, then taken
        stray = "SELECT topic, reason FROM dead_letters WHERE source = 'webhook'"
        until(lambda: worker.sql(stray), "a dead letter for the record that is no alert", 60)
        (letter,) = worker.sql(stray)
        assert letter["topic"] == CHURN_ALERTS and letter["reason"].startswith("not a churn alert: ")
        assert worker.metrics()["crm360_webhook_deliveries_total"] == 3
    finally:
        server.shutdown()


def test_minimum_stay_and_one_entry_per_change_across_a_killed_worker(start_worker: Any, broker: str) -> None:
    """A member stays for the audience's minimum stay of event time however soon the condition
    fails; a worker killed mid-stream and started again decides each change once (a repeat on
    the topic carries the same event_id)."""
    worker = start_worker(CRM360_COMMIT_INTERVAL_S="60")  # nothing committed: the restart reads it all again
    create(worker, "recent", "recency_days <= 10", min_stay_days=30)

    def visit(n: int, day: float) -> dict[str, Any]:
        return {
            "type": "visit",
            "event_id": f"v{n}",
            "customer_id": "m1",
            "ts": T0 + day * DAY,
            "channel": "web",
            "session_id": f"s{n}",
        }

    buy = {
        "type": "purchase",
        "event_id": "b1",
        "customer_id": "m1",
        "ts": T0,
        "channel": "web",
        "order_id": "b1",
        "amount": 5.0,
        "currency": "EUR",
    }
    streamed(worker, broker, [buy])
    until(lambda: members(worker, "recent") == {"m1"}, "m1 in", 60)
    streamed(worker, broker, [visit(1, 20)])  # recency 20 days: the condition fails, the stay holds
    assert worker.sql("SELECT recency_days FROM customer_features FINAL")[0]["recency_days"] == 20
    assert members(worker, "recent") == {"m1"}
    streamed(worker, broker, [visit(2, 31)])  # 31 days after entering: out
    until(lambda: not members(worker, "recent"), "m1 out", 60)

    worker.stop(signal.SIGKILL)
    worker = start_worker(CRM360_COMMIT_INTERVAL_S="60")
    streamed(worker, broker, [buy | {"event_id": "b2", "order_id": "b2", "ts": T0 + 40 * DAY}])
    until(lambda: members(worker, "recent") == {"m1"}, "m1 in again", 60)
    rows = worker.sql("SELECT event_id, change FROM audience_events FINAL ORDER BY as_of")
    assert [r["change"] for r in rows] == ["entered", "exited", "entered"]
    with AudienceSubscriber(broker, group_id=None, from_beginning=True, idle_timeout_s=5) as subscriber:
        published = [e.event_id for e in subscriber]
    assert set(published) == {r["event_id"] for r in rows}  # repeats, if any, are the same events


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
def test_memberships_come_back_from_their_changelog(start_worker: Any, broker: str, tmp_path: Path, store: str) -> None:
    """Memberships are a table of their own: a worker started on another machine (an empty data
    directory) restores them from their changelog with the customers' states, so a member's next
    row enters nobody again and a newcomer enters once."""

    worker = start_worker(CRM360_STATE_STORE=store)
    create(worker, "spenders", "monetary_total > 50")
    streamed(worker, broker, [purchase("m1", 1, 60.0), purchase("m2", 2, 10.0)])
    until(lambda: members(worker, "spenders") == {"m1"}, "m1 in", 60)
    worker.stop()  # a clean stop: states, memberships and offsets committed

    moved = start_worker(CRM360_STATE_STORE=store, CRM360_DATA_DIR=str(tmp_path / "elsewhere"))
    streamed(moved, broker, [purchase("m1", 3, 5.0), purchase("m2", 4, 100.0)])
    # Its ClickHouse is new too: only changes reach it (m1's row was written by the first one).
    until(lambda: members(moved, "spenders") == {"m2"} or None, "m2 in", 60)
    with AudienceSubscriber(broker, group_id=None, from_beginning=True, idle_timeout_s=5) as subscriber:
        changes = Counter((e.customer_id, e.change) for e in subscriber)
    assert changes == {("m1", "entered"): 1, ("m2", "entered"): 1}
