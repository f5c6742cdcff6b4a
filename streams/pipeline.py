"""One batch of input messages in, customer state and ClickHouse rows out.

This is the worker's hot path, kept free of Faust so it can be driven by the agent, the
benchmark and tests alike. It decodes messages (single events or envelopes), rejects what
is invalid, applies each valid event once to its customer's state, and queues raw event
rows and one feature row per touched customer in the sink. State lives in ``table`` (a
Faust Table in the worker): each touched customer is written back once per batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field

from processors.config import FeatureConfig
from processors.features import CustomerState, apply, profile, row_version
from processors.rfm import RFMScorer
from schemas.envelope import Rejected, decode_message
from schemas.topics import partition_for
from sinks.clickhouse import ClickHouseSink


@dataclass(frozen=True, slots=True)
class Message:
    """An input record: where it came from and its raw value."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A rejected record with where it came from."""

    source: str
    topic: str
    partition: int
    offset: int
    reason: str
    payload: str


@dataclass
class Counters:
    """Running totals shown on ``/metrics``."""

    messages: int = 0
    events_in: int = 0
    events_applied: int = 0
    duplicates_skipped: int = 0
    late_skipped: int = 0
    dead_letters: int = 0
    batches: int = 0
    feature_rows: int = 0
    aging_passes: int = 0
    state_bytes_avg: float = 0.0
    watermarks: dict[int, float] = field(default_factory=dict)


class CustomerPipeline:
    """Applies batches of messages to per-customer state and queues rows for ClickHouse."""

    def __init__(
        self,
        config: FeatureConfig,
        sink: ClickHouseSink,
        table: MutableMapping[bytes, CustomerState],
        partitions: int,
    ) -> None:
        self.config = config
        self.sink = sink
        self.table = table
        self.partitions = partitions
        self.scorer = RFMScorer()
        self.counters = Counters()
        self.watermarks = self.counters.watermarks
        self._aged_at: dict[int, float] = {}
        self._partition_of: dict[bytes, int] = {}

    def ingest(self, messages: Iterable[Message], source: str = "kafka") -> list[DeadLetterRecord]:
        """Process one batch; returns the dead letters (already queued in the sink)."""
        now_ms = int(time.time() * 1000)
        counters = self.counters
        touched: dict[bytes, tuple[CustomerState, int]] = {}
        dead: list[DeadLetterRecord] = []
        table = self.table
        for message in messages:
            counters.messages += 1
            events, rejects = decode_message(message.value)
            for event in events:
                customer = event.customer_id
                key = customer.encode()
                home = self._partition_of.get(key)
                if home is None:
                    home = self._partition_of[key] = partition_for(key, self.partitions)
                if home != message.partition:
                    rejects.append(
                        Rejected(
                            f"customer_id {customer!r} belongs to partition {home} but arrived on "
                            f"{message.partition}: key messages by customer_id",
                            event.model_dump_json(),
                        )
                    )
                    continue
                counters.events_in += 1
                self.sink.add_event(event, now_ms)
                entry = touched.get(key)
                state = entry[0] if entry else table.get(key) or CustomerState(customer)
                ts = event.epoch
                if ts > self.watermarks.get(home, float("-inf")):
                    self.watermarks[home] = ts
                outcome = apply(state, event, self.config)
                if outcome == "applied":
                    counters.events_applied += 1
                    touched[key] = (state, home)
                elif outcome == "late":
                    counters.late_skipped += 1
                else:
                    counters.duplicates_skipped += 1
            for reject in rejects:
                dead.append(
                    DeadLetterRecord(source, message.topic, message.partition, message.offset, reject.reason, reject.payload)
                )
        for key, (state, home) in touched.items():
            table[key] = state
            self._emit(state, self.watermarks[home], now_ms)
        self.record_dead_letters(dead)
        counters.batches += 1
        return dead

    def record_dead_letters(self, dead: list[DeadLetterRecord]) -> None:
        """Queue rejected records for the ``dead_letters`` table."""
        now_ms = int(time.time() * 1000)
        for record in dead:
            self.sink.add_dead_letter(
                record.source, record.topic, record.partition, record.offset, record.reason, record.payload, now_ms
            )
        self.counters.dead_letters += len(dead)

    def _emit(self, state: CustomerState, watermark: float, now_ms: int) -> None:
        row = profile(state, watermark, self.config, self.scorer)
        self.sink.add_features(row, row_version(state, row["as_of"]), now_ms)
        self.counters.feature_rows += 1

    def age(self, assigned: set[int], min_advance_s: float = 3_600.0) -> int:
        """Refit RFM quintiles and re-emit customers of partitions whose watermark moved.

        Runs over every customer of the ``assigned`` partitions (a worker must not speak for
        partitions it no longer owns). Returns the number of rows emitted.
        """
        by_partition: dict[int, list[CustomerState]] = {p: [] for p in assigned}
        recency, frequency, monetary = [], [], []
        for key, state in self.table.items():
            home = self._partition_of.get(key)
            if home is None:
                home = self._partition_of[key] = partition_for(key, self.partitions)
            if home not in by_partition:
                continue
            by_partition[home].append(state)
            if state.newest_event_at is not None and state.newest_event_at > self.watermarks.get(home, float("-inf")):
                self.watermarks[home] = state.newest_event_at
        for home, states in by_partition.items():
            watermark = self.watermarks.get(home)
            if watermark is None:
                continue
            for state in states:
                if state.last_purchase_at is not None:
                    recency.append((watermark - state.last_purchase_at) / 86_400)
                    frequency.append(state.purchase_count)
                    monetary.append(max(state.monetary_total - state.refund_total, 0.0))
        self.scorer.fit(recency, frequency, monetary)
        sample = [state for states in by_partition.values() for state in states[:250]]
        if sample:
            self.counters.state_bytes_avg = sum(len(state.to_json()) for state in sample) / len(sample)
        now_ms = int(time.time() * 1000)
        emitted = 0
        for home, states in by_partition.items():
            watermark = self.watermarks.get(home)
            aged_at = self._aged_at.get(home, float("-inf"))
            if watermark is None or watermark <= aged_at or watermark - aged_at < min_advance_s:
                continue
            self._aged_at[home] = watermark
            for state in states:
                self._emit(state, watermark, now_ms)
            emitted += len(states)
        self.counters.aging_passes += 1
        return emitted
