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

    #: Events older than a customer's newest event by more than this are not applied.
    allowed_lateness_days: float = 3.0
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
