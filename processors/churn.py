"""The churn model: an online logistic regression on transformed customer inputs.

Inputs (``processors.snapshots.Inputs``) are turned into features on log scales, with
recency measured against the customer's own purchase rhythm and age; the model is River's
``StandardScaler | LogisticRegression``, learning one delayed label at a time.

Scores use the learned weights averaged over about the last ``averaging_labels`` labels
(``processors.averaging``): plain SGD's last steps move the ranking by up to 0.003 ROC AUC
on CDNOW with the order in which partitions release labels, the averaged weights by under
0.001. Measured on the CDNOW purchases (``crm360 evaluate``)
this ranks next-39-week churn better than days since the last purchase alone.

Examples
--------
>>> model = ChurnModel(learning_rate=0.05)
>>> loyal = Inputs(2.0, 12.0, 600.0, 300.0, 25.0, 4.0, 200.0, 3.0, 5.0, 60.0, 298.0)
>>> lapsed = Inputs(200.0, 1.0, 15.0, 200.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0)
>>> for _ in range(200):  # learn returns what the model expected of the label before
...     expected_loyal = model.learn(loyal, churned=False)
...     expected_lapsed = model.learn(lapsed, churned=True)
>>> expected_lapsed > 0.9 > 0.1 > expected_loyal
True
>>> model.probability(lapsed) > 0.9 > 0.1 > model.probability(loyal)
True
>>> top = max(model.contributions(lapsed).items(), key=lambda kv: kv[1])[0]
>>> top in FEATURES
True
"""

from __future__ import annotations

import math
from typing import Any

from river import compose, linear_model, optim, preprocessing

from processors.averaging import average_into, averaging_rate, fold
from processors.snapshots import Inputs

#: Every feature of a customer :func:`churn_features` gives, in the user's words where possible.
CANDIDATE_FEATURES = (
    "log_recency",
    "log_repeat_purchases",
    "one_time_buyer",
    "recency_vs_rhythm",
    "recency_share_of_tenure",
    "log_tenure",
    "log_avg_order_value",
    "log_monetary_total",
    "log_purchases_90d",
    "log_revenue_90d",
    "log_engagement",
    "log_visits_30d",
    "lapse_evidence",
)
#: The churn model's features, chosen among the candidates by cross-validation over customers
#: of the CDNOW development half (``streams.measure.feature_choice``: 0.7741 mean ROC AUC over
#: 10 splits, against 0.7740 with all 13). ``log_visits_30d`` is kept untested (CDNOW has no visits).
FEATURES = (
    "log_repeat_purchases",
    "one_time_buyer",
    "recency_vs_rhythm",
    "log_tenure",
    "log_monetary_total",
    "log_visits_30d",
    "lapse_evidence",
)
#: Time scale of ``lapse_evidence`` (days).
LAPSE_SCALE_DAYS = 90.0
#: Scores use the learned weights averaged over about this many of the latest labels.
AVERAGING_LABELS = 10_000


def churn_features(inputs: Inputs) -> dict[str, float]:
    """Model features of one customer's inputs.

    ``lapse_evidence`` is the log of the term by which Pareto/NBD's odds that a customer has
    lapsed grow with a quiet spell: purchases × log((tenure + s) / (tenure − recency + s)).
    The same quiet spell says more about a frequent buyer than about a one-time one.

    >>> features = churn_features(Inputs(30.0, 3.0, 90.0, 120.0, 45.0, 1.0, 30.0, 0.0, 0.0, 0.0, 120.0))
    >>> features["recency_vs_rhythm"], round(features["lapse_evidence"], 4)
    (0.5021, 0.4625)
    """
    recency, count, monetary, tenure = (
        inputs.recency_days,
        inputs.purchase_count,
        inputs.monetary_total,
        inputs.tenure_days,
    )
    gap = inputs.mean_days_between_purchases
    return {
        "log_recency": math.log1p(recency),
        "log_repeat_purchases": math.log1p(max(count - 1.0, 0.0)),
        "one_time_buyer": 1.0 if count == 1 else 0.0,
        "recency_vs_rhythm": round(math.log1p(recency / (gap + 1.0)), 4) if gap >= 0 else 0.0,
        "recency_share_of_tenure": recency / (tenure + 1.0),
        "log_tenure": math.log1p(tenure),
        "log_avg_order_value": math.log1p(monetary / count) if count else 0.0,
        "log_monetary_total": math.log1p(monetary),
        "log_purchases_90d": math.log1p(inputs.purchases_90d),
        "log_revenue_90d": math.log1p(max(inputs.revenue_90d, 0.0)),
        "log_engagement": math.log1p(inputs.engagement_score),
        "log_visits_30d": math.log1p(inputs.visits_30d),
        "lapse_evidence": count
        * math.log((tenure + LAPSE_SCALE_DAYS) / (max(tenure - recency, 0.0) + LAPSE_SCALE_DAYS)),
    }


