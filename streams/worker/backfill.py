"""The backfill of new, changed and deleted audiences over the customers already there.

An audience is complete the moment it exists: as soon as a worker process knows of a change
of the audiences, it checks its partitions' customers against it. Re-emitting every customer
would read and score every state (minutes over a million customers on disk); instead
ClickHouse answers which customers' memberships the change may move: those the changed
conditions hold for (``Condition.sql``, true exactly when the condition is) and the members.
Every row this process emitted is written first, so the rows read are each customer's last,
the ones their memberships were decided on; the batches wait meanwhile. Each customer whose
row says that their membership must change is then decided on that row, in their state, as
the stream decides it (``CustomerPipeline.backfill``); nobody else is read.

The process that owns embedded ClickHouse reads for its helpers (``POST /internal/current``);
with a ClickHouse server every process reads for itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from collections.abc import Awaitable, Callable

import orjson

from processors.conditions import parse_condition
from sinks.current import CurrentRows, read_current
from sinks.query import ReadOnlyPool
from streams.settings import Settings
from streams.worker.pipeline import CustomerPipeline
from streams.worker.processes import auth_headers
from streams.worker.writes import RowWriter

log = logging.getLogger(__name__)

#: Customers checked at a time, with batches in between.
SLICE = 2_000


class CurrentReads:
    """Customers' current rows and memberships, read from ClickHouse (``reads``), or asked of
    the main process by a helper of embedded ClickHouse (``reads`` None). ``conditions`` are
    audiences' condition texts, parsed here (and in the main process) into their SQL."""

    def __init__(self, settings: Settings, reads: ReadOnlyPool | None) -> None:
        self.settings, self.reads = settings, reads

    async def read(
        self, columns: list[str], audiences: list[str], conditions: list[str], partitions: list[int]
    ) -> CurrentRows:
        if self.reads is None:
            ask = {"columns": columns, "audiences": audiences, "conditions": conditions, "partitions": partitions}
            answer = await asyncio.to_thread(self._ask_main, orjson.dumps(ask))
            return await asyncio.to_thread(CurrentRows.from_json, answer)
        count, where = self.settings.partitions, [parse_condition(text).sql for text in conditions]
        return await self.reads.run(lambda client: read_current(client, columns, audiences, partitions, count, where))

    def _ask_main(self, body: bytes) -> bytes:
        request = urllib.request.Request(
            f"{self.settings.main_url}/internal/current", data=body, headers=auth_headers(self.settings), method="POST"
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            answer: bytes = response.read()
            return answer


class Backfill:
    """Checks a worker process's customers against the audiences changed since they were."""

    def __init__(
        self,
        pipeline: CustomerPipeline,
        lock: asyncio.Lock,
        stopping: asyncio.Event,
        writer: RowWriter,
        current: CurrentReads,
        after_slice: Callable[[], Awaitable[None]],
    ) -> None:
        self.pipeline, self.lock, self.stopping, self.writer = pipeline, lock, stopping, writer
        self.current, self.after_slice = current, after_slice
        #: Cleared while a backfill is under way: an aging pass waits for it (someone waits for
        #: the audience to be complete; labels and aging can wait that long).
        self.idle = asyncio.Event()
        self.idle.set()

    async def run(self, owned: Callable[[], set[int]]) -> None:
        """Check the customers of the partitions ``owned()`` says are this process's, if the
        audiences changed since they were checked: the rows are read with the batches held
        off, then checked a slice at a time with batches in between (over a million customers
        and twenty audiences the checks take tens of seconds of CPU). A failure is logged and
        tried again at the next call; so is a check a stopping worker leaves."""
        if not self.pipeline.unchecked(owned())[0]:
            return
        self.idle.clear()  # from here an aging pass waits
        try:
            await self._check(owned)
        finally:
            self.idle.set()

    async def _check(self, owned: Callable[[], set[int]]) -> None:
        """The check itself, what it is due for judged again once it holds the lock (a
        rebalance may have come meanwhile)."""
        pipeline = self.pipeline
        async with self.lock:
            partitions, changed = pipeline.unchecked(owned())
            if not partitions:
                return
            started = time.monotonic()
            generation = pipeline.audiences.generation
            columns, conditions = pipeline.audiences.read_for(changed)
            try:
                await self.writer.flush()  # this process's rows all written: each customer's last is read
                texts = [condition.text for condition in conditions]
                current = await self.current.read(columns, changed, texts, sorted(partitions))
            except Exception:
                log.exception("audiences %s not checked yet over partitions %s", changed, sorted(partitions))
                return
            pipeline.start_backfill(partitions)
        decided, finished = 0, False
        try:
            for start in range(0, len(current.rows), SLICE):
                if self.stopping.is_set():
                    return
                async with self.lock:
                    decided += pipeline.backfill(current.dicts(start, start + SLICE), current.members, changed)
                    await self.after_slice()
                await asyncio.sleep(0)  # an uncontended lock gives the loop no turn
            finished = True
        finally:
            pipeline.end_backfill(generation if finished else None)
        log.info(
            "audiences %s checked over %d customers of partitions %s in %.1f s: %d entries and exits",
            changed,
            len(current.rows),
            sorted(partitions),
            time.monotonic() - started,
            decided,
        )
