"""The worker process: the Faust app, its input topics, customer table and agent, and the
parts around them, each a module of its own (``writes``, ``checkpoint``, ``intake``,
``outbox``, ``health``, ``metrics``, ``aging``, ``modelhub``, ``processes``, ``web``).

One agent reads all four co-partitioned input topics in batches
(``stream.take_events``), hands each batch to :class:`~streams.worker.pipeline.CustomerPipeline`
and publishes dead letters. Rows are written to ClickHouse every ``flush_interval_s`` (each
insert has a fixed cost, so batches share them), and always before offsets are committed:
a commit first writes everything pending, so no committed message's rows are unwritten.
Customer state lives in a changelog-backed Table keyed by the customer id (the input
message key). Its changes go to the changelog at each commit too, each changed customer's
state once however often it changed since the last (serializing states after every batch
was a tenth of the processing): a restart restores the states as of the last commit and
re-reads from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import shutil
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import faust
from clickhouse_connect.driver.client import Client
from faust.types import TP, EventT

from processors.audiences import Membership
from processors.features import CustomerState
from processors.identity_graph import Op
from schemas.rows import DeadLetter
from schemas.topics import CUSTOMER_PROFILES, ERASURES, IDENTITY_OPS, INPUT_TOPICS, PURCHASES, partition_for
from sinks.clickhouse import ClickHouseSink, connect, migrate
from sinks.query import ReadOnlyPool, reader_statements
from sinks.retention import apply_retention
from streams.settings import Role, Settings
from streams.worker.aging import AgingSchedule
from streams.worker.audiences import AudienceDefinitions
from streams.worker.backfill import Backfill, CurrentReads
from streams.worker.changelog import BufferedTable, V
from streams.worker.checkpoint import Checkpoint
from streams.worker.clickhouse_http import INTERFACE_LIMITS, ClickHouseInterface
from streams.worker.destinations import Destinations
from streams.worker.faust_corrections import (
    App,
    AssignedTable,
    CheckpointingConsumer,
    CustomerStore,
    ExactTableManager,
    FlushingProducer,
    ProcessRunner,
)
from streams.worker.forget import Forgetting
from streams.worker.health import BROKER_PROBE_INTERVAL_S, Health
from streams.worker.intake import Intake
from streams.worker.memory import rare_garbage_collection
from streams.worker.message import Message
from streams.worker.metrics import process_figures
from streams.worker.modelhub import ModelHub
from streams.worker.outbox import Outbox
from streams.worker.pauses import PauseWatch
from streams.worker.pipeline import CustomerPipeline
from streams.worker.processes import Helpers, RemoteRows
from streams.worker.statestore import DiskTable
from streams.worker.suppressions import SuppressionList
from streams.worker.web import MAX_BODY_BYTES, register_views
from streams.worker.writes import RowWriter

log = logging.getLogger("crm360")
#: Input a batch applies at a time (its messages' bytes, about 40,000 events): a batch of
#: envelopes of 1,000 events each can hold a million events, which would keep the event loop
#: (heartbeats, HTTP) waiting for minutes and every customer they touch in memory. Each slice
#: emits a row per customer it touched, so smaller slices cost rows when customers are few.
SLICE_BYTES = 8 << 20
#: How long the main process waits, after its helpers left the consumer group, to join the
#: rebalance that began (its heartbeat, every 0.5 s, learns of it). The local broker wedges a
#: group that a member leaves while it rebalances: every later start then rejoins forever.
LEAVING_WAIT_S = 3.0


def slices(messages: list[Message], limit: int) -> Iterator[list[Message]]:
    """``messages`` in order, in runs of at most ``limit`` bytes (a longer message alone).

    >>> [len(run) for run in slices([Message("t", 0, i, bytes(400)) for i in range(5)], 1000)]
    [2, 2, 1]
    """
    run: list[Message] = []
    size = 0
    for message in messages:
        length = len(message.value or b"")
        if run and size + length > limit:
            yield run
            run, size = [], 0
        run.append(message)
        size += length
    if run:
        yield run


def faust_app(settings: Settings) -> App:
    """The Faust app of one worker process, configured from ``settings``."""
    return App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="crm360rocksdb://" if settings.state_store == "rocksdb" else "memory://",
        topic_partitions=settings.partitions,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        producer_linger_ms=20,
        broker_commit_interval=settings.commit_interval_s,
        producer_max_batch_size=512 * 1024,  # table changes go out as one record batch per partition
        consumer_max_fetch_size=16 * 1024 * 1024,  # envelopes are large messages
        stream_buffer_maxsize=65_536,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_application_options={"client_max_size": MAX_BODY_BYTES + 1},  # a body may be that long
        # faust's /table/... would answer customers' states to anyone, key or not; /router/...
        # the processes' addresses (routing a request to a customer's process needs neither).
        web_tables_enabled=False,
        web_router_enabled=False,
        # Each process its own (RocksDB locks its files), the same on every start.
        datadir=str(
            settings.data_path / "faust" / (f"helper-{settings.helper_number}" if settings.role is Role.HELPER else "")
        ),
        autodiscover=False,
        TableManager=ExactTableManager,
        Table=AssignedTable,
    )


def changelog_table(app: App, settings: Settings, name: str, serializer: str) -> faust.Table:
    """A changelog-backed table keyed by customer id: their states (``customers``, values by
    the ``crm360_state`` codec), or their audience memberships (``memberships``)."""
    state_schema: faust.Schema = faust.Schema(key_serializer="raw", value_serializer=serializer)
    table = app.Table(
        name,
        default=None,
        schema=state_schema,
        partitions=settings.partitions,
        use_partitioner=True,
        # Declared here so its serializers are ours (raw customer-id keys, state values).
        options={"driver": "rocksdict", **settings.rocksdb_options()} if settings.state_store == "rocksdb" else None,
        changelog_topic=app.topic(
            f"{settings.app_id}-{name}-changelog",
            schema=state_schema,
            partitions=settings.partitions,
            compacting=True,
            deleting=False,
            acks=False,
            internal=True,
            maxsize=131_072,
            allow_empty=True,
        ),
    )
    declared = cast(faust.Table, table)  # faust's TableT lacks the serializers the table has
    declared.key_serializer, declared.value_serializer = "raw", serializer
    return declared


class ClickHouse:
    """How one worker process reaches ClickHouse: its writer (a helper process of embedded
    ClickHouse stages its inserts for the main process), and, in the process that owns it,
    read-only pools: the dashboard's and live profiles' on one connection, analysts' (``/sql``)
    on others, so that a long analyst query holds neither."""

    def __init__(self, settings: Settings) -> None:
        self.writer: Client | RemoteRows
        self.dashboard_reads: ReadOnlyPool | None = None
        self.sql_reads: ReadOnlyPool | None = None
        #: The worker's own reads of every customer (``streams.worker.backfill``).
        self.current_reads: ReadOnlyPool | None = None
        self.staging: Path | None = None
        #: ClickHouse's HTTP interface, read-only, for analysts' clients (embedded ClickHouse).
        self.interface: ClickHouseInterface | None = None
        if settings.role is Role.HELPER and settings.embedded_clickhouse:  # the main process writes and reads
            self.writer = RemoteRows(settings, settings.staging_path / str(settings.web_port))
            return
        self.current_reads = ReadOnlyPool(settings.clickhouse_url, 1, "current", limits=None)
        self.writer = connect(settings.clickhouse_url)
        migrate(self.writer)
        apply_retention(self.writer, settings.raw_events_retention_days, settings.dead_letters_retention_days)
        if not settings.embedded_clickhouse:
            for statement in reader_statements(settings.reader_password):
                self.writer.command(statement)
        self.dashboard_reads = ReadOnlyPool(settings.clickhouse_reader_url, 1, "dashboard")
        self.sql_reads = ReadOnlyPool(settings.clickhouse_reader_url, settings.sql_connections, "sql")
        if settings.embedded_clickhouse and settings.clickhouse_http_port:  # a server has its own
            self.interface = ClickHouseInterface(
                settings.web_host,
                settings.clickhouse_http_port,
                ReadOnlyPool(settings.clickhouse_url, settings.sql_connections, "interface", INTERFACE_LIMITS),
                settings.key,
            )
        if settings.embedded_clickhouse:
            shutil.rmtree(settings.staging_path, ignore_errors=True)  # left by earlier runs' helpers
            self.staging = settings.staging_path / "main"


class Worker:
    """One worker process: the Faust app with its customer table and agent, the pipeline, and
    the parts around them (row writes, checkpoints, intake, outbox, health, models, helpers)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = faust_app(settings)
        self.table = changelog_table(self.app, settings, "customers", "crm360_state")
        self.membership_table = changelog_table(self.app, settings, "memberships", "crm360_membership")
        #: What the pipeline writes: the tables' stores, changes sent at each checkpoint.
        self.customers: BufferedTable[CustomerState] = self._buffered(self.table, CustomerState)
        self.memberships: BufferedTable[Membership] = self._buffered(self.membership_table, Membership)
        self.source = self.app.topic(
            *INPUT_TOPICS,
            IDENTITY_OPS,
            ERASURES,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            maxsize=2 * settings.batch_max_messages,  # read ahead: the next batch, not a backlog's worth
        )
        self.clickhouse = ClickHouse(settings)
        self.sink = ClickHouseSink(self.clickhouse.writer, self.clickhouse.staging)
        #: The other processes of this worker (the main process starts them).
        self.helpers = (
            Helpers(settings, settings.processes - 1) if settings.processes > 1 and settings.role is Role.MAIN else None
        )
        self.pipeline = CustomerPipeline(
            settings.feature_config(),
            self.sink,
            self.customers,
            settings.partitions,
            settings.models_config(),
            rescore_interval_s=settings.rescore_interval_s,
            identity_config=settings.identity_config(),
            memberships=self.memberships,
        )
        self.models = ModelHub(self.app, settings, self.pipeline, self.sink)
        self.audiences = AudienceDefinitions(self.app, settings.kafka_bootstrap, self.pipeline.audiences)
        self.suppressions = SuppressionList(self.app, settings.kafka_bootstrap, self.pipeline.privacy.suppressions)
        reads = self.clickhouse.current_reads
        self.forgetting = (
            Forgetting(self.app, settings.partitions, self.customers, self.suppressions, self.sink, reads)
            if reads is not None
            else None
        )
        self.destinations = Destinations(self.app, settings, self.audiences, self._undelivered)
        self.lock = asyncio.Lock()  # held while processing, and around offset commits
        #: Set when the worker begins to stop: a failing write is then given up, not retried.
        self.stopping = self.app.stopping = asyncio.Event()
        self.outbox = Outbox(self.app)
        self.writer = RowWriter(self.sink, settings, self.stopping, self._dead_lettered)
        self.pauses = PauseWatch(settings.session_timeout_s, settings.heartbeat_interval_s)
        self.checkpoint = Checkpoint(
            self.app,
            {
                self.table.changelog_topic.get_topic_name(): self.customers,
                self.membership_table.changelog_topic.get_topic_name(): self.memberships,
            },
            self.pipeline,
            self.writer,
            cast(CheckpointingConsumer, self.app.consumer).expelled,
            self.pauses,
        )
        self.health = Health(settings.kafka_bootstrap, self.app.assignor, self.writer, self.models.caught_up)
        self.health.quality = self.models.watch
        self.current_reads = CurrentReads(settings, self.clickhouse.current_reads)
        self.backfill = Backfill(
            self.pipeline,
            self.lock,
            self.stopping,
            self.writer,
            self.current_reads,
            self._after_slice,
        )
        self.aging = AgingSchedule(
            self.pipeline.start_aging,
            self.lock,
            self.stopping,
            self._after_slice,
            way_clear=self.backfill.idle,
            slice_size=settings.aging_slice,
            min_advance_s=settings.aging_min_advance_s,
            max_share=settings.aging_max_share,
        )
        self.last_batch_at: float | None = None
        #: When identity ops were last sent (they go out together, every flush interval).
        self.identity_sent_at = 0.0
        #: The partitions of the last assignment, none while a rebalance is under way (faust's
        #: assignor still names the old ones then): those an aging pass may walk.
        self.settled: set[int] = set()
        self.app.checkpoint = self._checkpoint
        self.app.agent(self.source, name="customers")(self._process)
        self.app.timer(settings.aging_interval_s)(self._age)
        self.app.timer(settings.flush_interval_s)(self._backfill)
        self.app.timer(settings.flush_interval_s / 4)(self._flush_when_due)
        self.app.timer(BROKER_PROBE_INTERVAL_S)(self._probe_broker)
        self.app.timer(settings.heartbeat_interval_s)(self._tick)
        # mode's stubs require a handler to take any positional arguments; ours take what their
        # signal sends (the partitions; nothing at shutdown).
        self.app.on_partitions_revoked.connect(self._revoked)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(self._assigned)  # type: ignore[arg-type]
        if self.clickhouse.interface is not None:
            self.app.task(self.clickhouse.interface.serve)
        if self.helpers:
            self.app.timer(2.0)(self._watch_helpers)
            self.app.on_before_shutdown.connect(self._stop_helpers)  # type: ignore[arg-type]
        register_views(
            self.app,
            settings,
            pipeline=self.pipeline,
            intake=Intake(self.app, settings, self.pipeline, self.lock, self.outbox, self.writer),
            health=self.health,
            writer=self.writer,
            figures=self.figures,
            helpers=self.helpers,
            table=self.table,
            audiences=self.audiences,
            forgetting=self.forgetting,
            dashboard_reads=self.clickhouse.dashboard_reads,
            sql_reads=self.clickhouse.sql_reads,
            current_reads=self.current_reads,
        )

    async def _process(self, stream: faust.StreamT) -> None:
        batch_size, within = self.settings.batch_max_messages, self.settings.batch_within_s
        try:
            async for events in cast(faust.Stream, stream).take_events(batch_size, within=within):
                await self.models.caught_up.wait()  # never score with less than the newest model
                await self.audiences.caught_up.wait()  # nor check audiences before knowing them all
                await self.suppressions.caught_up.wait()  # nor rebuild an erased person
                async with self.lock:  # no rebalance completes while it is held
                    for run in slices(self._current(events), SLICE_BYTES):
                        if self.stopping.is_set():  # the rest waits for the next start, not the stop
                            self.checkpoint.hold_offsets()
                            break
                        dead = self.pipeline.ingest(run)
                        await asyncio.sleep(0)  # the event loop's other work (heartbeats, HTTP) in between
                        # The graph's work alone (no event waits): its ops go at once, not at the
                        # next flush interval, since each hop of a merge waits for that send.
                        await self._send_identity_ops(now=all(message.topic == IDENTITY_OPS for message in run))
                        await self.outbox.dead_letters(dead)
                        await self._after_slice()
                        await asyncio.sleep(0)
                self.last_batch_at = time.time()
                self.health.agent_error = None  # faust restarts a failed agent: healthy again once a batch went through
        except Exception as error:
            self.health.agent_error = f"{type(error).__name__}: {error}"[:500]
            raise

    def _current(self, events: Sequence[EventT]) -> list[Message]:
        """The batch's messages but those fetched before the last rebalance for partitions now
        another process's. faust skips such messages as they enter a stream, but a batch
        gathered across a rebalance holds some: applied here, they made states of partitions
        not this process's (stale live profiles here, stale changelog records for their owner),
        who reads them again from the committed offsets."""
        generation, owned = self.app.consumer_generation_id, self._owned_partitions()
        return [
            Message(e.message.topic, e.message.partition, e.message.offset, e.message.value)
            for e in events
            if e.message.generation_id == generation or e.message.partition in owned
        ]

    async def _send_identity_ops(self, now: bool = False) -> None:
        """The identity graph's ops since the last send, every ``flush_interval_s`` (or ``now``:
        before an offset commit or a rebalance, or after a slice of ops alone): the records that
        handled ops made durable first (rows written, states in the changelog and
        acknowledged), then the ops sent and acknowledged, then the records told so
        (``processors.identity_graph``)."""
        if not now and time.monotonic() - self.identity_sent_at < self.settings.flush_interval_s:
            return
        self.identity_sent_at = time.monotonic()
        ops, handled = self.pipeline.identities.take()
        if not ops and not handled:
            return
        producer = cast(FlushingProducer, self.app.producer)
        ops_of: dict[int, list[Op]] = {}
        for op in ops:
            ops_of.setdefault(partition_for(op.target, self.settings.partitions), []).append(op)
        by_partition = {partition: [(b"ops", raw) for raw in Op.pack(some)] for partition, some in ops_of.items()}
        try:
            if handled:
                if not await self.checkpoint.write_then_send_state([key.encode() for key in handled]):
                    return  # a stopping worker gave rows up: the next start handles these ops again
                await producer.flush()
            for partition, records in by_partition.items():
                await producer.send_records(IDENTITY_OPS, partition, records)
            await producer.flush()
        except BaseException:
            self.pipeline.identities.unsent(ops, handled)  # the next send takes them again
            raise
        self.pipeline.identities.sent(handled)

    async def _send_privacy(self) -> None:
        """What erasures and suppressed events left to send (``streams.worker.privacy``):
        suppressions durable first, so that no process applies their events again."""
        outgoing = self.pipeline.privacy.take()
        if not outgoing:
            return
        producer = cast(FlushingProducer, self.app.producer)
        partitions = self.settings.partitions
        try:
            for suppression in outgoing.suppressions:
                await self.suppressions.send(suppression)
            for erasure in outgoing.erasures:
                key = erasure.identifier.encode()
                await producer.send_records(
                    ERASURES, partition_for(key, partitions), [(key, erasure.model_dump_json().encode())]
                )
            for customer in outgoing.tombstones:
                key = customer.encode()
                await producer.send_records(CUSTOMER_PROFILES, partition_for(key, partitions), [(key, None)])
            await producer.flush()
        except BaseException:
            self.pipeline.privacy.unsent(outgoing)
            raise

    async def _revoked(self, sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        """Before the partitions move: every state change is in the changelog (the commit on
        revocation sent them; whatever changed since goes now), for their next owner. An
        expelled process sends none (see ``streams.worker.checkpoint``) and forgets its
        customers' states, changed or not: should their partitions come back, recovery reads
        what their owner meanwhile sent."""
        self.settled = set()
        partitions = {tp.partition for tp in revoked if tp.topic == PURCHASES}
        async with self.lock:
            if await self.checkpoint.write_then_send_state():
                await self.app.producer.flush()
                await self._send_identity_ops(now=True)
            elif self.checkpoint.expelled():
                dropped = self.customers.drop(lambda key: self.pipeline.partition_of(key) in partitions)
                self.memberships.drop(lambda key: self.pipeline.partition_of(key) in partitions)
                log.warning(
                    "expelled from the consumer group: %d customers' states dropped (their owner's are newer)", dropped
                )
        self.pipeline.forget_partitions(partitions)
        self.models.revoked()

    async def _assigned(self, sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        """Customers of partitions now owned by another process (or worker) leave this one:
        their owner serves and counts them. Should their partition come back, faust's recovery
        reads its changelog from the start. Their changes were all sent on revocation."""
        mine = {tp.partition for tp in assigned if tp.topic == PURCHASES}
        for table in (self.customers, self.memberships):
            table.drop(lambda key: self.pipeline.partition_of(key) not in mine)
        self.settled = mine

    async def _age(self) -> None:
        if self.models.caught_up.is_set() and self.audiences.caught_up.is_set():
            await self.aging.run(lambda: self.settled)

    async def _backfill(self) -> None:
        if self.audiences.caught_up.is_set():
            await self.backfill.run(lambda: self.settled)

    async def _after_slice(self) -> None:
        """What a slice of input or of an aging pass leaves to publish and write."""
        await self._send_privacy()
        await self._publish_model_output()
        await self.writer.flush_when_due()
        await self.checkpoint.write_state_when_large()

    async def _tick(self) -> None:
        self.pauses.tick()

    async def _probe_broker(self) -> None:
        await self.health.probe_broker(cast(FlushingProducer, self.app.producer)._ensure_producer().client)

    async def _watch_helpers(self) -> None:
        assert self.helpers
        for problem in self.helpers.restart_exited():
            log.error(problem)

    async def _stop_helpers(self, sender: Any, **kwargs: Any) -> None:
        """At shutdown, while this process's web server still takes their last rows; then,
        before this process leaves the consumer group, until it joined the rebalance their
        leaving began (see :data:`LEAVING_WAIT_S`)."""
        assert self.helpers
        rebalances = self.app.rebalancing_count
        for problem in await asyncio.to_thread(self.helpers.stop):
            log.error(problem)
        deadline = time.monotonic() + LEAVING_WAIT_S
        while self.app.rebalancing_count == rebalances and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    @contextlib.asynccontextmanager
    async def _checkpoint(self) -> AsyncIterator[bool]:
        """Around an offset commit, with no batch running; yields False, for no commit, when a
        stopping worker gave rows up or left messages unapplied (see
        :class:`~streams.worker.checkpoint.Checkpoint`)."""
        async with self.lock:
            commit = await self.checkpoint.before_commit()
            if commit:  # ops out before the offsets of what made them are committed
                await self._send_identity_ops(now=True)
            yield commit

    async def _flush_when_due(self) -> None:
        async with self.lock:
            await self.writer.flush_when_due()
            await self._send_identity_ops()

    def _read_through(self) -> set[int]:
        """The partitions whose every input topic this process has read to the end (as of the
        last fetch)."""
        consumer = cast(CheckpointingConsumer, self.app.consumer)
        inputs = [tp for tp in self.app.assignor.assigned_actives() if tp.topic in (*INPUT_TOPICS, IDENTITY_OPS)]
        return {tp.partition for tp in inputs} - {tp.partition for tp in inputs if consumer.lag(tp) != 0}

    def _owned_partitions(self) -> frozenset[int]:
        return self.app.owned_partitions(PURCHASES)

    def _buffered(self, table: faust.Table, kind: type[V]) -> BufferedTable[V]:
        """What the pipeline writes of ``table``: its store, on disk or in memory."""
        if self.settings.state_store == "memory":
            return BufferedTable(table.data)
        return DiskTable(
            cast(CustomerStore, table.data)._db_for_partition,
            self._owned_partitions,
            lambda key: self.pipeline.partition_of(key),
            self.settings.state_cache_customers,
            kind,
        )

    async def _publish_model_output(self) -> None:
        """Training records to the trainer, churn alerts to marketing tools, merges and refused
        links to whoever follows them (sent before the states that decided them: the producer's
        flush before a state is durable sends them too)."""
        training = self.pipeline.take_training(self.settled, self._read_through())
        if training:
            await self.models.send_training(training)
        await self.outbox.alerts(self.pipeline.take_alerts())
        await self.outbox.merges(self.pipeline.identities.take_merges())
        await self.outbox.audience_events(self.pipeline.take_audience_events(), self.pipeline.partition_of)

    async def _dead_lettered(self, dead: list[DeadLetter]) -> None:
        """Rows ClickHouse refused (the sink wrote their dead letters), counted and published."""
        self.pipeline.counters.dead_letters += len(dead)
        await self.outbox.dead_letters(dead)

    async def _undelivered(self, dead: list[DeadLetter]) -> None:
        """Entries and exits an audience's webhook did not take: written, counted and published."""
        self.pipeline.record_dead_letters(dead)
        await self.outbox.dead_letters(dead)

    def figures(self) -> dict[str, float]:
        """This process's figures (see :func:`~streams.worker.metrics.process_figures`)."""
        figures = process_figures(
            self.app, self.pipeline, self.customers, self.writer, self.health, self.models.trainer
        )
        return figures | self.destinations.figures()

    def run(self) -> None:
        """Run the worker in the foreground until SIGINT/SIGTERM."""
        runner = ProcessRunner(self.app, loglevel=self.settings.log_level)
        if self.helpers:
            self.helpers.start()
        try:
            with rare_garbage_collection():
                runner.execute_from_commandline()
        finally:
            if self.helpers:  # when the app did not get to stop them
                for problem in self.helpers.stop():
                    log.error(problem)
            # The interpreter's last collection would walk every object of a process about to
            # end (2 s for 100,000 customers in memory).
            gc.freeze()
