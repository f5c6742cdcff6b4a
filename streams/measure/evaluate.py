"""``crm360 evaluate``: churn ranking quality on real purchases, reproducible by anyone.

On a private local stack, the CDNOW purchases up to the calibration end are replayed
through the real pipeline; once every customer is scored by the newest model version,
``churn_probability`` from ``customer_features FINAL`` is compared with what happened next
(no purchase in the holdout = churned) by ROC AUC, next to days since the last purchase; and
``clv_estimate`` (over a horizon as long as the holdout) with each customer's holdout spend,
next to BG/NBD + Gamma-Gamma fitted on the calibration period (``streams.measure.btyd``) and
to the calibration spend per week carried over the holdout (:func:`value_table`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from processors.quality import roc_auc
from schemas.events import Purchase
from streams.local.replay import read_events, replay_file
from streams.local.stack import WorkerProcess, private_stack
from streams.local.until import until
from streams.measure.btyd import expected_value, summarise
from streams.measure.value_metrics import value_figures

#: The classic CDNOW set-up: 39 weeks of calibration, then 39 weeks of holdout.
CALIBRATION_END = datetime(1997, 9, 30, tzinfo=UTC)
#: The development half of the CDNOW data, next to a checkout of crm360.
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "cdnow_dev.txt"


def wait_for_models(worker: WorkerProcess, timeout: float) -> dict[str, float]:
    """Until the trainer learned every released label and every row carries its version."""

    def settled() -> dict[str, float] | None:
        m = worker.metrics()
        version = int(m.get("crm360_model_version", 0))
        learned, released = m.get("crm360_model_labels_learned", 0), m.get("crm360_labels_released_total", 0)
        held = int(m.get("crm360_trainer_labels_held", 0))
        low, high, rows = worker.sql(
            "SELECT min(model_version), max(model_version), count() FROM customer_features FINAL"
        )[0]
        click.echo(
            f"\rmodel version {version}: {int(learned)}/{int(released)} labels learned ({held} held for the "
            f"slowest partition), "
            f"{rows} customers, row versions {low}..{high}   ",
            nl=False,
        )
        return m if version and released and learned >= released and low == high == version else None

    try:
        return until(settled, "the models settled (the line above says how far)", timeout, every=1.0)
    finally:
        click.echo("")


def value_table(
    path: Path, until: datetime, estimates: dict[str, float], intervals: dict[str, tuple[float, float]]
) -> dict[str, Any]:
    """Customer value predicted for the holdout (as long as the calibration, after ``until``)
    against each customer's actual holdout spend: ``estimates`` (the stream's ``clv_estimate``),
    BG/NBD + Gamma-Gamma, and the calibration spend per week of tenure (at least one) times
    the holdout's weeks; each also scaled to the actual total (MAE and RMSE then compare the
    shape of the predictions, not their level); and the share of customers whose spend fell in
    their ``intervals`` (the stream's 80% ``clv_low`` .. ``clv_high``)."""
    end, calibration_end = until.timestamp() + 86_400, until.date()
    purchases = [
        (e.customer_id, e.ts.date(), e.amount)
        for e in read_events(path, "cdnow")
        if isinstance(e, Purchase) and e.kind == "purchase"
    ]
    start = min(day for _, day, _ in purchases)
    horizon = float((calibration_end - start).days + 1)
    spent: dict[str, float] = {}
    calibration: dict[str, float] = {}
    first: dict[str, Any] = {}
    for customer, day, amount in purchases:
        if datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() >= end:
            spent[customer] = spent.get(customer, 0.0) + amount
        else:
            calibration[customer] = calibration.get(customer, 0.0) + amount
            first[customer] = min(first.get(customer, day), day)
    customers = sorted(calibration)
    actual = [spent.get(c, 0.0) for c in customers]
    reference = expected_value(summarise(purchases, calibration_end), horizon)
    weeks = horizon / 7
    per_week = [calibration[c] / max((calibration_end - first[c]).days / 7, 1.0) * weeks for c in customers]
    predictions = {
        "clv_estimate": [estimates.get(c, 0.0) for c in customers],
        "bg_nbd_gamma_gamma": [reference[c] for c in customers],
        "spend_per_week": per_week,
    }
    total = sum(actual)
    covered = [
        low <= spend <= high
        for c, spend in zip(customers, actual)
        if (bounds := intervals.get(c))
        for low, high in [bounds]
    ]
    return {
        "customers": len(customers),
        "holdout_revenue": round(total, 2),
        "horizon_days": horizon,
        **{name: value_figures(actual, predicted) for name, predicted in predictions.items()},
        "at_actual_total": {
            name: value_figures(actual, [p * total / (sum(predicted) or 1.0) for p in predicted])
            for name, predicted in predictions.items()
        },
        "clv_interval_coverage": round(sum(covered) / len(covered), 4) if covered else None,
    }


def run_evaluation(path: Path, until: datetime = CALIBRATION_END, timeout: float = 600.0) -> dict[str, Any]:
    """Replay ``path`` (CDNOW format) up to ``until`` and score churn against the rest."""
    end = until.timestamp() + 86_400
    holdout_buyers = {e.customer_id for e in read_events(path, "cdnow") if e.epoch >= end}
    horizon_days = str((until.date() - min(e.ts.date() for e in read_events(path, "cdnow"))).days + 1)
    with private_stack("evaluate", aging_interval_s="1", rescore_interval_s="1", clv_horizon_days=horizon_days) as (
        settings,
        worker,
    ):
        click.echo("starting a private broker and worker ...")
        worker.start()
        replay_file(settings, path, "cdnow", until, wait=True, timeout=timeout)
        metrics = wait_for_models(worker, timeout)
        rows = worker.sql(
            "SELECT customer_id, churn_probability, recency_days, clv_estimate, clv_low, clv_high "
            "FROM customer_features FINAL"
        )
        quality = worker.sql(
            "SELECT roc_auc, log_loss, calibration_error, labels FROM model_metrics ORDER BY measured_at DESC LIMIT 1"
        )
    churned = [customer not in holdout_buyers for customer, *_ in rows]
    scored = [r for r in rows if r[1] is not None]
    return {
        "customers": len(rows),
        "scored": len(scored),
        "churn_rate": round(sum(churned) / len(rows), 4) if rows else None,
        "roc_auc": round(roc_auc(churned, [r[1] if r[1] is not None else 0.5 for r in rows]) or 0.0, 4),
        "recency_baseline_roc_auc": round(roc_auc(churned, [r[2] for r in rows]) or 0.0, 4),
        "model_version": int(metrics.get("crm360_model_version", 0)),
        "labels_learned": int(metrics.get("crm360_model_labels_learned", 0)),
        "value_model": {
            name: metrics.get(f"crm360_value_model_{name}")
            for name in ("buyers_learned", "spend_retention", "smearing")
        },
        "prequential": dict(zip(("roc_auc", "log_loss", "calibration_error", "labels"), quality[0]))
        if quality
        else None,
        "value": value_table(
            path, until, {r[0]: r[3] or 0.0 for r in rows}, {r[0]: (r[4], r[5]) for r in rows if r[4] is not None}
        ),
    }
