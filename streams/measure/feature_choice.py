"""Which features the churn model uses, decided by cross-validation over customers.

The development half of CDNOW is snapshotted and labelled offline by the pipeline's own
functions (``processors.snapshots``: the labels the stream's trainer learns, in event-time
order). Customers are split into ``folds`` groups by a hash of their id, ``repeats`` times
with another seed: for each split the churn model learns online from the other customers'
labels and ranks the held-out customers' churn in the holdout that follows the calibration end
(ROC AUC). Backward elimination then drops, one at a time, the feature whose removal costs
least, as long as its mean paired loss over the splits is within one standard error (the
smaller model is preferred when the data cannot tell them apart). Features that never vary
in the data are kept: it holds no evidence on them (CDNOW has no visits).

``python -m streams.measure.feature_choice [PATH]`` prints each step.
"""

from __future__ import annotations

import math
import sys
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from processors.churn import CANDIDATE_FEATURES, ChurnModel, churn_features
from processors.config import DAY, FeatureConfig, ModelConfig
from processors.features import CustomerState, apply
from processors.quality import roc_auc
from processors.snapshots import Inputs, LabelledSnapshot, capture, inputs_at, mature, record_purchase
from schemas.events import Purchase
from streams.local.replay import read_events
from streams.measure.evaluate import CALIBRATION_END, DEFAULT_DATA


@dataclass(frozen=True)
class Snapshots:
    """The labels the trainer would learn up to the calibration end, each customer's inputs at
    its end, and who then made no purchase in the holdout."""

    labels: list[LabelledSnapshot]
    at_end: dict[str, Inputs]
    churned: dict[str, bool]


def snapshots(path: Path, until: datetime = CALIBRATION_END) -> Snapshots:
    """Replay ``path`` (CDNOW format) through the pipeline's feature and snapshot functions."""
    end = until.timestamp() + DAY
    features, models = FeatureConfig(), ModelConfig()
    events = sorted(read_events(path, "cdnow"), key=lambda e: e.epoch)
    by_customer = defaultdict(list)
    for event in events:
        by_customer[event.customer_id].append(event)
    labels, at_end, churned = [], {}, {}
    for customer, history in by_customer.items():
        state = CustomerState(customer)
        for event in history:
            if event.epoch >= end:
                break
            capture(state, event.epoch, -math.inf, models, features)
            apply(state, event, features)
            if isinstance(event, Purchase) and event.kind == "purchase":
                record_purchase(state, event.epoch, event.amount, models)
        if state.newest_event_at is None:
            continue
        labels += mature(state, -math.inf, end - 1, models, features)
        at_end[customer] = inputs_at(state, end - 1, features)
        churned[customer] = not any(e.epoch >= end for e in history)
    labels.sort(key=lambda label: label.at)
    return Snapshots(labels, at_end, churned)


def _held_out(seed: int, folds: int, fold: int) -> Callable[[str], bool]:
    return lambda customer: zlib.crc32(f"{seed}:{customer}".encode()) % folds == fold


def split_auc(data: Snapshots, features: Sequence[str], seed: int, folds: int, fold: int) -> float:
    """ROC AUC on one split's held-out customers of a churn model using ``features``."""
    held_out = _held_out(seed, folds, fold)
    model = ChurnModel(features=tuple(features))
    for label in data.labels:
        if not held_out(label.customer_id):
            model.learn(label.inputs, label.churned)
    customers = [c for c in data.at_end if held_out(c)]
    auc = roc_auc([data.churned[c] for c in customers], [model.probability(data.at_end[c]) for c in customers])
    return auc or 0.5


_DATA: Snapshots | None = None  # each worker process's copy (set by _start)


def _start(data: Snapshots) -> None:
    global _DATA
    _DATA = data


def _split(job: tuple[tuple[str, ...], int, int, int]) -> float:
    assert _DATA is not None
    return split_auc(_DATA, *job)


def cross_validate(
    pool: ProcessPoolExecutor, candidates: list[tuple[str, ...]], folds: int, repeats: int
) -> list[list[float]]:
    """Each candidate feature set's AUC on every split (the same splits for all)."""
    splits = [(seed, fold) for seed in range(1, repeats + 1) for fold in range(folds)]
    results = list(
        pool.map(_split, [(features, seed, folds, fold) for features in candidates for seed, fold in splits])
    )
    return [results[i : i + len(splits)] for i in range(0, len(results), len(splits))]


def varying(data: Snapshots) -> set[str]:
    """Features that take more than one value over the labels."""
    seen: dict[str, set[float]] = defaultdict(set)
    for label in data.labels[:: max(1, len(data.labels) // 20_000)]:
        for name, value in churn_features(label.inputs).items():
            seen[name].add(value)
    return {name for name, values in seen.items() if len(values) > 1}


def choose(data: Snapshots, folds: int = 5, repeats: int = 2, report: Callable[[str], None] = print) -> tuple[str, ...]:
    """Backward elimination by paired cross-validation with the one-standard-error rule."""
    chosen = tuple(CANDIDATE_FEATURES)
    droppable = varying(data)
    with ProcessPoolExecutor(2, initializer=_start, initargs=(data,)) as pool:
        (current,) = cross_validate(pool, [chosen], folds, repeats)
        report(f"{len(chosen)} features: mean ROC AUC {sum(current) / len(current):.4f}")
        while True:
            names = [name for name in chosen if name in droppable]
            if not names:
                return chosen
            trials = cross_validate(pool, [tuple(n for n in chosen if n != name) for name in names], folds, repeats)
            costs = []
            for name, aucs in zip(names, trials):
                losses = [a - b for a, b in zip(current, aucs)]
                mean = sum(losses) / len(losses)
                error = (sum((x - mean) ** 2 for x in losses) / (len(losses) - 1) / len(losses)) ** 0.5
                costs.append((mean, error, name, aucs))
            mean, error, name, aucs = min(costs)
            report("  ".join(f"-{n}: {m:+.4f}±{e:.4f}" for m, e, n, _ in sorted(costs)))
            if mean > error:
                report(f"kept {len(chosen)}: dropping {name} costs {mean:.4f} > one standard error {error:.4f}")
                return chosen
            chosen, current = tuple(n for n in chosen if n != name), aucs
            report(f"dropped {name}: {len(chosen)} features, mean ROC AUC {sum(aucs) / len(aucs):.4f}")


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DATA
    print("chosen:", ", ".join(choose(snapshots(source))), flush=True)
