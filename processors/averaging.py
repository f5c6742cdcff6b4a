"""Averaged SGD weights of a River ``StandardScaler | linear model`` pipeline, folded into
coefficients on unscaled features for scoring.

Scores use the learned weights averaged over about the last ``averaging`` updates
(Polyak-Ruppert averaging; River 0.26's ``optim.Averager`` does not reach a model's weights):
labels reach a trainer in an order that depends on which partition released them when, and
the averaged weights move less with that order than plain SGD's last steps.

>>> averaged = {"spend": 0.0}
>>> for step in range(1, 5):
...     average_into(averaged, {"spend": float(step)}, rate=1.0 / step)
>>> averaged
{'spend': 2.5}
>>> from river import preprocessing
>>> scaler = preprocessing.StandardScaler()
>>> for x in ({"spend": 10.0}, {"spend": 30.0}):
...     scaler.learn_one(x)
>>> fold(1.0, {"spend": 2.0}, scaler, ("spend",))   # 1 + 2 * (x - 20) / 10 = -3 + 0.2 x
(-3.0, {'spend': 0.2})
"""

from __future__ import annotations

from collections.abc import Iterable

from river import preprocessing

from processors.standardize import standard_scaling


def average_into(averaged: dict[str, float], learned: dict[str, float], rate: float) -> None:
    """Move each averaged weight ``rate`` of the way to the learned one."""
    for name, weight in learned.items():
        old = averaged.get(name, 0.0)
        averaged[name] = old + (weight - old) * rate


def averaging_rate(updates: int, averaging: int) -> float:
    """The weight of the newest update: an exact mean of the first ``averaging`` updates, then
    an exponential average over about that many."""
    return max(1.0 / updates, 1.0 / averaging)


def fold(
    intercept: float, weights: dict[str, float], scaler: preprocessing.StandardScaler, names: Iterable[str]
) -> tuple[float, dict[str, float]]:
    """Intercept and coefficients on unscaled features: ``intercept + sum(weight × scaled
    feature)`` is ``folded intercept + sum(coefficient × feature)`` (one pass instead of two)."""
    coefficients = {}
    for name, (mean, deviation) in zip(names, standard_scaling(scaler, names)):
        coefficient = coefficients[name] = weights.get(name, 0.0) / deviation if deviation else 0.0
        intercept -= coefficient * mean
    return intercept, coefficients
