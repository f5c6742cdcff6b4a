"""faust's corrections (streams.worker.faust_corrections) against the real broker."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import aiokafka
from faust.types import TP
from kafka.admin import KafkaAdminClient, NewTopic

from streams.settings import Settings
from streams.worker.app import faust_app
from streams.worker.faust_corrections import CheckpointingConsumer


def test_the_stall_check_passes_over_a_partition_rewound_but_not_yet_positioned(broker: str) -> None:
    """faust's stall check (every 2.5 commit intervals) read the position of each assigned
    partition; one rewound to its beginning and not yet positioned again (a loaded machine)
    crashed the worker at start."""
    topic = "stall-check"
    admin = KafkaAdminClient(bootstrap_servers=broker)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()

    async def check() -> None:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        await producer.send_and_wait(topic, b"one record", partition=0)
        await producer.stop()
        app = faust_app(Settings(kafka_bootstrap=broker))
        consumer = cast(CheckpointingConsumer, app.consumer)
        reader = aiokafka.AIOKafkaConsumer(bootstrap_servers=broker, auto_offset_reset="earliest")
        await reader.start()
        try:
            partition = aiokafka.TopicPartition(topic, 0)
            reader.assign([partition])
            await reader.getmany(partition, timeout_ms=5_000)  # fetched once: the partition has a poll time
            consumer._thread._consumer = reader
            consumer._thread.time_started = time.monotonic()
            rewinding = asyncio.ensure_future(reader.seek_to_beginning(partition))
            await asyncio.sleep(0)  # rewound: no position until the fetcher has asked the broker
            consumer.verify_event_path(time.monotonic(), TP(topic, 0))
            await rewinding
        finally:
            await reader.stop()

    asyncio.run(check())