def _logistic(log_odds: float) -> float:
    return 1.0 / (1.0 + math.exp(-min(max(log_odds, -50.0), 50.0)))


class ChurnModel:
    """Probability that a customer makes no purchase within the churn horizon."""

    _folded: tuple[float, dict[str, float]] = (0.0, {})
    _folded_at = -1  # labels_learned when _folded was made (class default: also for older snapshots)

    def __init__(
        self,
        learning_rate: float = 0.01,
        averaging_labels: int = AVERAGING_LABELS,
        features: tuple[str, ...] = FEATURES,
    ) -> None:
        self.features = features
        self.pipeline = compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate)),
        )
        self.averaging_labels = averaging_labels
        self.labels_learned = 0
        #: The scoring weights and intercept: the learned ones, averaged.
        self.weights: dict[str, float] = {}
        self.intercept = 0.0

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Snapshots published before the weights were averaged start from their learned weights."""
        learned = state["pipeline"]["LogisticRegression"]
        state.setdefault("features", CANDIDATE_FEATURES)  # what snapshots before the choice learned
        state.setdefault("averaging_labels", AVERAGING_LABELS)
        state.setdefault("weights", learned.weights)
        state.setdefault("intercept", learned.intercept)
        self.__dict__.update(state)

    def probability(self, inputs: Inputs, features: dict[str, float] | None = None) -> float:
        """Churn probability of one customer (0.5 before any label was learned); ``features``:
        their :func:`churn_features`, when the caller has them already."""
        if self._folded_at != self.labels_learned:
            self._folded, self._folded_at = self._fold_scaler(), self.labels_learned
        intercept, coefficients = self._folded
        every = features or churn_features(inputs)
        return _logistic(intercept + sum(coefficient * every[name] for name, coefficient in coefficients.items()))

    def _fold_scaler(self) -> tuple[float, dict[str, float]]:
        return fold(self.intercept, self.weights, self.pipeline["StandardScaler"], self.features)

    def learn(self, inputs: Inputs, churned: bool) -> float:
        """Learn from one matured label and fold the new weights into the average; returns
        the probability the model gave the label before (what prequential quality measures:
        the same as :meth:`probability` then, without folding the scaler for every label)."""
        features = self._chosen(inputs)
        scaled = self.pipeline["StandardScaler"].transform_one(features)
        weights = self.weights
        before = _logistic(self.intercept + sum(weights.get(name, 0.0) * value for name, value in scaled.items()))
        self.pipeline.learn_one(features, churned)
        self.labels_learned += 1
        rate = averaging_rate(self.labels_learned, self.averaging_labels)
        learned: linear_model.LogisticRegression = self.pipeline["LogisticRegression"]
        average_into(self.weights, learned.weights, rate)
        self.intercept += (learned.intercept - self.intercept) * rate
        return before

    def _chosen(self, inputs: Inputs) -> dict[str, float]:
        every = churn_features(inputs)
        return {name: every[name] for name in self.features}

    def contributions(self, inputs: Inputs) -> dict[str, float]:
        """Each feature's share of the log-odds (weight times standardized value)."""
        scaler: preprocessing.StandardScaler = self.pipeline["StandardScaler"]
        scaled = scaler.transform_one(self._chosen(inputs))
        return {name: round(self.weights.get(name, 0.0) * value, 4) for name, value in scaled.items()}
