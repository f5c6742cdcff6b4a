"""One batch of input messages in, customer state and ClickHouse rows out.

This is the worker's hot path, kept free of Faust so it can be driven by the agent, the
benchmark and tests alike. It decodes messages (single events or envelopes), rejects what
is invalid, applies each valid event once to its customer's state (an event id sent again
with other content is rejected: the first content stands), and queues raw event rows and one
feature row per touched customer in the sink. State lives in ``table`` (a
Faust Table in the worker): each touched customer is written back once per batch.

The identity graph keeps its records in the same table; events of merged identifiers, links
and the graph's ops (read from ``identity-ops`` with the input) go to the pipeline's
:class:`~streams.worker.identities.Identities`.
"""

from __future__ import annotations

import logging
import math
import operator
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from processors.alert_rule import in_control_group, should_alert
from processors.audiences import NONE, Audiences, Change, Contact, Membership
from processors.churn import churn_features
from processors.clv import rule_estimate
from processors.config import DAY, FeatureConfig, IdentityConfig, ModelConfig
from processors.features import CustomerState, count_event, profile, remember, row_version
from processors.models import Models
from processors.rfm import RFMScorer
from processors.snapshots import Inputs, LabelledSnapshot, capture, profile_inputs, record_purchase
from schemas.alerts import ChurnAlert
from schemas.audiences import audience_event_json, utc_json
from schemas.envelope import Rejected, decode_message
from schemas.events import BaseEvent, Purchase, ahead_of_wall_clock
from schemas.rows import FEATURE_TIME_COLUMNS, DeadLetter
from schemas.topics import CUSTOMER_PROFILES, ERASURES, IDENTITY_OPS, partition_for
from sinks.clickhouse import ClickHouseSink, to_seconds
from streams.worker.aging import BEFORE_WATERMARK_S, AgingPass
from streams.worker.counters import Counters
from streams.worker.identities import Identities
from streams.worker.journal import Journal, Position
from streams.worker.message import Message
from streams.worker.privacy import Privacy, suppressed_reason
from streams.worker.reasons import conflict, processing_failed
from streams.worker.statestore import DiskTable

log = logging.getLogger(__name__)


@dataclass
class TrainingBatch:
    """What the models learn from: matured labels, live customers' inputs (segments), and the
    partitions' frontiers that moved (see :mod:`processors.label_order`)."""

    labels: list[LabelledSnapshot] = field(default_factory=list)
    observations: list[Inputs] = field(default_factory=list)
    frontiers: dict[int, float | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.labels or self.observations or self.frontiers)


#: Customers whose partition :meth:`CustomerPipeline.partition_of` remembers (about 100 bytes each;
#: computing one costs about 3 µs).
KNOWN_PARTITIONS = 1_000_000
#: A position after every event of the journal.
END: Position = (sys.maxsize, 0)
#: What the models said last about a customer (a rebuild keeps it: it was published).
MODEL_VIEW = ("churn_probability", "segment", "rfm_segment", "alert_armed", "last_alert_at")


#: What the models said last of a state, as a tuple (taken for every touched customer of a batch).
model_view: Callable[[CustomerState], tuple[object, ...]] = operator.attrgetter(*MODEL_VIEW)


def restore_view(state: CustomerState, view: tuple[object, ...]) -> None:
    for name, value in zip(MODEL_VIEW, view):
        setattr(state, name, value)


def _time(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=UTC)


