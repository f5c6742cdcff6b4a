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

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, computed_field


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
    #: The churn horizon: the alert is right if the customer makes no purchase in this many
    #: days of event time after ``as_of`` (``v_alert_outcomes``).
    horizon_days: float = 90.0
    #: In the control group (``CRM360_ALERT_HOLDOUT_SHARE``): recorded, never published.
    control: bool = False


class ModelQualityAlert(BaseModel):
    """The live churn model's prequential quality left its band (``degraded``) or came back
    (``recovered``): on the ``model-quality`` topic, keyed by ``model``, and in ``/health``.

    >>> alert = ModelQualityAlert(status="degraded", model_version=7, labels=5000, roc_auc=0.58,
    ...     calibration_error=0.04, min_roc_auc=0.6, max_calibration_error=0.1,
    ...     reasons=["ROC AUC 0.58 below 0.6"], measured_at=1700000000)
    >>> alert.alert_id
    'degraded:7:1700000000'
    >>> ModelQualityAlert.model_validate_json(alert.model_dump_json()) == alert   # its alert_id read back too
    True
    """

    status: Literal["degraded", "recovered"]
    model_version: int
    #: Matured labels the figures are measured on (the prequential window).
    labels: int
    roc_auc: float | None
    calibration_error: float | None
    min_roc_auc: float
    max_calibration_error: float
    reasons: list[str]
    measured_at: AwareDatetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def alert_id(self) -> str:
        """Stable for one change of status: a subscriber drops repeats by it."""
        return f"{self.status}:{self.model_version}:{int(self.measured_at.timestamp())}"
