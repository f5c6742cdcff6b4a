"""Watching the live churn model: an alarm when its prequential quality leaves a band.

The band is a floor on ROC AUC and a ceiling on the expected calibration error, judged once
the prequential window holds ``min_labels`` matured labels. The watch speaks only when the
status changes: ``degraded`` when the figures leave the band, ``recovered`` when they are back.

>>> from datetime import UTC, datetime
>>> watch = QualityWatch(QualityBand(min_roc_auc=0.6, max_calibration_error=0.1, min_labels=100))
>>> at = datetime(2026, 1, 1, tzinfo=UTC)
>>> watch.check({"labels": 50, "roc_auc": 0.5, "calibration_error": 0.3}, 1, at) is None   # too few labels
True
>>> watch.check({"labels": 500, "roc_auc": 0.55, "calibration_error": 0.05}, 2, at).reasons
['ROC AUC 0.55 below 0.6']
>>> watch.check({"labels": 500, "roc_auc": 0.56, "calibration_error": 0.05}, 3, at) is None  # still degraded
True
>>> watch.check({"labels": 500, "roc_auc": 0.7, "calibration_error": 0.05}, 4, at).status
'recovered'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from schemas.alerts import ModelQualityAlert


@dataclass(frozen=True)
class QualityBand:
    """Where the live model's prequential figures must stay."""

    min_roc_auc: float = 0.6
    max_calibration_error: float = 0.1
    min_labels: int = 1_000


class QualityWatch:
    """The model's status against ``band``; :attr:`last` is the latest change (None: none yet)."""

    def __init__(self, band: QualityBand) -> None:
        self.band = band
        self.last: ModelQualityAlert | None = None

    def problems(self, report: Mapping[str, float | int | None]) -> list[str]:
        """Why the figures of ``report`` (``processors.quality.Prequential.report``) are out of the band."""
        band, found = self.band, []
        auc, calibration = report.get("roc_auc"), report.get("calibration_error")
        if auc is not None and auc < band.min_roc_auc:
            found.append(f"ROC AUC {auc:g} below {band.min_roc_auc:g}")
        if calibration is not None and calibration > band.max_calibration_error:
            found.append(f"calibration error {calibration:g} above {band.max_calibration_error:g}")
        return found

    def check(
        self, report: Mapping[str, float | int | None], model_version: int, at: datetime
    ) -> ModelQualityAlert | None:
        """The alert of a change of status, if the figures of ``report`` make one."""
        labels = int(report.get("labels") or 0)
        if labels < self.band.min_labels:
            return None
        reasons = self.problems(report)
        degraded = self.last is not None and self.last.status == "degraded"
        if bool(reasons) == degraded:
            return None
        auc, calibration = report.get("roc_auc"), report.get("calibration_error")
        self.last = ModelQualityAlert(
            status="degraded" if reasons else "recovered",
            model_version=model_version,
            labels=labels,
            roc_auc=None if auc is None else float(auc),
            calibration_error=None if calibration is None else float(calibration),
            min_roc_auc=self.band.min_roc_auc,
            max_calibration_error=self.band.max_calibration_error,
            reasons=reasons,
            measured_at=at,
        )
        return self.last
