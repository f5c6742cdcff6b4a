"""Honest model quality: prequential (predict, then learn) figures over a rolling window.

Each matured label is first scored by the model as it is, then learned. The last
``window`` (probability, outcome) pairs give ROC AUC, log loss, Brier score and the
expected calibration error over ten probability bins.

Examples
--------
>>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
0.75
>>> quality = Prequential(window=4)
>>> for p, y in [(0.1, False), (0.4, False), (0.35, True), (0.8, True)]:
...     quality.record(p, y)
>>> report = quality.report()
>>> report["roc_auc"], report["labels"], report["churn_rate"]
(0.75, 4, 0.5)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata


def roc_auc(outcomes: ArrayLike, scores: ArrayLike) -> float | None:
    """Exact ROC AUC (ties count half); ``None`` when only one class is present."""
    y = np.asarray(outcomes, dtype=bool)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(np.asarray(scores, dtype=float))
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


class Prequential:
    """Rolling prequential figures of a probabilistic classifier."""

    def __init__(self, window: int = 20_000) -> None:
        self.pairs: deque[tuple[float, bool]] = deque(maxlen=window)
        self.labels_seen = 0

    def record(self, probability: float, churned: bool) -> None:
        self.pairs.append((probability, churned))
        self.labels_seen += 1

    def report(self) -> dict[str, float | int | None]:
        """ROC AUC, log loss, Brier score, calibration error and churn rate over the window."""
        if not self.pairs:
            return {
                "labels": 0,
                "roc_auc": None,
                "log_loss": None,
                "brier": None,
                "calibration_error": None,
                "churn_rate": None,
            }
        p = np.clip(np.array([pair[0] for pair in self.pairs]), 1e-6, 1 - 1e-6)
        y = np.array([pair[1] for pair in self.pairs], dtype=float)
        bins = np.minimum((p * 10).astype(int), 9)
        calibration = sum(
            abs(p[bins == b].mean() - y[bins == b].mean()) * (bins == b).sum() for b in np.unique(bins)
        ) / len(p)
        auc = roc_auc(y, p)
        return {
            "labels": len(p),
            "roc_auc": round(auc, 4) if auc is not None else None,
            "log_loss": round(float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()), 4),
            "brier": round(float(((p - y) ** 2).mean()), 4),
            "calibration_error": round(float(calibration), 4),
            "churn_rate": round(float(y.mean()), 4),
        }


def adjusted_rand_index(truth: Sequence[object], found: Sequence[object]) -> float:
    """Agreement of two partitions of the same items, corrected for chance (1 = identical).

    >>> adjusted_rand_index(["a", "a", "b", "b"], [1, 1, 0, 0])
    1.0
    """
    _, t = np.unique(np.asarray(truth, dtype=str), return_inverse=True)
    _, f = np.unique(np.asarray(found, dtype=str), return_inverse=True)
    table = np.zeros((t.max() + 1, f.max() + 1))
    np.add.at(table, (t, f), 1)
    pairs = lambda counts: float((counts * (counts - 1) / 2).sum())
    both, rows, cols, total = pairs(table), pairs(table.sum(1)), pairs(table.sum(0)), pairs(np.array([len(t)]))
    expected = rows * cols / total
    best = (rows + cols) / 2
    return 1.0 if best == expected else round((both - expected) / (best - expected), 4)
