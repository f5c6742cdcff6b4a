"""Per-customer feature state: applying events and reading the 360° profile at a watermark.

A :class:`CustomerState` holds only what cannot be derived (counts, sums, timestamps, daily
buckets of the last windows, the decayed engagement score, profile fields) plus what makes
applying idempotent: a digest of every applied event's id (8 bytes each) and of its content
(4 bytes each). Derived features (recency, windows, lifecycle, RFM) are computed by
:func:`profile` at the partition's event-time watermark, so customers age even when they send
nothing.

An event is applied once whatever its lateness: a purchase a till uploads a week late counts
in the lifetime figures and in every window it falls in (see :func:`apply`). The first content
of an event id stands: its id again with other content is a conflict, not applied (the worker
dead-letters it, and writes no raw row of it, so ClickHouse's raw tables keep the first too).

Examples
--------
>>> from schemas.events import parse_event
>>> cfg = FeatureConfig()
>>> state = CustomerState("c1")
>>> buy = {"type": "purchase", "event_id": "o1", "customer_id": "c1", "ts": 10 * DAY,
...        "channel": "web", "order_id": "o1", "amount": 30.0, "currency": "EUR"}
>>> apply(state, parse_event(buy), cfg)
'applied'
>>> apply(state, parse_event(buy), cfg)   # the same event again changes nothing
'duplicate'
>>> apply(state, parse_event(buy | {"amount": 99.0}), cfg)   # its id with other content: the first stands
'conflict'
>>> apply(state, parse_event(buy | {"event_id": "o0", "ts": 3 * DAY}), cfg)   # a week late: counted
'late'
>>> row = profile(state, watermark=20 * DAY, config=cfg)
>>> row["purchase_count"], row["monetary_total"], row["recency_days"], row["lifecycle_stage"]
(2, 60.0, 10.0, 'new')
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import cache
from itertools import chain
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from processors import engagement
from processors.config import DAY, FeatureConfig
from processors.identity import Identity
from processors.lifecycle import lifecycle_stage
from processors.rfm import PROSPECTS, RFMScorer, value_tier
from schemas.events import BaseEvent, CustomerProfile, Identify, Purchase, SocialInteraction, Visit

#: Longest window kept in daily buckets.
WINDOW_DAYS = 90
#: Columns of a daily bucket.
B_PURCHASES, B_REVENUE, B_VISITS, B_LIKES, B_COMMENTS, B_SHARES = range(6)
#: Numbers in one churn snapshot: its event time, its outcome and the model inputs
#: (``processors.snapshots.Inputs``).
SNAPSHOT_WIDTH = 13
_SOCIAL_BUCKET = {"like": B_LIKES, "comment": B_COMMENTS, "share": B_SHARES}
PROFILE_FIELDS = ("region", "city", "age_band", "gender", "signup_at", "acquisition_channel")


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


@cache
def _type_digest(kind: str) -> int:
    return _digest(kind)


def event_key(kind: str, event_id: str) -> int:
    """A stable 64-bit digest of an event of type ``kind``, as kept for de-duplication: ids
    are producer-unique per type. The id's digest is XORed with the type's, not hashed with
    it, so the per-type id digests that earlier states kept convert (see ``from_json``).

    >>> event_key("purchase", "o1") == event_key("purchase", "o1") != event_key("visit", "o1")
    True
    """
    return _digest(event_id) ^ _type_digest(kind)


def _plain(value: datetime | BaseModel) -> Any:
    return value.timestamp() if isinstance(value, datetime) else vars(value)


#: Optional event fields added after contents were kept: left out of a digest when not set, so
#: that an event stored before keeps its digest (its redelivery stays a duplicate).
ADDED_FIELDS = frozenset({"consents"})


def content_digest(event: BaseEvent, ts: float) -> int:
    """A 32-bit digest of every field of ``event`` (``ts`` is its epoch), as kept to tell a
    redelivery from its id reused with other content. Times count as instants: two notations
    of one time are the same content. Never 0, which marks an event applied before contents
    were kept. (CRC-32 of the fields' JSON: cheaper than a cryptographic hash, and it catches
    every change within 4 consecutive bytes, such as one amount for another, and all but one
    in 4 billion others.)

    >>> from schemas.events import parse_event
    >>> visit = {"type": "visit", "event_id": "v1", "customer_id": "c1", "ts": "2024-05-01T12:00:00+02:00",
    ...          "channel": "web", "session_id": "s1"}
    >>> same = parse_event(visit | {"ts": 1714557600})
    >>> content_digest(parse_event(visit), 1714557600.0) == content_digest(same, 1714557600.0)
    True
    >>> content_digest(parse_event(visit | {"page": "/cart"}), 1714557600.0) == content_digest(same, 1714557600.0)
    False
    """
    fields = {**vars(event), "ts": ts}
    for name in ADDED_FIELDS.intersection(fields):
        if fields[name] is None:  # as the version before the field existed digested it
            del fields[name]
    fields_json = orjson.dumps(fields, default=_plain, option=orjson.OPT_PASSTHROUGH_DATETIME)
    return zlib.crc32(fields_json) or 1


@dataclass(slots=True)
class CustomerState:
    """Everything kept per customer; serializable to compact JSON."""

    customer_id: str
    newest_event_at: float | None = None
    events_applied: int = 0
    #: Per event type (each type has its own topic, ordered per partition): the newest
    #: applied event time, what lateness is measured from.
    newest_by_type: dict[str, float] = field(default_factory=dict)
    #: :func:`event_key` of every applied event, sorted: 8 bytes an event, exact at any lateness.
    applied_ids: array[int] = field(default_factory=lambda: array("Q"))
    #: :func:`content_digest` of each of them, in the same order (0: applied by an earlier
    #: version, which kept none): 4 bytes an event.
    applied_contents: array[int] = field(default_factory=lambda: array("I"))
    #: Only in states written before every id was kept: per type, the event time from which
    #: they remember every applied id (older events may have been applied unremembered).
    ids_known_from: dict[str, float] | None = None
    purchase_count: int = 0
    monetary_total: float = 0.0
    first_purchase_at: float | None = None
    last_purchase_at: float | None = None
    reactivated_at: float | None = None
    #: The purchase before the gap that ``reactivated_at`` ended (a late purchase may fall in it).
    reactivated_after: float | None = None
    refund_count: int = 0
    refund_total: float = 0.0
    category_quantities: dict[str, float] = field(default_factory=dict)
    channel_counts: dict[str, int] = field(default_factory=dict)
    #: day number (epoch // DAY) -> [purchases, revenue, visits, likes, comments, shares]
    daily: dict[int, list[float]] = field(default_factory=dict)
    visit_count: int = 0
    visit_seconds_total: float = 0.0
    converted_visits: int = 0
    last_visit_at: float | None = None
    last_visit_converted: bool = False
    last_interaction_at: float | None = None
    engagement_score: float = 0.0
    engagement_as_of: float = 0.0
    profile_updated_at: float | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    first_seen_at: float | None = None
    #: Churn snapshots not yet labelled, oldest first, as rows of :data:`SNAPSHOT_WIDTH` numbers
    #: [at, outcome, *inputs] one after the other (see ``processors.snapshots``): a backfill
    #: leaves dozens per customer, 104 bytes each (as lists of floats they took 470).
    snapshots: array[float] = field(default_factory=lambda: array("d"))
    #: What the models said last: churn probability, segment, RFM segment; alerting state.
    churn_probability: float | None = None
    segment: int | None = None
    rfm_segment: str | None = None
    alert_armed: bool = True
    last_alert_at: float | None = None
    #: Per purpose, consent as last stated: [1 given / 0 withdrawn, event time].
    consents: dict[str, list[float]] = field(default_factory=dict)
    #: Its profile's identifiers and merges, once it took part in a link (``processors.identity``).
    identity: Identity | None = None

    @property
    def is_profile(self) -> bool:
        """Whether it is a customer's profile: it applied events and did not merge into another."""
        return is_profile(self.events_applied, self.identity.merged_into if self.identity is not None else None)

    def to_json(self) -> bytes:
        """Compact JSON (orjson: a quarter of the stdlib's time; this runs for every touched
        customer of every batch), as two documents on a line each: first its contact
        (:data:`CONTACT_FIELDS`, which a backfill reads of a million customers without decoding
        the rest), then the rest.

        >>> head, rest = CustomerState("c1", events_applied=2).to_json().split(b"\\n")
        >>> head
        b'{"customer_id":"c1","events_applied":2,"identity":null}'
        """
        contact = {name: getattr(self, name) for name in CONTACT_FIELDS}
        if not contact["consents"]:  # most customers have none: records stay as they were
            del contact["consents"]
        data = {name: getattr(self, name) for name in _REST_FIELDS}
        # Machine byte order: little-endian on every platform crm360 runs on.
        data["applied_ids"] = base64.b64encode(self.applied_ids.tobytes()).decode("ascii")
        data["applied_contents"] = base64.b64encode(self.applied_contents.tobytes()).decode("ascii")
        snapshots = self.snapshots
        data["snapshots"] = [
            snapshots[i : i + SNAPSHOT_WIDTH].tolist() for i in range(0, len(snapshots), SNAPSHOT_WIDTH)
        ]
        # orjson escapes every control character inside strings: the only raw newline is this one.
        return (
            orjson.dumps(contact)
            + b"\n"
            + orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
        )

    @classmethod
    def from_json(cls, raw: bytes) -> CustomerState:
        """The state :meth:`to_json` wrote; also one written as one document, or before every
        applied id, or their contents, were kept.

        >>> state = CustomerState("c1", applied_ids=array("Q", [3, 7]), applied_contents=array("I", [5, 9]),
        ...                       daily={5: [1.0, 2.0, 0, 0, 0, 0]}, snapshots=array("d", range(2 * SNAPSHOT_WIDTH)),
        ...                       identity=Identity(["c1", "email:x"]))
        >>> CustomerState.from_json(state.to_json()) == state
        True
        >>> CustomerState.from_json(state.to_json().replace(b"}\\n{", b",")) == state  # one document
        True
        """
        contact, newline, rest = raw.partition(b"\n")
        data = orjson.loads(contact)
        if newline:  # else it was written as one document (before 2026-12-07)
            data |= orjson.loads(rest)
        # Memberships are kept apart since 2026-12 (``processors.audiences``): those a state
        # written before carries are dropped, and decided again on the customer's next row.
        data.pop("audiences", None)
        data.pop("withheld", None)
        data["daily"] = {int(day): bucket for day, bucket in data["daily"].items()}
        data["snapshots"] = array("d", chain.from_iterable(data["snapshots"]))
        identity = data.get("identity")
        if identity is not None:
            data["identity"] = Identity(**identity)
        recent = data.pop("recent_events", None)
        if recent is None:
            data["applied_ids"] = array("Q", base64.b64decode(data["applied_ids"]))
        else:
            data["applied_ids"], data["ids_known_from"] = _convert_recent(recent, data["events_applied"])
        contents = data.get("applied_contents")
        data["applied_contents"] = (
            array("I", base64.b64decode(contents))
            if contents is not None
            else array("I", bytes(4 * len(data["applied_ids"])))
        )  # unknown: 0
        return cls(**data)


