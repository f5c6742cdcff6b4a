"""The Faust worker: input topics, the customer table, the agent, the aging timer.

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
import logging
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import faust
from clickhouse_connect.driver.client import Client
from faust.types import TP

from schemas.rows import DeadLetter
from schemas.topics import CHURN_ALERTS, DEAD_LETTERS, INPUT_TOPICS, PURCHASES
from sinks.clickhouse import ClickHouseSink, connect, migrate
from sinks.query import ReadOnlyPool, reader_statements
from streams.settings import Role, Settings
from streams.worker.changelog import BufferedTable
from streams.worker.faust_corrections import App, CustomerStore, ExactTableManager, FlushingProducer
from streams.worker.memory import rare_garbage_collection, release_freed_memory
from streams.worker.modelhub import ModelHub
from streams.worker.pipeline import CustomerPipeline, Message
from streams.worker.processes import Helpers, RemoteRows
from streams.worker.statestore import DiskTable
from streams.worker.web import MAX_BODY_BYTES

log = logging.getLogger("crm360")

#: How often the worker asks the broker whether it answers, and how long it waits for it.
BROKER_PROBE_INTERVAL_S = 1.0
BROKER_PROBE_TIMEOUT_S = 3.0
#: Input a batch applies at a time (its messages' bytes, about 40,000 events): a batch of
#: envelopes of 1,000 events each can hold a million events, which would keep the event loop
#: (heartbeats, HTTP) waiting for minutes and every customer they touch in memory. Each slice
#: emits a row per customer it touched, so smaller slices cost rows when customers are few.
SLICE_BYTES = 8 << 20


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


class WriteAbandoned(RuntimeError):
    """A stopping worker gave up a ClickHouse write: its rows' offsets stay uncommitted."""


