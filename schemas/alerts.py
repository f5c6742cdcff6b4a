"""The churn alert: the contract with marketing tools subscribed to ``churn-alerts``.

Published as JSON (this model's ``model_dump_json``), keyed by ``customer_id``, and kept in
the ``churn_alerts`` table. ``alert_id`` is stable for one alert, so a consumer that sees
the same alert twice (Kafka delivers at least once) can drop the repeat.

Examples
--------
>>> alert = ChurnAlert(alert_id="c1:864000", customer_id="c1", churn_probability=0.81,
...     previous_probability=0.42, threshold=0.7, drivers={"log_recency": 0.9},
...     segment=2, segment_description="low spend · lapsed", value_tier="gold",
...     monetary_total=420.0, last_purchase_at=0, model_version=12, as_of=864000,
...     created_at=1700000000)
>>> ChurnAlert.model_validate_json(alert.model_dump_json()) == alert
True
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict


class ChurnAlert(BaseModel):
    """A customer whose churn probability crossed the alert threshold."""

    model_config = ConfigDict(extra="forbid")

    alert_id: str
    customer_id: str
    churn_probability: float
    previous_probability: float | None
    threshold: float
    #: Per-feature contributions to the log-odds of churn, largest first (top 5).
    drivers: dict[str, float]
    segment: int | None
    segment_description: str | None
    value_tier: str
    monetary_total: float
    last_purchase_at: AwareDatetime | None
    model_version: int
    #: Event time at which the probability was computed (the partition watermark).
    as_of: AwareDatetime
    #: Wall-clock time the alert was raised.
    created_at: AwareDatetime
