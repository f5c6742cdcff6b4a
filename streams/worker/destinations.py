"""Audiences' webhooks: every published entry and exit of an audience with a ``webhook`` is
POSTed to it by a worker process, reading ``audience-updates`` in the consumer group
``<app id>-destinations`` (its processes share the partitions).

The group reads only while some audience has a webhook (reading every entry back through
faust cost a third of the worker's throughput with 20 audiences and none); the first time,
from the topic's beginning, so a webhook also gets its audience's entries and exits so far.

A delivery is tried ``webhook_tries`` times, waiting ``webhook_backoff_s`` before the second
try and twice as long before each next one; an answer of 2xx delivers it, 4xx (but 408 and
429) refuses it at once. Each try carries the event's ``event_id`` as ``Idempotency-Key``, so
a receiver can drop repeats (a restart delivers again what was not yet committed). What is
not delivered becomes a dead letter (``source`` ``webhook``) and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import faust
from aiokafka import AIOKafkaConsumer

from schemas.audiences import AudienceEvent
from schemas.rows import DeadLetter
from schemas.topics import AUDIENCE_UPDATES
from streams.settings import Settings
from streams.worker.audiences import AudienceDefinitions

log = logging.getLogger("crm360")
#: Seconds between attempts to read the topic while the broker fails.
RETRY_S = 3.0


class Undelivered(Exception):
    """The webhook did not take the event: why."""


class Destinations:
    """The ``audience-updates`` agent of one worker process, declared on ``app``: delivers to
    each audience's webhook (``audiences``), dead-letters what it cannot (``dead_letter``)."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        audiences: AudienceDefinitions,
        dead_letter: Callable[[list[DeadLetter]], Awaitable[None]],
    ) -> None:
        self.app, self.settings, self.audiences, self.dead_letter = app, settings, audiences, dead_letter
        self.delivered = 0
        self.failed = 0
        app.task(self._follow)

    async def _follow(self) -> None:
        """Read ``audience-updates`` in the group while some audience has a webhook; again after
        the broker failed it."""
        while True:
            while not self.audiences.webhooks:
                await asyncio.sleep(1.0)
            try:
                await self._read()
            except Exception as error:  # noqa: BLE001 - a broker away must not end the deliveries
                log.warning("reading %s again after: %s", AUDIENCE_UPDATES, error)
                await asyncio.sleep(RETRY_S)

    async def _read(self) -> None:
        """Deliver what the group's partitions hold until no audience has a webhook."""
        settings = self.settings
        consumer = AIOKafkaConsumer(
            AUDIENCE_UPDATES,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=f"{settings.app_id}-destinations",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(settings.heartbeat_interval_s * 1000),
        )
        await consumer.start()
        try:
            while self.audiences.webhooks:
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                for records in batches.values():
                    for record in records:
                        await self._deliver_one(record.value or b"", record.partition, record.offset)
                if batches:
                    await consumer.commit()  # delivered, or dead-lettered
        finally:
            await consumer.stop()

    async def _deliver_one(self, raw: bytes, partition: int, offset: int) -> None:
        try:
            event = AudienceEvent.model_validate_json(raw)
        except ValueError as error:  # not ours: no webhook can take it
            await self._undelivered(f"not an audience event: {str(error).splitlines()[0]}", raw, partition, offset)
            return
        url = self.audiences.webhooks.get(event.audience)
        if url is None:
            return
        try:
            await self.deliver(url, event.event_id, raw)
            self.delivered += 1
        except Undelivered as why:
            log.warning("audience %s: %s", event.audience, why)
            await self._undelivered(str(why), raw, partition, offset)

    async def _undelivered(self, why: str, raw: bytes, partition: int, offset: int) -> None:
        self.failed += 1
        payload = raw.decode(errors="replace")
        await self.dead_letter(
            [DeadLetter.received(time.time(), "webhook", AUDIENCE_UPDATES, partition, offset, why, payload)]
        )

    async def deliver(self, url: str, event_id: str, body: bytes) -> None:
        """POST ``body`` until ``url`` takes it; :class:`Undelivered` after the last try."""
        settings, wait, last = self.settings, self.settings.webhook_backoff_s, ""
        headers = {"Content-Type": "application/json", "Idempotency-Key": event_id}
        timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_s)
        for attempt in range(1, settings.webhook_tries + 1):
            try:
                async with self.app.http_client.post(url, data=body, headers=headers, timeout=timeout) as answer:
                    if 200 <= answer.status < 300:
                        return
                    last = f"HTTP {answer.status}"
                    if 400 <= answer.status < 500 and answer.status not in (408, 429):
                        raise Undelivered(f"{url} refused {event_id}: {last}")
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                last = f"{type(error).__name__}: {error}"[:300]
            if attempt < settings.webhook_tries:
                await asyncio.sleep(wait)
                wait *= 2
        raise Undelivered(f"{url} did not take {event_id} after {settings.webhook_tries} tries: {last}")

    def figures(self) -> dict[str, Any]:
        return {"crm360_webhook_deliveries_total": self.delivered, "crm360_webhook_failures_total": self.failed}
