"""Webhooks: every published entry and exit of an audience with a ``webhook``, and every
churn alert when ``alert_webhook`` is set, is POSTed to it by a worker process, reading
``audience-updates`` and ``churn-alerts`` in the consumer group ``<app id>-destinations``
(its processes share the partitions).

The group reads a topic only while it has a webhook (reading every entry back through faust
cost a third of the worker's throughput with 20 audiences and none); the first time, from the
topic's beginning, so a webhook also gets its audience's entries and exits (or the alerts) so far.

A delivery is tried ``webhook_tries`` times, waiting ``webhook_backoff_s`` before the second
try and twice as long before each next one; an answer of 2xx delivers it, 4xx (but 408 and
429) refuses it at once. Each try carries the event's ``event_id`` (the alert's ``alert_id``)
as ``Idempotency-Key``, so a receiver can drop repeats (a restart delivers again what was not
yet committed). What is not delivered becomes a dead letter (``source`` ``webhook``) and the
stream goes on.
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

from schemas.alerts import ChurnAlert
from schemas.audiences import AudienceEvent
from schemas.rows import DeadLetter
from schemas.topics import AUDIENCE_UPDATES, CHURN_ALERTS
from streams.settings import Settings
from streams.worker.audiences import AudienceDefinitions

log = logging.getLogger("crm360")
#: Seconds between attempts to read the topics while the broker fails.
RETRY_S = 3.0


class Undelivered(Exception):
    """The webhook did not take the event: why."""


class Destinations:
    """The webhooks' consumer of one worker process, as a task of ``app``: delivers to each
    audience's webhook (``audiences``) and to the alerts' one, dead-letters what it cannot
    (``dead_letter``)."""

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

    def _topics(self) -> list[str]:
        """The topics that have a webhook now."""
        return [AUDIENCE_UPDATES] * bool(self.audiences.webhooks) + [CHURN_ALERTS] * bool(self.settings.alert_webhook)

    async def _follow(self) -> None:
        """Read the topics that have a webhook, in the group; again after the broker failed it,
        or when webhooks come or go."""
        while True:
            while not (topics := self._topics()):
                await asyncio.sleep(1.0)
            try:
                await self._read(topics)
            except Exception as error:  # noqa: BLE001 - a broker away must not end the deliveries
                log.warning("reading %s again after: %s", ", ".join(topics), error)
                await asyncio.sleep(RETRY_S)

    async def _read(self, topics: list[str]) -> None:
        """Deliver what the group's partitions of ``topics`` hold while they are those with a webhook."""
        settings = self.settings
        consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=f"{settings.app_id}-destinations",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(settings.heartbeat_interval_s * 1000),
        )
        await consumer.start()
        try:
            while self._topics() == topics:
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                for part, records in batches.items():
                    for record in records:
                        await self._deliver_one(part.topic, record.value or b"", record.partition, record.offset)
                if batches:
                    await consumer.commit()  # delivered, or dead-lettered
        finally:
            await consumer.stop()

    def _address(self, topic: str, raw: bytes) -> tuple[str, str] | None:
        """The webhook of a record and its idempotency key (None: no webhook takes it); a
        ``ValueError`` for a record that is not what the topic holds."""
        if topic == CHURN_ALERTS:
            alert = ChurnAlert.model_validate_json(raw)
            return (self.settings.alert_webhook, alert.alert_id) if self.settings.alert_webhook else None
        event = AudienceEvent.model_validate_json(raw)
        url = self.audiences.webhooks.get(event.audience)
        return None if url is None else (url, event.event_id)

    async def _deliver_one(self, topic: str, raw: bytes, partition: int, offset: int) -> None:
        try:
            address = self._address(topic, raw)
        except ValueError as error:  # not ours: no webhook can take it
            what = "a churn alert" if topic == CHURN_ALERTS else "an audience event"
            await self._undelivered(topic, f"not {what}: {str(error).splitlines()[0]}", raw, partition, offset)
            return
        if address is None:
            return
        url, key = address
        try:
            await self.deliver(url, key, raw)
            self.delivered += 1
        except Undelivered as why:
            log.warning("%s: %s", topic, why)
            await self._undelivered(topic, str(why), raw, partition, offset)

    async def _undelivered(self, topic: str, why: str, raw: bytes, partition: int, offset: int) -> None:
        self.failed += 1
        payload = raw.decode(errors="replace")
        await self.dead_letter([DeadLetter.received(time.time(), "webhook", topic, partition, offset, why, payload)])

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
