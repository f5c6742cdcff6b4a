"""The ClickHouse connection, versioned migrations and the batched, idempotent writer.

One code path serves embedded chDB (``chdb:///abs/dir``) and a ClickHouse server
(``http://user:pass@host:8123/db``). Rows are collected in memory and inserted per table
at a checkpoint (:meth:`ClickHouseSink.flush`), which the worker calls before offsets are
committed. They travel as JSON, which ClickHouse parses natively: encoding them for the
driver's Native format in Python cost more than all the feature work. Re-inserting a row
is harmless: raw events are deduplicated by ``event_id`` (ReplacingMergeTree) and
``customer_features`` keeps the highest ``version``.

One row never fails its write: an insert ClickHouse refuses is split in halves, down to single
rows, so the good rows go in and each row ClickHouse refuses alone is set aside with its
error (:class:`Refused`) and dead-lettered. A failure to reach ClickHouse, or an insert of
which nothing goes in, is an outage instead: the write raises and is retried whole.
"""

from __future__ import annotations

import operator
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import clickhouse_connect
import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import Error as DriverError

from schemas.envelope import Rejected
from schemas.events import BaseEvent, Purchase
from schemas.privacy import PrivacyRecord
from schemas.rows import FEATURE_COLUMNS, FEATURE_TIME_COLUMNS, DeadLetter
from sinks.erasure import RowErasure, erase_rows
from sinks.tables import DATABASE, RAW_EVENT_TABLES, TABLES, TIME
from sinks.views import VIEWS


def _features_with_is_deleted(client: Client) -> None:
    """``customer_features`` rebuilt as ``ReplacingMergeTree(version, is_deleted)``, its rows
    copied, unless it is already (a fresh database, or a run that stopped after the exchange)."""
    table = f"{DATABASE}.customer_features"
    columns = [
        row[0]
        for row in client.query(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = 'customer_features' "
            "ORDER BY position",
            parameters={"db": DATABASE},
        ).result_rows
    ]
    if "is_deleted" in columns:
        return
    rebuilt = f"{table}_8_{uuid.uuid4().hex[:8]}"  # its own name: a concurrent run builds its own
    kept = ", ".join(f"`{name}`" for name in columns)
    client.command(TABLES["customer_features"].ddl().replace(f"{table} ", f"{rebuilt} ", 1))
    client.command(f"INSERT INTO {rebuilt} ({kept}) SELECT {kept} FROM {table}")
    client.command(f"EXCHANGE TABLES {table} AND {rebuilt}")
    client.command(f"DROP TABLE {rebuilt}")


