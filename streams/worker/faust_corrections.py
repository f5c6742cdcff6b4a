"""faust, corrected for exactness on crm360's brokers: the app, transport, recovery and state store
the worker runs on.

- :class:`JsonCodec` (``crm360_state``, ``crm360_membership``): customer states and memberships as
  their changelogs' JSON.
- :class:`FlushingProducer`: a flush waits for every send, and a table's changes go out as
  record batches.
- :class:`CheckpointingConsumer`: rewinds to the committed offsets, commits only when the
  app's checkpoint allows it, checks for stalls only partitions it has positioned, and asks
  the broker to answer a fetch within :data:`FETCH_MAX_WAIT_MS`.
- :class:`ExactRecovery` (through :class:`ExactTableManager`): changelogs read to their end,
  no input record dropped.
- :class:`AssignedTable`: changelog records applied only for the partitions this process holds.
- :class:`CustomerStore` (``crm360rocksdb://``): faust's RocksDB store keeping each
  partition's newest event time and customer count.
- :class:`App`: the faust app on that transport, with the checkpoint and stop signal the worker
  sets, and the partitions it owns.
- :class:`ProcessRunner`: faust's worker (the process around the app), without its spinner and
  its second of sleep before the event loop closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import aiokafka
import faust
import orjson
from aiokafka.consumer.group_coordinator import GroupCoordinator
from faust.assignor import PartitionAssignor
from faust.serializers import codecs
from faust.stores import STORES
from faust.stores import rocksdb as faust_rocksdb
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as faust_kafka
from faust.types import TP, EventT, FutureMessage

from processors.audiences import Membership
from processors.features import CustomerState
from streams.worker.changelog import Record, Stored
from streams.worker.statestore import COUNT_KEY, NEWEST_KEY, counted, with_newest


class JsonCodec(codecs.Codec):
    """Serializes a table's values (:class:`~streams.worker.changelog.Stored`) for its changelog."""

    def __init__(self, kind: type[Stored]) -> None:
        super().__init__()
        self.kind = kind

    def _dumps(self, obj: Any) -> bytes:
        return obj.to_json()

    def _loads(self, s: bytes) -> Any:
        return self.kind.from_json(s)


codecs.register("crm360_state", JsonCodec(CustomerState))
codecs.register("crm360_membership", JsonCodec(Membership))


