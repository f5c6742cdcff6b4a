"""A compacted topic every worker process reads whole and keeps following (audience
definitions, suppressions): each record is handed to ``receive`` as it is read, and
:attr:`CompactedTopic.caught_up` is set once every record there was at the start is."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.worker.faust_corrections import fetched_end_offsets

log = logging.getLogger("crm360")
#: Seconds between attempts to follow the topic while the broker fails.
RETRY_S = 3.0


class CompactedTopic:
    """The one-partition topic ``name``, declared on ``app``; ``receive(key, value)`` takes
    each record (value None: a tombstone)."""

    def __init__(
        self, app: faust.App, bootstrap: str, name: str, receive: Callable[[bytes | None, bytes | None], None]
    ) -> None:
        self.bootstrap, self.name, self.receive = bootstrap, name, receive
        raw: dict[str, Any] = {
            "key_type": bytes,
            "value_type": bytes,
            "key_serializer": "raw",
            "value_serializer": "raw",
        }
        self.topic = app.topic(name, partitions=1, **raw)
        self.caught_up = asyncio.Event()
        app.task(self._follow)

    async def read_all(self) -> None:
        """Once every record there was at the start is read; :class:`TimeoutError` if that
        takes ``RETRY_S`` * 10 (the broker is away: a change now could miss one)."""
        await asyncio.wait_for(self.caught_up.wait(), RETRY_S * 10)

    async def publish(self, key: bytes, value: bytes) -> None:
        """Send a record, durable before this returns, and hand it to ``receive`` at once."""
        await (await self.topic.send(key=key, value=value))
        self.receive(key, value)

    async def _follow(self) -> None:
        """Read every record from the topic's beginning, then keep following it; again from
        the beginning after the broker failed it."""
        while True:
            try:
                await self._read()
            except Exception as error:  # noqa: BLE001 - a broker away must not end the following
                log.warning("following %s again after: %s", self.name, error)
                await asyncio.sleep(RETRY_S)

    async def _read(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(self.name, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await fetched_end_offsets([self.bootstrap], [tp]))[tp]
            if end == 0:
                self.caught_up.set()
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for record in batches.get(tp, []):
                    self.receive(record.key, record.value)
                if not self.caught_up.is_set() and await consumer.position(tp) >= end:
                    self.caught_up.set()
        finally:
            await consumer.stop()