def _convert_recent(
    recent: dict[str, dict[str, float]], events_applied: int
) -> tuple[array[int], dict[str, float] | None]:
    """The ids a state of an earlier version kept (per type, the hex id digests of the events
    within the allowed lateness, older ones pruned), and per type the event time from which
    they are complete: unless none was ever pruned, the oldest one kept.

    >>> recent = {"visit": {hashlib.blake2b(b"v1", digest_size=8).hexdigest(): 5.0}}   # as kept then
    >>> ids, known_from = _convert_recent(recent, events_applied=1)
    >>> list(ids) == [event_key("visit", "v1")], known_from
    (True, None)
    >>> _convert_recent(recent, events_applied=40)[1]
    {'visit': 5.0}
    """
    keys = sorted(
        int.from_bytes(bytes.fromhex(h), "little") ^ _type_digest(kind) for kind, seen in recent.items() for h in seen
    )
    if len(keys) == events_applied:
        return array("Q", keys), None  # none pruned
    return array("Q", keys), {kind: min(seen.values()) for kind, seen in recent.items() if seen}


#: What a stored state tells first (:meth:`CustomerState.to_json`): whether it is a profile,
#: its identifiers and consents.
CONTACT_FIELDS = ("customer_id", "events_applied", "identity", "consents")
_REST_FIELDS = tuple(f.name for f in fields(CustomerState) if f.name not in CONTACT_FIELDS)


