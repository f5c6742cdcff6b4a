"""Audiences: what marketing defines (:class:`Audience`) and what tools receive when a customer
enters or leaves one (:class:`AudienceEvent`, on ``audience-updates``, keyed by customer).

A definition's ``condition`` is written in the language of ``processors.conditions``; the
worker keeps definitions on the compacted ``audiences`` topic, keyed by name, and gives each
change a new ``version``. ``event_id`` is stable for one entry or exit, so a consumer that
sees the same event twice (Kafka delivers at least once) can drop the repeat.

Examples
--------
>>> audience = Audience(name="lapsed_champions", condition="rfm_segment = 'Champions' AND recency_days > 60")
>>> audience.min_stay_days, audience.version
(0.0, 0)
>>> try:
...     Audience(name="Lapsed Champions", condition="recency_days > 60")
... except ValueError as error:
...     print(error.errors()[0]["msg"])
String should match pattern '^[a-z0-9][a-z0-9_-]{0,63}$'
>>> event = AudienceEvent(audience="lapsed_champions", version=1, change="entered", customer_id="c1",
...     identifiers=["c1"], features={"recency_days": 75.0}, as_of=864000, created_at=1700000000)
>>> event.event_id
'lapsed_champions:1:c1:entered:864000'
>>> AudienceEvent.model_validate_json(event.model_dump_json()) == event
True
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, computed_field


class Audience(BaseModel):
    """A live audience: the customers whose features meet ``condition``."""

    model_config = ConfigDict(extra="forbid")

    #: Lower-case letters, digits, ``_`` and ``-``: it names topics' keys, rows and URLs.
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    condition: str = Field(min_length=1, max_length=10_000)
    description: str = Field(default="", max_length=2_000)
    #: Days of event time a member stays at least, however soon the condition stops holding
    #: (against flapping); their exit comes with the first row after that.
    min_stay_days: float = Field(default=0.0, ge=0.0, le=3_650.0)
    #: The consent purpose its destinations act for (e.g. ``marketing_email``): members who did
    #: not give it are counted but never published; none: every member is published.
    purpose: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,63}$")
    #: Where the worker POSTs each published entry and exit (JSON, ``Idempotency-Key``: its
    #: ``event_id``), with retries; none: only the topic.
    webhook: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2_000)
    #: Set by the worker: 1 for a new audience, one more on every change.
    version: int = Field(default=0, ge=0)
    updated_at: datetime | None = None
    #: Set by the worker: the audience was deleted (its record stays, so that every worker,
    #: also one that starts later, lets its members leave).
    deleted: bool = False


def definition_problem(error: ValidationError) -> str:
    """What is wrong with a definition, in one line.

    >>> try:
    ...     Audience(name="ok", condition="recency_days > 60", min_stay_days=-1)
    ... except ValidationError as error:
    ...     print(definition_problem(error))
    min_stay_days: Input should be greater than or equal to 0
    """
    first = error.errors()[0]
    return f"{'.'.join(str(part) for part in first['loc']) or 'definition'}: {first['msg']}"


class AudienceEvent(BaseModel):
    """A customer entered or left an audience (read back, its ``event_id`` is computed again)."""

    model_config = ConfigDict(extra="ignore")

    audience: str
    #: The audience's version whose condition decided it.
    version: int
    change: Literal["entered", "exited"]
    #: Why: the condition (or the minimum stay ending), the audience deleted, the profile merged
    #: into another, or consent for the audience's purpose given or withdrawn (a member all along).
    reason: Literal["condition", "deleted", "merged", "consent"] = "condition"
    customer_id: str
    #: Every identifier of the customer's profile (``customer_id`` alone without identities).
    identifiers: list[str]
    #: The values of the columns its condition names, as they were when it decided.
    features: dict[str, Any]
    #: Event time of the feature row that decided it (its partition's watermark).
    as_of: AwareDatetime
    #: Wall-clock time it was decided.
    created_at: AwareDatetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def event_id(self) -> str:
        seconds = int(self.as_of.timestamp())
        return _event_id(self.audience, self.version, self.customer_id, self.change, self.reason, seconds)


class AudienceMember(BaseModel):
    """A customer in an audience, as ``audience_membership`` keeps them (latest by ``version``;
    a customer who left has a deleted row)."""

    audience: str
    customer_id: str
    #: Event time they entered.
    entered_at: AwareDatetime
    #: The audience's version that let them in (or out).
    audience_version: int


def utc_json(seconds: float) -> str:
    """Epoch seconds as :class:`AudienceEvent` writes a time in JSON (as pydantic does).

    >>> utc_json(864000), utc_json(1700000000.5)
    ('1970-01-11T00:00:00Z', '2023-11-14T22:13:20.500000Z')
    """
    return _moment(seconds)[0]


def audience_event_json(
    audience: str,
    version: int,
    change: Literal["entered", "exited"],
    reason: Literal["condition", "deleted", "merged", "consent"],
    customer_id: str,
    identifiers: list[str],
    features: dict[str, Any],
    as_of: float,
    created_at: float,
) -> dict[str, Any]:
    """The JSON form of an :class:`AudienceEvent` (``model_dump(mode="json")``), built without
    validating it: a worker decides thousands of entries a second (a backfill, an aging pass),
    from values it made itself. Times are epoch seconds; ``features`` must be JSON already
    (times in them as :func:`utc_json` writes them).

    >>> fields = dict(audience="at_risk", version=2, change="exited", reason="merged", customer_id="c1",
    ...     identifiers=["c1", "email:x"], features={"recency_days": 75.0, "last_purchase_at": utc_json(5.25)})
    >>> plain = audience_event_json(**fields, as_of=864000.123, created_at=1700000000)
    >>> plain == AudienceEvent(**fields, as_of=864000.123, created_at=1700000000).model_dump(mode="json")
    True
    >>> plain["event_id"]
    'at_risk:2:c1:exited:864000:merged'
    """
    as_of_json, as_of_seconds = _moment(as_of)
    return {
        "audience": audience,
        "version": version,
        "change": change,
        "reason": reason,
        "customer_id": customer_id,
        "identifiers": identifiers,
        "features": features,
        "as_of": as_of_json,
        "created_at": utc_json(created_at),
        "event_id": _event_id(audience, version, customer_id, change, reason, as_of_seconds),
    }


@lru_cache(maxsize=4096)
def _moment(seconds: float) -> tuple[str, int]:
    """Epoch seconds as JSON writes them, and as the whole seconds a read-back event's id takes
    (``datetime`` rounds to the microsecond first). Cached: an aging pass or a backfill decides
    thousands of changes at a partition's few watermarks."""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.isoformat()[:-6] + "Z", int(moment.timestamp())  # "+00:00" as "Z"


def _event_id(audience: str, version: int, customer_id: str, change: str, reason: str, seconds: int) -> str:
    because = "" if reason == "condition" else f":{reason}"
    return f"{audience}:{version}:{customer_id}:{change}:{seconds}{because}"
