"""The wire format of an input message: one event, or an envelope of many.

A message value is UTF-8 JSON: either one event object, or ``{"events": [...]}`` whose
events all belong to customers of the message's partition. Each event is validated on its
own, so one bad event never costs its neighbours.

Examples
--------
>>> good = {"type": "visit", "event_id": "v1", "customer_id": "c1", "ts": 0,
...         "channel": "web", "session_id": "s1"}
>>> events, rejects = decode_message(encode_envelope([good, {"type": "nope"}]))
>>> [e.event_id for e in events], [r.reason[:40] for r in rejects]
(['v1'], ['events[1]: invalid event: event: Input t'])
>>> decode_message(b"{not json")[1][0].reason[:12]
'invalid JSON'
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import orjson
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


def reason_of(error: ValidationError) -> str:
    """One line naming each invalid field and why."""
    parts = []
    for err in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg']}")
    return "invalid event: " + "; ".join(parts)


def validate(raw: Any, position: str = "") -> BaseEvent | Rejected:
    """Validate one decoded object, returning the event or why it was rejected (the reason
    starts with ``position``, where the object was in its message or body, if given).

    >>> validate([[[[1]]]], "events[2]").reason
    'events[2]: invalid event: event: Input should be a valid dictionary or object to extract fields from'
    """
    try:
        return parse_event(raw)
    except ValidationError as error:
        return Rejected(f"{position}: {reason_of(error)}" if position else reason_of(error), payload_text(raw))


#: How deep a rejected object's payload is written out when it is too deep to write whole.
PAYLOAD_DEPTH = 32


def payload_text(raw: Any) -> str:
    """``raw`` (a decoded JSON value) as JSON text for a dead letter. Nested deeper than
    orjson writes (255 levels; the stdlib's recursion crashed on a deeply nested ``items``),
    or holding an integer beyond 64 bits, it is written by the stdlib down to
    :data:`PAYLOAD_DEPTH` levels, what lies below as ``"..."``.

    >>> deep = [1]
    >>> for _ in range(1_000):
    ...     deep = [deep]
    >>> payload_text({"a": [1, None]}), payload_text(deep)[28:40], payload_text([2**64])
    ('{"a":[1,null]}', '[[[["..."]]]', '[18446744073709551616]')
    """
    try:
        return orjson.dumps(raw, default=str).decode()
    except TypeError:  # orjson.JSONEncodeError: nested too deep, or an integer beyond 64 bits
        return json.dumps(_down_to(raw, PAYLOAD_DEPTH), default=str)


def _down_to(value: Any, depth: int) -> Any:
    if isinstance(value, (dict, list)) and depth == 0:
        return "..."
    if isinstance(value, dict):
        return {key: _down_to(item, depth - 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_down_to(item, depth - 1) for item in value]
    return value


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
                # The union's members are all BaseEvents (mypy holds a list to its exact item type).
                return cast(list[BaseEvent], _envelope_adapter.validate_json(value)["events"]), []
            return [parse_event_json(value)], []
        except ValidationError:
            pass
    return _decode_each(value)


def _decode_each(value: bytes | str | None) -> tuple[list[BaseEvent], list[Rejected]]:
    if value is None:
        return [], [Rejected("empty message value", "")]
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    try:
        data = orjson.loads(text)  # no recursion: nesting beyond 1024 levels is an error, not a crash
    except ValueError as error:
        return [], [Rejected(f"invalid JSON: {error}", text)]
    if not (isinstance(data, dict) and "events" in data):
        result = validate(data)
        return ([], [Rejected(result.reason, text)]) if isinstance(result, Rejected) else ([result], [])
    items = data["events"]
    if not isinstance(items, list):
        return [], [Rejected("envelope 'events' must be a JSON array", text)]
    events: list[BaseEvent] = []
    rejects: list[Rejected] = []
    for index, raw in enumerate(items):
        result = validate(raw, f"events[{index}]")
        if isinstance(result, Rejected):
            rejects.append(result)
        else:
            events.append(result)
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
        topic = TOPIC_FOR_TYPE[event.type]
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
