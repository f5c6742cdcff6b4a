"""Lifecycle stage of a customer at a point of event time.

Stages: ``prospect`` (never bought), ``new`` (first purchase recent), ``active``,
``at_risk`` (quiet for ``at_risk_days``), ``churned`` (quiet for ``churn_days``) and
``reactivated`` (bought again after a churn-length gap, and still active).

Examples
--------
>>> cfg = FeatureConfig()
>>> day = 86_400.0
>>> lifecycle_stage(None, None, None, now=0.0, config=cfg)
'prospect'
>>> lifecycle_stage(0.0, 0.0, None, now=10 * day, config=cfg)
'new'
>>> lifecycle_stage(0.0, 50 * day, None, now=120 * day, config=cfg)
'at_risk'
>>> lifecycle_stage(0.0, 50 * day, None, now=200 * day, config=cfg)
'churned'
>>> lifecycle_stage(0.0, 200 * day, 200 * day, now=210 * day, config=cfg)
'reactivated'
"""

from __future__ import annotations

from processors.config import DAY, FeatureConfig

STAGES = ("prospect", "new", "active", "at_risk", "churned", "reactivated")


def lifecycle_stage(
    first_purchase_at: float | None,
    last_purchase_at: float | None,
    reactivated_at: float | None,
    now: float,
    config: FeatureConfig,
) -> str:
    """The stage at event time ``now`` (epoch seconds)."""
    if first_purchase_at is None or last_purchase_at is None:
        return "prospect"
    quiet_days = (now - last_purchase_at) / DAY
    if quiet_days >= config.churn_days:
        return "churned"
    if quiet_days >= config.at_risk_days:
        return "at_risk"
    if reactivated_at is not None and (now - reactivated_at) / DAY < config.at_risk_days:
        return "reactivated"
    if (now - first_purchase_at) / DAY < config.new_customer_days:
        return "new"
    return "active"
