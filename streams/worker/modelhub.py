"""One trainer for the whole group, and the latest model version on every worker.

Workers send matured churn labels and a sample of customers' inputs to the one-partition
``model-training`` topic, so exactly one worker of the consumer group trains, on every
partition's labels. After each batch the trainer publishes a new :class:`Models` version
to the compacted ``churn-models`` topic (the batch's offset recorded in it) and only then
acknowledges the batch. Every worker follows ``churn-models`` and scores with the newest
version; a trainer that starts (after a restart or a rebalance) continues from the newest
published version and skips training records it already learned. In a worker of several
processes (``streams.worker.processes``) the main process trains: the helpers' rows reach embedded
ClickHouse without passing through it, and a helper's event loop was the busiest thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from processors.models import Models, Trainer
from processors.quality_watch import QualityWatch
from processors.snapshots import Inputs, LabelledSnapshot
from schemas.topics import CHURN_MODELS, MODEL_QUALITY, MODEL_TRAINING
from streams.settings import Role
from streams.worker.pipeline import TrainingBatch

if TYPE_CHECKING:
    from sinks.clickhouse import ClickHouseSink
    from streams.settings import Settings
    from streams.worker.pipeline import CustomerPipeline

log = logging.getLogger("crm360")
#: Records per training message (keeps messages well under Kafka's 1 MB default).
RECORDS_PER_MESSAGE = 2_000
#: Training messages the trainer learns at a time, and holds read ahead: a backfill releases
#: tens of labels per customer faster than one trainer learns them; the backlog waits in Kafka.
MESSAGES_AT_ONCE = 25
#: How often the trainer's model quality is recorded in ``model_metrics`` (when it learned).
METRICS_INTERVAL_S = 5.0


def encode_training(batch: TrainingBatch) -> list[bytes]:
    """Training messages: JSON ``{"labels": [[customer, at, churned, inputs, spend]], "observations":
    [...], "frontiers": [[partition, frontier]]}``, the frontiers in the last message (they
    speak for every label before them)."""
    labels = [[lb.customer_id, lb.at, lb.churned, list(lb.inputs), lb.spend] for lb in batch.labels]
    observations = [list(inputs) for inputs in batch.observations]  # JSON arrays, as snapshots keep them
    frontiers = [[home, frontier] for home, frontier in batch.frontiers.items()]
    out = []
    records = max(len(labels), len(observations), 1)
    for start in range(0, records, RECORDS_PER_MESSAGE):
        chunk = {
            "labels": labels[start : start + RECORDS_PER_MESSAGE],
            "observations": observations[start : start + RECORDS_PER_MESSAGE],
            "frontiers": frontiers if start + RECORDS_PER_MESSAGE >= records else [],
        }
        out.append(orjson.dumps(chunk, option=orjson.OPT_SERIALIZE_NUMPY))
    return out


def decode_training(value: bytes) -> TrainingBatch:
    """The batch of a training message (labels of versions before the spend: spent nothing;
    messages before frontiers: none).

    >>> old = decode_training(b'{"labels": [["c1", 0.0, false, [1,2,3,4,5,6,7,8,9,10,11]]], "observations": []}')
    >>> old.labels[0].spend, old.frontiers, decode_training(encode_training(old)[0]) == old
    (0.0, {}, True)
    >>> decode_training(encode_training(TrainingBatch(frontiers={0: 86400.0, 3: None}))[0]).frontiers
    {0: 86400.0, 3: None}
    """
    data = orjson.loads(value)
    return TrainingBatch(
        labels=[
            LabelledSnapshot(c, at, bool(churned), Inputs._make(inputs), *spend)
            for c, at, churned, inputs, *spend in data["labels"]
        ],
        observations=[Inputs._make(inputs) for inputs in data["observations"]],
        frontiers={home: frontier for home, frontier in data.get("frontiers", [])},
    )


class ModelHub:
    """The trainer agent and the model follower of one worker process: declared on ``app``,
    swapping new versions into ``pipeline``, recording the trainer's quality through ``sink``."""

    def __init__(self, app: faust.App, settings: Settings, pipeline: CustomerPipeline, sink: ClickHouseSink) -> None:
        self.settings, self.pipeline, self.sink = settings, pipeline, sink
        self.config = settings.models_config()
        raw: dict[str, Any] = {
            "key_type": bytes,
            "value_type": bytes,
            "key_serializer": "raw",
            "value_serializer": "raw",
        }
        self.training_topic = app.topic(MODEL_TRAINING, partitions=1, maxsize=2 * MESSAGES_AT_ONCE, **raw)
        self.models_topic = app.topic(CHURN_MODELS, partitions=1, **raw)
        self.quality_topic = app.topic(MODEL_QUALITY, partitions=1, **raw)
        #: The live model's quality against its band (judged where the trainer runs).
        self.watch = QualityWatch(settings.quality_band())
        self.latest: bytes | None = None
        self.latest_version = 0
        self.caught_up = asyncio.Event()
        self.trainer: Trainer | None = None
        #: Held by whoever changes the trainer: the training agent or the timer releasing held labels.
        self.learning = asyncio.Lock()
        self.recorded_version = 0  # the trainer's model version whose quality is in model_metrics
        if settings.role is Role.MAIN:  # only processes subscribed to the topic are assigned its partition
            app.agent(self.training_topic, name="trainer")(self._train)
            app.timer(METRICS_INTERVAL_S)(self._record_quality)
            app.timer(METRICS_INTERVAL_S)(self._release_held)
        app.task(self._follow)

    async def send_training(self, batch: TrainingBatch) -> None:
        for value in encode_training(batch):
            await self.training_topic.send(key=b"training", value=value)

    @contextlib.asynccontextmanager
    async def _reading(self, topic: str) -> AsyncIterator[tuple[AIOKafkaConsumer, TopicPartition]]:
        """A consumer of the one partition of ``topic``, outside the consumer group."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # an offset gone by retention: from what is left
            max_partition_fetch_bytes=64 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            yield consumer, tp
        finally:
            await consumer.stop()

    async def _follow(self) -> None:
        """Keep the newest published model version; swap it into the pipeline."""
        async with self._reading(CHURN_MODELS) as (consumer, tp):
            end = (await consumer.end_offsets([tp]))[tp]
            # Model versions are single-record batches, where "latest" is exact; read a few back.
            consumer.seek(tp, max(end - 5, 0))
            if end == 0:
                self.caught_up.set()
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for record in batches.get(tp, []):
                    self._receive(record.value)
                if not self.caught_up.is_set() and await consumer.position(tp) >= end:
                    self.caught_up.set()

    def _receive(self, raw: bytes) -> None:
        try:
            models = Models.from_bytes(raw)
        except Exception as error:  # noqa: BLE001 - a bad record must not stop scoring
            log.error("ignoring an unreadable model version: %s", error)
            return
        if models.version > self.latest_version:
            self.latest, self.latest_version = raw, models.version
            self.pipeline.use_models(models)

    async def _train(self, stream: faust.StreamT) -> None:
        async for events in cast(faust.Stream, stream).take_events(
            MESSAGES_AT_ONCE, within=self.settings.trainer_publish_interval_s
        ):
            await self.caught_up.wait()
            async with self.learning:
                trainer = self.trainer
                if trainer is None or (self.latest_version > trainer.models.version):
                    self.trainer = None  # the timer leaves it alone while it is rebuilt
                    start = Models.from_bytes(self.latest) if self.latest else None
                    trainer = Trainer(
                        self.config,
                        start,
                        partitions=self.settings.partitions,
                        max_hold_s=self.settings.trainer_max_hold_s,
                    )
                    await self._hold_again(trainer)
                    self.trainer = trainer
                fresh = [e for e in events if e.message.offset > trainer.models.training_offset]
                now, news = time.monotonic(), False
                for event in fresh:
                    batch = decode_training(cast(bytes, event.message.value))  # workers send no tombstones here
                    frontiers = dict(trainer.order.frontiers)
                    trainer.observe(batch.observations)
                    # Partitions release labels in bulk: learnt at once, they held the event loop
                    # (the graph's ops, a helper's row writes) for up to a second.
                    for _ in trainer.receiving(batch.labels, batch.frontiers, now, event.message.offset):
                        await asyncio.sleep(0)
                    news = news or bool(batch.labels or batch.observations) or trainer.order.frontiers != frontiers
                if news:  # a restarted worker reports its frontiers again: not worth a version
                    await self._publish(trainer, training_offset=max(e.message.offset for e in fresh))

    def revoked(self) -> None:
        """The partitions moved: another process may train now. This one's trainer is dropped;
        should the training partition come back, a new one starts from the newest version."""
        self.trainer = None

    async def _hold_again(self, trainer: Trainer) -> None:
        """A trainer started from a published version holds again the labels it held: they are
        in the training messages from ``reread_from`` through its training offset."""
        order, through = trainer.order, trainer.models.training_offset
        if order.reread_from is None:
            return
        async with self._reading(MODEL_TRAINING) as (consumer, tp):
            consumer.seek(tp, order.reread_from)
            first = None
            while True:
                position, end = await consumer.position(tp), consumer.highwater(tp)
                if position > through or (end is not None and position >= end):
                    break  # through its training offset, or the topic's end should it hold less
                for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                    first = record.offset if first is None else first
                    if record.offset <= through:
                        order.hold_again(decode_training(cast(bytes, record.value)).labels, record.offset)
        if first != order.reread_from:
            log.error(
                "training messages from offset %d are gone (retention?): the labels they held are not learnt",
                order.reread_from,
            )
        log.info("the trainer holds again %d labels of offsets %d..%d", len(order.held), order.reread_from, through)
        order.reread_from = None

    async def _release_held(self) -> None:
        """Held labels due by wall time alone (a worker stalled while they waited), learnt."""
        async with self.learning:
            trainer = self.trainer
            if trainer is not None and trainer.order.held and trainer.receive([], {}, time.monotonic(), 0):
                await self._publish(trainer, trainer.models.training_offset)

    async def _publish(self, trainer: Trainer, training_offset: int) -> None:
        """A new version, durable before the batch it learnt is acknowledged."""
        raw = trainer.publish(training_offset)
        await (await self.models_topic.send(key=b"churn", value=raw))
        self._receive(raw)

    async def _record_quality(self) -> None:
        """The quality of the trainer's newest model version, and what each segment stands for,
        when it learned since the last record."""
        async with self.learning:  # not between the steps of a bulk of labels
            trainer = self.trainer
            if trainer is not None and trainer.models.version != self.recorded_version:
                await self._record(trainer)

    async def _record(self, trainer: Trainer) -> None:
        self.recorded_version = trainer.models.version
        models, sink = trainer.models, self.sink
        at = datetime.fromtimestamp(time.time(), tz=UTC)
        report: dict[str, Any] = trainer.quality.report()
        alert = self.watch.check(report, models.version, at)
        if alert is not None:
            log.warning("churn model quality %s: %s", alert.status, "; ".join(alert.reasons) or "back in its band")
            await self.quality_topic.send(key=b"churn", value=alert.model_dump_json().encode())
        sink.add_row(
            "model_metrics",
            {
                "measured_at": at,
                "model_version": models.version,
                "labels_learned": models.churn.labels_learned,
                **report,
            },
        )
        for segment, centroid in models.segmenter.centroids().items():
            sink.add_row(
                "segments",
                {
                    "segment": segment,
                    "description": models.descriptions.get(segment, ""),
                    "model_version": models.version,
                    **centroid,
                },
            )
