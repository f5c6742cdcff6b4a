"""Tunable parameters of the feature logic, passed down from the settings object."""

from __future__ import annotations

from dataclasses import dataclass, field

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """How features, windows and lifecycle stages are computed.

    Examples
    --------
    >>> FeatureConfig().engagement_half_life_days
    14.0
    """

    #: Events older than a customer's newest event of their type by more than this are late:
    #: applied all the same, and counted (``crm360_late_events_total``).
    allowed_lateness_days: float = 3.0
    #: Events further ahead of the wall clock (seconds) are rejected: one would drag its
    #: partition's event time with it.
    max_future_s: float = 86_400.0
    #: Half-life of the exponentially time-decayed engagement score.
    engagement_half_life_days: float = 14.0
    #: Weight of each kind of interaction in the engagement score.
    engagement_weights: dict[str, float] = field(
        default_factory=lambda: {
            "visit": 1.0,
            "purchase": 3.0,
            "like": 1.0,
            "comment": 2.0,
            "share": 3.0,
            "follow": 2.0,
            "mention": 2.0,
            "review": 3.0,
        }
    )
    #: A customer whose first purchase is this recent is ``new``.
    new_customer_days: float = 30.0
    #: No purchase for this long makes an active customer ``at_risk``.
    at_risk_days: float = 60.0
    #: No purchase for this long makes a customer ``churned`` (the churn horizon).
    churn_days: float = 90.0
    #: A purchase is credited to the customer's last visit if it came within this time.
    visit_attribution_hours: float = 24.0
    #: Most categories and channels remembered per customer.
    max_tracked_values: int = 64


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """How churn labels are made, how the models learn, and when churn alerts fire.

    Examples
    --------
    >>> ModelConfig().churn_horizon_days, ModelConfig().snapshot_every_days
    (90.0, 14.0)
    """

    #: A customer churns if they make no purchase within this horizon after a snapshot.
    churn_horizon_days: float = 90.0
    #: Snapshots of every customer are taken on a grid of event time with this step.
    snapshot_every_days: float = 14.0
    #: Customers quiet for longer than this give no more snapshots (long lost, nothing to learn).
    snapshot_max_recency_days: float = 365.0
    #: Step size of the churn model's SGD optimizer.
    learning_rate: float = 0.01
    #: Scores use the learned weights averaged over about this many of the latest labels.
    averaging_labels: int = 10_000
    #: Number of customer segments found by online clustering.
    segments: int = 4
    #: Step size of the clustering (how far a centroid moves toward each customer).
    segment_step: float = 0.02
    #: Customers seen before the segment centroids are seeded (k-means++ on them).
    segment_warmup: int = 1_000
    #: An alert fires when the churn probability reaches this ...
    alert_threshold: float = 0.7
    #: ... and re-arms only once it fell below this (hysteresis).
    alert_rearm_below: float = 0.5
    #: At most one alert per customer within this much event time.
    alert_cooldown_days: float = 30.0
    #: Only customers of these value tiers raise alerts (empty: every tier).
    alert_value_tiers: frozenset[str] = frozenset()
    #: This share of alerted customers, picked by a stable hash of their id, is a control
    #: group: their alerts are recorded (``control``) and never published.
    alert_holdout_share: float = 0.0
    #: Horizon of the customer lifetime value estimate.
    clv_horizon_days: float = 365.0


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """Which identifiers name a person, and the guards on merging profiles.

    Examples
    --------
    >>> sorted(IdentityConfig().unique_kinds)
    ['customer_id', 'email']
    """

    #: Kinds of identifiers events may carry, the most lasting first: when two profiles merge,
    #: the one named by the earlier kind survives.
    kinds: tuple[str, ...] = ("customer_id", "loyalty_card", "email", "phone", "social_handle", "anonymous_id")
    #: Kinds a person holds one value of: a link that would join two values is refused.
    unique_kinds: frozenset[str] = frozenset({"customer_id", "email"})
    #: Most identifiers one profile may hold: a link beyond is refused.
    max_identifiers: int = 100
    #: Merges and refused links remembered per profile.
    history: int = 50