class FlushingProducer(faust_kafka.Producer):
    """faust's Kafka producer, whose ``flush`` waits until every queued message is acknowledged.

    Table changes are queued (``send_soon``) and sent by a background task. faust's ``flush``,
    which runs before offsets are committed, stops waiting once 0.1 s passes without a queued
    message sent, so a commit could pass state changes still queued: a SIGKILL then lost them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queued: set[asyncio.Future[Any]] = set()

    def _track(self, fut: asyncio.Future[Any]) -> None:
        self._queued.add(fut)
        fut.add_done_callback(self._queued.discard)

    def send_soon(self, fut: FutureMessage) -> None:
        self._track(fut)
        super().send_soon(fut)

    async def send_records(
        self, topic: str, partition: int, records: Iterable[Record]
    ) -> tuple[asyncio.Future[Any], int]:
        """Queue ``records`` (at least one) for ``partition`` in as few record batches as they
        fit in (the per-message path costs about 70 µs a record); :meth:`flush` waits for them.
        Returns the last batch's future (its offset is its first record's) and its records."""
        producer = self._ensure_producer()
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full
                self._track(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any record
        count = batch.record_count()
        sent = await producer.send_batch(batch, topic, partition=partition)
        self._track(sent)
        return sent, count

    async def flush(self) -> None:
        await super().flush()
        if self._queued:
            await asyncio.gather(*self._queued)  # raises if one failed: then nothing is committed


#: How long a fetch may wait for records to arrive. faust asks for 1.5 s, and the local broker
#: keeps a fetch for most of its wait even once records arrived (measured in
#: ``../shared/notes/broker.md``): every record reaching an idle worker waited ~0.6 s, and every
#: hop of the identity graph (an op sent, read by the partition it is for) too. Apache Kafka
#: answers at the first record; for it this only makes an idle consumer ask ten times a second.
FETCH_MAX_WAIT_MS = 100


class PromptConsumerThread(faust_kafka.AIOKafkaConsumerThread):
    """faust's consumer thread, whose aiokafka consumer waits at most :data:`FETCH_MAX_WAIT_MS`
    for a fetch (faust fixes it at 1.5 s)."""

    def _create_worker_consumer(self, transport: faust_kafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by its fetcher, created at start
        return consumer


class PatientConsumer(faust_kafka.Consumer):
    """faust's Kafka consumer, whose stall check passes over a partition not yet positioned, and
    whose fetches wait at most :data:`FETCH_MAX_WAIT_MS` (:class:`PromptConsumerThread`).

    Every 2.5 commit intervals faust checks that each assigned partition is being read, and
    reads its position, which aiokafka asserts is known. A partition rewound (by
    :class:`RewindingConsumer`, or by a reset) has none until the fetcher has asked the broker
    where to start: on a loaded machine the check fell in between and crashed the worker.
    Such a partition is not stalled; it is checked once it has a position again.
    """

    def verify_event_path(self, now: float, tp: TP) -> None:
        assignment = self._thread._ensure_consumer()._fetcher._subscriptions.subscription.assignment
        state = assignment.state_value(aiokafka.TopicPartition(tp.topic, tp.partition)) if assignment else None
        if state is not None and state.has_valid_position:
            super().verify_event_path(now, tp)

    def _new_consumer_thread(self) -> PromptConsumerThread:
        return PromptConsumerThread(self, loop=self.loop, beacon=self.beacon)


class RewindingConsumer(PatientConsumer):
    """faust's Kafka consumer, whose seek to committed offsets also rewinds partitions without one.

    faust drops records it fetched while its flow was stopped (a rebalance, the end of a
    recovery) and re-reads them by seeking every partition to its committed offset. aiokafka
    seeks no partition without one (nor one at 0), so the dropped records were lost. Such a
    partition goes back to its beginning, where the group starts reading it (the worker's
    ``consumer_auto_offset_reset`` is "earliest"). Changelog partitions are left to recovery.
    """

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        unread = [tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs]
        if unread:
            await self._thread.seek_to_beginning(*unread)
        return committed


class CheckpointingConsumer(RewindingConsumer):
    """A consumer that commits offsets only inside the app's checkpoint (the worker writes its
    pending rows there first, and holds processing until the commit is done)."""

    #: Whether the group ever assigned it partitions.
    was_assigned = False

    async def force_commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        async with cast(App, self.app).checkpoint() as written:
            if not written:
                return False  # rows of these offsets are unwritten: the next start reads them again
            return await super().force_commit(topics, start_new_transaction=start_new_transaction)

    def expelled(self) -> bool:
        """Whether the group no longer counts this consumer a member: a heartbeat or a commit
        learnt that its session expired (the process was paused, or starved of CPU, for longer
        than the session timeout). Other members may own its partitions by then, and have
        sent newer states of their customers to the changelog. It stays so until it joined
        again (a consumer that never had partitions was not expelled)."""
        consumer = self._thread._consumer
        coordinator = consumer._coordinator if consumer is not None else None
        return self.was_assigned and isinstance(coordinator, GroupCoordinator) and coordinator.generation < 0

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        """Each assignment counts the acks of its partitions afresh. faust records the ack of a
        message whose partition was revoked meanwhile (the worker drops such a message
        unapplied) and keeps it: when the partition came back, the next commit passed messages
        this process had not applied, and whoever held the partition next started after them.
        Acks of messages applied between a revocation's commit and this assignment are forgotten
        too: read again from the committed offsets, they are duplicates, which the customers'
        states recognise."""
        self.was_assigned = True
        for tp in assigned:
            self._acked.pop(tp, None)
            self._acked_index.pop(tp, None)
            self._gap.pop(tp, None)
        await super().on_partitions_assigned(assigned, generation_id)

    def lag(self, tp: TP) -> int | None:
        """Records of ``tp`` not read yet, as of the last fetch (None before any)."""
        highwater, position = self.highwater(tp), self._read_offset.get(tp)
        return None if highwater is None else max(highwater - ((position or -1) + 1), 0)


class Transport(faust_kafka.Transport):
    """faust's Kafka transport, with :class:`CheckpointingConsumer` and :class:`FlushingProducer`."""

    Consumer = CheckpointingConsumer
    Producer = FlushingProducer


