"""Customer segments by online clustering, with stable ids and readable descriptions.

River's online ``KMeans`` on standardized log features of spend, purchase frequency,
recency and engagement. Its centroids are seeded once, by k-means++ and a few Lloyd
rounds over the first ``warmup`` customers, numbered from the most valuable (segment 0)
down. From then on each centroid moves a small step toward every customer it wins and
keeps its id, so a segment id means the same group over time (no label switching, unlike
re-clustering). A segment is described by what sets its centroid apart from the other
segments' (in standard units), e.g. ``"high spend · frequent · engaged"``.

Examples
--------
>>> segmenter = Segmenter(segments=2, step=0.05, warmup=50)
>>> big = Inputs(3.0, 20.0, 4000.0, 400.0, 20.0, 5.0, 900.0, 12.0, 8.0, 90.0, 400.0)
>>> small = Inputs(120.0, 1.0, 15.0, 300.0, -1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 180.0)
>>> for _ in range(300):
...     segmenter.learn(big)
...     segmenter.learn(small)
>>> segmenter.segment(big), segmenter.segment(small)
(0, 1)
>>> segmenter.describe(segmenter.segment(big))
'high spend · frequent · engaged'
"""

from __future__ import annotations

import math

import numpy as np
from river import cluster, compose, preprocessing

from processors.snapshots import Inputs
from processors.standardize import standard_scaling

FEATURES = ("spend_per_order", "purchases_per_month", "visits_per_month")
#: Words for a centroid coordinate above / below the mean of all centroids by half a standard deviation.
WORDS = {
    "spend_per_order": ("high spend", "low spend"),
    "purchases_per_month": ("frequent", "infrequent"),
    "visits_per_month": ("engaged", "rarely visits"),
}


def segment_features(inputs: Inputs) -> dict[str, float]:
    """Log-scaled spend, frequency, recency and engagement of one customer's inputs."""
    count, gap = inputs.purchase_count, inputs.mean_days_between_purchases
    buying_days = gap * (count - 1) if count > 1 else inputs.tenure_days
    return {
        "spend_per_order": math.log1p(inputs.monetary_total / count) if count else 0.0,
        "purchases_per_month": math.log1p(30.0 * count / max(buying_days, 30.0)),
        "visits_per_month": math.log1p(30.0 * inputs.visit_count / max(inputs.active_days, 30.0)),
    }


class Segmenter:
    """Online k-means over standardized :func:`segment_features`."""

    _frozen: tuple[list[tuple[float, float]], list[tuple[int, list[float]]]] = ([], [])
    _frozen_at = -1  # customers_learned when _frozen was made (class default: also for older snapshots)

    def __init__(self, segments: int = 4, step: float = 0.02, warmup: int = 1_000, seed: int = 42) -> None:
        self.pipeline = compose.Pipeline(
            preprocessing.StandardScaler(),
            cluster.KMeans(n_clusters=segments, halflife=step, seed=seed),
        )
        self.segments, self.warmup, self.seed = segments, warmup, seed
        self.seeded = False
        self._warmup: list[dict[str, float]] = []
        self.customers_learned = 0

    def learn(self, inputs: Inputs) -> None:
        x = segment_features(inputs)
        self.customers_learned += 1
        if self.seeded:
            self.pipeline.learn_one(x)
            return
        self.pipeline["StandardScaler"].learn_one(x)
        self._warmup.append(x)
        if len(self._warmup) >= self.warmup:
            self._seed()

    def _seed(self) -> None:
        """k-means++ and Lloyd rounds on the warm-up customers; ids by value, highest first."""
        scaler: preprocessing.StandardScaler = self.pipeline["StandardScaler"]
        points = np.array([[scaler.transform_one(x)[name] for name in FEATURES] for x in self._warmup])
        rng = np.random.default_rng(self.seed)
        centers = [points[rng.integers(len(points))]]
        for _ in range(1, self.segments):
            distance = np.min([((points - c) ** 2).sum(axis=1) for c in centers], axis=0)
            centers.append(
                points[rng.choice(len(points), p=distance / distance.sum())] if distance.sum() else points[0]
            )
        grid = np.array(centers)
        for _ in range(20):
            nearest = np.argmin(((points[:, None, :] - grid[None, :, :]) ** 2).sum(axis=2), axis=1)
            grid = np.array(
                [points[nearest == k].mean(axis=0) if (nearest == k).any() else grid[k] for k in range(self.segments)]
            )
        value = grid[:, 0] + grid[:, 1]  # spend per order + purchases per month
        kmeans: cluster.KMeans = self.pipeline["KMeans"]
        # river annotates a centre as a defaultdict (its own centres make up unseen features);
        # ours hold every feature, and river only indexes them.
        kmeans.centers = {i: dict(zip(FEATURES, map(float, grid[k]))) for i, k in enumerate(np.argsort(-value))}  # type: ignore[misc]
        self.seeded, self._warmup = True, []

    def segment(self, inputs: Inputs) -> int | None:
        """The segment id of one customer (the nearest centroid in standard units), or
        ``None`` until the warm-up customers were seen."""
        if not self.seeded:
            return None
        if self._frozen_at != self.customers_learned:
            self._frozen, self._frozen_at = self._freeze(), self.customers_learned
        scales, centers = self._frozen
        x = [(value - mean) * inverse for value, (mean, inverse) in zip(segment_features(inputs).values(), scales)]
        best, nearest = math.inf, 0
        for segment, center in centers:
            distance = sum((c - v) ** 2 for c, v in zip(center, x))
            if distance < best:
                best, nearest = distance, segment
        return nearest

    def _freeze(self) -> tuple[list[tuple[float, float]], list[tuple[int, list[float]]]]:
        """The scaler's (mean, 1 / deviation) per feature and the centroids as lists, for
        :meth:`segment` (River's ``predict_one``, without its per-call overhead)."""
        kmeans: cluster.KMeans = self.pipeline["KMeans"]
        centers = [(int(i), [c.get(n, 0.0) for n in FEATURES]) for i, c in kmeans.centers.items()]
        scaling = standard_scaling(self.pipeline["StandardScaler"], FEATURES)
        return [(mean, 1.0 / deviation if deviation else 0.0) for mean, deviation in scaling], centers

    def centroids(self) -> dict[int, dict[str, float]]:
        """Each segment's centroid in standard units (0 is the population mean)."""
        kmeans: cluster.KMeans = self.pipeline["KMeans"]
        if not self.seeded:
            return {}
        return {
            int(i): {name: float(center.get(name, 0.0)) for name in FEATURES} for i, center in kmeans.centers.items()
        }

    def describe(self, segment: int) -> str:
        """A few words on what sets the segment apart from the others, from the centroids.

        Compared with the mean of the centroids rather than with the scaler's running mean, so
        two segments both above the historical mean still read differently.
        """
        centroids = self.centroids()
        middle = {name: sum(c[name] for c in centroids.values()) / len(centroids) for name in FEATURES}
        offset = {name: centroids[segment][name] - middle[name] for name in FEATURES}
        words = [WORDS[name][0 if offset[name] > 0 else 1] for name in FEATURES if abs(offset[name]) > 0.5]
        if not words:  # close to the middle everywhere: name its most distinctive side
            name = max(FEATURES, key=lambda n: abs(offset[n]))
            words = [f"average, slightly {WORDS[name][0 if offset[name] > 0 else 1]}"]
        return " · ".join(words)
