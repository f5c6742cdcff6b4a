"""Customer lifetime value: the expected spend over a horizon, learned online from matured
snapshots, with an interval.

Every churn snapshot matures with the spend of the customer's purchases in the label horizon
after it (``processors.snapshots``). The value model learns from those, on event time:

- what a buyer spends in a label horizon: a linear regression of the log spend on every
  candidate feature of the churn model (averaged SGD, ``processors.averaging``), back to dollars by Duan's smearing
  (``exp(predicted log spend)`` times the mean of the exponentiated residuals);
- the chance to buy at all in a label horizon is the churn model's ``1 - churn_probability``;
- how spend carries on beyond one label horizon: the *spend retention* of a customer's tenure,
  the spend in the label horizons after snapshots over the spend in the 90 days before them
  (as rates per day), measured in bands of ``TENURE_BAND_DAYS`` of tenure at the snapshot, of
  about the latest ``RETENTION_HALF_LIFE_DAYS`` of event time. Over ``H`` days a customer of
  tenure ``T`` spends their label-horizon spend, then that times the retention of tenure
  ``T + h``, then that times the retention of ``T + 2h``, ... (``h`` the label horizon; a last
  part of a label horizon counts its share). Customers who stay longer keep spending more of
  it (on CDNOW 0.71, 0.84 and 0.91 at 90, 120 and 150 days of tenure), so a tenure older than
  any measured carries the retention of the oldest measured band;
- the 80% interval: the 10% and 90% quantiles of the ratio of a label's actual spend to what
  the model expected of it before learning it (prequential), over the latest
  ``INTERVAL_LABELS`` labels, times the estimate.

Until the model has learned from ``WARMUP_BUYERS`` buyers, :func:`rule_estimate` stands in.

Examples
--------
>>> from processors.config import DAY
>>> from processors.snapshots import Inputs
>>> model = ValueModel(label_horizon_days=90.0)
>>> loyal = Inputs(2.0, 12.0, 600.0, 300.0, 25.0, 4.0, 200.0, 3.0, 5.0, 60.0, 298.0)
>>> lapsed = Inputs(200.0, 1.0, 15.0, 200.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0)
>>> for day in range(2000):
...     model.learn(loyal, churn_probability=0.1, spend=150.0, at=day * DAY)
...     model.learn(lapsed, churn_probability=0.9, spend=0.0, at=day * DAY)
>>> round(model.retention_of(tenure_days=300.0), 2)   # 150 in 90 days after, 200 in the 90 days before
0.75
>>> estimate, low, high = model.estimate(loyal, churn_probability=0.1, horizon_days=90.0)
>>> 100 < estimate < 200 and low <= estimate <= high
True
>>> model.estimate(loyal, churn_probability=0.1, horizon_days=180.0)[0] > 1.5 * estimate
True
"""

from __future__ import annotations

import bisect
import math
from typing import NamedTuple

from river import compose, linear_model, optim, preprocessing, utils

from processors.averaging import average_into, averaging_rate, fold
from processors.churn import CANDIDATE_FEATURES, churn_features
from processors.config import DAY
from processors.snapshots import Inputs

#: The value model answers once it learned from this many buyers' labels.
WARMUP_BUYERS = 200
#: Quantiles of the interval.
INTERVAL = (0.1, 0.9)
#: The interval's quantiles are those of this many latest labels.
INTERVAL_LABELS = 5_000
#: The window ``revenue_90d`` sums, against which spend retention is measured.
REVENUE_WINDOW_DAYS = 90.0
#: Spend retention weighs snapshots by their event time with this half-life.
RETENTION_HALF_LIFE_DAYS = 90.0
#: Spend retention is measured in bands of this many days of tenure.
TENURE_BAND_DAYS = 30.0
#: A band's retention counts once it was measured on this many snapshots (weighed by their event time).
BAND_SNAPSHOTS = 100.0


