"""A worker process's writes to ClickHouse.

Rows are written every ``flush_interval_s`` in the background (each insert has a fixed cost,
so batches share them), at once when ``flush_max_rows`` are pending (memory stays bounded under
any backlog), and always before an offset commit. A failed write is retried until ClickHouse
takes it; only a stopping worker gives rows up, and then commits no offset past them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from schemas.rows import DeadLetter
from sinks.clickhouse import ClickHouseSink
from streams.settings import Settings

log = logging.getLogger("crm360")


class WriteAbandoned(RuntimeError):
    """A stopping worker gave up a ClickHouse write: its rows' offsets stay uncommitted."""


class RowWriter:
    """Writes what ``sink`` holds, one write at a time and in order; rows ClickHouse refuses go
    to ``dead_lettered`` (the sink wrote their dead letters)."""

    def __init__(
        self,
        sink: ClickHouseSink,
        settings: Settings,
        stopping: asyncio.Event,
        dead_lettered: Callable[[list[DeadLetter]], Awaitable[None]],
    ) -> None:
        self.sink, self.settings, self.stopping, self.dead_lettered = sink, settings, stopping, dead_lettered
        self.lock = asyncio.Lock()
        self.writing: asyncio.Task[None] | None = None  # a write in the background
        #: Why the last write failed, while writes fail.
        self.error: str | None = None
        #: Rows were given up by a stopping worker: it commits no offset any more.
        self.abandoned = False
        self.flushes = 0
        self.seconds_total = 0.0
        self.flushed_at = time.monotonic()

    async def flush_when_due(self) -> None:
        """Write pending rows when ``flush_interval_s`` passed since the last write, in the
        background while processing goes on (a helper process waits for the main process to
        insert them); when ``flush_max_rows`` are pending, processing waits for the write."""
        pending = self.sink.pending_rows
        if pending >= self.settings.flush_max_rows:
            await self.flush()
        elif (
            pending
            and time.monotonic() - self.flushed_at >= self.settings.flush_interval_s
            and (self.writing is None or self.writing.done())
        ):
            self.writing = asyncio.create_task(self.flush())

    async def flush(self) -> None:
        """Write every row pending now, after the write in flight; retries until ClickHouse
        accepts them (offsets wait meanwhile), or, once the worker is stopping, gives up with
        :class:`WriteAbandoned`: the offsets of those rows are then not committed, so the next
        start reads their messages again and writes them (a stop never waits on a write). Rows
        ClickHouse refuses are dead-lettered, the others written (see ``sinks.clickhouse``)."""
        async with self.lock:
            self.flushed_at = time.monotonic()
            batch = self.sink.take()
            try:
                await self._write(batch)
            except BaseException:  # given up, or cancelled as the worker stops
                if any(batch.values()):
                    self.abandoned = True  # taken and unwritten: no offset commit may pass them
                raise

    async def _write(self, batch: dict[str, list[Any]]) -> None:
        """Write ``batch``, retrying (see :meth:`flush`); what is written leaves it."""
        delay = 0.5
        while any(batch.values()):
            try:
                await asyncio.to_thread(self.sink.write, batch)
                self.error = None
                self.flushes += 1
                self.seconds_total += self.sink.last_flush_seconds
            except Exception as error:  # noqa: BLE001 - any sink failure is retried, never fatal
                self.error = f"{type(error).__name__}: {error}"[:500]
                await self.publish_refused()  # found before the failure: their dead letters wait in the batch
                if self.stopping.is_set():
                    raise WriteAbandoned(
                        f"stopping with {sum(map(len, batch.values()))} rows unwritten "
                        f"({self.error}); the next start writes them"
                    ) from None
                log.error("ClickHouse write failed, retrying in %.1fs: %s", delay, self.error)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
                delay = min(delay * 2, 10.0)
        await self.publish_refused()

    async def publish_refused(self) -> None:
        """Rows ClickHouse refused, as dead letters (the sink wrote their rows)."""
        now = time.time()
        dead = [row.dead_letter(now) for row in self.sink.take_refused()]
        for letter in dead:
            log.warning("dead-lettered a row ClickHouse refused: %s", letter.reason)
        if dead:
            await self.dead_lettered(dead)
