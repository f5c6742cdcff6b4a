"""ClickHouse on chDB: migrations, idempotent writes, the read-only path, and CLI errors."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.config import FeatureConfig
from processors.features import CustomerState, apply, profile, row_version
from schemas.events import Purchase, parse_event
from sinks.clickhouse import ClickHouseSink, Insert, StagedInsert, connect, encode, migrate, stage
from sinks.erasure import RowErasure
from sinks.query import connect_readonly, run_readonly
from sinks.tables import DATABASE, RAW_EVENT_TABLES, TABLES
from streams.worker.processes import erasures_in, rows_request, staged_inserts

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("release_clickhouse")]  # embedded ClickHouse

ROOT = Path(__file__).resolve().parents[1]


def test_migrations_idempotent_writes_and_reads(tmp_path: Path) -> None:
    client = connect(f"chdb://{tmp_path / 'ch'}")
    assert migrate(client) == [1, 2, 5, 6, 7, 8, 9, 10, 11, 12]
    assert migrate(client) == []
    sink = ClickHouseSink(client)
    event = parse_event(
        {
            "type": "purchase",
            "event_id": "e1",
            "customer_id": "c1",
            "ts": 1_700_000_000,
            "channel": "pos",
            "order_id": "o1",
            "amount": 12.5,
            "currency": "EUR",
            "items": [{"sku": "a", "category": "books", "quantity": 2, "unit_price": 6.25}],
        }
    )
    state = CustomerState("c1")
    apply(state, event, FeatureConfig())
    old = profile(state, 1_700_000_000, FeatureConfig())
    new = profile(state, 1_700_086_400, FeatureConfig())
    for first, second in ((new, old), (old, new)):  # the same batch written twice (a redelivery) changes nothing
        sink.add_events([event])
        sink.add_features(first, row_version(state, first["as_of"]), 2)
        sink.add_features(second, row_version(state, second["as_of"]), 3)
        (pending,) = sink.pending["customer_features"]  # one row per customer until written: the newest
        assert pending[-3] == row_version(state, new["as_of"])
        assert sink.flush() == 2
    reader = connect_readonly(f"chdb://{tmp_path / 'ch'}")
    rows = run_readonly(reader, "SELECT count() AS n, sum(amount), any(item_categories) FROM purchases FINAL").rows
    assert rows == [[1, 12.5, ["books"]]]
    features = run_readonly(reader, "SELECT recency_days, as_of FROM customer_features FINAL").rows
    assert features == [[1.0, "2023-11-15T22:13:20"]]  # the row for the later watermark wins


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "CRM360_WEB_PORT": "1", "CRM360_DATA_DIR": str(tmp_path / "none")}
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "sql", "SELECT 1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "crm360 up" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker"],
        cwd=ROOT,
        env=env | {"CRM360_KAFKA_BOOTSTRAP": "127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "no Kafka broker answers" in done.stderr and "Traceback" not in done.stderr


EVERY_TYPE: list[dict[str, Any]] = [
    {
        "type": "purchase",
        "event_id": "p1",
        "customer_id": "c1",
        "ts": "2024-05-01T12:00:00.123456+02:00",
        "channel": "pos",
        "order_id": "o1",
        "amount": 30.0,
        "currency": "EUR",
        "kind": "refund",
        "store_id": "s9",
        "region": "north",
        "discount": 1.5,
        "items": [
            {"sku": "a", "category": "books", "quantity": 2, "unit_price": 6.25},
            {"sku": "b", "quantity": 1, "unit_price": 17.5},
        ],
    },
    {
        "type": "purchase",
        "event_id": "p2",
        "customer_id": "c2",
        "ts": 0,
        "channel": "web",
        "order_id": "o2",
        "amount": 0.0,
        "currency": "USD",
    },
    {
        "type": "visit",
        "event_id": "v1",
        "customer_id": "c1",
        "ts": 1_700_000_000.5,
        "channel": "web",
        "session_id": "s1",
        "page": '/x?q="quoted"\n',
        "duration_s": 12.5,
        "referrer": "https://e.com",
        "utm_source": "news",
        "utm_campaign": "spring",
        "device": "mobile",
    },
    {
        "type": "social_interaction",
        "event_id": "si1",
        "customer_id": "c1",
        "ts": 1_700_000_001,
        "channel": "social",
        "platform": "instagram",
        "action": "review",
        "content_id": "post-1",
        "text": "très bien ✓",
        "rating": 4.5,
    },
    {
        "type": "customer_profile",
        "event_id": "cp1",
        "customer_id": "c1",
        "ts": 1_700_000_002,
        "channel": "app",
        "city": "Lyon",
        "signup_at": "2020-02-29T23:59:59Z",
    },
    {
        "type": "visit",
        "event_id": "v2",
        "ts": 1_700_000_003,
        "channel": "web",
        "session_id": "s2",
        "identifiers": {"anonymous_id": "a9f3", "email": "0" * 64},
    },
    {
        "type": "identify",
        "event_id": "login-1",
        "customer_id": "c1",
        "ts": 1_700_000_004,
        "channel": "app",
        "identifiers": {"anonymous_id": "a9f3"},
    },
]


@pytest.mark.parametrize("staged", [False, True], ids=["sent", "staged"])
def test_raw_events_land_column_for_column(tmp_path: Path, staged: bool) -> None:
    """Each event's fields, read back from its raw table: times to the millisecond in UTC,
    items flattened, absent optional fields as NULL (maps empty), ingested_at stamped by ClickHouse; the
    same whether the driver sends the rows or ClickHouse reads them from a staged file."""
    client = connect(f"chdb://{tmp_path / 'ch'}")
    migrate(client)
    sink = ClickHouseSink(client, tmp_path / "staging" if staged else None)
    events = [parse_event(raw) for raw in EVERY_TYPE]
    sink.add_events(events[:3])  # a message of several types
    sink.add_events(events[3:])
    assert sink.pending_rows == len(events) and sink.flush() == len(events)
    for event in events:
        table = RAW_EVENT_TABLES[type(event)]
        names = [n for n in TABLES[table].column_names if n != "ingested_at"]
        result = client.query(
            f"SELECT {', '.join(names)}, toUnixTimestamp64Milli(ts), "
            f"dateDiff('second', ingested_at, now64(3)) FROM {DATABASE}.{table} "
            f"WHERE event_id = '{event.event_id}'"
        )
        ((*stored, ts_ms, age_s),) = result.result_rows
        row = dict(zip(names, stored))
        assert ts_ms == int(event.ts.timestamp() * 1000) and 0 <= age_s < 60
        expected = {name: getattr(event, name) for name in names if not name.startswith("item_") and name != "ts"}
        if isinstance(event, Purchase):
            expected |= {
                "item_skus": [i.sku for i in event.items],
                "item_categories": [i.category or "" for i in event.items],
                "item_quantities": [i.quantity for i in event.items],
                "item_unit_prices": [i.unit_price for i in event.items],
            }
        for name, value in expected.items():
            got = row[name]
            if value is None and dict(TABLES[table].columns)[name].startswith("Map("):
                value = {}  # ClickHouse has no NULL map: an absent one is empty
            if isinstance(value, datetime):
                value, got = int(value.timestamp() * 1000), int(got.replace(tzinfo=UTC).timestamp() * 1000)
            assert got == value, (table, name)


def test_events_retracted_before_the_write_are_not_written(tmp_path: Path) -> None:
    """A batch takes back the raw rows of events it left out (their customer's row failed);
    rows queued before the batch, and the others of its messages, stay."""
    client = connect(f"chdb://{tmp_path / 'ch'}")
    migrate(client)
    sink = ClickHouseSink(client, tmp_path / "staging")
    events = [parse_event(raw) for raw in EVERY_TYPE]
    sink.add_events(events[:1])  # before the batch
    since = sink.queued_events()
    sink.add_events(events)
    sink.add_events(events[1:2])
    sink.retract_events(since, [events[0], events[1]])
    assert sink.flush() == len(events) - 1
    counts = {
        table: client.query(f"SELECT count() FROM {DATABASE}.{table}").result_rows[0][0]
        for table in {RAW_EVENT_TABLES[type(e)] for e in events}
    }
    expected: dict[str, int] = {}
    for event in [events[0], *events[2:]]:
        expected[RAW_EVENT_TABLES[type(event)]] = expected.get(RAW_EVENT_TABLES[type(event)], 0) + 1
    assert counts == {table: expected.get(table, 0) for table in counts}


class FailingOnce:
    """A client whose first insert into ``table`` fails (ClickHouse away for a moment)."""

    def __init__(self, client: Any, table: str) -> None:
        self.client, self.table, self.failed = client, table, False

    def raw_insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
        if table.endswith(f".{self.table}") and not self.failed:
            self.failed = True
            raise ConnectionError("ClickHouse went away")
        return self.client.raw_insert(table, *args, **kwargs)


def test_a_failed_write_is_retried_without_losing_or_repeating_rows(tmp_path: Path) -> None:
    client = connect(f"chdb://{tmp_path / 'ch'}")
    migrate(client)
    sink = ClickHouseSink(FailingOnce(client, "visits"))  # type: ignore[arg-type]
    events = [parse_event(raw) for raw in EVERY_TYPE]
    for event in events:
        sink.add_events([event])
    batch = sink.take()
    with pytest.raises(ConnectionError):
        sink.write(batch)
    sink.add_events([parse_event(EVERY_TYPE[1] | {"event_id": "p3"})])  # arrives meanwhile: waits for the next write
    assert [name for name, rows in batch.items() if rows] == [
        "visits",
        "social_interactions",
        "customer_profiles",
        "identify_events",
    ]
    assert sink.write(batch) == 5 and not any(batch.values())
    assert sink.pending_rows == 1 and sink.flush() == 1
    counts = client.query(
        f"SELECT (SELECT count() FROM {DATABASE}.purchases), (SELECT count() FROM {DATABASE}.visits), "
        f"(SELECT count() FROM {DATABASE}.social_interactions), "
        f"(SELECT count() FROM {DATABASE}.customer_profiles), (SELECT count() FROM {DATABASE}.identify_events)"
    ).result_rows
    assert counts == [(3, 2, 1, 1, 1)]


class ToMainProcess:
    """A helper process's link to the main one, without the HTTP: its inserts staged in its
    directory, named in what ``POST /internal/rows`` carries, inserted by the main process's sink."""

    def __init__(self, main: ClickHouseSink, staging: Path) -> None:
        self.main, self.staging, self.requests = main, staging, 0
        self.directory = staging / "40123"
        self.directory.mkdir(parents=True)

    def forward(self, inserts: list[Insert], erasures: list[RowErasure]) -> None:
        self.requests += 1
        staged = [stage(insert, self.directory) for insert in inserts]
        body = rows_request(self.directory, staged, erasures)
        self.main.insert(staged_inserts(body, self.staging))
        self.main.erase(erasures_in(body))


def test_a_helper_process_write_reaches_clickhouse_in_one_request(tmp_path: Path) -> None:
    client = connect(f"chdb://{tmp_path / 'ch'}")
    migrate(client)
    staging = tmp_path / "staging"
    main = ClickHouseSink(client, staging / "main")
    link = ToMainProcess(main, staging)
    helper = ClickHouseSink(link)
    for raw in EVERY_TYPE:
        helper.add_events([parse_event(raw)])
        main.add_events([parse_event(raw | {"event_id": "main-" + raw["event_id"]})])
    helper.add_membership_change("rfm_segment", "Lost", 2)
    assert helper.flush() == len(EVERY_TYPE) + 1 and link.requests == 1 and helper.pending_rows == 0
    assert main.flush() == len(EVERY_TYPE)
    for model, table in RAW_EVENT_TABLES.items():
        sent = sorted(raw["event_id"] for raw in EVERY_TYPE if isinstance(parse_event(raw), model))
        written = client.query(f"SELECT event_id FROM {DATABASE}.{table} ORDER BY event_id").result_rows
        assert [event_id for (event_id,) in written] == sorted(sent + ["main-" + event_id for event_id in sent])
    assert client.query(f"SELECT name, customers FROM {DATABASE}.segment_membership").result_rows == [("Lost", 2)]
    # Each table's file is rewritten in place, write after write.
    assert sorted(path.name for path in (staging / "40123").iterdir()) == sorted(
        [*RAW_EVENT_TABLES.values(), "segment_membership"]
    )

    # What the main process refuses, it refuses whole: an insert it would not make itself, or a
    # file that is not as the request says.
    good = stage(encode("segment_membership", [["rfm_segment", "Lost", 1]]), link.directory)
    bad = encode("visits", [])
    for wrong in (
        StagedInsert("schema_migrations", bad.columns, bad.fmt, 0, good.path, good.size),
        StagedInsert("visits", bad.columns[:-1], bad.fmt, 0, good.path, good.size),
        StagedInsert("visits", bad.columns, "CSV", 0, good.path, good.size),
    ):
        with pytest.raises(ValueError, match="not the table, columns and format"):
            main.insert([good, wrong])
    body = rows_request(link.directory, [good], [])
    with pytest.raises(ValueError, match="not a body of staged inserts"):
        staged_inserts(body[:-1], staging)
    for wrong_body, reason in (
        (body.replace(b'"40123"', b'"main"'), "not a helper's staging directory"),
        (body.replace(b'"table":"segment_membership"', b'"table":"../main/visits"'), "not a table name"),
        (body.replace(b'"bytes":', b'"bytes":1'), "holds"),
        (body.replace(b'"40123"', b'"40124"'), "no staged insert"),
    ):
        with pytest.raises(ValueError, match=reason):
            staged_inserts(wrong_body, staging)
    assert client.query(f"SELECT sum(customers) FROM {DATABASE}.segment_membership").result_rows == [(2,)]


def purchase(n: int, amount: float) -> Purchase:
    event = parse_event(
        {
            "type": "purchase",
            "event_id": f"p{n}",
            "customer_id": f"c{n % 3}",
            "ts": 1_700_000_000 + n,
            "channel": "pos",
            "order_id": f"o{n}",
            "amount": amount,
            "currency": "EUR",
        }
    )
    assert isinstance(event, Purchase)
    return event


@pytest.mark.parametrize("path", ["sent", "staged", "helper"])
def test_rows_clickhouse_refuses_are_dead_lettered_and_the_rest_written_once(tmp_path: Path, path: str) -> None:
    """Rows the events' bounds allow but a table refuses (here an operator's constraints):
    each is dead-lettered with the table, ClickHouse's error and the row; every other row of
    the write goes in exactly once, whether this process or the main one inserts it."""
    client = connect(f"chdb://{tmp_path / 'ch'}")
    migrate(client)
    client.command(f"ALTER TABLE {DATABASE}.purchases ADD CONSTRAINT amount_cap CHECK amount < 1000")
    client.command(f"ALTER TABLE {DATABASE}.segment_membership ADD CONSTRAINT known CHECK name != 'poison'")
    main = ClickHouseSink(client, None if path == "sent" else tmp_path / "staging" / "main")
    sink = ClickHouseSink(ToMainProcess(main, tmp_path / "staging")) if path == "helper" else main
    for n in range(40):
        sink.add_events([purchase(n, 5000.0 if n in (3, 17, 18) else 10.0)])
    for name in ("Lost", "poison", "Champions", "Lost"):
        sink.add_membership_change("rfm_segment", name, 1)
    written = sink.flush()
    assert path == "helper" or written == 37 + 3 + 4  # purchases, memberships, dead letters
    refused = main.take_refused()
    assert sorted(
        (letter.topic, orjson.loads(letter.payload)["event_id" if "purchases" in letter.topic else "name"])
        for letter in (row.dead_letter(0.0) for row in refused)
    ) == [
        ("clickhouse:purchases", "p17"),
        ("clickhouse:purchases", "p18"),
        ("clickhouse:purchases", "p3"),
        ("clickhouse:segment_membership", "poison"),
    ]
    assert all("VIOLATED_CONSTRAINT" in row.rejected.reason for row in refused)
    counts = client.query(f"SELECT count(), uniqExact(event_id), sum(amount) FROM {DATABASE}.purchases").result_rows
    assert counts == [(37, 37, 370.0)]  # no FINAL: each written once
    assert client.query(
        f"SELECT name, sum(customers) FROM {DATABASE}.segment_membership GROUP BY name ORDER BY name"
    ).result_rows == [("Champions", 1), ("Lost", 2)]
    letters = client.query(
        f"SELECT source, topic, partition, offset, reason, payload FROM {DATABASE}.dead_letters ORDER BY topic, payload"
    ).result_rows
    assert [(source, topic, partition, offset) for source, topic, partition, offset, _, _ in letters] == [
        ("clickhouse", "clickhouse:purchases", -1, -1)
    ] * 3 + [("clickhouse", "clickhouse:segment_membership", -1, -1)]
    assert letters[0][4].startswith("ClickHouse refused this row of purchases: Code: 469.")
    assert orjson.loads(letters[0][5])["amount"] == 5000.0
    assert orjson.loads(letters[3][5]) == {"dimension": "rfm_segment", "name": "poison", "customers": 1}
    assert main.pending_rows == sink.pending_rows == 0


def test_an_insert_clickhouse_refuses_whole_is_an_outage_not_bad_rows(tmp_path: Path) -> None:
    """A table ClickHouse cannot take rows into now (detached) refuses every insert, even of
    one row, with an error that does not blame the data: the write fails, nothing is refused,
    and once the table is back the same batch is written."""
    client = connect(f"chdb://{tmp_path / 'ch'}")
    migrate(client)
    sink = ClickHouseSink(client, tmp_path / "staging")
    for n in range(10):
        sink.add_events([purchase(n, 10.0)])
    sink.add_membership_change("rfm_segment", "Lost", 1)
    client.command(f"DETACH TABLE {DATABASE}.purchases")
    batch = sink.take()
    with pytest.raises(Exception, match="UNKNOWN_TABLE"):
        sink.write(batch)
    assert sink.take_refused() == [] and sum(chunk.rows for chunk in batch["purchases"]) == 10
    assert not batch["segment_membership"]  # written before the failure: not again
    client.command(f"ATTACH TABLE {DATABASE}.purchases")
    assert sink.write(batch) == 10 and sink.take_refused() == []
    assert client.query(f"SELECT count() FROM {DATABASE}.purchases").result_rows == [(10,)]
    assert client.query(f"SELECT count() FROM {DATABASE}.dead_letters").result_rows == [(0,)]


def test_migration_8_keeps_the_customers_of_an_existing_database_and_deletes_merged_profiles(tmp_path: Path) -> None:
    """A database of the version before: ``customer_features`` without ``is_deleted`` is rebuilt
    with it, every row kept; a deleted row then takes its customer out of ``FINAL``."""
    from sinks.clickhouse import _features_with_is_deleted

    client = connect(f"chdb://{tmp_path / 'ch'}")
    migrate(client)
    client.command(f"DROP TABLE {DATABASE}.customer_features")
    old = TABLES["customer_features"].ddl().replace(", is_deleted)", ")").replace(",\n  `is_deleted` UInt8", "")
    client.command(old)
    client.command(f"DELETE FROM {DATABASE}.schema_migrations WHERE version = 8")
    client.command(
        f"INSERT INTO {DATABASE}.customer_features (customer_id, as_of, version) VALUES ('c1', 0, 1), ('c2', 0, 1)"
    )
    assert "is_deleted" not in client.query(f"SELECT * FROM {DATABASE}.customer_features").column_names
    assert migrate(client) == [8]
    _features_with_is_deleted(client)  # a run again (stopped after the exchange) changes nothing
    count = f"SELECT count() FROM {DATABASE}.customer_features FINAL"
    assert client.query(count).result_rows == [(2,)]
    state = CustomerState("c2")
    apply(state, parse_event(EVERY_TYPE[0] | {"customer_id": "c2"}), FeatureConfig())
    sink = ClickHouseSink(client)
    sink.add_features(profile(state, 1_700_000_000, FeatureConfig()), (1 << 64) - 1, 2, deleted=True)  # merged
    sink.flush()
    assert client.query(f"SELECT customer_id FROM {DATABASE}.customer_features FINAL").result_rows == [("c1",)]