#: Each migration: (version, description, steps: statements, or functions of the client).
#: Append only; never edit a shipped one.
MIGRATIONS: list[tuple[int, str, Sequence[str | Callable[[Client], None]]]] = [
    (
        1,
        "raw events, customer features, dead letters",
        [TABLES[name].ddl() for name in (*RAW_EVENT_TABLES.values(), "customer_features", "dead_letters")],
    ),
    (
        2,
        "models: churn alerts, model metrics, segments, segment membership, CLV and model version",
        [TABLES[name].ddl() for name in ("churn_alerts", "model_metrics", "segments", "segment_membership")]
        + [
            f"ALTER TABLE {DATABASE}.customer_features ADD COLUMN IF NOT EXISTS `{name}` {kind}"
            for name, kind in TABLES["customer_features"].columns
            if name in ("clv_estimate", "model_version")
        ],
    ),
    (5, "analyst views", [v.ddl() for v in VIEWS.values() if v.migration == 5]),
    (
        6,
        "raw events written as JSON: a purchase's items flattened and ingested_at stamped by ClickHouse",
        [
            (
                f"ALTER TABLE {DATABASE}.purchases ADD COLUMN IF NOT EXISTS items "
                "Array(Tuple(sku String, category Nullable(String), quantity Int64, unit_price Float64)) EPHEMERAL"
            ),
            f"ALTER TABLE {DATABASE}.purchases MODIFY COLUMN item_skus Array(String) DEFAULT items.sku",
            (
                f"ALTER TABLE {DATABASE}.purchases MODIFY COLUMN item_categories Array(String) "
                "DEFAULT arrayMap(c -> ifNull(c, ''), items.category)"
            ),
            f"ALTER TABLE {DATABASE}.purchases MODIFY COLUMN item_quantities Array(Int64) DEFAULT items.quantity",
            f"ALTER TABLE {DATABASE}.purchases MODIFY COLUMN item_unit_prices Array(Float64) DEFAULT items.unit_price",
        ]
        + [
            f"ALTER TABLE {DATABASE}.{table} MODIFY COLUMN ingested_at {TIME} DEFAULT now64(3)"
            for table in RAW_EVENT_TABLES.values()
        ],
    ),
    (
        7,
        "identifiers: a raw event's other identifiers, identify events",
        [
            TABLES["identify_events"].ddl(),
            f"ALTER TABLE {DATABASE}.identify_events MODIFY COLUMN ingested_at {TIME} DEFAULT now64(3)",
        ]
        + [
            f"ALTER TABLE {DATABASE}.{table} ADD COLUMN IF NOT EXISTS identifiers Map(String, String) AFTER customer_id"
            for table in RAW_EVENT_TABLES.values()
        ],
    ),
    (
        8,
        "identity resolution: identities, identity_merges, merged profiles deleted from customer_features",
        [*(TABLES[name].ddl() for name in ("identities", "identity_merges")), _features_with_is_deleted],
    ),
    (
        9,
        "audiences: audience_membership, audience_events, their views; consents of profile events",
        [
            *(TABLES[n].ddl() for n in ("audience_membership", "audience_events")),
            f"ALTER TABLE {DATABASE}.customer_profiles ADD COLUMN IF NOT EXISTS consents Map(String, Bool)",
            *(v.ddl() for v in VIEWS.values() if v.migration == 9),
        ],
    ),
    (10, "privacy: privacy_log", [TABLES["privacy_log"].ddl()]),
    (
        11,
        "alert outcomes: churn alerts' horizon and control group, their views",
        [
            *(
                f"ALTER TABLE {DATABASE}.churn_alerts ADD COLUMN IF NOT EXISTS `{name}` {kind}"
                for name, kind in TABLES["churn_alerts"].columns
                if name in ("horizon_days", "control")
            ),
            *(v.ddl() for v in VIEWS.values() if v.migration == 11),
        ],
    ),
    (
        12,
        "customer value model: the 80% interval of clv_estimate",
        [
            f"ALTER TABLE {DATABASE}.customer_features ADD COLUMN IF NOT EXISTS `{name}` {kind} AFTER clv_estimate"
            for name, kind in reversed(TABLES["customer_features"].columns)
            if name in ("clv_low", "clv_high")
        ],
    ),
]