class Retention(NamedTuple):
    """Spend per day after and before the snapshots of one tenure band, and how many snapshots
    (weighed by their event time, as of ``at``)."""

    after: float = 0.0
    before: float = 0.0
    snapshots: float = 0.0
    at: float = -math.inf

    def add(self, at: float, after: float, before: float) -> Retention:
        """With one more snapshot at event time ``at``, older snapshots weighing less.

        >>> band = Retention().add(0.0, 1.0, 2.0).add(0.0, 2.0, 2.0)
        >>> band.after / band.before, band.snapshots
        (0.75, 2.0)
        >>> band.add(RETENTION_HALF_LIFE_DAYS * DAY, 0.0, 0.0).snapshots   # a new one, the two before weigh half
        2.0
        """
        half_life = RETENTION_HALF_LIFE_DAYS * DAY
        if at >= self.at:
            fade = 0.5 ** ((at - self.at) / half_life) if self.at > -math.inf else 0.0
            return Retention(self.after * fade + after, self.before * fade + before, self.snapshots * fade + 1.0, at)
        weight = 0.5 ** ((self.at - at) / half_life)
        return Retention(self.after + after * weight, self.before + before * weight, self.snapshots + weight, self.at)


def rule_estimate(
    purchase_count: int, net_value: float, tenure_days: float | None, churn_probability: float, horizon_days: float
) -> float | None:
    """The rule of thumb that stands in before the model learned: the customer's own purchase
    rate (with at least a month of tenure) times the horizon times their average net order,
    discounted by the churn probability; none for a customer who never bought.

    >>> rule_estimate(6, 300.0, 180.0, 0.25, 365)
    456.25
    >>> rule_estimate(0, 0.0, 10.0, 0.5, 365) is None
    True
    """
    if purchase_count <= 0:
        return None
    per_day = purchase_count / max(tenure_days or 0.0, 30.0)
    return round((1.0 - churn_probability) * per_day * horizon_days * net_value / purchase_count, 2)


