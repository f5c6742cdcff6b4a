"""Customer segments by online clustering, with stable ids and readable descriptions.

River's online ``KMeans`` on standardized log features of spend, purchase frequency,
recency and engagement. Each centroid moves a small step toward every customer it wins
and keeps its index, so a segment id means the same group over time (no label switching,
unlike re-clustering). A segment is described from its centroid in standard units, e.g.
``"high spend · frequent · engaged"``.

Examples
--------
>>> segmenter = Segmenter(segments=2, step=0.05, seed=3)
>>> big = [3.0, 20.0, 4000.0, 400.0, 20.0, 5.0, 900.0, 12.0, 8.0]
>>> small = [120.0, 1.0, 15.0, 300.0, -1.0, 0.0, 0.0, 0.0, 0.0]
>>> for _ in range(300):
...     segmenter.learn(big)
...     segmenter.learn(small)
>>> segmenter.segment(big) != segmenter.segment(small)
True
>>> segmenter.describe(segmenter.segment(big))
'high spend · frequent · recent · engaged'
"""

from __future__ import annotations

import math

from river import cluster, compose, preprocessing

from processors.snapshots import INPUTS

FEATURES = ("spend_per_order", "purchases_per_month", "recency", "engagement")
#: Words for a centroid coordinate above / below the population mean by half a standard deviation.
WORDS = {
    "spend_per_order": ("high spend", "low spend"),
    "purchases_per_month": ("frequent", "infrequent"),
    "recency": ("lapsed", "recent"),
    "engagement": ("engaged", "quiet"),
}
_R, _N, _M, _T = (INPUTS.index(n) for n in ("recency_days", "purchase_count", "monetary_total", "tenure_days"))
_ENG = INPUTS.index("engagement_score")


def segment_features(inputs: list[float]) -> dict[str, float]:
    """Log-scaled spend, frequency, recency and engagement of one customer's inputs."""
    count = inputs[_N]
    return {
        "spend_per_order": math.log1p(inputs[_M] / count) if count else 0.0,
        "purchases_per_month": math.log1p(30.0 * count / max(inputs[_T], 30.0)),
        "recency": math.log1p(inputs[_R]),
        "engagement": math.log1p(inputs[_ENG]),
    }


class Segmenter:
    """Online k-means over standardized :func:`segment_features`."""

    def __init__(self, segments: int = 4, step: float = 0.02, seed: int = 42) -> None:
        self.pipeline = compose.Pipeline(
            preprocessing.StandardScaler(),
            cluster.KMeans(n_clusters=segments, halflife=step, sigma=1.0, seed=seed),
        )
        self.customers_learned = 0

    def learn(self, inputs: list[float]) -> None:
        self.pipeline.learn_one(segment_features(inputs))
        self.customers_learned += 1

    def segment(self, inputs: list[float]) -> int | None:
        """The segment id of one customer, or ``None`` before the first customer was learned."""
        if not self.customers_learned:
            return None
        return int(self.pipeline.predict_one(segment_features(inputs)))

    def centroids(self) -> dict[int, dict[str, float]]:
        """Each segment's centroid in standard units (0 is the population mean)."""
        kmeans: cluster.KMeans = self.pipeline["KMeans"]
        return {int(i): {name: float(center.get(name, 0.0)) for name in FEATURES} for i, center in kmeans.centers.items()}

    def describe(self, segment: int) -> str:
        """A few words on what sets the segment apart, from its centroid."""
        centroid = self.centroids()[segment]
        words = [
            WORDS[name][0] if centroid[name] > 0.5 else WORDS[name][1]
            for name in FEATURES
            if abs(centroid[name]) > 0.5
        ]
        return " · ".join(words) or "average"
