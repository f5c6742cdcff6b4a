"""What a worker process publishes besides its state: dead letters, churn alerts, identity
merges, audience entries and exits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import faust
import orjson

from schemas.alerts import ChurnAlert
from schemas.rows import DeadLetter, IdentityMerge
from schemas.topics import AUDIENCE_UPDATES, CHURN_ALERTS, DEAD_LETTERS, IDENTITY_MERGES
from streams.worker.faust_corrections import FlushingProducer


class Outbox:
    """The ``dead-letters``, ``churn-alerts``, ``identity-merges`` and ``audience-updates``
    topics, declared on ``app``."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        raw: dict[str, Any] = {
            "key_type": bytes,
            "value_type": bytes,
            "key_serializer": "raw",
            "value_serializer": "raw",
        }
        self.dead_letter_topic = app.topic(DEAD_LETTERS, **raw)
        self.alerts_topic = app.topic(CHURN_ALERTS, **raw)
        self.merges_topic = app.topic(IDENTITY_MERGES, **raw)

    async def dead_letters(self, letters: list[DeadLetter]) -> None:
        """Each letter, keyed by the topic its record came from."""
        for letter in letters:
            await self.dead_letter_topic.send(key=letter.topic.encode(), value=letter.message())

    async def alerts(self, alerts: list[ChurnAlert]) -> None:
        """Each alert as JSON, keyed by its customer."""
        for alert in alerts:
            await self.alerts_topic.send(key=alert.customer_id.encode(), value=alert.model_dump_json().encode())

    async def merges(self, merges: list[IdentityMerge]) -> None:
        """Each merge or refused link as JSON, keyed by its surviving profile."""
        for merge in merges:
            await self.merges_topic.send(key=merge.survivor.encode(), value=merge.model_dump_json().encode())

    async def audience_events(self, events: list[dict[str, Any]], partition_of: Callable[[bytes], int]) -> None:
        """Each entry or exit (an :class:`~schemas.audiences.AudienceEvent` as JSON), keyed by
        its customer, in record batches (an aging pass or a backfill decides thousands at once),
        to the partition ``partition_of`` its customer key (the pipeline's, which knows them)."""
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for event in events:
            key = event["customer_id"].encode()
            by_partition.setdefault(partition_of(key), []).append((key, orjson.dumps(event)))
        producer = cast(FlushingProducer, self.app.producer)
        for partition, records in by_partition.items():
            await producer.send_records(AUDIENCE_UPDATES, partition, records)