class Worker:
    """Everything one worker process owns: the Faust app, the pipeline, the sink."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = App(
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
            # Each process its own (RocksDB locks its files), the same on every start.
            datadir=str(
                settings.data_path
                / "faust"
                / (f"helper-{settings.helper_number}" if settings.role is Role.HELPER else "")
            ),
            autodiscover=False,
            TableManager=ExactTableManager,
        )
        state_schema: faust.Schema = faust.Schema(key_serializer="raw", value_serializer="crm360_state")
        self.table = self.app.Table(
            "customers",
            default=None,
            schema=state_schema,
            partitions=settings.partitions,
            use_partitioner=True,
            # Declared here so its serializers are ours (raw customer-id keys, state values).
            options={"driver": "rocksdict", **settings.rocksdb_options()}
            if settings.state_store == "rocksdb"
            else None,
            changelog_topic=self.app.topic(
                f"{settings.app_id}-customers-changelog",
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
        table = cast(faust.Table, self.table)  # faust's TableT lacks the serializers the table has
        table.key_serializer, table.value_serializer = "raw", "crm360_state"
        #: What the pipeline writes: the table's store, changes sent by :meth:`publish_state`.
        self.customers = (
            BufferedTable(self.table.data)
            if settings.state_store == "memory"
            else DiskTable(
                cast(CustomerStore, self.table.data)._db_for_partition,
                self._owned_partitions,
                lambda key: self.pipeline.partition_of(key),
                settings.state_cache_customers,
            )
        )
        self.source = self.app.topic(
            *INPUT_TOPICS,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            maxsize=2 * settings.batch_max_messages,  # read ahead: the next batch, not a backlog's worth
        )
        self.dead_letter_topic = self.app.topic(
            DEAD_LETTERS, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )
        self.writer: Client | RemoteRows
        #: Read-only queries: the dashboard's and live profiles' on one connection, analysts'
        #: (/sql) on others, so that a long analyst query holds neither. None in a helper process.
        self.dashboard_reads: ReadOnlyPool | None = None
        self.sql_reads: ReadOnlyPool | None = None
        staging: Path | None = None
        if settings.role is Role.HELPER and settings.embedded_clickhouse:  # the main process writes
            self.writer = RemoteRows(settings, settings.staging_path / str(settings.web_port))
        else:
            self.writer = connect(settings.clickhouse_url)
            migrate(self.writer)
            if not settings.embedded_clickhouse:
                for statement in reader_statements(settings.reader_password):
                    self.writer.command(statement)
            self.dashboard_reads = ReadOnlyPool(settings.clickhouse_reader_url, 1, "dashboard")
            self.sql_reads = ReadOnlyPool(settings.clickhouse_reader_url, settings.sql_connections, "sql")
            if settings.embedded_clickhouse:
                shutil.rmtree(settings.staging_path, ignore_errors=True)  # left by earlier runs' helpers
                staging = settings.staging_path / "main"
        self.sink = ClickHouseSink(self.writer, staging)
        #: The other processes of this worker (the main process starts them).
        self.helpers = (
            Helpers(settings, settings.processes - 1) if settings.processes > 1 and settings.role is Role.MAIN else None
        )
        self.alerts_topic = self.app.topic(
            CHURN_ALERTS, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )
        self.pipeline = CustomerPipeline(
            settings.feature_config(),
            self.sink,
            self.customers,
            settings.partitions,
            settings.models_config(),
            rescore_interval_s=settings.rescore_interval_s,
        )
        self.models = ModelHub(self.app, settings, self.pipeline, self.sink)
        self.lock = asyncio.Lock()  # held while processing, and around offset commits
        self.write_lock = asyncio.Lock()  # ClickHouse writes, one at a time and in order
        self.writing: asyncio.Task[None] | None = None  # a write in the background
        self.sink_error: str | None = None
        self.agent_error: str | None = None
        self.broker_error: str | None = None
        #: Set when the worker begins to stop: a failing write is then given up, not retried.
        self.stopping = self.app.stopping = asyncio.Event()
        self.rows_abandoned = False  # a stopping worker gave rows up: it commits no offset any more
        self.last_batch_at: float | None = None
        self.started_at = time.time()
        self.flush_seconds_total = 0.0
        self.flushes = 0
        self.flushed_at = time.monotonic()
        self.next_aging_at = 0.0  # monotonic time before which no aging pass starts
        self.app.checkpoint = self._checkpoint
        self.app.agent(self.source, name="customers")(self._process)
        self.app.timer(settings.aging_interval_s)(self._age)
        self.app.timer(settings.flush_interval_s / 4)(self._flush_when_due)
        self.app.timer(BROKER_PROBE_INTERVAL_S)(self._probe_broker)
        # mode's stubs require a handler to take any positional arguments; ours take what their
        # signal sends (the partitions; nothing at shutdown).
        self.app.on_partitions_revoked.connect(self._revoked)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(self._assigned)  # type: ignore[arg-type]
        if self.helpers:
            self.app.timer(2.0)(self._watch_helpers)
            self.app.on_before_shutdown.connect(self._stop_helpers)  # type: ignore[arg-type]
        from streams.worker.web import register_views

        register_views(self)

    async def _process(self, stream: faust.StreamT) -> None:
        batch_size, within = self.settings.batch_max_messages, self.settings.batch_within_s
        try:
            async for events in cast(faust.Stream, stream).take_events(batch_size, within=within):
                messages = [
                    Message(e.message.topic, e.message.partition, e.message.offset, e.message.value) for e in events
                ]
                await self.models.caught_up.wait()  # never score with less than the newest model
                async with self.lock:
                    for run in slices(messages, SLICE_BYTES):
                        dead = self.pipeline.ingest(run)
                        await self.publish_dead_letters(dead)
                        await self.publish_model_output()
                        await self.flush_when_due()
                        await self.write_state_when_large()
                        await asyncio.sleep(0)  # the event loop's other work: heartbeats, HTTP
                self.last_batch_at = time.time()
                self.agent_error = None  # faust restarts a failed agent: healthy again once a batch went through
        except Exception as error:
            self.agent_error = f"{type(error).__name__}: {error}"[:500]
            raise

    async def _revoked(self, sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        """Before the partitions move: every state change is in the changelog (the commit on
        revocation sent them; whatever changed since goes now), for their next owner."""
        async with self.lock:
            if await self.write_then_send_state():
                await self.app.producer.flush()
        self.pipeline.forget_partitions({tp.partition for tp in revoked if tp.topic == PURCHASES})

    async def _assigned(self, sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        """Customers of partitions now owned by another process (or worker) leave this one:
        their owner serves and counts them. Should their partition come back, faust's recovery
        reads its changelog from the start. Their changes were all sent on revocation."""
        mine = {tp.partition for tp in assigned if tp.topic == PURCHASES}
        self.customers.drop(lambda key: self.pipeline.partition_of(key) not in mine)

    async def _age(self) -> None:
        """An aging pass (:class:`~streams.worker.aging.AgingPass`) in slices, with batches in between."""
        assigned = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == PURCHASES}
        if not assigned or not self.models.caught_up.is_set():
            return
        if time.monotonic() < self.next_aging_at:
            return
        async with self.lock:
            aging = self.pipeline.start_aging(assigned, self.settings.aging_min_advance_s)
        took = 0.0
        while not aging.done:
            if self.stopping.is_set():  # the next start begins a pass afresh; a stop waits for none
                return
            async with self.lock:
                started = time.monotonic()
                aging.step(self.settings.aging_slice)
                took += time.monotonic() - started
                await self.publish_model_output()
                await self.flush_when_due()
                await self.write_state_when_large()
        self.next_aging_at = time.monotonic() + took * (1 / self.settings.aging_max_share - 1)

    async def _probe_broker(self) -> None:
        """Whether the broker answers a metadata request within :data:`BROKER_PROBE_TIMEOUT_S`:
        a broker that is down, paused or cut from its storage still accepts connections, and
        the worker's clients wait and retry by themselves meanwhile."""
        client = cast(FlushingProducer, self.app.producer)._ensure_producer().client
        try:
            await asyncio.wait_for(client.fetch_all_metadata(), BROKER_PROBE_TIMEOUT_S)
            self.broker_error = None
        except Exception as error:  # noqa: BLE001 - any failure is an outage while it lasts
            reason = "no answer" if isinstance(error, asyncio.TimeoutError) else f"{type(error).__name__}: {error}"
            self.broker_error = f"Kafka at {self.settings.kafka_bootstrap} is not answering ({reason[:200]})"

    async def _watch_helpers(self) -> None:
        assert self.helpers
        for problem in self.helpers.restart_exited():
            log.error(problem)

    async def _stop_helpers(self, sender: Any, **kwargs: Any) -> None:
        """At shutdown, while this process's web server still takes their last rows."""
        assert self.helpers
        for problem in await asyncio.to_thread(self.helpers.stop):
            log.error(problem)

    @contextlib.asynccontextmanager
    async def _checkpoint(self) -> AsyncIterator[bool]:
        """Around an offset commit, with no batch running (:meth:`write_then_send_state`; the
        commit waits for the state changes). Yields False, for no commit, when a stopping worker
        gave rows up."""
        async with self.lock:
            yield await self.write_then_send_state()

    async def write_then_send_state(self) -> bool:
        """Write the pending rows, then send the state changes; whether it did. A stopping worker
        that gave rows up (here, or in a background write) sends no state any more: the next
        start applies those messages again and writes their rows. A state sent ahead of its rows
        would make the re-read messages duplicates, whose raw rows were then lost."""
        try:
            await self.flush()
        except WriteAbandoned as error:
            log.error("%s; no offset committed", error)
        if self.rows_abandoned:
            return False
        await self.publish_state()
        # What the interval freed (decoded states, their JSON, messages) back to the system.
        await asyncio.to_thread(release_freed_memory)
        return True

    async def write_state_when_large(self) -> None:
        """Write the pending rows and the changed states (a checkpoint without its offset commit:
        the messages are read again after a crash, as duplicates) once more customers changed
        than the state cache holds: on disk, changed states stay in memory until written."""
        customers = self.customers
        if isinstance(customers, DiskTable) and customers.changes() > customers.cache_size:
            await self.write_then_send_state()

    async def _flush_when_due(self) -> None:
        async with self.lock:
            await self.flush_when_due()

    async def flush_when_due(self) -> None:
        """Write pending rows when ``flush_interval_s`` passed since the last write, in the
        background while processing goes on (a helper process waits for the main process to
        insert them); when ``flush_max_rows`` are pending, processing waits for the write
        (memory stays bounded under any backlog)."""
        pending = self.sink.pending_rows
        if pending >= self.settings.flush_max_rows:
            await self.flush()
        elif (
            pending
            and time.monotonic() - self.flushed_at >= self.settings.flush_interval_s
            and (self.writing is None or self.writing.done())
        ):
            self.writing = asyncio.create_task(self.flush())

    def _owned_partitions(self) -> set[int]:
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == PURCHASES}

    async def publish_state(self) -> None:
        """The states of customers changed since the last call to the table's changelog (the
        producer's next flush waits for them); on disk, once the broker acknowledged them,
        with the changelog offsets they reach (a restart reads the changelog from there)."""
        topic = self.table.changelog_topic.get_topic_name()
        changes = self.customers.take_changes(self.pipeline.partition_of)
        last = {
            partition: await cast(FlushingProducer, self.app.producer).send_records(topic, partition, records)
            for partition, records in changes.items()
        }
        if isinstance(self.customers, DiskTable):
            offsets = {partition: (await sent).offset + count - 1 for partition, (sent, count) in last.items()}
            self.customers.persist(changes, offsets)
        self.pipeline.checkpointed()

    async def publish_model_output(self) -> None:
        """Training records to the trainer, churn alerts to marketing tools."""
        training = self.pipeline.take_training()
        if training:
            await self.models.send_training(training)
        for alert in self.pipeline.take_alerts():
            await self.alerts_topic.send(key=alert.customer_id.encode(), value=alert.model_dump_json().encode())

    async def publish_dead_letters(self, dead: list[DeadLetter]) -> None:
        for letter in dead:
            await self.dead_letter_topic.send(key=letter.topic.encode(), value=letter.message())

    async def publish_refused(self) -> None:
        """Rows ClickHouse refused (the sink wrote their dead letters) to the dead-letters topic."""
        now = time.time()
        dead = [row.dead_letter(now) for row in self.sink.take_refused()]
        for letter in dead:
            log.warning("dead-lettered a row ClickHouse refused: %s", letter.reason)
        self.pipeline.counters.dead_letters += len(dead)
        await self.publish_dead_letters(dead)

    async def flush(self) -> None:
        """Write every row pending now, after the write in flight; retries until ClickHouse
        accepts them (offsets wait meanwhile), or, once the worker is stopping, gives up with
        :class:`WriteAbandoned`: the offsets of those rows are then not committed, so the next
        start reads their messages again and writes them (a stop never waits on a write). Rows
        ClickHouse refuses are dead-lettered, the others written (see ``sinks.clickhouse``)."""
        async with self.write_lock:
            self.flushed_at = time.monotonic()
            batch = self.sink.take()
            try:
                await self._write(batch)
            except BaseException:  # given up, or cancelled as the worker stops
                if any(batch.values()):
                    self.rows_abandoned = True  # taken and unwritten: no offset commit may pass them
                raise

    async def _write(self, batch: dict[str, list[Any]]) -> None:
        """Write ``batch``, retrying (see :meth:`flush`); what is written leaves it."""
        delay = 0.5
        while any(batch.values()):
            try:
                await asyncio.to_thread(self.sink.write, batch)
                self.sink_error = None
                self.flushes += 1
                self.flush_seconds_total += self.sink.last_flush_seconds
            except Exception as error:  # noqa: BLE001 - any sink failure is retried, never fatal
                self.sink_error = f"{type(error).__name__}: {error}"[:500]
                await self.publish_refused()  # found before the failure: their dead letters wait in the batch
                if self.stopping.is_set():
                    raise WriteAbandoned(
                        f"stopping with {sum(map(len, batch.values()))} rows unwritten "
                        f"({self.sink_error}); the next start writes them"
                    ) from None
                log.error("ClickHouse write failed, retrying in %.1fs: %s", delay, self.sink_error)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
                delay = min(delay * 2, 10.0)
        await self.publish_refused()

    def intake_problem(self) -> str | None:
        """Why events cannot be taken in now (the broker or ClickHouse is away), or None."""
        if self.broker_error:
            return self.broker_error
        if self.sink_error:
            return f"ClickHouse writes failing ({self.sink_error})"
        return None

    def healthy(self) -> tuple[bool, str]:
        """Consuming (partitions assigned) and writing (last ClickHouse write succeeded)."""
        if self.broker_error:
            return False, self.broker_error
        if self.agent_error:
            return False, f"processing stopped: {self.agent_error}"
        if self.sink_error:
            return False, f"ClickHouse writes failing: {self.sink_error}"
        if not self.app.assignor.assigned_actives():
            return False, "no partitions assigned yet (joining the consumer group)"
        if not self.models.caught_up.is_set():
            return False, "loading the newest model version"
        return True, "ok"

    def run(self) -> None:
        """Run the worker in the foreground until SIGINT/SIGTERM."""
        worker = faust.Worker(self.app, loglevel=self.settings.log_level, quiet=True)
        # Its progress spinner sets the root logger to DEBUG (at any log level), so every
        # debug call of faust and aiokafka on the hot path would build a log record.
        worker.spinner = None
        if self.helpers:
            self.helpers.start()
        try:
            with rare_garbage_collection():
                worker.execute_from_commandline()
        finally:
            if self.helpers:  # when the app did not get to stop them
                for problem in self.helpers.stop():
                    log.error(problem)
