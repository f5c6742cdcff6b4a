"""The churn model's feature choice: snapshots replayed offline, cross-validated over customers."""

from __future__ import annotations

import pytest

from processors.churn import CANDIDATE_FEATURES, FEATURES
from streams.measure.feature_choice import Snapshots, snapshots, split_auc, varying
from tests.conftest import CDNOW

pytestmark = pytest.mark.skipif(not CDNOW.exists(), reason="the CDNOW sample is missing")


@pytest.fixture(scope="module")
def sample() -> Snapshots:
    return snapshots(CDNOW)


def test_snapshots_are_the_labels_the_trainer_learns_in_event_time_order(sample: Snapshots) -> None:
    labels = sample.labels
    assert labels and [label.at for label in labels] == sorted(label.at for label in labels)
    assert set(sample.at_end) == set(sample.churned) >= {label.customer_id for label in labels}
    assert 0.5 < sum(sample.churned.values()) / len(sample.churned) < 0.9
    bought = [label for label in labels if not label.churned]
    assert bought and all(label.spend > 0 for label in bought)
    assert all(label.spend == 0 for label in labels if label.churned)


def test_features_that_never_vary_are_not_judged(sample: Snapshots) -> None:
    assert "log_visits_30d" not in varying(sample)  # CDNOW has no visits
    assert {"log_repeat_purchases", "lapse_evidence"} <= varying(sample)


def test_held_out_customers_rank_better_with_the_chosen_features_than_recency_alone(sample: Snapshots) -> None:
    assert set(FEATURES) <= set(CANDIDATE_FEATURES)
    for fold in range(3):
        chosen, recency = (split_auc(sample, features, 1, 3, fold) for features in (FEATURES, ("log_recency",)))
        assert 0.7 < chosen and recency < chosen, fold
