"""How well predicted customer values match what customers then spent: the columns of the CLV
table of ``crm360 evaluate``.

Examples
--------
>>> figures = value_figures([0.0, 10.0, 30.0, 60.0], [1.0, 12.0, 20.0, 70.0])
>>> figures["spearman"], figures["top_10_capture"], figures["normalized_gini"], figures["predicted_total"]
(1.0, 0.6, 1.0, 103.0)
>>> figures["mae"], figures["rmse"]
(5.75, 7.16)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import spearmanr


def capture(actual: ArrayLike, predicted: ArrayLike, share: float) -> float:
    """The share of all actual spend that the ``share`` of customers predicted highest bought
    (at least one customer)."""
    spent = np.asarray(actual, dtype=float)
    top = np.argsort(-np.asarray(predicted, dtype=float), kind="stable")[: max(1, round(len(spent) * share))]
    total = spent.sum()
    return float(spent[top].sum() / total) if total else 0.0


def _gini(actual: np.ndarray, order: np.ndarray) -> float:
    """Gini of ``actual`` taken in ``order`` (highest first): area between its cumulative share
    curve and the diagonal."""
    cumulative = np.cumsum(actual[order]) / actual.sum()
    diagonal = np.arange(1, len(actual) + 1) / len(actual)
    return float(np.sum(cumulative - diagonal) / len(actual))


def normalized_gini(actual: ArrayLike, predicted: ArrayLike) -> float:
    """The Gini of the spend ranked by prediction over that of the spend ranked by itself: 1 for
    a perfect ranking, 0 for a random one."""
    spent = np.asarray(actual, dtype=float)
    by_prediction = np.argsort(-np.asarray(predicted, dtype=float), kind="stable")
    return _gini(spent, by_prediction) / _gini(spent, np.argsort(-spent, kind="stable"))


def value_figures(actual: ArrayLike, predicted: ArrayLike) -> dict[str, float]:
    """Spearman, top-10% and top-20% capture, normalized Gini, MAE, RMSE and the predicted
    total, rounded for a table."""
    spent, guess = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    error = guess - spent
    return {
        "spearman": round(float(spearmanr(spent, guess).statistic), 3),
        "top_10_capture": round(capture(spent, guess, 0.1), 3),
        "top_20_capture": round(capture(spent, guess, 0.2), 3),
        "normalized_gini": round(normalized_gini(spent, guess), 3),
        "mae": round(float(np.abs(error).mean()), 2),
        "rmse": round(float(np.sqrt((error**2).mean())), 2),
        "predicted_total": round(float(guess.sum()), 2),
    }
