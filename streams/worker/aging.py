"""An aging pass, walked a slice at a time: matured churn labels released, RFM quintiles refit,
idle customers re-emitted.

Customers who send nothing change as event time moves: their recency grows, their churn labels
mature. An aging pass visits every customer of the worker's partitions twice, in slices with
batches in between (over millions of customers on disk a pass takes minutes and must hold
nothing up), and keeps no list of them on disk:

1. partition by partition, releasing the labels whose horizon ended since the partition's
   last release, before its watermark when the pass began, and gathering each buyer's recency,
   frequency and monetary value; then the RFM quintiles are refit on them;
2. re-emitting the customers of the partitions whose watermark moved enough since their last
   pass, or who were scored by an older model version.

A batch may touch customers while walk 1 is under way, before or after the walk reaches
them: the partition's record of what was released moves to the pass's watermark only once the
walk has visited all its customers. Each label is released by the one pass whose window (from
the last release to the pass's watermark) holds the end of its horizon: a customer the walk has
not reached keeps, and gains, the snapshots it will release; one it passed gains some that no
later pass releases (their window is gone) and drops them with its next event.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Protocol, cast

from processors.config import DAY, FeatureConfig, ModelConfig
from processors.features import CustomerState
from processors.rfm import RFMScorer
from processors.snapshots import LabelledSnapshot, mature
from streams.worker.statestore import RESERVED_KEYS, DiskTable

#: Customers whose state a pass measures for ``state_bytes_avg``, per partition.
SAMPLED_PER_PARTITION = 50
#: Customers read at a time.
READ_AT_ONCE = 1_000
#: Labels are released for horizons that ended before the watermark, not at it: a horizon
#: holds its last instant, and more events of the watermark's own time (a day's purchases,
#: all at midnight) may still come in the next batch.
BEFORE_WATERMARK_S = 0.001


class Walk:
    """The customers of one partition, read a slice at a time from where the last slice ended:
    no iterator is held between slices (the table changes in between).

    On disk the partition's database is read on in key order from the last key read, then come
    the customers created since the last checkpoint (only in the cache). In memory the keys are
    listed when the walk begins; customers created later are passed by, as if they had come
    after the pass.
    """

    def __init__(
        self, table: MutableMapping[bytes, CustomerState], partition: int, partition_of: Callable[[bytes], int]
    ) -> None:
        self.table, self.partition = table, partition
        self.cursor: bytes | None = None  # the last key read from the database
        self.late: set[bytes] = set()  # on disk: customers not in the database yet
        self.database_done = True
        if isinstance(table, DiskTable):
            database = table.database(partition)
            self.late = {key for key in table.changed() if partition_of(key) == partition and key not in database}
            self.keys = sorted(self.late)  # read after the database
            self.database_done = False
        else:
            self.keys = [key for key in table if partition_of(key) == partition]
        self.at = 0
        self.finished = False

    def take(self, limit: int) -> list[tuple[bytes, CustomerState]]:
        """Up to ``limit`` customers (key, state as it is now) after those taken before."""
        table = self.table
        out: list[tuple[bytes, CustomerState]] = []
        if not self.database_done:
            assert isinstance(table, DiskTable)
            # A database in raw mode: its keys are bytes (rocksdict's stubs type every mode's keys).
            items = cast(Iterator[tuple[bytes, bytes]], table.database(self.partition).items(from_key=self.cursor))
            for key, raw in items:
                if key == self.cursor or key in RESERVED_KEYS or key in self.late or key in table.deleted:
                    continue
                if len(out) == limit:
                    return out
                state = table.cache.get(key)
                state = state if state is not None else CustomerState.from_json(raw)
                self.cursor = key
                if state.is_profile:  # merged identifiers age with their profile
                    out.append((key, state))
            self.database_done = True
        while len(out) < limit and self.at < len(self.keys):
            key = self.keys[self.at]
            self.at += 1
            state = table.get(key)
            if state is not None and state.is_profile:
                out.append((key, state))
        self.finished = self.at == len(self.keys)
        return out


class PassCounters(Protocol):
    labels_released: int
    aging_passes: int
    state_bytes_avg: float


class Training(Protocol):
    @property
    def labels(self) -> list[LabelledSnapshot]: ...


class Aged(Protocol):
    """What a pass needs of the pipeline whose customers it ages (a
    :class:`~streams.worker.pipeline.CustomerPipeline`): the customers, where labels were
    released, the RFM scorer to refit, and the re-emission of aged customers."""

    released: dict[int, float]
    aging: AgingPass | None

    @property
    def table(self) -> MutableMapping[bytes, CustomerState]: ...
    @property
    def config(self) -> FeatureConfig: ...
    @property
    def model_config(self) -> ModelConfig: ...
    @property
    def scorer(self) -> RFMScorer: ...
    @property
    def counters(self) -> PassCounters: ...
    @property
    def training(self) -> Training: ...
    def partition_of(self, key: bytes) -> int: ...
    def aged(self, home: int, watermark: float) -> None: ...
    def emit_aged(self, home: int, customers: list[tuple[bytes, CustomerState]]) -> int: ...


class AgingPass:
    """One pass over the customers of the partitions in ``watermarks`` (their watermarks when
    it began): labels released for the partitions in ``releasing`` (what each released before),
    customers re-emitted for those in ``aging``."""

    def __init__(
        self, pipeline: Aged, watermarks: dict[int, float], releasing: dict[int, float], aging: set[int]
    ) -> None:
        self.pipeline, self.watermarks, self.releasing = pipeline, watermarks, releasing
        self.measuring = sorted(watermarks)  # labels go out partition by partition: the trainer learns in order
        self.emitting = sorted(aging)
        self.walks: dict[int, Walk] = {}
        self.recency, self.frequency, self.monetary = array("d"), array("d"), array("d")  # 24 bytes a buyer
        self.sampled: dict[int, int] = {}
        self.sample_bytes = 0
        self.fitted = False
        self.done = False

    def forget(self, partitions: set[int]) -> None:
        """Another worker owns these now."""
        self.measuring = [p for p in self.measuring if p not in partitions]
        self.emitting = [p for p in self.emitting if p not in partitions]
        for partition in partitions:
            self.releasing.pop(partition, None)
            self.walks.pop(partition, None)

    def step(self, limit: int | None = None) -> int:
        """Visit up to ``limit`` customers (all that are left when None); returns the rows emitted."""
        left: float = math.inf if limit is None else limit
        emitted = 0
        pipeline = self.pipeline
        while left > 0 and not self.done:
            if self.measuring:
                partition = self.measuring[0]
                walk = self._walk(partition)
                customers = walk.take(int(min(left, READ_AT_ONCE)))
                left -= max(len(customers), 1)
                self._measure(partition, customers)
                if walk.finished:
                    self.measuring.pop(0)
                    del self.walks[partition]
                    if partition in self.releasing:
                        pipeline.released[partition] = self.watermarks[partition] - BEFORE_WATERMARK_S
                        del self.releasing[partition]
            elif not self.fitted:
                self._fit()
            elif self.emitting:
                partition = self.emitting[0]
                walk = self._walk(partition)
                customers = walk.take(int(min(left, READ_AT_ONCE)))
                left -= max(len(customers), 1)
                emitted += pipeline.emit_aged(partition, customers)
                if walk.finished:
                    self.emitting.pop(0)
                    del self.walks[partition]
            else:
                self.done = True
                pipeline.counters.aging_passes += 1
                if pipeline.aging is self:
                    pipeline.aging = None
        return emitted

    def _walk(self, partition: int) -> Walk:
        walk = self.walks.get(partition)
        if walk is None:
            walk = self.walks[partition] = Walk(self.pipeline.table, partition, self.pipeline.partition_of)
        return walk

    def _measure(self, partition: int, customers: list[tuple[bytes, CustomerState]]) -> None:
        """Walk 1 over these customers: their matured labels released, their RFM figures kept."""
        pipeline = self.pipeline
        watermark = self.watermarks[partition]
        released = self.releasing.get(partition)
        labels = pipeline.training.labels
        before = len(labels)
        for _, state in customers:
            if released is not None:
                labels.extend(
                    mature(state, released, watermark - BEFORE_WATERMARK_S, pipeline.model_config, pipeline.config)
                )
            if state.last_purchase_at is not None:
                self.recency.append((watermark - state.last_purchase_at) / DAY)
                self.frequency.append(state.purchase_count)
                self.monetary.append(max(state.monetary_total - state.refund_total, 0.0))
            if self.sampled.get(partition, 0) < SAMPLED_PER_PARTITION:
                self.sampled[partition] = self.sampled.get(partition, 0) + 1
                self.sample_bytes += len(state.to_json())
        pipeline.counters.labels_released += len(labels) - before

    def _fit(self) -> None:
        """Between the walks: the RFM quintiles refit, the aging partitions marked as aged."""
        pipeline = self.pipeline
        pipeline.scorer.fit(self.recency, self.frequency, self.monetary)
        self.recency, self.frequency, self.monetary = array("d"), array("d"), array("d")
        if self.sampled:
            pipeline.counters.state_bytes_avg = self.sample_bytes / sum(self.sampled.values())
        for partition in self.emitting:
            pipeline.aged(partition, self.watermarks[partition])
        self.fitted = True


class AgingSchedule:
    """Aging passes as a worker runs them: each started by ``start`` and stepped a slice of
    ``slice_size`` customers at a time under ``lock`` (what processing holds), ``after_slice``
    run after each slice (its rows and state written when due), and the event loop served
    between slices: heartbeats, HTTP, signals and batches wait at most one slice. A pass steps
    only while ``way_clear`` is set: work that someone waits for (an audience's backfill) goes
    first. Passes take at most ``max_share`` of the time; a stopping worker (``stopping``)
    leaves a pass under way and its next start begins one afresh."""

    def __init__(
        self,
        start: Callable[[set[int], float], AgingPass],
        lock: asyncio.Lock,
        stopping: asyncio.Event,
        after_slice: Callable[[], Awaitable[None]],
        *,
        way_clear: asyncio.Event,
        slice_size: int,
        min_advance_s: float,
        max_share: float,
    ) -> None:
        self.start, self.lock, self.stopping, self.after_slice = start, lock, stopping, after_slice
        self.way_clear = way_clear
        self.slice_size, self.min_advance_s, self.max_share = slice_size, min_advance_s, max_share
        self.next_at = 0.0  # monotonic time before which no pass starts

    async def run(self, owned: Callable[[], set[int]]) -> None:
        """A pass over the customers of the partitions ``owned()`` says are this process's once
        the pass holds the lock (a rebalance may come while it waits: a pass over partitions
        given up put their customers back in this process's state), unless the last pass was
        too recent."""
        if time.monotonic() < self.next_at:
            return
        async with self.lock:
            assigned = owned()
            if not assigned:
                return
            aging = self.start(assigned, self.min_advance_s)
        took = 0.0
        while not aging.done:
            await self.way_clear.wait()
            if self.stopping.is_set():
                return
            async with self.lock:
                started = time.monotonic()
                aging.step(self.slice_size)
                took += time.monotonic() - started
                await self.after_slice()
            # An uncontended lock and awaits that need no I/O never give the loop a turn: a pass
            # over 5 million customers held a worker's loop for 80 s, deaf to SIGTERM.
            await asyncio.sleep(0)
        self.next_at = time.monotonic() + took * (1 / self.max_share - 1)