def connect(dsn: str, database: str | None = None, settings: dict[str, Any] | None = None) -> Client:
    """Open a client; ``chdb://`` DSNs get their data directory created first. ``settings``
    are the session's, set once in order."""
    if dsn.startswith("chdb://") and dsn != "chdb://memory":
        Path(dsn.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
    if database is None:
        return clickhouse_connect.get_client(dsn=dsn, settings=settings)
    return clickhouse_connect.get_client(dsn=dsn, database=database, settings=settings)


def migrate(client: Client) -> list[int]:
    """Apply the migrations not yet applied; returns the versions applied now."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {DATABASE}.schema_migrations "
        "(version UInt32, description String, applied_at DateTime64(3, 'UTC')) "
        "ENGINE = MergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query(f"SELECT version FROM {DATABASE}.schema_migrations").result_rows}
    applied = []
    for version, description, statements in MIGRATIONS:
        if version in done:
            continue
        for step in statements:
            if callable(step):
                step(client)
            else:
                client.command(step)
        client.insert(
            f"{DATABASE}.schema_migrations",
            [[version, description, int(time.time() * 1000)]],
            column_names=["version", "description", "applied_at"],
        )
        applied.append(version)
    return applied


def to_seconds(value: float | datetime | None) -> float | None:
    """Epoch seconds or a datetime as epoch seconds rounded to the millisecond (DateTime64(3)).

    A float that is a whole number of milliseconds prints as exactly that decimal in JSON,
    which ClickHouse reads back exactly:

    >>> to_seconds(1_700_000_000.1239), to_seconds(None)
    (1700000000.124, None)
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.timestamp()
    return round(value * 1000) / 1000


#: Raw events are written as their own JSON: their validated fields as they are (orjson,
#: three times faster than pydantic's serializer here); ClickHouse maps fields to columns,
#: flattens a purchase's ``items`` (migration 6) and stamps ``ingested_at``.
_EVENT_COLUMNS = {
    table: [n for n in TABLES[table].column_names if not n.startswith("item_") and n != "ingested_at"]
    + (["items"] if model is Purchase else [])
    for model, table in RAW_EVENT_TABLES.items()
}
#: The tables the sink writes, in the order of a write: feature rows first, so that once an
#: event's raw row is visible, its customer's row is too.
ORDER = (
    "customer_features",
    "segment_membership",
    "churn_alerts",
    "audience_membership",
    "audience_events",
    "identity_merges",
    "identities",
    "dead_letters",
    *RAW_EVENT_TABLES.values(),
    "model_metrics",
    "segments",
    "privacy_log",
)
#: The key of a batch's row erasures (:class:`~sinks.erasure.RowErasure`), run after its inserts.
ERASURES = "erasures"
#: How ClickHouse reads our JSON: ISO-8601 event times, and fields without a column (an
#: event's ``type``) skipped.
JSON_SETTINGS = {"date_time_input_format": "best_effort", "input_format_skip_unknown_fields": 1}
_JSON_SETTINGS_CLAUSE = ", ".join(f"{name} = {value!r}" for name, value in JSON_SETTINGS.items())
_feature_values = operator.itemgetter(*FEATURE_COLUMNS)
#: Per table: a row's values in its columns' order (a backfill queues two rows a customer).
_row_values = {name: operator.itemgetter(*table.column_names) for name, table in TABLES.items()}
_FEATURE_TIME_POSITIONS = [i for i, name in enumerate(FEATURE_COLUMNS) if name in FEATURE_TIME_COLUMNS]


#: ClickHouse errors that blame the data of an insert (it cannot be parsed, converted or held,
#: or breaks a constraint): a row refused alone with one of them is refused even when nothing
#: else of its insert goes in. CANNOT_PARSE_TEXT, CANNOT_PARSE_QUOTED_STRING,
#: CANNOT_PARSE_INPUT_ASSERTION_FAILED, ATTEMPT_TO_READ_AFTER_EOF, CANNOT_READ_ALL_DATA,
#: CANNOT_PARSE_DATE, CANNOT_PARSE_DATETIME, ILLEGAL_TYPE_OF_ARGUMENT, TYPE_MISMATCH,
#: ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE, CANNOT_PARSE_NUMBER, INCORRECT_DATA,
#: TOO_LARGE_ARRAY_SIZE, TOO_LARGE_STRING_SIZE, SIZES_OF_ARRAYS_DONT_MATCH,
#: VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE, CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN,
#: FUNCTION_THROW_IF_VALUE_IS_NON_ZERO, DECIMAL_OVERFLOW, VIOLATED_CONSTRAINT, UNKNOWN_ELEMENT_OF_ENUM.
DATA_ERRORS = frozenset(
    {6, 26, 27, 32, 33, 38, 41, 43, 53, 69, 70, 72, 117, 128, 131, 190, 321, 349, 395, 407, 469, 691}
)
#: The ``source`` of the dead letter of a row ClickHouse refused.
REFUSED_SOURCE = "clickhouse"


def refused_by_clickhouse(error: Exception) -> bool:
    """Whether ClickHouse answered ``error`` (it has an error code), rather than could not be reached."""
    return isinstance(error, DriverError) and error.code is not None


@dataclass(frozen=True, slots=True)
class Refused:
    """A row ClickHouse refused alone: its table, and ClickHouse's error with the row as JSON,
    clipped as every dead letter is (:class:`~schemas.envelope.Rejected`)."""

    table: str
    rejected: Rejected

    def dead_letter(self, at: float) -> DeadLetter:
        """Its dead letter, received at ``at`` (epoch seconds)."""
        return DeadLetter.received(
            at, REFUSED_SOURCE, f"clickhouse:{self.table}", -1, -1, self.rejected.reason, self.rejected.payload
        )


@dataclass(frozen=True, slots=True)
class EventRows:
    """Raw events of one table, encoded as they were queued: ``{...},{...}`` (JSONEachRow)."""

    body: bytes
    rows: int


def dead_letter_row(letter: DeadLetter) -> list[Any]:
    """A row of ``dead_letters``."""
    return [
        letter.received_at.timestamp(),
        letter.source,
        letter.topic,
        letter.partition,
        letter.offset,
        letter.reason,
        letter.payload,
    ]


@dataclass(frozen=True, slots=True)
class Insert:
    """One insert: a table's rows encoded as JSON ClickHouse parses itself."""

    table: str
    columns: list[str]
    body: bytes
    fmt: str
    rows: int


def encode(table: str, rows: list[Any]) -> Insert:
    """One insert of ``rows``: raw events as their :class:`EventRows`, one line each, other
    tables as one JSON array of values per row."""
    if table in _EVENT_COLUMNS:
        return Insert(
            table,
            _EVENT_COLUMNS[table],
            b"\n".join(chunk.body for chunk in rows if chunk.rows),
            "JSONEachRow",
            sum(chunk.rows for chunk in rows),
        )
    body = b"\n".join(map(orjson.dumps, rows))
    return Insert(table, TABLES[table].column_names, body, "JSONCompactEachRow", len(rows))


def split_rows(body: bytes) -> list[bytes]:
    """Each row of an insert's body, as JSON.

    Rows are JSON objects or arrays, separated by commas or newlines (orjson never writes a
    raw newline inside a string), so the body is the inside of one JSON array:

    >>> split_rows(b'{"a":1},{"a":"x,y"}\\n{"a":3}'), split_rows(b'[1,"b"]\\n[2,null]')
    ([b'{"a":1}', b'{"a":"x,y"}', b'{"a":3}'], [b'[1,"b"]', b'[2,null]'])
    """
    return [orjson.dumps(row) for row in orjson.loads(b"[" + body.replace(b"\n", b",") + b"]")]


def rows_of(table: str, bodies: list[bytes]) -> list[Any]:
    """A batch's rows of ``table`` (as :meth:`ClickHouseSink.take` gives them) holding the rows
    ``bodies`` (from :func:`split_rows`): :func:`encode` makes them into the same insert."""
    if table in _EVENT_COLUMNS:
        return [EventRows(b"\n".join(bodies), len(bodies))] if bodies else []
    return [orjson.loads(body) for body in bodies]


@dataclass(frozen=True, slots=True)
class StagedInsert:
    """An insert whose body waits in a file that embedded ClickHouse reads itself
    (``INSERT ... FROM INFILE``): the body is not copied through Python again."""

    table: str
    columns: list[str]
    fmt: str
    rows: int
    path: Path
    size: int


def stage(insert: Insert, directory: Path) -> StagedInsert:
    """Write ``insert``'s body to its table's file in ``directory``.

    A table's file is rewritten in place write after write: creating and deleting a file per
    insert can cost more than the write itself (inode allocation on some file systems).
    """
    path = directory / insert.table
    with path.open("wb") as file:
        file.write(insert.body)
    return StagedInsert(insert.table, insert.columns, insert.fmt, insert.rows, path, len(insert.body))


@runtime_checkable
class Forwarder(Protocol):
    """Where a process that does not own the ClickHouse connection sends its inserts, all of
    one write in one call (a worker's helper process, see ``streams.worker.processes``)."""

    def forward(self, inserts: list[Insert], erasures: list[RowErasure]) -> None: ...


class ClickHouseSink:
    """Collects rows per table; :meth:`flush` inserts each table's batch in one call.

    ``client`` is a ClickHouse client, or a :class:`Forwarder` in a process that sends its
    rows to the process owning the connection, which inserts them with :meth:`insert`. With
    embedded ClickHouse, ``staging`` is a directory where inserts wait for ClickHouse to read
    them (see :func:`stage`).
    """

    def __init__(self, client: Client | Forwarder, staging: Path | None = None) -> None:
        self.client = client
        self.staging = staging
        if staging:
            staging.mkdir(parents=True, exist_ok=True)
        self.pending: dict[str, list[Any]] = self._empty()
        self._feature_row_of: dict[str, int] = {}  # customer -> index of their pending feature row
        self.last_flush_seconds = 0.0
        self.rows_written = 0
        #: Rows ClickHouse refused, for the dead-letters topic (see :meth:`take_refused`).
        self.refused: list[Refused] = []

    @staticmethod
    def _empty() -> dict[str, list[Any]]:
        return {name: [] for name in (*ORDER, ERASURES)}

    @property
    def pending_rows(self) -> int:
        return sum(
            sum(chunk.rows for chunk in rows) if name in _EVENT_COLUMNS else len(rows)
            for name, rows in self.pending.items()
            if name != ERASURES
        )

    def add_events(self, events: Iterable[BaseEvent]) -> None:
        """Queue raw events (an input message's), encoded now: keeping the event objects until
        the write made decoding them a third dearer (fresh memory for every write's events)."""
        by_table: dict[str, list[BaseEvent]] = {}
        for event in events:
            by_table.setdefault(RAW_EVENT_TABLES[type(event)], []).append(event)
        for table, group in by_table.items():
            body = orjson.dumps(list(map(vars, group)), default=vars)[1:-1]  # the objects of the array
            self.pending[table].append(EventRows(body, len(group)))

    def queued_events(self) -> dict[str, int]:
        """Where the raw events queued from now on begin, per table (for :meth:`retract_events`)."""
        return {table: len(self.pending[table]) for table in _EVENT_COLUMNS}

    def retract_events(self, since: dict[str, int], events: Iterable[BaseEvent]) -> None:
        """Take ``events`` (each one's rows, by customer and event id) out of those queued since
        ``since``, before any write: a rare repair, so the queued bodies are decoded again."""
        unwanted = {(RAW_EVENT_TABLES[type(e)], e.customer_id, e.event_id) for e in events}
        for table in {table for table, _, _ in unwanted}:
            chunks = self.pending[table]
            for at in range(since[table], len(chunks)):
                kept = [
                    row
                    for row in split_rows(chunks[at].body)
                    if (table, *operator.itemgetter("customer_id", "event_id")(orjson.loads(row))) not in unwanted
                ]
                chunks[at] = EventRows(b",".join(kept), len(kept))

    def add_features(self, row: dict[str, Any], version: int, updated_ms: int, deleted: bool = False) -> None:
        """Queue a customer's feature row; it replaces the customer's row pending since the
        last :meth:`take` (``customer_features`` keeps only the highest version anyway). A
        ``deleted`` row takes the customer out (a profile merged into another)."""
        values = list(_feature_values(row))
        for i in _FEATURE_TIME_POSITIONS:
            values[i] = to_seconds(values[i])
        values += [version, updated_ms / 1000, int(deleted)]
        rows = self.pending["customer_features"]
        at = self._feature_row_of.get(row["customer_id"])
        if at is None:
            self._feature_row_of[row["customer_id"]] = len(rows)
            rows.append(values)
        elif version >= rows[at][-3]:
            rows[at] = values

    def add_membership_change(self, dimension: str, name: str, customers: int) -> None:
        self.pending["segment_membership"].append([dimension, name, customers])

    def add_row(self, table: str, row: dict[str, Any]) -> None:
        """Queue one row of a table written from a pydantic model's fields (times as datetimes)."""
        self.pending[table].append(self._values(table, row))

    @staticmethod
    def _values(table: str, row: dict[str, Any]) -> list[Any]:
        return [to_seconds(value) if isinstance(value, datetime) else value for value in _row_values[table](row)]

    def add_dead_letter(self, letter: DeadLetter) -> None:
        self.pending["dead_letters"].append(dead_letter_row(letter))

    def add_erasure(self, erasure: RowErasure) -> None:
        """Queue an erasure of rows: it runs once every row queued before it is written."""
        self.pending[ERASURES].append(erasure)

    def take(self) -> dict[str, list[Any]]:
        """Everything pending, for :meth:`write`; rows added from now on wait for the next."""
        taken, self.pending = self.pending, self._empty()
        self._feature_row_of = {}
        return taken

    def take_refused(self) -> list[Refused]:
        """The rows ClickHouse refused since the last call (their dead-letter rows are written)."""
        refused, self.refused = self.refused, []
        return refused

    def write(self, batch: dict[str, list[Any]]) -> int:
        """Insert ``batch`` (from :meth:`take`), one insert per table, customer features
        first; returns the number of rows written.

        A row ClickHouse refuses goes to :attr:`refused` and its dead letter joins the batch,
        written last. What is written or refused leaves ``batch``: after a failure, writing
        the same batch again inserts only the rest. Runs in a thread while rows are being added.
        """
        started = time.perf_counter()
        written = 0
        try:
            if isinstance(self.client, Forwarder):
                inserts = [encode(name, rows) for name, rows in batch.items() if rows and name != ERASURES]
                # In one request; the other process deals with refused rows and runs the erasures after.
                self.client.forward(inserts, batch[ERASURES])
                written = sum(insert.rows for insert in inserts)
                batch.update((insert.table, []) for insert in inserts)
                batch[ERASURES] = []
            else:
                # dead_letters again at the end: the dead letters of rows refused after its turn
                for table in (*ORDER, "dead_letters"):
                    if batch[table]:
                        written += self._write_table(batch, table)
                self.erase(batch[ERASURES])
        finally:
            self.last_flush_seconds = time.perf_counter() - started
            self.rows_written += written
        return written

    def _write_table(self, batch: dict[str, list[Any]], table: str) -> int:
        insert = encode(table, batch[table])
        refused: list[Refused] = []
        unwritten: list[bytes] = []
        try:
            self._insert_or_isolate(insert, partial(self._insert, insert), refused, unwritten)
        except Exception:
            if unwritten:  # an outage stopped the isolation: what went in or was refused leaves the batch
                batch[table] = rows_of(table, unwritten)
            raise
        finally:
            if table != "dead_letters":  # a refused dead letter is still on the dead-letters topic
                batch["dead_letters"] += [self._dead_letter_row(row) for row in refused]
        batch[table] = []
        return insert.rows - len(refused)

    def _insert_or_isolate(
        self,
        insert: Insert | StagedInsert,
        attempt: Callable[[], None],
        refused: list[Refused],
        unwritten: list[bytes] | None = None,
    ) -> None:
        """Run ``attempt``, the insert of ``insert``; when ClickHouse refuses it, insert its rows in
        halves down to single rows, adding each row refused alone to ``refused`` (and to
        :attr:`refused`) as it is found.

        A row is refused when ClickHouse refuses it alone, and either blames its data
        (:data:`DATA_ERRORS`) or took other rows of the insert; else nothing of the insert goes
        in, even a single row: an outage, raised, with the rows neither written nor refused in
        ``unwritten``. Both halves are tried before either is split again, so the rows that go
        in show it early, and an outage costs about two inserts per halving. Costs
        O(refused rows × log n) inserts, and nothing unless the insert fails.
        """
        try:
            attempt()
            return
        except Exception as error:
            if not refused_by_clickhouse(error):
                raise
            first = error.with_traceback(None)  # errors kept here must not hold this frame (a cycle)
        bodies = split_rows(insert.body if isinstance(insert, Insert) else insert.path.read_bytes())
        done = [False] * len(bodies)
        went_in = False
        failed = [(0, len(bodies), first)]  # parts refused whole, the next to split last
        try:
            while failed:
                start, end, refusal = failed.pop()
                if end - start == 1:
                    if not went_in and getattr(refusal, "code", None) not in DATA_ERRORS:
                        raise refusal
                    reason = f"ClickHouse refused this row of {insert.table}: " + " ".join(str(refusal).split())
                    row = Refused(insert.table, Rejected(reason, self._row_json(insert, bodies[start])))
                    refused.append(row)
                    self.refused.append(row)
                    done[start] = True
                    continue
                middle = (start + end) // 2
                halves = []
                for low, high in ((start, middle), (middle, end)):
                    try:
                        self._send(
                            Insert(insert.table, insert.columns, b"\n".join(bodies[low:high]), insert.fmt, high - low)
                        )
                    except Exception as half_error:
                        if not refused_by_clickhouse(half_error):
                            raise
                        halves.append((low, high, half_error.with_traceback(None)))
                    else:
                        went_in = True
                        done[low:high] = [True] * (high - low)
                failed.extend(reversed(halves))
        except Exception:
            if unwritten is not None:
                unwritten += [body for body, gone in zip(bodies, done) if not gone]
            raise

    @staticmethod
    def _row_json(insert: Insert | StagedInsert, body: bytes) -> str:
        """A row as a JSON object (rows of arrays get their column names)."""
        if insert.fmt == "JSONEachRow":
            return body.decode()
        return orjson.dumps(dict(zip(insert.columns, orjson.loads(body)))).decode()

    @staticmethod
    def _dead_letter_row(row: Refused) -> list[Any]:
        return dead_letter_row(row.dead_letter(time.time()))

    def insert(self, staged: list[StagedInsert]) -> None:
        """Insert another process's write (see :class:`Forwarder`) now, in order, and the dead
        letters of the rows ClickHouse refuses (also added to :attr:`refused`).

        Raises ValueError, inserting none, when one's table, columns or format are not those
        of this sink's own inserts.
        """
        for insert in staged:
            own = encode(insert.table, []) if insert.table in ORDER else None
            if own is None or (insert.columns, insert.fmt) != (own.columns, own.fmt):
                raise ValueError(
                    f"not the table, columns and format of a crm360 insert: {insert.table!r} "
                    f"{insert.columns!r} {insert.fmt!r}"
                )
        refused: list[Refused] = []
        for insert in staged:
            self._insert_or_isolate(
                insert, partial(self._insert_staged, insert), refused if insert.table != "dead_letters" else []
            )
        if refused:  # not staged: this process's own write may be staging its dead letters now
            letters = encode("dead_letters", [self._dead_letter_row(row) for row in refused])
            self._insert_or_isolate(letters, partial(self._send, letters), [])

    def _insert(self, insert: Insert) -> None:
        assert not isinstance(self.client, Forwarder)
        if self.staging:
            self._insert_staged(stage(insert, self.staging))
        else:
            self._send(insert)

    def _send(self, insert: Insert) -> None:
        """Insert through the driver (never staged: the parts of a refused insert, whose
        files could be another process's)."""
        assert not isinstance(self.client, Forwarder)
        self.client.raw_insert(
            f"{DATABASE}.{insert.table}", insert.columns, insert.body, settings=JSON_SETTINGS, fmt=insert.fmt
        )

    def _insert_staged(self, insert: StagedInsert) -> None:
        assert not isinstance(self.client, Forwarder)
        path = str(insert.path).replace("\\", "\\\\").replace("'", "\\'")
        columns = ", ".join(f"`{name}`" for name in insert.columns)
        self.client.command(
            f"INSERT INTO {DATABASE}.{insert.table} ({columns}) FROM INFILE '{path}' "
            f"SETTINGS {_JSON_SETTINGS_CLAUSE} FORMAT {insert.fmt}"
        )

    def erase(self, erasures: list[RowErasure]) -> None:
        """Run ``erasures`` in order, each logged in ``privacy_log`` with what it removed; each
        leaves ``erasures`` once done (after a failure, the rest is run again)."""
        assert not isinstance(self.client, Forwarder)
        while erasures:
            erasure = erasures[0]
            removed = erase_rows(self.client, erasure.identifiers)
            record = PrivacyRecord(
                request_id=erasure.request_id,
                at=datetime.now(tz=UTC),
                action="erased",
                identifier_hashes=[erasure.identifier_hash],
                customer_states=erasure.customer_states,
                removed=removed,
            )
            self._send(encode("privacy_log", [self._values("privacy_log", record.model_dump())]))
            erasures.pop(0)

    def flush(self) -> int:
        """Insert everything pending now; returns the number of rows written."""
        return self.write(self.take())
