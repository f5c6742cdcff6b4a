"""The wire format of an input message: one event, or an envelope of many.

A message value is UTF-8 JSON: either one event object, or ``{"events": [...]}`` whose
events all belong to customers of the message's partition. Each event is validated on its
own, so one bad event never costs its neighbours.

Examples
--------
>>> good = {"type": "visit", "event_id": "v1", "customer_id": "c1", "ts": 0,
...         "channel": "web", "session_id": "s1"}
>>> events, rejects = decode_message(encode_envelope([good, {"type": "nope"}]))
>>> [e.event_id for e in events], [r.reason[:30] for r in rejects]
(['v1'], ['invalid event: event: Input ta'])
>>> decode_message(b"{not json")[1][0].reason[:12]
'invalid JSON'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from schemas.events import BaseEvent, Event, parse_event, parse_event_json
from schemas.topics import CUSTOMER_PROFILES, TOPIC_FOR_TYPE, partition_for

MAX_REASON_CHARS = 1000
#: Dead letters keep this much of a rejected payload, then a marker saying how long it was:
#: a dead letter of any record fits a Kafka message (1 MB, even with every character
#: escaped as 6 bytes of JSON) and a reasonable ClickHouse row.
MAX_PAYLOAD_CHARS = 65_536


def clip(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and a marker of how long it was.

    >>> clip("abc", 5), clip("abcdefgh", 5)
    ('abc', 'abcde...[truncated: 8 characters in all]')
    """
    return text if len(text) <= limit else f"{text[:limit]}...[truncated: {len(text)} characters in all]"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that failed validation, with the reason and the raw payload, both clipped
    (:func:`clip`) so that a dead letter of any record can be kept."""

    reason: str
    payload: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", clip(self.reason, MAX_REASON_CHARS))
        object.__setattr__(self, "payload", clip(self.payload, MAX_PAYLOAD_CHARS))


def encode_event(event: BaseEvent | dict[str, Any]) -> bytes:
    """Serialize one event as a message value."""
    if isinstance(event, BaseEvent):
        return event.model_dump_json(exclude_none=True).encode()
    return json.dumps(event, separators=(",", ":")).encode()


def encode_envelope(events: Iterable[BaseEvent | dict[str, Any]]) -> bytes:
    """Serialize many events as one envelope message value."""
    parts = [encode_event(e).decode() for e in events]
    return ('{"events":[' + ",".join(parts) + "]}").encode()


def describe(error: ValidationError) -> str:
    """One line naming each invalid field and why."""
    parts = []
    for err in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg']}")
    return "invalid event: " + "; ".join(parts)


def validate(raw: Any) -> BaseEvent | Rejected:
    """Validate one decoded object, returning the event or why it was rejected."""
    try:
        return parse_event(raw)
    except ValidationError as error:
        return Rejected(describe(error), json.dumps(raw, default=str))


class _Envelope(TypedDict):
    events: list[Event]


_envelope_adapter: TypeAdapter[_Envelope] = TypeAdapter(_Envelope)


def decode_message(value: bytes | str | None) -> tuple[list[BaseEvent], list[Rejected]]:
    """Decode a message value into valid events and rejected records.

    A message whose events are all valid (the common case) is parsed and validated in one
    pass; otherwise each event is validated on its own, so a bad one costs only itself.
    """
    if isinstance(value, bytes):
        try:
            if value.startswith(b'{"events":'):
                return _envelope_adapter.validate_json(value)["events"], []
            return [parse_event_json(value)], []
        except ValidationError:
            pass
    return _decode_each(value)


def _decode_each(value: bytes | str | None) -> tuple[list[BaseEvent], list[Rejected]]:
    if value is None:
        return [], [Rejected("empty message value", "")]
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    try:
        data = json.loads(text)
    except ValueError as error:
        return [], [Rejected(f"invalid JSON: {error}", text)]
    items = data["events"] if isinstance(data, dict) and "events" in data else [data]
    if not isinstance(items, list):
        return [], [Rejected("envelope 'events' must be a JSON array", text)]
    events: list[BaseEvent] = []
    rejects: list[Rejected] = []
    for raw in items:
        result = validate(raw)
        (rejects if isinstance(result, Rejected) else events).append(result)
    return events, rejects


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message ready to send: topic, explicit partition, key and value."""

    topic: str
    partition: int
    key: bytes
    value: bytes


def pack(events: Iterable[BaseEvent], partitions: int, envelope_size: int = 500) -> list[OutgoingMessage]:
    """Group events by topic and customer partition into envelopes of up to ``envelope_size``.

    Profile updates go one per message keyed by customer (their topic is compacted, so each
    message must carry exactly one customer's key).

    >>> from schemas.events import parse_event
    >>> visits = [parse_event({"type": "visit", "event_id": f"v{i}", "customer_id": f"c{i % 3}",
    ...                        "ts": 0, "channel": "web", "session_id": "s"}) for i in range(9)]
    >>> sorted(len(decode_message(m.value)[0]) for m in pack(visits, partitions=1, envelope_size=4))
    [1, 4, 4]
    """
    groups: dict[tuple[str, int], list[BaseEvent]] = {}
    out: list[OutgoingMessage] = []
    for event in events:
        topic = TOPIC_FOR_TYPE[event.type]  # type: ignore[attr-defined]
        key = event.customer_id.encode()
        partition = partition_for(key, partitions)
        if topic == CUSTOMER_PROFILES:
            out.append(OutgoingMessage(topic, partition, key, encode_event(event)))
        else:
            groups.setdefault((topic, partition), []).append(event)
    for (topic, partition), group in groups.items():
        for start in range(0, len(group), envelope_size):
            chunk = group[start : start + envelope_size]
            value = encode_event(chunk[0]) if len(chunk) == 1 else encode_envelope(chunk)
            out.append(OutgoingMessage(topic, partition, chunk[0].customer_id.encode(), value))
    return out