async def fetched_end_offsets(bootstrap: list[str], tps: Iterable[TP], timeout_s: float = 30.0) -> dict[TP, int]:
    """End offset of each partition, from the high watermarks of a fetch response.

    Not from ListOffsets("latest"): the local broker (Tansu) answers it with the base offset of
    the newest record batch + 1, before the end when that batch holds several records.
    """
    partitions = [aiokafka.TopicPartition(tp.topic, tp.partition) for tp in tps]
    consumer = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=1,  # the broker still returns one record batch
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        deadline = time.monotonic() + timeout_s
        while any(consumer.highwater(tp) is None for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no fetch response for {partitions} within {timeout_s:.0f}s")
            await consumer.getmany(*partitions, timeout_ms=100)
        return {TP(tp.topic, tp.partition): consumer.highwater(tp) for tp in partitions}
    finally:
        await consumer.stop()


class ExactRecovery(Recovery):
    """faust's table recovery, reading changelogs to their end and dropping no input record.

    - Changelogs are read up to the high watermark of a fetch response
      (:func:`fetched_end_offsets`). With the local broker's answer to ListOffsets, recovery
      stopped early; the changelog records after that point were applied later, over the
      newer state the worker had built since.
    - Recovery resumes the consumer's flow to read changelogs. On completion faust resumes the
      input partitions, seeks them to their committed offsets, then clears the stream queues:
      input records queued after the seek were dropped while the read position had moved past
      them. The flow is stopped first, so none are queued (faust drops what a fetch returns
      meanwhile and seeks back to the committed offsets again).
    """

    async def _build_highwaters(self, consumer: Any, tps: set[TP], destination: Any, title: str) -> None:
        await super()._build_highwaters(consumer, tps, destination, title)
        if tps:
            transport = cast(Transport, self.app.transport)  # faust's TransportT has no default_port
            bootstrap = faust_kafka.server_list(transport.url, transport.default_port)
            ends = await fetched_end_offsets(bootstrap, tps, self.app.conf.broker_request_timeout)
            for tp, end in ends.items():  # faust's "highwater" is the last offset; ListOffsets' is never past it
                destination[tp] = max(destination[tp], end - 1)

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.app.consumer.stop_flow()  # faust's completion resumes it after the queues are cleared
        await super().on_recovery_completed(generation_id)


class CustomerStore(faust_rocksdb.Store):
    """faust's RocksDB store, keeping each partition's newest event time and customer count
    (:data:`~streams.worker.statestore.NEWEST_KEY`, :data:`~streams.worker.statestore.COUNT_KEY`) as recovery
    writes the changelog into it: a worker new to a partition starts from them instead of reading
    every customer. It keeps the memberships table too (its records have no event time)."""

    def apply_changelog_batch(
        self, batch: Iterable[Any], to_key: Callable[[Any], Any], to_value: Callable[[Any], Any]
    ) -> None:
        events = list(batch)
        newest: dict[int, float] = {}
        kept: dict[tuple[int, bytes], bool] = {}  # whether each customer's last record keeps them
        for event in events:
            message = event.message
            kept[message.partition, message.key] = message.value is not None  # None: erased
            if message.value is None:
                continue
            # A state's newest event time is in its last document (``CustomerState.to_json``);
            # a membership has none.
            at = orjson.loads(message.value.rpartition(b"\n")[2]).get("newest_event_at")
            if at is not None and at > newest.get(message.partition, float("-inf")):
                newest[message.partition] = at
        change: dict[int, int] = {}
        for (partition, key), present in kept.items():
            known = key in self._db_for_partition(partition)
            if present != known:
                change[partition] = change.get(partition, 0) + (1 if present else -1)
        customers = {partition: counted(self._db_for_partition(partition)) for partition in change}
        super().apply_changelog_batch(events, to_key, to_value)
        for partition, difference in change.items():
            self._db_for_partition(partition)[COUNT_KEY] = str(customers[partition] + difference).encode()
        for partition, at in newest.items():
            database = self._db_for_partition(partition)
            database[NEWEST_KEY] = repr(with_newest(database, at)).encode()


STORES.aliases["crm360rocksdb"] = f"{__name__}:CustomerStore"


class AssignedTable(faust.Table):
    """faust's table, applying changelog records only of partitions this process is assigned.

    When a rebalance comes during recovery, faust still applies what it had buffered or
    queued of the partitions that went to another process (files them under the previous
    record's partition, even): those states, as old as their records, came back after the
    worker had let go of them and were served as live profiles next to the new owner's."""

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        assignor = self.app.assignor
        assigned = assignor.assigned_actives() | assignor.assigned_standbys()
        super().apply_changelog_batch([event for event in batch if event.message.tp in assigned])


class ExactTableManager(TableManager):
    """faust's table manager, recovering tables with :class:`ExactRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = ExactRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class App(faust.App):
    #: Entered around every offset commit, telling whether the commit may go ahead (the worker
    #: sets its own).
    checkpoint: Callable[[], contextlib.AbstractAsyncContextManager[bool]]
    #: Set on SIGINT/SIGTERM, or as the app begins to stop (the worker sets it).
    stopping: asyncio.Event
    #: What the worker's keyed views ask of requests (``streams.worker.web``); empty: nothing.
    api_key: str = ""
    #: The assignment :meth:`owned_partitions` last worked out, the topic and its partitions.
    _owned: tuple[object, str, frozenset[int]] | None = None

    def owned_partitions(self, topic: str) -> frozenset[int]:
        """The partitions of ``topic`` this process is assigned, worked out once per assignment:
        faust replaces its assignment at each one (``PartitionAssignor.on_assignment``), and
        working them out for every customer read took a tenth of an audience's backfill."""
        assignor = cast(PartitionAssignor, self.assignor)
        assignment = assignor._assignment
        owned = self._owned
        if owned is None or owned[0] is not assignment or owned[1] != topic:
            partitions = frozenset(tp.partition for tp in assignor.assigned_actives() if tp.topic == topic)
            owned = self._owned = (assignment, topic, partitions)
        return owned[2]

    async def on_stop(self) -> None:
        self.stopping.set()
        await super().on_stop()

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)


class ProcessRunner(faust.Worker):
    """faust's worker, running ``app`` in this process until SIGINT/SIGTERM."""

    def __init__(self, app: App, loglevel: str) -> None:
        super().__init__(app, loglevel=loglevel, quiet=True)
        # Its progress spinner sets the root logger to DEBUG (at any log level), so every
        # debug call of faust and aiokafka on the hot path would build a log record.
        self.spinner = None

    def _schedule_shutdown(self, sig: signal.Signals) -> None:
        """On SIGINT/SIGTERM: the app's ``stopping`` is set at once, since the stop reaches
        the app only after more turns of the event loop than a batch's slices give."""
        cast(App, self.app).stopping.set()
        super()._schedule_shutdown(sig)

    async def _sentinel_task(self) -> None:
        """The last task before the event loop closes: mode sleeps a second here, which every
        stop of every process paid; one turn of the loop runs the callbacks still due."""
        await asyncio.sleep(0)
