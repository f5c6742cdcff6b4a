"""Input events: the contract with web, app and POS producers.

Every event carries ``type``, ``event_id`` (producer-unique, the idempotency key), its
person's ``customer_id`` or ``identifiers`` or both (``schemas.identifiers``), ``ts``
(ISO-8601 with a zone, or epoch seconds) and ``channel``. An event with identifiers but no
``customer_id`` is keyed by the identifier of the first kind by name, which then stands as its
``customer_id`` (``anonymous_id:a9f3``): producers key its message by it.

Every field has a domain the rest of the system can hold: event times from 1970 to 2200
(numbers are always epoch seconds: a number in milliseconds reads as a date centuries ahead
and is rejected; the worker also rejects times more than ``CRM360_MAX_FUTURE_S`` ahead of its
wall clock, :func:`ahead_of_wall_clock`), amounts finite and at most :data:`MAX_AMOUNT`,
strings and lists of bounded length. What is outside is rejected (and dead-lettered by the
worker).

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
  Input should be less than 2200-01-01T00:00:00Z ...
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from schemas.identifiers import CUSTOMER_ID, MAX_PER_EVENT, IdentifierKind, identifier, normalized

SCHEMA_VERSION = 1

#: The largest amount, price or discount accepted: any sum of them stays finite, and so do
#: the models' inputs (1e308 twice made a customer's total infinite).
MAX_AMOUNT = 1e9
#: Event times every part of the system holds: from 1970 (a row's ``version`` is built from
#: epoch milliseconds in a UInt64) to 2200 (ClickHouse's DateTime64 ends in 2299).
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)

Id = Annotated[str, Field(min_length=1, max_length=128)]
ShortText = Annotated[str, Field(max_length=256)]
#: A purpose a customer consents to or not, e.g. ``marketing_email``, ``marketing_push``, ``profiling``.
Purpose = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Money = Annotated[float, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)]


#: A point in event time: ISO-8601 with a zone, or epoch seconds, from 1970 up to 2200
#: (checked by pydantic's core, not a Python validator, which is slower). How far ahead of the
#: wall clock an event may be is the worker's rule (:func:`ahead_of_wall_clock`).
EventTime = Annotated[AwareDatetime, Field(ge=EARLIEST_TIME, lt=LATEST_TIME)]


def ahead_of_wall_clock(epoch: float, max_future_s: float) -> str:
    """Why an event at ``epoch`` is rejected when it is more than ``max_future_s`` ahead of the
    wall clock (the worker's ``CRM360_MAX_FUTURE_S``): one such event would drag its partition's
    event time with it. Old times are fine (a replay of history).

    >>> ahead_of_wall_clock(4_102_444_800.0, 86_400)[:74]
    'ts: 2100-01-01T00:00:00+00:00 is more than 86400 s ahead of the wall clock'
    """
    when = datetime.fromtimestamp(epoch, tz=UTC).isoformat()
    return (
        f"ts: {when} is more than {max_future_s:.0f} s ahead of the wall clock "
        "(CRM360_MAX_FUTURE_S; numbers are epoch seconds)"
    )


class BaseEvent(BaseModel):
    """Fields shared by every event."""

    # Numbers are epoch seconds, whatever their size (pydantic's default reads those beyond
    # 2e10 as milliseconds, silently).
    model_config = ConfigDict(extra="forbid", frozen=True, val_temporal_unit="seconds")

    event_id: Id
    customer_id: Id = Field(
        "",
        validate_default=False,
        description="The person's account id. Optional when identifiers are given: the event is then "
        "keyed by kind:value of the identifier of the first kind by name.",
    )
    identifiers: Annotated[dict[IdentifierKind, Id], Field(max_length=MAX_PER_EVENT)] = Field(
        default_factory=dict,
        description="Other identifiers of the person, kind -> value: anonymous_id, loyalty_card, email (an "
        "address, or the SHA-256 hex of it trimmed and lower-cased), phone, social_handle, ...",
    )
    ts: EventTime = Field(
        description="Event time: ISO-8601 with a zone, or epoch seconds; from 1970-01-01, and "
        "at most CRM360_MAX_FUTURE_S (default a day) ahead of the wall clock."
    )
    channel: Annotated[str, Field(min_length=1, max_length=32)] = Field(
        description="Where the event happened: web, app, pos, social, email, ..."
    )
    schema_version: Annotated[int, Field(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION

    if TYPE_CHECKING:
        # For the type checker only: the field is each subclass's Literal, the union's
        # discriminator; pydantic must see no ``type`` field of the base.
        type: str

    @field_validator("identifiers")
    @classmethod
    def _normalized(cls, identifiers: dict[str, str]) -> dict[str, str]:
        if CUSTOMER_ID in identifiers:
            raise ValueError("give the customer_id as the event's customer_id, not among its identifiers")
        return {kind: normalized(kind, value) for kind, value in identifiers.items()}

    @model_validator(mode="after")
    def _keyed(self) -> BaseEvent:
        if not self.customer_id:
            if not self.identifiers:
                raise ValueError("an event names its person: give a customer_id, identifiers or both")
            kind = min(self.identifiers)
            object.__setattr__(self, "customer_id", identifier(kind, self.identifiers[kind]))
        return self

    @property
    def others(self) -> list[str]:
        """The identifiers the event names besides its ``customer_id``, as ``kind:value``."""
        named = (identifier(kind, value) for kind, value in self.identifiers.items())
        return [name for name in named if name != self.customer_id]

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
    #: Consent given (true) or withdrawn (false) per purpose, as of the event's time; a
    #: purpose not named keeps what it was (never stated: no consent).
    consents: Annotated[dict[Purpose, bool], Field(max_length=32)] | None = None


class Identify(BaseEvent):
    """Identifiers seen together, which name one person from then on: a login (the account
    and the device's cookie), a checkout with a loyalty card, a social account connected. It
    counts in no feature.

    >>> event = parse_event({"type": "identify", "event_id": "login-1", "customer_id": "c1", "ts": 0,
    ...                      "channel": "web", "identifiers": {"anonymous_id": "a9f3"}})
    >>> event.customer_id, event.others
    ('c1', ['anonymous_id:a9f3'])
    """

    type: Literal["identify"]

    @model_validator(mode="after")
    def _links(self) -> Identify:
        if not self.others:
            raise ValueError("an identify event names at least two identifiers (the customer_id counts)")
        return self


Event = Annotated[Purchase | Visit | SocialInteraction | CustomerProfile | Identify, Field(discriminator="type")]
EVENT_TYPES: dict[str, type[BaseEvent]] = {
    "purchase": Purchase,
    "visit": Visit,
    "social_interaction": SocialInteraction,
    "customer_profile": CustomerProfile,
    "identify": Identify,
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
