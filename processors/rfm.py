"""RFM scores (1-5) against the live population's quintiles, RFM segments and value tiers.

The scorer is refitted on the whole population a worker owns (every customer, once per
aging pass), so quintiles follow the population as it changes; between passes the last
edges are used. Recency scores are reversed: the most recent buyers get R=5.

Examples
--------
>>> scorer = RFMScorer()
>>> scorer.fit(recency=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], frequency=[1] * 6 + [2, 3, 4, 9],
...            monetary=[5, 10, 15, 20, 25, 30, 35, 40, 45, 50])
>>> scorer.score(recency_days=1.0, frequency=9, monetary=50.0)
(5, 5, 5)
>>> scorer.score(recency_days=10.0, frequency=1, monetary=5.0)
(1, 1, 1)
>>> rfm_segment(5, 5, 5), rfm_segment(1, 1, 1), rfm_segment(1, 5, 5)
('Champions', 'Lost', "Can't Lose Them")
>>> value_tier(5), value_tier(None)
('platinum', 'none')
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

import numpy as np

QUINTILES = (0.2, 0.4, 0.6, 0.8)
#: The RFM segment of a customer with no purchase yet (RFM scores need one).
PROSPECTS = "Prospects"

#: Rules ``(name, R range, FM range)``, first match wins; FM is the rounded mean of F and M.
DEFAULT_SEGMENT_RULES: tuple[tuple[str, tuple[int, int], tuple[int, int]], ...] = (
    ("Champions", (4, 5), (4, 5)),
    ("Loyal", (3, 5), (3, 5)),
    ("Potential Loyalist", (4, 5), (2, 3)),
    ("New", (4, 5), (1, 1)),
    ("Need Attention", (3, 3), (1, 2)),
    ("Can't Lose Them", (1, 1), (4, 5)),
    ("At Risk", (1, 2), (3, 5)),
    ("Hibernating", (2, 2), (1, 2)),
    ("Lost", (1, 1), (1, 2)),
)

SegmentRules = Sequence[tuple[str, tuple[int, int], tuple[int, int]]]


def segment_grid(rules: SegmentRules = DEFAULT_SEGMENT_RULES) -> dict[tuple[int, int], str]:
    """Expand rules into a complete (R, FM) -> name grid; raises if a cell is uncovered."""
    grid: dict[tuple[int, int], str] = {}
    for name, (r_lo, r_hi), (fm_lo, fm_hi) in rules:
        for r in range(r_lo, r_hi + 1):
            for fm in range(fm_lo, fm_hi + 1):
                grid.setdefault((r, fm), name)
    missing = [cell for cell in ((r, fm) for r in range(1, 6) for fm in range(1, 6)) if cell not in grid]
    if missing:
        raise ValueError(f"RFM segment rules leave (R, FM) cells without a segment: {missing}")
    return grid


_DEFAULT_GRID = segment_grid()


def rfm_segment(r: int, f: int, m: int, grid: dict[tuple[int, int], str] = _DEFAULT_GRID) -> str:
    """The named RFM segment of scores (r, f, m)."""
    return grid[(r, int((f + m) / 2 + 0.5))]


def value_tier(m: int | None) -> str:
    """Value tier from the monetary score: platinum (5), gold (4), silver (2-3), bronze (1)."""
    if m is None:
        return "none"
    return {5: "platinum", 4: "gold", 3: "silver", 2: "silver"}.get(m, "bronze")


class RFMScorer:
    """Quintile edges of recency, frequency and monetary value, and scoring against them."""

    def __init__(self, rules: SegmentRules = DEFAULT_SEGMENT_RULES) -> None:
        self.grid = segment_grid(rules)
        self.recency_edges: list[float] = []
        self.frequency_edges: list[float] = []
        self.monetary_edges: list[float] = []

    @property
    def fitted(self) -> bool:
        return bool(self.frequency_edges)

    def fit(self, recency: Sequence[float], frequency: Sequence[float], monetary: Sequence[float]) -> None:
        """Refit the quintile edges on the current population of buyers."""
        if len(frequency) == 0:
            return
        self.recency_edges = [float(x) for x in np.quantile(recency, QUINTILES)]
        self.frequency_edges = [float(x) for x in np.quantile(frequency, QUINTILES)]
        self.monetary_edges = [float(x) for x in np.quantile(monetary, QUINTILES)]

    def score(self, recency_days: float, frequency: float, monetary: float) -> tuple[int, int, int] | None:
        """Scores (R, F, M) from 1 to 5, or ``None`` before the first fit."""
        if not self.fitted:
            return None
        r = 5 - bisect_left(self.recency_edges, recency_days)
        f = 1 + bisect_right(self.frequency_edges, frequency - 1e-9)
        m = 1 + bisect_right(self.monetary_edges, monetary - 1e-9)
        return max(r, 1), f, m

    def segment(self, r: int, f: int, m: int) -> str:
        """The named RFM segment of scores (r, f, m) under this scorer's rules."""
        return rfm_segment(r, f, m, self.grid)
