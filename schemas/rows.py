"""Output rows: the contract with analysts (one model per ClickHouse table we write)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import orjson
from pydantic import BaseModel, computed_field


class CustomerFeatures(BaseModel):
    """One customer's 360° profile, as in ``customer_features`` (latest by ``version``).

    Timestamps are UTC. Windows (``*_30d``, ``*_90d``) and ``recency_days`` are measured at
    ``as_of``, the event-time watermark of the customer's partition when the row was made.
    """

    customer_id: str
    as_of: datetime
    purchase_count: int
    monetary_total: float
    avg_order_value: float | None
    first_purchase_at: datetime | None
    last_purchase_at: datetime | None
    recency_days: float | None
    tenure_days: float | None
    purchases_30d: int
    purchases_90d: int
    revenue_30d: float
    revenue_90d: float
    mean_days_between_purchases: float | None
    refund_count: int
    refund_total: float
    top_category: str | None
    distinct_categories: int
    preferred_channel: str | None
    visit_count: int
    visits_30d: int
    last_visit_at: datetime | None
    avg_session_seconds: float | None
    visit_to_purchase_rate: float | None
    likes_30d: int
    comments_30d: int
    shares_30d: int
    engagement_score: float
    last_interaction_at: datetime | None
    region: str | None
    city: str | None
    age_band: str | None
    gender: str | None
    signup_at: datetime | None
    acquisition_channel: str | None
    rfm_r: int | None
    rfm_f: int | None
    rfm_m: int | None
    rfm_segment: str | None
    value_tier: str
    lifecycle_stage: str
    segment: int | None
    churn_probability: float | None
    clv_estimate: float | None
    #: The 80% interval of ``clv_estimate`` (none while the rule of thumb stands in).
    clv_low: float | None
    clv_high: float | None
    model_version: int | None


class ModelMetrics(BaseModel):
    """Prequential quality of the churn model over its last ``labels`` matured labels."""

    measured_at: datetime
    model_version: int
    labels_learned: int
    labels: int
    churn_rate: float | None
    roc_auc: float | None
    log_loss: float | None
    brier: float | None
    calibration_error: float | None


class SegmentInfo(BaseModel):
    """What a segment id stands for in a model version, from its centroid (standard units)."""

    segment: int
    description: str
    spend_per_order: float
    purchases_per_month: float
    visits_per_month: float
    model_version: int


class MembershipChange(BaseModel):
    """+1 when a customer enters a group, -1 when they leave it (``segment_membership``)."""

    dimension: str
    name: str
    customers: int


class IdentityMerge(BaseModel):
    """Two profiles found to be one person and merged, or a link a guard refused, as in
    ``identity_merges`` and on the ``identity-merges`` topic (JSON, keyed by the survivor):
    ``linked_at`` is the event time of the event that linked them, ``identifiers`` those the
    absorbed profile brought (none for a refusal), ``rule`` why the survivor survived or why
    the link was refused. ``merge_id`` is stable for one decision: a subscriber drops repeats
    by it (Kafka delivers at least once).

    >>> merge = IdentityMerge(decided_at=datetime(2026, 1, 2, tzinfo=UTC), linked_at=datetime(2026, 1, 1, tzinfo=UTC),
    ...     survivor="c1", absorbed="anonymous_id:d1", identifiers=["anonymous_id:d1"], outcome="merged",
    ...     rule="customer_id outlasts anonymous_id")
    >>> merge.merge_id
    'merged:c1:anonymous_id:d1'
    >>> IdentityMerge.model_validate_json(merge.model_dump_json()) == merge
    True
    """

    decided_at: datetime
    linked_at: datetime
    survivor: str
    absorbed: str
    identifiers: list[str]
    outcome: Literal["merged", "refused"]
    rule: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def merge_id(self) -> str:
        return f"{self.outcome}:{self.survivor}:{self.absorbed}"


class IdentityLink(BaseModel):
    """Which profile an identifier resolves to, as in ``identities`` (latest by ``updated_at``)."""

    identifier: str
    profile_id: str
    updated_at: datetime


class DeadLetter(BaseModel):
    """A rejected record and where it came from, as in ``dead_letters`` and on the
    ``dead-letters`` topic: ``source`` is ``kafka``, ``http`` or ``clickhouse``; ``partition``
    and ``offset`` are -1 when it came through no Kafka message.

    >>> letter = DeadLetter.received(1.5, "http", "http:/events", -1, -1, "body[0]: not an object", "[]")
    >>> letter.message()
    b'{"received_at":1.5,"source":"http","topic":"http:/events","partition":-1,"offset":-1,"reason":"body[0]: not an object","payload":"[]"}'
    """

    received_at: datetime
    source: str
    topic: str
    partition: int
    offset: int
    reason: str
    payload: str

    @classmethod
    def received(
        cls, at: float, source: str, topic: str, partition: int, offset: int, reason: str, payload: str
    ) -> DeadLetter:
        """A dead letter received at ``at`` (epoch seconds)."""
        return cls(
            received_at=datetime.fromtimestamp(at, UTC),
            source=source,
            topic=topic,
            partition=partition,
            offset=offset,
            reason=reason,
            payload=payload,
        )

    def message(self) -> bytes:
        """Its value on the ``dead-letters`` topic: JSON, ``received_at`` in epoch seconds."""
        fields = self.model_dump()
        fields["received_at"] = self.received_at.timestamp()
        return orjson.dumps(fields)


#: Feature columns that hold event times (epoch seconds in processors, DateTime64 in ClickHouse).
FEATURE_TIME_COLUMNS = frozenset(
    name for name, f in CustomerFeatures.model_fields.items() if "datetime" in str(f.annotation)
)
FEATURE_COLUMNS: tuple[str, ...] = tuple(CustomerFeatures.model_fields)
