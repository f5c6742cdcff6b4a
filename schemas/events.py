"""Input events: the contract with web, app and POS producers.

Every event carries ``type``, ``event_id`` (producer-unique, the idempotency key),
``customer_id``, ``ts`` (ISO-8601 with a zone, or epoch seconds) and ``channel``.

Every field has a domain the rest of the system can hold: event times from 1970-01-01 up to
:data:`max_future_s` ahead of the wall clock (numbers are always epoch seconds: a number in
milliseconds reads as a date centuries ahead and is rejected), amounts finite and at most
:data:`MAX_AMOUNT`, strings and lists of bounded length. What is outside is rejected (and
dead-lettered by the worker).

Examples
--------
>>> event = parse_event({"type": "purchase", "event_id": "o-1", "customer_id": "c1",
...                      "ts": "2024-05-01T10:00:00+00:00", "channel": "pos",
...                      "order_id": "o-1", "amount": 12.5, "currency": "EUR"})
>>> event.kind, event.amount, event.epoch
('purchase', 12.5, 1714557600.0)
>>> parse_event({"type": "purchase", "event_id": "x", "customer_id": "c1", "ts": 0,
...              "channel": "web", "order_id": "x", "amount": -1, "currency": "EUR"})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for tagged-union[...]
...
>>> parse_event({"type": "visit", "event_id": "v", "customer_id": "c1", "ts": 1714557600000,
...              "channel": "web", "session_id": "s"})   # milliseconds: rejected, not guessed
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for tagged-union[...]
visit.ts
  Input should be a valid datetime, dates after 9999 are not supported as unix timestamps ...
>>> parse_event({"type": "visit", "event_id": "v", "customer_id": "c1", "ts": "2200-01-01T00:00:00Z",
...              "channel": "web", "session_id": "s"})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for tagged-union[...]
visit.ts
  Value error, 2200-01-01T00:00:00+00:00 is more than 86400 s ahead of the wall clock ...
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1

#: The largest amount, price or discount accepted: any sum of them stays finite, and so do
#: the models' inputs (1e308 twice made a customer's total infinite).
MAX_AMOUNT = 1e9
#: How far ahead of the wall clock an event time may be (a till's clock runs ahead); the
#: worker sets it from ``CRM360_MAX_FUTURE_S`` (:func:`set_max_future_s`).
max_future_s = 86_400.0
#: The most :data:`max_future_s` may be: event times stay centuries inside what a feature
#: row's ``version`` (milliseconds << 20 in a UInt64, up to 2527) and ClickHouse's
#: DateTime64 (up to 2299) hold.
MAX_FUTURE_LIMIT_S = 10 * 365 * 86_400.0

Id = Annotated[str, Field(min_length=1, max_length=128)]
ShortText = Annotated[str, Field(max_length=256)]
Money = Annotated[float, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)]


def set_max_future_s(seconds: float) -> None:
    """Accept event times up to ``seconds`` ahead of the wall clock from now on.

    >>> set_max_future_s(MAX_FUTURE_LIMIT_S * 2)
    Traceback (most recent call last):
    ...
    ValueError: the future tolerance must be within 0 and 315360000 s, not 630720000.0
    """
    if not 0 <= seconds <= MAX_FUTURE_LIMIT_S:
        raise ValueError(f"the future tolerance must be within 0 and {MAX_FUTURE_LIMIT_S:.0f} s, not {seconds}")
    global max_future_s
    max_future_s = seconds


def _within_time_domain(value: datetime) -> datetime:
    """From 1970-01-01 up to :data:`max_future_s` ahead of the wall clock. Old times are fine
    (a replay of history); one far ahead would drag its partition's event time with it."""
    epoch = value.timestamp()
    if epoch < 0:
        raise ValueError(f"{value.isoformat()} is before 1970-01-01")
    if epoch > time.time() + max_future_s:
        raise ValueError(f"{value.isoformat()} is more than {max_future_s:.0f} s ahead of the wall clock "
                         "(CRM360_MAX_FUTURE_S; epoch numbers are seconds)")
    return value


