"""The classic reference for customer value: BG/NBD for the number of future purchases times
Gamma-Gamma for the spend per purchase (Fader, Hardie & Lee 2005; Fader & Hardie 2013), fitted
by maximum likelihood on the calibration period, as ``crm360 evaluate`` sets them next to the
stream's own estimate.

A customer's history is summarised as ``lifetimes`` does: purchases are counted by day (several
orders on one day are one purchase), ``frequency`` is the number of purchase days after the
first, ``recency`` the days from the first to the last, ``age`` the days from the first to the
end of the calibration, ``monetary`` the mean spend of the purchase days after the first.

Examples
--------
>>> from datetime import date
>>> history = summarise([("a", date(2020, 1, 1), 10.0), ("a", date(2020, 1, 1), 5.0),
...                      ("a", date(2020, 1, 11), 20.0), ("b", date(2020, 1, 21), 7.0)], date(2020, 1, 31))
>>> history["a"], history["b"]
(Summary(frequency=1, recency=10.0, age=30.0, monetary=20.0), Summary(frequency=0, recency=0.0, age=10.0, monetary=0.0))
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class Summary:
    """One customer's calibration history (times in days)."""

    frequency: int
    recency: float
    age: float
    monetary: float


def summarise(purchases: Iterable[tuple[str, date, float]], calibration_end: date) -> dict[str, Summary]:
    """Each customer's :class:`Summary` of the ``purchases`` (customer, day, amount) up to and
    including ``calibration_end``."""
    by_day: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for customer, day, amount in purchases:
        if day <= calibration_end:
            by_day[customer][day] += amount
    summaries = {}
    for customer, days in by_day.items():
        ordered = sorted(days)
        first, last = ordered[0], ordered[-1]
        repeat = [days[day] for day in ordered[1:]]
        summaries[customer] = Summary(
            frequency=len(repeat),
            recency=float((last - first).days),
            age=float((calibration_end - first).days),
            monetary=float(np.mean(repeat)) if repeat else 0.0,
        )
    return summaries


@dataclass(frozen=True)
class BgNbd:
    """BG/NBD: purchases at a gamma(r, alpha)-distributed rate while alive; after each purchase
    the customer leaves with a beta(a, b)-distributed probability."""

    r: float
    alpha: float
    a: float
    b: float

    @classmethod
    def fit(cls, frequency: Floats, recency: Floats, age: Floats) -> BgNbd:
        """Maximum likelihood over the customers' histories."""
        x, t_x, big_t = (np.asarray(v, dtype=float) for v in (frequency, recency, age))

        def negative_log_likelihood(log_params: Floats) -> float:
            r, alpha, a, b = np.exp(log_params)
            first = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
            second = betaln(a, b + x) - betaln(a, b)
            third = -(r + x) * np.log(alpha + big_t)
            fourth = np.where(
                x > 0,
                np.log(a) - np.log(np.maximum(b + x - 1, 1e-12)) - (r + x) * np.log(alpha + t_x),
                -np.inf,
            )
            return float(-np.sum(first + second + np.logaddexp(third, fourth)))

        best = minimize(
            negative_log_likelihood,
            np.log([1.0, 10.0, 1.0, 1.0]),
            method="Nelder-Mead",
            options={"maxiter": 20_000, "xatol": 1e-8, "fatol": 1e-8},
        )
        return cls(*(float(v) for v in np.exp(best.x)))

    def expected_purchases(self, horizon: float, frequency: Floats, recency: Floats, age: Floats) -> Floats:
        """Expected purchases in the next ``horizon`` days, given each customer's history."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        x, t_x, big_t = (np.asarray(v, dtype=float) for v in (frequency, recency, age))
        z = horizon / (alpha + big_t + horizon)
        head = (a + b + x - 1) / (a - 1)
        body = 1 - ((alpha + big_t) / (alpha + big_t + horizon)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z)
        alive_odds = np.where(x > 0, a / (b + x - 1) * ((alpha + big_t) / (alpha + t_x)) ** (r + x), 0.0)
        return np.asarray(head * body / (1 + alive_odds), dtype=float)


@dataclass(frozen=True)
class GammaGamma:
    """Gamma-Gamma: each purchase's spend is gamma(p, nu) around a customer's own mean, nu
    itself gamma(q, v) across customers (spend independent of frequency)."""

    p: float
    q: float
    v: float

    @classmethod
    def fit(cls, frequency: Floats, monetary: Floats) -> GammaGamma:
        """Maximum likelihood over the customers with a repeat purchase."""
        x, m = (np.asarray(values, dtype=float) for values in (frequency, monetary))
        x, m = x[x > 0], m[x > 0]

        def negative_log_likelihood(log_params: Floats) -> float:
            p, q, v = np.exp(log_params)
            likelihood = (
                gammaln(p * x + q)
                - gammaln(p * x)
                - gammaln(q)
                + q * np.log(v)
                + (p * x - 1) * np.log(m)
                + p * x * np.log(x)
                - (p * x + q) * np.log(x * m + v)
            )
            return float(-np.sum(likelihood))

        best = minimize(
            negative_log_likelihood,
            np.log([1.0, 1.0, 1.0]),
            method="Nelder-Mead",
            options={"maxiter": 20_000, "xatol": 1e-8, "fatol": 1e-8},
        )
        return cls(*(float(v) for v in np.exp(best.x)))

    def expected_spend(self, frequency: Floats, monetary: Floats) -> Floats:
        """Each customer's expected spend per purchase, given their repeat purchases' mean."""
        p, q, v = self.p, self.q, self.v
        x, m = (np.asarray(values, dtype=float) for values in (frequency, monetary))
        population = p * v / (q - 1)
        weight = (q - 1) / (p * x + q - 1)
        return np.asarray(weight * population + (1 - weight) * m, dtype=float)


def expected_value(summaries: dict[str, Summary], horizon: float) -> dict[str, float]:
    """BG/NBD's expected purchases over ``horizon`` days times Gamma-Gamma's expected spend, per customer."""
    customers = list(summaries)
    x = np.array([summaries[c].frequency for c in customers], dtype=float)
    t_x = np.array([summaries[c].recency for c in customers], dtype=float)
    big_t = np.array([summaries[c].age for c in customers], dtype=float)
    m = np.array([summaries[c].monetary for c in customers], dtype=float)
    purchases = BgNbd.fit(x, t_x, big_t).expected_purchases(horizon, x, t_x, big_t)
    spend = GammaGamma.fit(x, m).expected_spend(x, m)
    return dict(zip(customers, (purchases * spend).tolist()))