def count_value(counts: dict[str, Any], key: str, amount: float, limit: int) -> None:
    """Add ``amount`` to ``key``'s count; a new key only while fewer than ``limit`` are counted."""
    if key in counts or len(counts) < limit:
        counts[key] = counts.get(key, 0) + amount


def oldest_kept_day(newest_event_at: float, lateness: float) -> int:
    """The oldest day whose bucket is kept: windows end at or after the newest event."""
    return int((newest_event_at - lateness) // DAY) - WINDOW_DAYS


def _bucket(state: CustomerState, ts: float, lateness: float) -> list[float]:
    day = int(ts // DAY)
    bucket = state.daily.get(day)
    if bucket is None:
        bucket = [0.0] * 6
        if state.newest_event_at is None or day >= oldest_kept_day(state.newest_event_at, lateness):
            state.daily[day] = bucket  # else a day no window reaches any more: counted nowhere
    return bucket


#: What :func:`remember` tells of an event: "new" (now remembered), "duplicate" (applied
#: before with the same content, or maybe applied by an earlier version) or "conflict" (its
#: id was applied before with other content: the first stands).
Seen = Literal["new", "duplicate", "conflict"]
#: "late": applied, and older than the customer's newest event of its type by more than the
#: allowed lateness (``crm360_late_events_total``).
Outcome = Literal["applied", "duplicate", "late", "conflict"]


def apply(state: CustomerState, event: BaseEvent, config: FeatureConfig, ts: float | None = None) -> Outcome:
    """Apply one event to ``state`` unless its id was applied before, whatever its lateness
    (:func:`remember`, then :func:`count_event`); ``ts`` is the event's
    :attr:`~schemas.events.BaseEvent.epoch`, when the caller has it."""
    if ts is None:
        ts = event.epoch
    seen = remember(state, event, ts)
    return count_event(state, event, config, ts) if seen == "new" else seen


def remember(state: CustomerState, event: BaseEvent, ts: float) -> Seen:
    """Remember ``event`` (at epoch ``ts``) as applied and say "new" (count it then, with
    :func:`count_event`), unless its id was applied before: a "duplicate" with the same content
    (or an unknown one: an earlier version applied it), a "conflict" with other content. A state
    of an earlier version that may have applied it unremembered says "duplicate"."""
    seen, at, key, content = _recall(state, event, ts)
    if seen is None:
        state.applied_ids.insert(at, key)
        state.applied_contents.insert(at, content)
        return "new"
    return seen


def recall(state: CustomerState, event: BaseEvent, ts: float) -> Seen | None:
    """What :func:`remember` would find ``event`` to be, "duplicate" or "conflict", or None if
    it is new; changes nothing.

    >>> from schemas.events import parse_event
    >>> def visit(seconds): return parse_event({"type": "visit", "event_id": "v1", "customer_id": "c1", "ts": 5,
    ...                                         "channel": "web", "session_id": "s1", "duration_s": seconds})
    >>> state = CustomerState("c1")
    >>> remember(state, visit(30), 5.0), recall(state, visit(30), 5.0), recall(state, visit(31), 5.0)
    ('new', 'duplicate', 'conflict')
    """
    return _recall(state, event, ts)[0]


def _recall(state: CustomerState, event: BaseEvent, ts: float) -> tuple[Seen | None, int, int, int]:
    """What the state knows of ``event``'s id (None: nothing), where its key goes, its key and content."""
    kind = event.type
    key = event_key(kind, event.event_id)
    content = content_digest(event, ts)
    ids = state.applied_ids
    at = bisect_left(ids, key)
    if at < len(ids) and ids[at] == key:
        return ("duplicate" if state.applied_contents[at] in (content, 0) else "conflict"), at, key, content
    if state.ids_known_from and ts < state.ids_known_from.get(kind, ts):
        return "duplicate", at, key, content  # older than a former version's ids reach: it may have been applied then
    return None, at, key, content


def count_event(state: CustomerState, event: BaseEvent, config: FeatureConfig, ts: float) -> Literal["applied", "late"]:
    """Count an event :func:`remember` found new, at epoch ``ts``, in the state's figures.

    A late event counts in the lifetime figures as if it had come in order, and in the daily
    buckets of the windows it falls in. The engagement score adds it decayed to the score's
    time, which is exactly the in-order sum. Visit conversion is judged against the last visit
    only, and an update of profile fields older than the newest applied one is ignored.
    """
    kind = event.type
    state.events_applied += 1
    lateness = config.allowed_lateness_days * DAY
    newest = state.newest_by_type.get(kind)
    late = newest is not None and ts < newest - lateness
    if newest is None or ts > newest:
        state.newest_by_type[kind] = ts
    if state.first_seen_at is None or ts < state.first_seen_at:
        state.first_seen_at = ts
    if state.newest_event_at is None or ts > state.newest_event_at:
        state.newest_event_at = ts
        oldest_day = oldest_kept_day(ts, lateness)
        if state.daily and min(state.daily) < oldest_day:
            state.daily = {d: b for d, b in state.daily.items() if d >= oldest_day}
    if isinstance(event, Identify):
        return "late" if late else "applied"  # the person was seen; it links, and counts in no feature
    count_value(state.channel_counts, event.channel, 1, config.max_tracked_values)
    half_life = config.engagement_half_life_days * DAY
    weight_key = event.action if isinstance(event, SocialInteraction) else event.type
    weight = config.engagement_weights.get(weight_key, 0.0)
    if isinstance(event, Purchase) and event.kind == "refund":
        weight = 0.0
    if weight:
        state.engagement_score, state.engagement_as_of = engagement.add(
            state.engagement_score, state.engagement_as_of, weight, ts, half_life
        )
    if isinstance(event, Purchase):
        _apply_purchase(state, event, ts, config, lateness)
    elif isinstance(event, Visit):
        state.visit_count += 1
        state.visit_seconds_total += event.duration_s
        _bucket(state, ts, lateness)[B_VISITS] += 1
        if state.last_visit_at is None or ts >= state.last_visit_at:
            state.last_visit_at = ts
            state.last_visit_converted = False
    elif isinstance(event, SocialInteraction):
        state.last_interaction_at = max(ts, state.last_interaction_at or ts)
        column = _SOCIAL_BUCKET.get(event.action)
        if column is not None:
            _bucket(state, ts, lateness)[column] += 1
    elif isinstance(event, CustomerProfile):
        if event.consents:
            record_consents(state.consents, {p: [float(given), ts] for p, given in event.consents.items()})
        if state.profile_updated_at is not None and ts < state.profile_updated_at:
            return "late" if late else "applied"
        state.profile_updated_at = ts
        for name in PROFILE_FIELDS:
            value = getattr(event, name)
            if value is not None:
                state.profile[name] = value.timestamp() if name == "signup_at" else value
    return "late" if late else "applied"


def _apply_purchase(state: CustomerState, event: Purchase, ts: float, config: FeatureConfig, lateness: float) -> None:
    if event.kind == "refund":
        state.refund_count += 1
        state.refund_total += event.amount
        _bucket(state, ts, lateness)[B_REVENUE] -= event.amount
        return
    track_reactivation(state, ts, config.churn_days * DAY)
    state.purchase_count += 1
    state.monetary_total += event.amount
    state.first_purchase_at = ts if state.first_purchase_at is None else min(ts, state.first_purchase_at)
    state.last_purchase_at = ts if state.last_purchase_at is None else max(ts, state.last_purchase_at)
    bucket = _bucket(state, ts, lateness)
    bucket[B_PURCHASES] += 1
    bucket[B_REVENUE] += event.amount
    for item in event.items:
        if item.category:
            count_value(state.category_quantities, item.category, item.quantity, config.max_tracked_values)
    last_visit = state.last_visit_at
    if (
        last_visit is not None
        and not state.last_visit_converted
        and 0 <= ts - last_visit <= config.visit_attribution_hours * 3600
    ):
        state.last_visit_converted = True
        state.converted_visits += 1


def track_reactivation(state: CustomerState, ts: float, churn: float) -> None:
    """The latest return after a churn-length gap without purchases, as if purchases came in
    order, before the purchase at ``ts`` is counted. A late purchase only shortens the gap it
    falls in, or opens one before the first purchase.

    >>> state = CustomerState("c1", purchase_count=1, first_purchase_at=200 * DAY, last_purchase_at=200 * DAY)
    >>> track_reactivation(state, 0.0, 90 * DAY)   # long before the first purchase: day 200 was a return
    >>> state.reactivated_at / DAY, state.reactivated_after / DAY
    (200.0, 0.0)
    >>> state.first_purchase_at = 0.0
    >>> track_reactivation(state, 150 * DAY, 90 * DAY)   # the return was at day 150, not 200
    >>> state.reactivated_at / DAY, state.reactivated_after / DAY
    (150.0, 0.0)
    >>> track_reactivation(state, 70 * DAY, 90 * DAY)   # no gap is churn-length any more
    >>> state.reactivated_at, state.reactivated_after
    (None, None)
    """
    first, last = state.first_purchase_at, state.last_purchase_at
    returned, lapsed = state.reactivated_at, state.reactivated_after
    if last is not None and ts - last >= churn:
        state.reactivated_at, state.reactivated_after = ts, last
    elif returned is None and first is not None and first - ts >= churn:
        state.reactivated_at, state.reactivated_after = first, ts
    elif returned is not None and lapsed is not None and lapsed < ts < returned:  # no lapse in earlier versions' states
        if returned - ts >= churn:
            state.reactivated_after = ts  # still a return, after a shorter gap
        elif ts - lapsed >= churn:
            state.reactivated_at = ts  # the return came earlier
        else:
            # No return since the lapse; an earlier one is a churn length before the latest
            # purchase, too old to show in the lifecycle stage.
            state.reactivated_at = state.reactivated_after = None


def record_consents(consents: dict[str, list[float]], stated: dict[str, list[float]]) -> None:
    """Per purpose, the later statement wins (at the same time, a withdrawal).

    >>> consents = {"marketing_email": [1.0, 10.0]}
    >>> record_consents(consents, {"marketing_email": [0.0, 5.0], "profiling": [1.0, 5.0]})
    >>> consents
    {'marketing_email': [1.0, 10.0], 'profiling': [1.0, 5.0]}
    """
    for purpose, (given, at) in stated.items():
        known = consents.get(purpose)
        if known is None or at > known[1] or (at == known[1] and not given):
            consents[purpose] = [given, at]


def is_profile(events_applied: int, merged_into: str | None) -> bool:
    """Whether a state is a customer's profile: it applied events and did not merge into another."""
    return events_applied > 0 and merged_into is None


def consented(consents: Mapping[str, list[float]], purpose: str) -> bool:
    """Whether the customer's last statement for ``purpose`` (their ``consents``) gave consent
    (never stated: no)."""
    known = consents.get(purpose)
    return known is not None and known[0] == 1.0


def row_version(state: CustomerState, as_of: float) -> int:
    """A version that grows with event time and with every applied event, and is the same
    when the same events are replayed: ``customer_features`` keeps the highest.

    It fits ClickHouse's UInt64 for any event time: accepted events lie within 1970 and a
    little past the wall clock (``schemas.events``), far inside the 44 bits of milliseconds
    (up to 2527); the clamp makes that hold by construction, so no row can fail every write.

    >>> s = CustomerState("c1", events_applied=3)
    >>> row_version(s, 2.0) < row_version(s, 2.001) and row_version(s, 2.0) == (2000 << 20) + 3
    True
    >>> 0 <= row_version(s, -1e12) < row_version(s, 1e12) < 1 << 64
    True
    """
    millis = min(max(round(as_of * 1000), 0), _MAX_VERSION_MILLIS)
    return (millis << 20) + min(state.events_applied, (1 << 20) - 1)


#: Milliseconds of event time a row version holds (44 bits: 64 less 20 for the event count).
_MAX_VERSION_MILLIS = (1 << 44) - 1


def window_sums(state: CustomerState, at: float) -> tuple[list[float], list[float]]:
    """Sums of each daily-bucket column over the 30 and the 90 days up to event time ``at``,
    in one pass (index them with ``B_PURCHASES``, ``B_REVENUE``, ...).

    >>> state = CustomerState("c1", daily={0: [1.0, 20.0, 0.0, 0.0, 0.0, 0.0], 40: [2.0, 5.5, 1.0, 0.0, 0.0, 0.0]})
    >>> window_sums(state, 45 * DAY)
    ([2.0, 5.5, 1.0, 0.0, 0.0, 0.0], [3.0, 25.5, 1.0, 0.0, 0.0, 0.0])
    >>> window_sums(state, 200 * DAY)
    ([0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0])
    """
    last_day = int(at // DAY)
    first_90, first_30 = last_day - 89, last_day - 29
    # Integer zeros, as sum() starts: a window without buckets reads as it always has.
    last_30d: list[float] = [0] * 6
    last_90d: list[float] = [0] * 6
    for day, bucket in state.daily.items():
        if first_90 <= day <= last_day:
            # Column by column, unrolled: half the time of summing zipped columns twice.
            purchases, revenue, visits, likes, comments, shares = bucket
            last_90d[0] += purchases
            last_90d[1] += revenue
            last_90d[2] += visits
            last_90d[3] += likes
            last_90d[4] += comments
            last_90d[5] += shares
            if day >= first_30:
                last_30d[0] += purchases
                last_30d[1] += revenue
                last_30d[2] += visits
                last_30d[3] += likes
                last_30d[4] += comments
                last_30d[5] += shares
    return last_30d, last_90d


def profile(
    state: CustomerState,
    watermark: float,
    config: FeatureConfig,
    scorer: RFMScorer | None = None,
) -> dict[str, Any]:
    """The customer's 360° feature row at event time ``watermark`` (epoch seconds).

    Timestamps are epoch seconds; the sink turns them into ClickHouse DateTime64 values.
    """
    now = max(watermark, state.newest_event_at or watermark)
    count = state.purchase_count
    first, last = state.first_purchase_at, state.last_purchase_at
    recency = (now - last) / DAY if last is not None else None
    net_value = max(state.monetary_total - state.refund_total, 0.0)
    scores = scorer.score(recency, count, net_value) if scorer and recency is not None else None
    r, f, m = scores if scores else (None, None, None)
    half_life = config.engagement_half_life_days * DAY
    last_30d, last_90d = window_sums(state, now)
    return {
        "customer_id": state.customer_id,
        "as_of": now,
        "purchase_count": count,
        "monetary_total": round(state.monetary_total, 2),
        "avg_order_value": round(state.monetary_total / count, 2) if count else None,
        "first_purchase_at": first,
        "last_purchase_at": last,
        "recency_days": round(recency, 3) if recency is not None else None,
        "tenure_days": round((now - first) / DAY, 3) if first is not None else None,
        "purchases_30d": int(last_30d[B_PURCHASES]),
        "purchases_90d": int(last_90d[B_PURCHASES]),
        "revenue_30d": round(last_30d[B_REVENUE], 2),
        "revenue_90d": round(last_90d[B_REVENUE], 2),
        "mean_days_between_purchases": (
            round((last - first) / DAY / (count - 1), 3)
            if count > 1 and first is not None and last is not None
            else None
        ),
        "refund_count": state.refund_count,
        "refund_total": round(state.refund_total, 2),
        "top_category": (
            max(sorted(state.category_quantities), key=state.category_quantities.__getitem__)
            if state.category_quantities
            else None
        ),
        "distinct_categories": len(state.category_quantities),
        "preferred_channel": (
            max(sorted(state.channel_counts), key=state.channel_counts.__getitem__) if state.channel_counts else None
        ),
        "visit_count": state.visit_count,
        "visits_30d": int(last_30d[B_VISITS]),
        "last_visit_at": state.last_visit_at,
        "avg_session_seconds": (round(state.visit_seconds_total / state.visit_count, 3) if state.visit_count else None),
        "visit_to_purchase_rate": (round(state.converted_visits / state.visit_count, 4) if state.visit_count else None),
        "likes_30d": int(last_30d[B_LIKES]),
        "comments_30d": int(last_30d[B_COMMENTS]),
        "shares_30d": int(last_30d[B_SHARES]),
        "engagement_score": round(
            engagement.decayed(state.engagement_score, state.engagement_as_of, now, half_life), 4
        ),
        "last_interaction_at": state.last_interaction_at,
        **{name: state.profile.get(name) for name in PROFILE_FIELDS},
        "rfm_r": r,
        "rfm_f": f,
        "rfm_m": m,
        "rfm_segment": PROSPECTS
        if not count
        else scorer.segment(r, f, m)
        if scorer and r is not None and f is not None and m is not None
        else None,
        "value_tier": value_tier(m) if count else "none",
        "lifecycle_stage": lifecycle_stage(first, last, state.reactivated_at, now, config),
        # Filled by the models (streams.worker.pipeline) when they score the row.
        "segment": None,
        "churn_probability": None,
        "clv_estimate": None,
        "clv_low": None,
        "clv_high": None,
        "model_version": None,
    }
