"""Events sent to a worker over HTTP: checked as the pipeline would check them, the valid ones
published to their topics and acknowledged by Kafka before the sender is answered, the others
dead-lettered at once."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import faust

from processors.features import recall
from schemas.envelope import Rejected, pack, validate
from schemas.events import BaseEvent, ahead_of_wall_clock
from schemas.rows import DeadLetter
from streams.settings import Settings
from streams.worker.outbox import Outbox
from streams.worker.pipeline import CustomerPipeline
from streams.worker.reasons import conflict
from streams.worker.writes import RowWriter


@dataclass(frozen=True)
class Taken:
    """What became of a request's events."""

    accepted: int
    rejected: list[DeadLetter]


class Intake:
    """Publishes events through ``app``'s producer; their dead letters go to ``pipeline``'s
    table, ``outbox`` and ``writer`` under ``lock`` (the lock processing holds)."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        pipeline: CustomerPipeline,
        lock: asyncio.Lock,
        outbox: Outbox,
        writer: RowWriter,
    ) -> None:
        self.app, self.settings, self.pipeline, self.lock = app, settings, pipeline, lock
        self.outbox, self.writer = outbox, writer

    async def take(self, items: list[Any]) -> Taken:
        """Check, publish and dead-letter ``items``; raises :class:`TimeoutError` when Kafka did
        not acknowledge the valid ones within ``publish_timeout_s`` (none is accepted for sure)."""
        accepted: list[BaseEvent] = []
        dead: list[DeadLetter] = []
        max_future_s = self.pipeline.config.max_future_s
        horizon = time.time() + max_future_s
        for index, raw in enumerate(items):
            result = validate(raw, f"body[{index}]")
            if not isinstance(result, Rejected) and result.epoch > horizon:  # as the pipeline would
                result = Rejected(
                    f"body[{index}]: {ahead_of_wall_clock(result.epoch, max_future_s)}", result.model_dump_json()
                )
            if not isinstance(result, Rejected):  # told now when this process holds the customer
                state = self.pipeline.table.get(result.customer_id.encode())
                if state is not None and recall(state, result, result.epoch) == "conflict":
                    result = Rejected(f"body[{index}]: {conflict(result)}", result.model_dump_json())
            if isinstance(result, Rejected):
                dead.append(
                    DeadLetter.received(time.time(), "http", "http:/events", -1, -1, result.reason, result.payload)
                )
            else:
                accepted.append(result)
        await asyncio.wait_for(self._publish(accepted), self.settings.publish_timeout_s)
        if dead:
            async with self.lock:
                self.pipeline.record_dead_letters(dead)
                await self.outbox.dead_letters(dead)
                await self.writer.flush()
        return Taken(len(accepted), dead)

    async def _publish(self, events: list[BaseEvent]) -> None:
        """Publish ``events`` and wait until Kafka has acknowledged every one."""
        sends = [
            await self.app.producer.send(m.topic, m.key, m.value, m.partition, None, None)
            for m in pack(events, self.settings.partitions)
        ]
        await asyncio.gather(*sends)
