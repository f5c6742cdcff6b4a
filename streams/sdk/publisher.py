"""Producer SDK for web, app and POS systems (kafka-python).

:class:`EventPublisher` validates events, groups them by topic and customer partition, and
sends envelopes (the fast path); :meth:`EventPublisher.publish_one` sends a single event
keyed by customer id, exactly as any plain Kafka client may do::

    with EventPublisher("127.0.0.1:9092") as publisher:
        publisher.publish({"type": "visit", "event_id": "v1", "customer_id": "c1",
                           "ts": "2024-05-01T10:00:00Z", "channel": "web", "session_id": "s1"})
        publisher.publish({"type": "visit", "event_id": "v2", "identifiers": {"anonymous_id": "a9f3"},
                           "ts": "2024-05-01T10:01:00Z", "channel": "web", "session_id": "s2"})
        publisher.identify("login-7", "2024-05-01T10:02:00Z", "web", customer_id="c1", anonymous_id="a9f3")
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Self

from kafka import KafkaProducer

from schemas.envelope import encode_event, pack
from schemas.events import BaseEvent, parse_event
from schemas.topics import PURCHASES, TOPIC_FOR_TYPE, partition_for


class EventPublisher:
    """Buffers validated events and sends them as per-partition envelopes.

    Parameters
    ----------
    bootstrap
        Kafka ``host:port``.
    envelope_size
        Most events in one message.
    linger_s
        Longest time an event waits in the buffer before it is sent.
    partitions
        Partition count of the input topics (read from the cluster when omitted).
    """

    def __init__(
        self,
        bootstrap: str,
        envelope_size: int = 500,
        linger_s: float = 0.05,
        partitions: int | None = None,
        **producer_options: Any,
    ) -> None:
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            linger_ms=20,
            batch_size=1 << 20,
            max_request_size=16 << 20,
            **producer_options,
        )
        if partitions is None:
            found = self.producer.partitions_for(PURCHASES)
            if not found:
                raise RuntimeError(f"topic {PURCHASES!r} not found at {bootstrap}: start the worker first")
            partitions = len(found)
        self.partitions = partitions
        self.envelope_size = envelope_size
        self.linger_s = linger_s
        self._buffer: list[BaseEvent] = []
        self._oldest: float | None = None
        self.sent_events = 0

    def publish(self, event: BaseEvent | dict[str, Any]) -> None:
        """Validate and buffer one event (raises ``pydantic.ValidationError`` if invalid)."""
        self._buffer.append(event if isinstance(event, BaseEvent) else parse_event(event))
        if self._oldest is None:
            self._oldest = time.monotonic()
        if (
            len(self._buffer) >= self.envelope_size * self.partitions
            or time.monotonic() - self._oldest >= self.linger_s
        ):
            self._send_buffer()

    def publish_many(self, events: Iterable[BaseEvent | dict[str, Any]]) -> None:
        for event in events:
            self.publish(event)

    def identify(self, event_id: str, ts: str | float, channel: str, customer_id: str = "", **identifiers: str) -> None:
        """Publish that these identifiers name one person (a login, a checkout with a loyalty
        card, a social account connected): an ``identify`` event."""
        named: dict[str, Any] = {"customer_id": customer_id} if customer_id else {}
        self.publish(
            {"type": "identify", "event_id": event_id, "ts": ts, "channel": channel, "identifiers": identifiers} | named
        )

    def publish_one(self, event: BaseEvent | dict[str, Any]) -> None:
        """Send one event as its own message, keyed by customer id (no envelope)."""
        parsed = event if isinstance(event, BaseEvent) else parse_event(event)
        if self._buffer:
            self._send_buffer()  # keep per-partition order: buffered events were published first
        key = parsed.customer_id.encode()
        self.producer.send(
            TOPIC_FOR_TYPE[parsed.type],
            key=key,
            value=encode_event(parsed),
            partition=partition_for(key, self.partitions),
        )
        self.sent_events += 1

    def _send_buffer(self) -> None:
        for message in pack(self._buffer, self.partitions, self.envelope_size):
            self.producer.send(message.topic, key=message.key, value=message.value, partition=message.partition)
        self.sent_events += len(self._buffer)
        self._buffer = []
        self._oldest = None

    def flush(self, timeout: float | None = 60.0) -> None:
        """Send everything buffered and wait until the broker has it."""
        if self._buffer:
            self._send_buffer()
        self.producer.flush(timeout)

    def close(self) -> None:
        self.flush()
        self.producer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