#: A point in event time: ISO-8601 with a zone, or epoch seconds, within the time domain.
EventTime = Annotated[AwareDatetime, AfterValidator(_within_time_domain)]


class BaseEvent(BaseModel):
    """Fields shared by every event."""

    # Numbers are epoch seconds, whatever their size (pydantic's default reads those beyond
    # 2e10 as milliseconds, silently).
    model_config = ConfigDict(extra="forbid", frozen=True, val_temporal_unit="seconds")

    event_id: Id
    customer_id: Id
    ts: EventTime = Field(description="Event time: ISO-8601 with a zone, or epoch seconds; from 1970-01-01 "
                                      "up to CRM360_MAX_FUTURE_S (default a day) ahead of the wall clock.")
    channel: Annotated[str, Field(min_length=1, max_length=32)] = Field(
        description="Where the event happened: web, app, pos, social, email, ..."
    )
    schema_version: Annotated[int, Field(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION

    @property
    def epoch(self) -> float:
        """Event time in epoch seconds (computed at each use: Python 3.11's cached_property
        took twice as long as computing it, for the pipeline's one use)."""
        return self.ts.timestamp()


class PurchaseItem(BaseModel):
    """One line of an order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: Id
    category: ShortText | None = None
    quantity: Annotated[int, Field(ge=0, le=1_000_000)] = 1
    unit_price: Money = 0.0


class Purchase(BaseEvent):
    """An order (``kind="purchase"``) or a refund (``kind="refund"``); amounts are >= 0."""

    type: Literal["purchase"]
    order_id: Id
    amount: Money
    currency: Annotated[str, Field(min_length=3, max_length=3)]
    kind: Literal["purchase", "refund"] = "purchase"
    items: Annotated[list[PurchaseItem], Field(max_length=1000)] = []
    store_id: Id | None = None
    region: ShortText | None = None
    discount: Money = 0.0


class Visit(BaseEvent):
    """A web or app session (or one page of it)."""

    type: Literal["visit"]
    session_id: Id
    page: Annotated[str, Field(max_length=2048)] = ""
    duration_s: Annotated[float, Field(ge=0, le=86_400, allow_inf_nan=False)] = 0.0
    referrer: Annotated[str, Field(max_length=2048)] | None = None
    utm_source: ShortText | None = None
    utm_campaign: ShortText | None = None
    device: ShortText | None = None


SocialAction = Literal["like", "comment", "share", "follow", "mention", "review"]


class SocialInteraction(BaseEvent):
    """A like, comment, share, follow, mention or review on a social platform."""

    type: Literal["social_interaction"]
    platform: Annotated[str, Field(min_length=1, max_length=64)]
    action: SocialAction
    content_id: Id | None = None
    text: Annotated[str, Field(max_length=10_000)] | None = None
    rating: Annotated[float, Field(ge=0, le=5, allow_inf_nan=False)] | None = None


class CustomerProfile(BaseEvent):
    """A partial update of a customer's profile: only the fields present change."""

    type: Literal["customer_profile"]
    region: ShortText | None = None
    city: ShortText | None = None
    age_band: ShortText | None = None
    gender: ShortText | None = None
    signup_at: EventTime | None = None
    acquisition_channel: ShortText | None = None


Event = Annotated[
    Purchase | Visit | SocialInteraction | CustomerProfile, Field(discriminator="type")
]
EVENT_TYPES: dict[str, type[BaseEvent]] = {
    "purchase": Purchase,
    "visit": Visit,
    "social_interaction": SocialInteraction,
    "customer_profile": CustomerProfile,
}

_event_adapter: TypeAdapter[BaseEvent] = TypeAdapter(Event)


def parse_event(data: Any) -> BaseEvent:
    """Validate one decoded JSON object as an event; raises ``pydantic.ValidationError``."""
    return _event_adapter.validate_python(data)


def parse_event_json(raw: bytes) -> BaseEvent:
    """Parse and validate one event's JSON text; raises ``pydantic.ValidationError``."""
    return _event_adapter.validate_json(raw)


def event_json_schema() -> dict[str, Any]:
    """JSON Schema of one event (any type), for producers in any language."""
    return _event_adapter.json_schema()