class CustomerPipeline:
    """Applies batches of messages to per-customer state and queues rows for ClickHouse.

    Every emitted row is scored with the current :class:`~processors.models.Models`
    (swapped in by the worker as new versions arrive). Matured churn labels and a sample of
    customers' inputs collect in :attr:`training`, alerts in :attr:`alerts`; the worker
    ships both.
    """

    def __init__(
        self,
        config: FeatureConfig,
        sink: ClickHouseSink,
        table: MutableMapping[bytes, CustomerState],
        partitions: int,
        model_config: ModelConfig | None = None,
        observations_per_batch: int = 256,
        rescore_interval_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        identity_config: IdentityConfig | None = None,
        memberships: MutableMapping[bytes, Membership] | None = None,
    ) -> None:
        self.config = config
        #: Wall clock for the rows' ingestion times (fixed in a reproducible benchmark).
        self.clock = clock
        self.model_config = model_config or ModelConfig()
        self.sink = sink
        self.table = table
        self.partitions = partitions
        self.scorer = RFMScorer()
        self.models = Models.initial(self.model_config)
        self.counters = Counters()
        self.watermarks = self.counters.watermarks
        self.training = TrainingBatch()
        self.alerts: list[ChurnAlert] = []
        #: The live audiences (the worker follows their definitions), and the entries and exits to publish.
        self.audiences = Audiences()
        #: Customers' memberships of audiences, by key (none: in no audience), in a table of their
        #: own: a backfill that moves a million customers sends a small record each.
        self.memberships: MutableMapping[bytes, Membership] = {} if memberships is None else memberships
        self.audience_events: list[dict[str, Any]] = []  # as JSON (``schemas.audiences.audience_event_json``)
        self.observations_per_batch = observations_per_batch
        self.rescore_interval_s = rescore_interval_s
        #: Per partition: event time up to which churn labels were released.
        self.released: dict[int, float] = {}
        self._reported: dict[int, float | None] = {}  # frontiers sent to the trainer
        #: Per partition that had no customers: the time of the first event that came to it.
        self._first_event: dict[int, float] = {}
        self._aged_at: dict[int, float] = {}
        self._scored: dict[int, tuple[int, float]] = {}  # partition -> (model version, wall time)
        self._checked: dict[int, int] = {}  # partition -> the audiences' generation its customers were checked against
        self._partition_of: dict[bytes, int] = {}
        #: The messages applied since the last checkpoint, to rebuild a customer without an event.
        self.journal = Journal()
        #: Per partition, the events left out since the last checkpoint.
        self._failed: dict[int, set[Position]] = {}
        #: The JSON of customers' states as of the last checkpoint, taken when first touched since;
        #: a table on disk holds them already.
        self._images: dict[bytes, bytes | None] | None = None if isinstance(table, DiskTable) else {}
        #: The aging pass under way, if any.
        self.aging: AgingPass | None = None
        #: While a backfill is under way: the customers emitted since it read the rows it
        #: checks, and the partitions it checks (less those given up since).
        self.emitted_since_read: set[str] | None = None
        self._backfilling: set[int] = set()
        #: The batch's touched customers while :meth:`ingest` runs (the identity graph reads them).
        self._touched: dict[bytes, tuple[CustomerState, int]] | None = None
        self.identities = Identities(self, identity_config or IdentityConfig())
        self.privacy = Privacy(self)

    def use_models(self, models: Models) -> None:
        """Score from now on with ``models`` (a newer version from the trainer)."""
        self.models = models

    def take_training(self, partitions: Iterable[int] = (), read_through: Collection[int] = ()) -> TrainingBatch:
        """The labels and observations collected since the last take, with the frontiers of
        ``partitions`` (this worker's, settled) that moved since: the snapshot time up to which
        each released its labels, None for one without customers whose input was all read
        (``read_through``: it does not hold the others' labels back). One yet to release its
        first labels reports the time of its first event (no snapshot of its customers is
        older): one that was without customers holds the others back again once they come.
        One without customers yet with input to read is left out: a trainer that never heard
        of it waits for it."""
        batch, self.training = self.training, TrainingBatch()
        horizon = self.model_config.churn_horizon_days * DAY
        for home in partitions:
            released = self.released.get(home)
            if released is None:  # not restored yet
                continue
            if home not in self.watermarks and home not in read_through:
                continue
            frontier = None if home not in self.watermarks else released - horizon
            if frontier == -math.inf and home in self._first_event:  # none released: none before its first event
                frontier = self._first_event[home] - BEFORE_WATERMARK_S
            if frontier != -math.inf and self._reported.get(home, -math.inf) != frontier:
                batch.frontiers[home] = self._reported[home] = frontier
        return batch

    def take_alerts(self) -> list[ChurnAlert]:
        alerts, self.alerts = self.alerts, []
        return alerts

    def take_audience_events(self) -> list[dict[str, Any]]:
        events, self.audience_events = self.audience_events, []
        return events

    def forget_partitions(self, partitions: set[int]) -> None:
        """Another worker owns these now: its restored state decides what it releases."""
        for p in partitions:
            self.released.pop(p, None)
            self._reported.pop(p, None)
            self._first_event.pop(p, None)
            self._aged_at.pop(p, None)
            self._scored.pop(p, None)
            self._checked.pop(p, None)
            self._failed.pop(p, None)
        self._backfilling -= partitions
        self.journal.clear(partitions)
        if self.aging is not None:
            self.aging.forget(partitions)

    def checkpointed(self) -> None:
        """Every state change is in the changelog and the table: a rebuild starts from here."""
        self.journal.clear()
        self._failed.clear()
        if self._images is not None:
            self._images.clear()

    def _released_until(self, home: int) -> float:
        """Labels released so far; for a partition new to this worker, those of horizons that
        ended before the newest event of its restored state (a previous owner released those),
        which its watermark reaches too. A table on disk keeps that time; one in memory is read
        through."""
        released = self.released.get(home)
        if released is None:
            kept = self.table.newest(home) if isinstance(self.table, DiskTable) else None
            newest = (
                kept
                if kept is not None
                else max(
                    (s.newest_event_at for _, _, s in self._customers({home}) if s.newest_event_at is not None),
                    default=float("-inf"),
                )
            )
            released = self.released[home] = newest - BEFORE_WATERMARK_S
            if newest > self.watermarks.get(home, float("-inf")):
                self.watermarks[home] = newest
        return released

    def _customers(self, partitions: set[int]) -> Iterator[tuple[int, bytes, CustomerState]]:
        """Every customer of ``partitions`` (partition, key, state): from a table on disk
        partition by partition, one state decoded at a time; from one in memory in one pass."""
        if isinstance(self.table, DiskTable):
            yield from self.table.customers(partitions)  # type: ignore[misc]
            return
        for key, state in self.table.items():
            home = self.partition_of(key)
            if home in partitions:
                yield home, key, state

    def partition_of(self, key: bytes) -> int:
        """The input partition of a customer key (also its changelog partition)."""
        home = self._partition_of.get(key)
        if home is None:
            if len(self._partition_of) >= KNOWN_PARTITIONS:  # bounded: a disk store holds more customers
                self._partition_of.clear()
            home = self._partition_of[key] = partition_for(key, self.partitions)
        return home

    def ingest(self, messages: Iterable[Message], source: str = "kafka") -> list[DeadLetter]:
        """Process one batch; returns the dead letters (already queued in the sink).

        An event whose processing fails (a bug it meets) is dead-lettered with the error and
        its position, and its customer is rebuilt without it (:meth:`_rebuilt`); so is one that
        makes its customer's feature row fail. Every other event of the batch is applied once.
        """
        touched: dict[bytes, tuple[CustomerState, int]] = {}
        self._touched = touched  # the identity graph reads the batch's states
        try:
            return self._ingest(messages, source, touched)
        finally:
            self._touched = None

    def _ingest(
        self, messages: Iterable[Message], source: str, touched: dict[bytes, tuple[CustomerState, int]]
    ) -> list[DeadLetter]:
        now_ms = int(self.clock() * 1000)
        horizon = now_ms / 1000 + self.config.max_future_s
        counters = self.counters
        dead: list[DeadLetter] = []
        table, journal = self.table, self.journal
        suppressions = self.privacy.suppressions
        queued = self.sink.queued_events()  # this batch's raw rows come after these
        left_out: list[BaseEvent] = []  # events whose customer's row failed: their raw rows go too
        batch_start: dict[int, int] = {}
        for message in messages:
            counters.messages += 1
            if message.partition not in self.released:
                self._released_until(message.partition)
            if message.value is None:  # a tombstone of a compacted input topic (an erased profile's)
                continue
            if message.topic == IDENTITY_OPS:
                self.identities.handle(message, dead, source, horizon)
                continue
            if message.topic == ERASURES:
                self.privacy.erase(message, dead, source)
                continue
            entry = journal.add(message.partition, message.topic, message.offset, message.value, horizon)
            batch_start.setdefault(message.partition, entry)
            events, rejects = decode_message(message.value)
            if suppressions.hashes:
                kept = [event for event in events if not suppressions.suppresses(event)]
                if len(kept) < len(events):
                    counters.suppressed += len(events) - len(kept)
                    self.dead(dead, source, message, suppressed_reason(len(events) - len(kept)), "")
                    if message.topic == CUSTOMER_PROFILES:  # compacted: its last record must not name them
                        self.privacy.outgoing.tombstones += [e.customer_id for e in events if e not in kept]
                    events = kept
            accepted: list[BaseEvent] = []
            for index, event in enumerate(events):
                customer = event.customer_id
                key = customer.encode()
                home = self.partition_of(key)
                if home != message.partition:
                    rejects.append(
                        Rejected(
                            f"customer_id {customer!r} belongs to partition {home} but arrived on "
                            f"{message.partition}: key messages by customer_id",
                            event.model_dump_json(),
                        )
                    )
                    continue
                ts = event.epoch
                if ts > horizon:
                    rejects.append(Rejected(ahead_of_wall_clock(ts, self.config.max_future_s), event.model_dump_json()))
                    continue
                state = self.held(key) or CustomerState(customer)
                identity = state.identity
                if identity is not None and identity.merged_into is not None:
                    self.identities.forward(state, event, ts)  # to the profile it merged into
                    counters.events_in += 1
                    accepted.append(event)  # its raw row is written here
                    continue
                try:
                    seen = self.apply(state, event, ts, home)
                except Exception as error:  # noqa: BLE001 - a bug one event meets must not fail the others
                    rejects.append(Rejected(processing_failed(error, index), event.model_dump_json()))
                    self._keep(
                        touched,
                        key,
                        self._rebuilt(
                            key,
                            home,
                            model_view(state),
                            until=(entry, index),
                            failed=(entry, index),
                            dead=dead,
                            source=source,
                        ),
                        home,
                    )
                    continue
                if seen == "conflict":  # neither applied nor written: features and raw tables keep the first
                    rejects.append(Rejected(conflict(event), event.model_dump_json()))
                    continue
                # A duplicate's raw and feature rows too: re-delivered after a crash, they may be
                # among those never written. It is the first content again, so re-writing it changes
                # nothing. Held before its links, which the identity graph handles on it at once.
                touched[key] = (state, home)
                if event.identifiers:
                    self.identities.link(state, event, ts)
                counters.events_in += 1
                accepted.append(event)
                if ts > self.watermarks.get(home, float("-inf")):
                    if home not in self.watermarks:
                        self._first_event[home] = ts
                    self.watermarks[home] = ts
                if seen == "duplicate":
                    counters.duplicates_skipped += 1
                    continue
                if seen == "late":
                    counters.late_applied += 1
                counters.events_applied += 1
            self.sink.add_events(accepted)  # now: kept until the batch's end, they cost fresh memory
            for reject in rejects:
                self.dead(dead, source, message, reject.reason, reject.payload)
        observations = self.training.observations
        for key, (state, home) in touched.items():
            if not state.is_profile:  # merged into another profile, or no event yet: no row
                table[key] = state
                continue
            view = model_view(state)
            try:
                inputs = self._emit(state, self.watermarks[home], now_ms)
            except Exception:  # noqa: BLE001 - find the event that makes the row fail, and go on without it
                state = self._rebuilt(
                    key,
                    home,
                    view,
                    until=END,
                    failed=None,
                    dead=dead,
                    source=source,
                    trial_from=(batch_start[home], 0),
                    left_out=left_out,
                )
                try:
                    inputs = self._emit(state, self.watermarks[home], now_ms)
                except Exception:  # none of this batch's events is to blame
                    log.exception("customer %r: no feature row; its state is kept", state.customer_id)
                    restore_view(state, view)
                    counters.rows_failed += 1
                    table[key] = state
                    continue
            table[key] = state
            if len(observations) < self.observations_per_batch:
                observations.append(inputs)
        if left_out:
            self.sink.retract_events(queued, left_out)
        self.record_dead_letters(dead)
        counters.batches += 1
        return dead

    def forget(self, key: bytes, state: CustomerState) -> None:
        """Erase the customer's state (``state``, as :meth:`held` gave it): out of the table,
        the batch and the counts of ``segment_membership``."""
        if state.rfm_segment is not None:  # counted there (see _track_membership)
            segment = "unscored" if state.segment is None else str(state.segment)
            self.sink.add_membership_change("segment", segment, -1)
            self.sink.add_membership_change("rfm_segment", state.rfm_segment, -1)
        if self._touched is not None:
            self._touched.pop(key, None)
        if self.table.get(key) is not None:
            del self.table[key]
        self.keep_membership(key, NONE)

    def dead(self, dead: list[DeadLetter], source: str, message: Message, reason: str, payload: str) -> None:
        dead.append(
            DeadLetter.received(self.clock(), source, message.topic, message.partition, message.offset, reason, payload)
        )

    def apply(self, state: CustomerState, event: BaseEvent, ts: float, home: int) -> str:
        """Apply one event to its customer's state: "conflict", "duplicate", "late" or "applied"."""
        seen = remember(state, event, ts)
        if seen != "new":
            return seen
        if state.newest_event_at is not None and ts > state.newest_event_at:
            capture(state, ts, self._released_until(home), self.model_config, self.config)
        counted = count_event(state, event, self.config, ts)
        if isinstance(event, Purchase) and event.kind == "purchase":
            record_purchase(state, ts, event.amount, self.model_config)
        return counted

    def held(self, key: bytes) -> CustomerState | None:
        """The customer's state as this batch left it so far, else as the table has it (then
        its state as of the checkpoint is kept, for a rebuild)."""
        touched = self._touched
        if touched is not None:
            held = touched.get(key)
            if held is not None:
                return held[0]
        state = self.table.get(key)
        images = self._images
        if images is not None and key not in images:
            images[key] = None if state is None else state.to_json()
        return state

    def touch(self, key: bytes, state: CustomerState, home: int) -> None:
        """``state`` changed: kept for the batch's end (its row, its write), or written at once
        outside a batch."""
        if self._touched is not None:
            self._touched[key] = (state, home)
        else:
            self.table[key] = state

    def _keep(
        self, touched: dict[bytes, tuple[CustomerState, int]], key: bytes, state: CustomerState, home: int
    ) -> None:
        """Keep a rebuilt state for the batch's end, unless the customer has no event left."""
        if state.events_applied or key in touched or self._image(key) is not None:
            touched[key] = (state, home)

    def _image(self, key: bytes) -> CustomerState | None:
        """The customer's state as of the last checkpoint (None: not known then)."""
        if self._images is None:
            return self.table.stored(key)  # type: ignore[attr-defined]
        raw = self._images.get(key)
        return None if raw is None else CustomerState.from_json(raw)

    def _rebuilt(
        self,
        key: bytes,
        home: int,
        view: tuple[object, ...],
        until: Position,
        failed: Position | None,
        dead: list[DeadLetter],
        source: str,
        trial_from: Position | None = None,
        left_out: list[BaseEvent] | None = None,
    ) -> CustomerState:
        """The customer's state as of the last checkpoint, with their events since applied again
        up to ``until`` (the models' view of them, ``view``, as it was), except those that failed.

        ``failed`` is the event that just failed. From ``trial_from`` on, a feature row is also
        computed after each event: an event whose row fails is dead-lettered and left out too
        (added to ``left_out``: its raw row was queued).
        """
        failures = self._failed.setdefault(home, set())
        if failed is not None:
            failures.add(failed)
        while True:
            state = self._image(key) or CustomerState(key.decode())
            restore_view(state, view)
            trying, checked = False, trial_from is None
            culprit: tuple[Position, BaseEvent, Exception] | None = None
            for position, event, horizon in self.journal.events(home, state.customer_id, until, failures):
                if event.epoch > horizon:
                    continue  # refused then as ahead of the wall clock
                if not checked and position >= trial_from:  # type: ignore[operator]
                    # A row that fails before this batch's events blames none of them.
                    checked, trying = True, self._scores(state, home)
                outcome = "applied"  # what it was when first applied, should applying it fail now
                try:
                    outcome = self.apply(state, event, event.epoch, home)
                    if trying:
                        self._score(state, self.watermarks[home])
                except Exception as error:  # noqa: BLE001 - this one is left out too
                    culprit = position, event, error
                    break
            if culprit is None:
                return state
            position, event, failure = culprit
            failures.add(position)
            if trying:  # counted and queued in this batch
                self._uncount(outcome)
                if left_out is not None:
                    left_out.append(event)
            topic, offset = self.journal.where(home, position)
            dead.append(
                DeadLetter.received(
                    self.clock(),
                    source,
                    topic,
                    home,
                    offset,
                    processing_failed(failure, position[1]),
                    event.model_dump_json(),
                )
            )

    def _uncount(self, outcome: str) -> None:
        """Take back the counts of an event of this batch that is left out."""
        counters = self.counters
        counters.events_in -= 1
        if outcome == "duplicate":
            counters.duplicates_skipped -= 1
            return
        counters.events_applied -= 1
        counters.late_applied -= outcome == "late"

    def record_dead_letters(self, dead: list[DeadLetter]) -> None:
        """Queue rejected records for the ``dead_letters`` table."""
        for letter in dead:
            self.sink.add_dead_letter(letter)
        self.counters.dead_letters += len(dead)

    def _score(self, state: CustomerState, watermark: float) -> tuple[dict, Inputs]:
        """The customer's scored feature row and model inputs, changing nothing."""
        row = profile(state, watermark, self.config, self.scorer)
        models = self.models
        inputs = profile_inputs(state, row)
        features = churn_features(inputs)  # once, for both models
        score = models.score(inputs, features)
        probability = score.churn_probability
        row["churn_probability"], row["segment"], row["model_version"] = probability, score.segment, models.version
        horizon = self.model_config.clv_horizon_days
        value = models.value.estimate(inputs, probability, horizon, features)
        if value is None:
            count, tenure = state.purchase_count, row["tenure_days"]
            row["clv_estimate"] = rule_estimate(count, inputs.monetary_total, tenure, probability, horizon)
        else:
            row["clv_estimate"], row["clv_low"], row["clv_high"] = value
        return row, inputs

    def _scores(self, state: CustomerState, home: int) -> bool:
        """Whether the customer's feature row can be computed."""
        try:
            self._score(state, self.watermarks[home])
        except Exception:  # noqa: BLE001 - the question asked
            return False
        return True

    def _emit(self, state: CustomerState, watermark: float, now_ms: int) -> Inputs:
        """Queue the customer's scored feature row; updates the models' view in ``state``
        (alerting) and the customer's memberships. Returns the model inputs. Whatever can fail
        comes before the first row is queued."""
        row, inputs = self._score(state, watermark)
        if self.emitted_since_read is not None:
            self.emitted_since_read.add(state.customer_id)
        probability = row["churn_probability"]
        alert = None
        if self.models.version and should_alert(state, probability, row["value_tier"], row["as_of"], self.model_config):
            alert = self._alert(state, row, inputs, now_ms)
        changes: list[Change] = []
        membership, key = NONE, b""
        if self.audiences.changed_at:  # an audience exists, or existed and its members must leave
            key = state.customer_id.encode()
            changes, membership = self.audiences.decide(state.consents, self.memberships.get(key, NONE), row)
        version = row_version(state, row["as_of"])
        self.sink.add_features(row, version, now_ms)
        self.counters.feature_rows += 1
        self._track_membership(state, row["segment"], row["rfm_segment"])
        if changes:
            self.record_audience_changes(Contact.of(state), membership, row, changes, version, now_ms)
            self.keep_membership(key, membership)
        if alert is not None:
            if alert.control:
                self.counters.alerts_held_out += 1
            else:
                self.alerts.append(alert)
                self.counters.alerts += 1
            self.sink.add_row("churn_alerts", alert.model_dump())
        state.churn_probability = probability
        return inputs

    def _track_membership(self, state: CustomerState, segment: int | None, rfm_segment: str | None) -> None:
        """Move the customer between groups in ``segment_membership`` (-1 old, +1 new)."""
        new_segment = "unscored" if segment is None else str(segment)
        new_rfm = rfm_segment or "unscored"
        seen = state.rfm_segment is not None
        old_segment = "unscored" if state.segment is None else str(state.segment)
        old_rfm = "unscored" if state.rfm_segment is None else state.rfm_segment
        for dimension, old, new in (("segment", old_segment, new_segment), ("rfm_segment", old_rfm, new_rfm)):
            if seen and old == new:
                continue
            if seen:
                self.sink.add_membership_change(dimension, old, -1)
            self.sink.add_membership_change(dimension, new, +1)
        state.segment, state.rfm_segment = segment, new_rfm

    def keep_membership(self, key: bytes, membership: Membership) -> None:
        """The customer's memberships are ``membership`` from now on (:data:`NONE`: no record)."""
        if membership.audiences or membership.withheld:
            self.memberships[key] = membership
        elif self.memberships.get(key) is not None:
            del self.memberships[key]

    def record_audience_changes(
        self, contact: Contact, membership: Membership, row: dict, changes: list[Change], version: int, now_ms: int
    ) -> None:
        """Queue each entry or exit of the customer (``contact``) for ``audience_events`` and,
        when published, for ``audience-updates``; and their membership row (``version``: that
        of the feature row that decided it), unless only its destinations learn of it
        (consent); ``membership``: theirs after the changes."""
        as_of = row["as_of"]
        # The rows take times as epoch seconds (to the millisecond, as DateTime64(3) keeps them).
        as_of_s, created_s = to_seconds(as_of), now_ms / 1000
        for change in changes:
            audience = change.audience
            features: dict[str, Any] = {c: row.get(c) for c in audience.condition.columns}
            for column in FEATURE_TIME_COLUMNS.intersection(features):
                if features[column] is not None:
                    features[column] = utc_json(features[column])
            event = audience_event_json(
                audience.name,
                audience.version,
                change.change,
                change.reason,
                contact.customer_id,
                contact.identifiers,
                features,
                as_of,
                created_s,
            )
            if change.published:
                self.audience_events.append(event)
            self.sink.add_row(
                "audience_events",
                event
                | {
                    "features": orjson.dumps(features).decode(),
                    "as_of": as_of_s,
                    "created_at": created_s,
                    "published": change.published,
                },
            )
            if change.reason == "consent":
                continue
            entered = membership.audiences.get(audience.name)
            self.sink.add_row(
                "audience_membership",
                {
                    "audience": audience.name,
                    "customer_id": contact.customer_id,
                    "entered_at": to_seconds(entered if entered is not None else as_of),
                    "audience_version": audience.version,
                    "version": version,
                    "updated_at": created_s,
                    "is_deleted": int(change.change == "exited"),
                },
            )
        self.counters.audience_changes += len(changes)

    def _alert(self, state: CustomerState, row: dict, inputs: Inputs, now_ms: int) -> ChurnAlert:
        models, as_of = self.models, row["as_of"]
        drivers = sorted(models.churn.contributions(inputs).items(), key=lambda kv: kv[1], reverse=True)[:5]
        return ChurnAlert(
            alert_id=f"{state.customer_id}:{int(as_of)}",
            customer_id=state.customer_id,
            churn_probability=row["churn_probability"],
            previous_probability=state.churn_probability,
            threshold=self.model_config.alert_threshold,
            drivers=dict(drivers),
            segment=row["segment"],
            segment_description=models.descriptions.get(row["segment"]) if row["segment"] is not None else None,
            value_tier=row["value_tier"],
            monetary_total=row["monetary_total"],
            last_purchase_at=_time(row["last_purchase_at"]),
            model_version=models.version,
            as_of=datetime.fromtimestamp(as_of, tz=UTC),
            created_at=datetime.fromtimestamp(now_ms / 1000, tz=UTC),
            horizon_days=self.model_config.churn_horizon_days,
            control=in_control_group(state.customer_id, self.model_config.alert_holdout_share),
        )

    def age(self, assigned: set[int], min_advance_s: float = 3_600.0) -> int:
        """An aging pass at once (:meth:`start_aging`, then every step of it); returns the
        number of rows emitted."""
        return self.start_aging(assigned, min_advance_s).step()

    def start_aging(self, assigned: set[int], min_advance_s: float = 3_600.0) -> AgingPass:
        """An aging pass over every customer of the ``assigned`` partitions (a worker must not
        speak for partitions it no longer owns), to walk with :meth:`AgingPass.step`: labels
        matured since the last release, RFM quintiles refit, customers re-emitted for the
        partitions whose watermark moved, whose customers were not checked against the current
        audiences, or scored by an older model version."""
        # Partitions new to this worker first: their watermarks come from their restored states.
        for home in assigned:
            self._released_until(home)
        watermarks = {home: self.watermarks[home] for home in assigned if home in self.watermarks}
        releasing = {
            home: self.released[home] for home, watermark in watermarks.items() if self._labels_due(home, watermark)
        }
        aging = {home for home, watermark in watermarks.items() if self._due(home, watermark, min_advance_s)}
        self.aging = AgingPass(self, watermarks, releasing, aging)
        return self.aging

    def aged(self, home: int, watermark: float) -> None:
        """The partition's customers are being re-emitted at ``watermark`` with the current model."""
        self._aged_at[home] = watermark
        self._scored[home] = (self.models.version, time.monotonic())
        self._checked[home] = self.audiences.generation

    def emit_aged(self, home: int, customers: list[tuple[bytes, CustomerState]]) -> int:
        """Re-emit ``customers`` of partition ``home`` at its watermark (none if the partition
        was given up meanwhile); returns the number of rows emitted."""
        if home not in self._aged_at:
            return 0
        now_ms = int(self.clock() * 1000)
        watermark = self.watermarks[home]
        emitted = 0
        for key, state in customers:
            before = model_view(state)
            try:
                self._emit(state, watermark, now_ms)
            except Exception:  # one customer's failing row must not stop the pass
                log.exception("customer %r: no feature row", state.customer_id)
                restore_view(state, before)
                self.counters.rows_failed += 1
                continue
            if model_view(state)[1:] != before[1:]:  # a new churn probability alone is not worth a record
                self.table[key] = state  # what the next run must know: segments, alerting
            emitted += 1
        return emitted

    def unchecked(self, partitions: set[int]) -> tuple[set[int], list[str]]:
        """The partitions of ``partitions`` whose customers wait to be checked against audiences
        defined, changed or deleted since, and those audiences."""
        generation = self.audiences.generation
        due = {home for home in partitions if self._checked.get(home, 0) != generation}
        since = min((self._checked.get(home, 0) for home in due), default=generation)
        return due, self.audiences.changed_since(since)

    def start_backfill(self, partitions: set[int]) -> None:
        """A backfill of ``partitions`` read their customers' rows (see :meth:`backfill`)."""
        self.emitted_since_read, self._backfilling = set(), set(partitions)

    def backfill(self, rows: Iterable[dict[str, Any]], members: set[tuple[str, str]], changed: list[str]) -> int:
        """Check customers against the audiences ``changed`` (defined, changed or deleted since
        their partition was last checked) on ``rows``, their current rows as read from
        ``customer_features`` (with ``members``, the memberships then): only a customer whose
        membership the rows say must change is read and decided (:meth:`Audiences.decide`,
        over every audience). A customer emitted since the read (:attr:`emitted_since_read`)
        is passed by: their newer row was checked against every audience; so is one of a
        partition given up since. Returns the entries and exits decided."""
        audiences, emitted, backfilling = self.audiences, self.emitted_since_read or set(), self._backfilling
        live = [audiences.live[name] for name in changed if name in audiences.live]
        gone = [name for name in changed if name not in audiences.live]
        now_ms = int(self.clock() * 1000)
        decided = 0
        for row in rows:
            customer = row["customer_id"]
            if all(audience.condition(row) == ((audience.name, customer) in members) for audience in live) and all(
                (name, customer) not in members for name in gone
            ):
                continue
            key = customer.encode()
            if customer in emitted or self.partition_of(key) not in backfilling:
                continue
            contact = self._contact(key)
            if contact is None:
                continue
            changes, membership = audiences.decide(contact.consents, self.memberships.get(key, NONE), row)
            if changes:
                self.record_audience_changes(contact, membership, row, changes, row["version"], now_ms)
                self.keep_membership(key, membership)
                decided += len(changes)
        return decided

    def _contact(self, key: bytes) -> Contact | None:
        """The customer's contact when they are a profile: of their state when it is decoded,
        else read from its stored bytes (a backfill reads a million customers, and keeps none)."""
        table = self.table
        found = table.peek(key, Contact.of_stored) if isinstance(table, DiskTable) else table.get(key)
        if isinstance(found, CustomerState):
            return Contact.of(found) if found.is_profile else None
        return found

    def end_backfill(self, generation: int | None) -> None:
        """The backfill is over: its partitions (but those given up meanwhile, which the next
        one checks) were checked against the audiences of ``generation`` (None: it stopped
        before the end)."""
        if generation is not None:
            for home in self._backfilling:
                self._checked[home] = generation
        self.emitted_since_read, self._backfilling = None, set()

    def _due(self, home: int, watermark: float, min_advance_s: float) -> bool:
        """Re-emit when event time moved enough, or a newer model is out (at most every
        ``rescore_interval_s``)."""
        aged_at = self._aged_at.get(home, float("-inf"))
        if watermark > aged_at and watermark - aged_at >= min_advance_s:
            return True
        version, at = self._scored.get(home, (-1, float("-inf")))
        return version != self.models.version and time.monotonic() - at >= self.rescore_interval_s

    def _labels_due(self, home: int, watermark: float) -> bool:
        """Whether labels matured since the last release: a grid point's horizon ended."""
        released = self._released_until(home)
        horizon = self.model_config.churn_horizon_days * DAY
        every = self.model_config.snapshot_every_days * DAY
        return released == float("-inf") or math.floor((watermark - horizon) / every) != math.floor(
            (released - horizon) / every
        )