class ValueModel:
    """Expected spend of a customer over a horizon, and its 80% interval."""

    _folded: tuple[float, dict[str, float]] = (0.0, {})
    _folded_at = -1
    _rates: tuple[dict[int, float], list[int], dict[tuple[int, float], float]] = ({}, [], {})
    _retentions_at = -1

    def __init__(
        self, label_horizon_days: float = 90.0, learning_rate: float = 0.01, averaging_labels: int = 10_000
    ) -> None:
        self.label_horizon_days = label_horizon_days
        self.averaging_labels = averaging_labels
        self.pipeline = compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LinearRegression(optimizer=optim.SGD(learning_rate), intercept_lr=learning_rate),
        )
        self.labels_learned = 0
        self.buyers_learned = 0
        #: Averaged weights and intercept of the log spend of buyers (standardized features).
        self.weights: dict[str, float] = {}
        self.intercept = 0.0
        #: Mean of exp(residual) of buyers: exp(predicted log spend) times it is the expected
        #: spend, whatever the residuals' distribution (Duan's smearing).
        self.smearing = 1.0
        #: Spend retention by tenure band (tenure at the snapshot // ``TENURE_BAND_DAYS``).
        self.bands: dict[int, Retention] = {}
        #: Actual over expected spend of the latest labels, sorted.
        self.ratios: utils.SortedWindow[float] = utils.SortedWindow(INTERVAL_LABELS)

    def __setstate__(self, state: dict) -> None:
        """Models published before the tenure bands carry one retention: it becomes the only band."""
        if "bands" not in state:
            after, before = state.pop("spend_after", 0.0), state.pop("spend_before", 0.0)
            at = state.pop("retention_at", -math.inf)
            state["bands"] = {0: Retention(after, before, BAND_SNAPSHOTS, at)} if before > 0 else {}
        self.__dict__.update(state)

    @property
    def ready(self) -> bool:
        return self.buyers_learned >= WARMUP_BUYERS

    def _retentions(self) -> tuple[dict[int, float], list[int], dict[tuple[int, float], float]]:
        """The retention of every measured band, the measured bands in order, and the horizon
        factors worked out with them so far."""
        if self._retentions_at != self.labels_learned:
            rates = {
                band: min(r.after / r.before, 1.0)
                for band, r in self.bands.items()
                if r.snapshots >= BAND_SNAPSHOTS and r.before > 0
            }
            self._rates, self._retentions_at = (rates, sorted(rates), {}), self.labels_learned
        return self._rates

    def retention_of(self, tenure_days: float) -> float:
        """Spend in the label horizon after a tenure over spend in the one before (at most 1):
        that of the tenure's band, or of the nearest younger band measured (the youngest when
        none is younger); 1 before any band is measured."""
        rates, measured, _ = self._retentions()
        if not measured:
            return 1.0
        band = int(min(tenure_days, measured[-1] * TENURE_BAND_DAYS) // TENURE_BAND_DAYS)
        if band in rates:
            return rates[band]
        younger = bisect.bisect_right(measured, band)
        return rates[measured[max(younger - 1, 0)]]

    def horizon_factor(self, tenure_days: float, horizon_days: float) -> float:
        """Label-horizon spends in ``horizon_days`` for a customer of ``tenure_days`` (counted
        from the start of its band), spend carried from one label horizon to the next at the
        retention of the tenure it starts at."""
        band = int(max(tenure_days, 0.0) // TENURE_BAND_DAYS)
        factors = self._retentions()[2]
        if (factor := factors.get((band, horizon_days))) is None:
            factor, carried, left, start = 0.0, 1.0, horizon_days, band * TENURE_BAND_DAYS
            while left > 0:
                factor += carried * min(left / self.label_horizon_days, 1.0)
                left, start = left - self.label_horizon_days, start + self.label_horizon_days
                carried *= self.retention_of(start)
            factors[band, horizon_days] = factor
        return factor

    def _label_spend(self, features: dict[str, float], churn_probability: float) -> float:
        """Expected spend in one label horizon: the chance to buy times a buyer's expected spend."""
        if self._folded_at != self.buyers_learned:
            scaler = self.pipeline["StandardScaler"]
            self._folded, self._folded_at = (
                fold(self.intercept, self.weights, scaler, CANDIDATE_FEATURES),
                self.buyers_learned,
            )
        intercept, coefficients = self._folded
        log_spend = intercept + sum(coefficients[name] * value for name, value in features.items())
        return (1.0 - churn_probability) * math.exp(min(log_spend, 30.0)) * self.smearing

    def estimate(
        self, inputs: Inputs, churn_probability: float, horizon_days: float, features: dict[str, float] | None = None
    ) -> tuple[float, float, float] | None:
        """Expected spend over ``horizon_days`` and its 80% interval (none before the warm-up);
        ``features``: the customer's ``churn_features``, when the caller has them already."""
        if not self.ready:
            return None
        value = self._label_spend(features or churn_features(inputs), churn_probability) * self.horizon_factor(
            inputs.tenure_days, horizon_days
        )
        ratios = self.ratios
        low, high = (ratios[int(q * (len(ratios) - 1))] if ratios else 1.0 for q in INTERVAL)
        return round(value, 2), round(value * low, 2), round(value * high, 2)

    def learn(self, inputs: Inputs, churn_probability: float, spend: float, at: float) -> None:
        """Learn from one matured label: what the customer spent in the label horizon after a
        snapshot at event time ``at``, given the churn probability the churn model gave it
        before learning it."""
        self.labels_learned += 1
        features = churn_features(inputs)
        band = int(max(inputs.tenure_days, 0.0) // TENURE_BAND_DAYS)
        self.bands[band] = self.bands.get(band, Retention()).add(
            at, spend / self.label_horizon_days, max(inputs.revenue_90d, 0.0) / REVENUE_WINDOW_DAYS
        )
        if self.ready:
            expected = self._label_spend(features, churn_probability)
            ratio = spend / expected if expected > 0 else 0.0
            self.ratios.append(ratio)
        if spend <= 0:
            return
        self.buyers_learned += 1
        scaled = self.pipeline["StandardScaler"].transform_one(features)
        log_spend = math.log(spend)
        learned: linear_model.LinearRegression = self.pipeline["LinearRegression"]
        if self.buyers_learned == 1:  # start at the first buyer's spend, not at exp(0) = $1
            learned.intercept = self.intercept = log_spend
        predicted = self.intercept + sum(self.weights.get(name, 0.0) * value for name, value in scaled.items())
        buyers_rate = averaging_rate(self.buyers_learned, self.averaging_labels)
        self.smearing += (math.exp(min(log_spend - predicted, 30.0)) - self.smearing) * buyers_rate
        self.pipeline.learn_one(features, log_spend)
        average_into(self.weights, learned.weights, buyers_rate)
        self.intercept += (learned.intercept - self.intercept) * buyers_rate
