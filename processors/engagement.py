"""Exponentially time-decayed engagement score.

The score is a sum of interaction weights, each halved every ``half_life`` seconds of
event time. It is kept as ``(score, as_of)`` and decayed lazily.

Examples
--------
>>> score, as_of = add(0.0, 0.0, weight=2.0, ts=0.0, half_life=10.0)
>>> decayed(score, as_of, now=10.0, half_life=10.0)
1.0
>>> add(score, as_of, weight=2.0, ts=-10.0, half_life=10.0)  # a late event counts decayed
(3.0, 0.0)
"""

from __future__ import annotations


def decayed(score: float, as_of: float, now: float, half_life: float) -> float:
    """The score at event time ``now`` (never grows when ``now`` is before ``as_of``)."""
    if now <= as_of or score == 0.0:
        return score
    return score * 0.5 ** ((now - as_of) / half_life)


def add(score: float, as_of: float, weight: float, ts: float, half_life: float) -> tuple[float, float]:
    """Add one interaction of ``weight`` at event time ``ts``; returns the new (score, as_of)."""
    if ts >= as_of:
        return decayed(score, as_of, ts, half_life) + weight, ts
    return score + weight * 0.5 ** ((as_of - ts) / half_life), as_of
