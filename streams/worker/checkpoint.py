"""What an offset commit waits for: the pending rows written, then the changed customer states
and audience memberships sent to their changelogs (and, on disk, written to the state store
with the changelog offsets they reach: a restart reads the changelogs from there).

Rows go first: a state sent ahead of its rows would make the messages read again after a crash
duplicates, whose raw rows were then lost.

A process the consumer group expelled (paused, or starved of CPU, past the session timeout)
sends no state, nor does one that just ran again after such a pause until its next heartbeats
said whether it is still a member (``streams.worker.pauses``). Another process may own its
partitions by then and have sent newer states of their customers, which its older ones would
follow in the changelog, and so be what the next recovery restores, without events whose
offsets the other process committed. Its unsent changes are dropped with its partitions
(``streams.worker.app``); the partitions' owner reads their messages again from the committed
offsets.

A stopping worker leaves the rest of its batch unapplied (:meth:`Checkpoint.hold_offsets`):
faust acks a batch whole, so from then on no offset is committed, and the next start reads
those messages again (the ones applied, as duplicates).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, cast

import faust

from streams.worker.changelog import BufferedTable
from streams.worker.faust_corrections import FlushingProducer
from streams.worker.memory import release_freed_memory
from streams.worker.pauses import PauseWatch
from streams.worker.pipeline import CustomerPipeline
from streams.worker.statestore import DiskTable
from streams.worker.writes import RowWriter, WriteAbandoned

log = logging.getLogger("crm360")
#: Changed customer states left unsent at most: a stop sends them all before it ends, at about
#: 25 µs each (an aging pass changes every customer).
MOST_UNSENT = 20_000


class Checkpoint:
    """Writes ``writer``'s rows, then sends the changes of each of ``tables`` (by changelog
    topic; the customers' states first) through ``app``'s producer."""

    def __init__(
        self,
        app: faust.App,
        tables: dict[str, BufferedTable[Any]],
        pipeline: CustomerPipeline,
        writer: RowWriter,
        expelled: Callable[[], bool],
        pauses: PauseWatch,
    ) -> None:
        self.app, self.tables = app, tables
        #: Whether the consumer group expelled this process (it then sends no state).
        self.expelled = expelled
        self.told_expelled = False  # the log says it once an expulsion
        #: Right after a pause, membership is known only after the next heartbeats.
        self.pauses = pauses
        self.pipeline, self.writer = pipeline, writer
        #: Messages were acked unapplied: no offset commit may pass them.
        self.offsets_held = False

    def hold_offsets(self) -> None:
        """Commit no offset from now on: a stopping worker acks messages it did not apply."""
        self.offsets_held = True

    async def before_commit(self) -> bool:
        """Write the pending rows and send the state changes; whether an offset commit may follow
        (not when rows were given up or offsets are held)."""
        return await self.write_then_send_state() and not self.offsets_held

    async def write_then_send_state(self, only: Iterable[bytes] | None = None) -> bool:
        """Write the pending rows, then send the state changes (or those of ``only``: the states
        the identity graph changed, sent before its ops, see ``streams.worker.app``); whether it
        did. A stopping worker that gave rows up (here, or in a background write) sends no state
        any more: the next start applies those messages again and writes their rows. Nor does
        an expelled process (nor one that ran again after a long pause, until its consumer
        knows whether it is still a member)."""
        wait_s = self.pauses.wait_s()
        if wait_s:
            await asyncio.sleep(wait_s)
        if self.expelled():
            if not self.told_expelled:
                log.warning(
                    "this process left the consumer group (paused past the session timeout?): "
                    "its state changes are not sent; the partitions' next owner reads their messages again"
                )
            self.told_expelled = True
            return False
        self.told_expelled = False
        try:
            await self.writer.flush()
        except WriteAbandoned as error:
            log.error("%s; no state sent, no offset committed", error)
        if self.writer.abandoned:
            return False
        await self.send_state(only)
        if only is None:  # what the interval freed (decoded states, their JSON, messages) back to the system
            await asyncio.to_thread(release_freed_memory)
        return True

    async def write_state_when_large(self) -> None:
        """A checkpoint without its offset commit (the messages are read again after a crash, as
        duplicates) once more customers changed than :data:`MOST_UNSENT`, or than the state
        cache holds (on disk, changed states stay in memory until written)."""
        for table in self.tables.values():
            most = min(table.cache_size, MOST_UNSENT) if isinstance(table, DiskTable) else MOST_UNSENT
            if table.changes() > most:
                await self.write_then_send_state()
                return

    async def send_state(self, only: Iterable[bytes] | None = None) -> None:
        """The states and memberships of customers changed since the last call (or of those of
        ``only``) to their changelogs (the producer's next flush waits for them); on disk, once
        the broker acknowledged them, with the changelog offsets they reach."""
        producer = cast(FlushingProducer, self.app.producer)
        for topic, table in self.tables.items():
            changes = table.take_changes(self.pipeline.partition_of, only)
            last = {
                partition: await producer.send_records(topic, partition, records)
                for partition, records in changes.items()
            }
            if isinstance(table, DiskTable):
                offsets = {partition: (await sent).offset + count - 1 for partition, (sent, count) in last.items()}
                table.persist(changes, offsets)
        if only is None:  # every change is in the changelog: a rebuild starts from here
            self.pipeline.checkpointed()
