"""Audiences' webhooks: every published entry and exit of an audience with a ``webhook`` is
POSTed to it by the worker process that owns its partition of ``audience-updates``.

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
from typing import Any, cast

import aiohttp
import faust

from schemas.audiences import AudienceEvent
from schemas.rows import DeadLetter
from schemas.topics import AUDIENCE_UPDATES
from streams.settings import Settings
from streams.worker.audiences import AudienceDefinitions

log = logging.getLogger("crm360")


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
        topic = app.topic(
            AUDIENCE_UPDATES, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )
        app.agent(topic, name="destinations")(self._deliver_all)

    async def _deliver_all(self, stream: faust.StreamT) -> None:
        async for message in cast(faust.Stream, stream).events():
            webhooks = self.audiences.webhooks
            if not webhooks:
                continue
            raw = cast(bytes, message.value)
            event = AudienceEvent.model_validate_json(raw)
            url = webhooks.get(event.audience)
            if url is None:
                continue
            try:
                await self.deliver(url, event.event_id, raw)
                self.delivered += 1
            except Undelivered as why:
                self.failed += 1
                log.warning("audience %s: %s", event.audience, why)
                tp = message.message
                letter = DeadLetter.received(
                    time.time(), "webhook", AUDIENCE_UPDATES, tp.partition, tp.offset, str(why), raw.decode()
                )
                await self.dead_letter([letter])

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
