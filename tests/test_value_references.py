"""The references ``crm360 evaluate`` sets next to the stream's customer value: BG/NBD and
Gamma-Gamma recover the parameters of populations simulated from them, predict their future
purchases and spend, and on the CDNOW development half give the published table's figures."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from streams.local.replay import read_events
from streams.measure.btyd import BgNbd, GammaGamma
from streams.measure.evaluate import value_table
from tests.conftest import CDNOW_DEVELOPMENT

AGE = 273.0  # days observed per customer


def simulate_bg_nbd(
    rng: np.random.Generator, customers: int, r: float, alpha: float, a: float, b: float, days: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each customer's purchases after their first, until ``days`` and beyond, as BG/NBD draws them:
    (frequency, recency, purchases in the ``days`` after)."""
    rates = rng.gamma(r, 1 / alpha, customers)
    leave = rng.beta(a, b, customers)
    frequency, recency, later = np.zeros(customers), np.zeros(customers), np.zeros(customers)
    for n in range(customers):
        t = 0.0  # the first purchase
        while True:
            t += rng.exponential(1 / rates[n])
            if t > 2 * days:
                break
            if t <= days:
                frequency[n] += 1
                recency[n] = t
            else:
                later[n] += 1
            if rng.random() < leave[n]:  # gone after this repeat purchase
                break
    return frequency, recency, later


def test_bg_nbd_recovers_a_simulated_population_and_predicts_its_next_purchases() -> None:
    rng = np.random.default_rng(7)
    truth = {"r": 0.5, "alpha": 20.0, "a": 0.8, "b": 2.5}
    frequency, recency, later = simulate_bg_nbd(rng, 20_000, 0.5, 20.0, 0.8, 2.5, AGE)
    age = np.full_like(frequency, AGE)
    model = BgNbd.fit(frequency, recency, age)
    for name, value in truth.items():
        assert getattr(model, name) == pytest.approx(value, rel=0.2), name
    predicted = model.expected_purchases(AGE, frequency, recency, age)
    assert predicted.sum() == pytest.approx(later.sum(), rel=0.05)
    # and per group of history: those who bought often lately are expected to buy more
    busy = frequency >= 5
    assert predicted[busy].mean() == pytest.approx(later[busy].mean(), rel=0.15)


def test_gamma_gamma_recovers_a_simulated_population_and_its_customers_spend() -> None:
    rng = np.random.default_rng(11)
    p, q, v, customers = 6.0, 4.0, 15.0, 20_000
    scale = rng.gamma(q, 1 / v, customers)  # each customer's rate nu
    frequency = rng.integers(1, 8, customers).astype(float)
    spends = [rng.gamma(p, 1 / nu, int(x)) for nu, x in zip(scale, frequency)]
    monetary = np.array([s.mean() for s in spends])
    model = GammaGamma.fit(frequency, monetary)
    assert (model.p, model.q, model.v) == (
        pytest.approx(p, rel=0.2),
        pytest.approx(q, rel=0.2),
        pytest.approx(v, rel=0.2),
    )
    expected = model.expected_spend(frequency, monetary)
    true_mean = p / scale  # each customer's own mean spend
    assert np.abs(expected - true_mean).mean() < np.abs(monetary - true_mean).mean()  # shrinkage helps


@pytest.mark.skipif(not CDNOW_DEVELOPMENT.exists(), reason="the CDNOW development half is not next to this checkout")
@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # no stream estimates: a constant 0
def test_on_the_cdnow_development_half_the_references_give_the_published_figures() -> None:
    nothing = dict.fromkeys((e.customer_id for e in read_events(CDNOW_DEVELOPMENT, "cdnow")), (0.0, 0.0))
    table = value_table(CDNOW_DEVELOPMENT, datetime(1997, 9, 30, tzinfo=UTC), {}, nothing)
    assert (table["customers"], table["holdout_revenue"], table["horizon_days"]) == (11_785, 395_291.63, 273.0)
    assert table["bg_nbd_gamma_gamma"] == {
        "spearman": 0.424,
        "top_10_capture": 0.506,
        "top_20_capture": 0.686,
        "normalized_gini": 0.671,
        "mae": 33.29,
        "rmse": 98.51,
        "predicted_total": pytest.approx(326_482, abs=1),
    }
    scaled = table["at_actual_total"]["bg_nbd_gamma_gamma"]  # its shape, at the actual level
    assert (scaled["mae"], scaled["rmse"], scaled["predicted_total"]) == (35.37, 99.4, 395_291.63)
    assert table["clv_interval_coverage"] == 0.699  # "spends nothing" holds for those who spent nothing
    per_week = table["spend_per_week"]
    assert (per_week["spearman"], per_week["mae"], per_week["rmse"]) == (0.401, 73.12, 170.81)
    assert per_week["predicted_total"] == pytest.approx(1_052_239, abs=1)
