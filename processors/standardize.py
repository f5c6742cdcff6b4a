"""Standard units as plain numbers: River's ``StandardScaler`` read out once, so scoring with
a published model need not go through River on every call.

>>> from river import preprocessing
>>> scaler = preprocessing.StandardScaler()
>>> for x in ({"spend": 10.0, "visits": 3.0}, {"spend": 30.0, "visits": 3.0}):
...     scaler.learn_one(x)
>>> standard_scaling(scaler, ("spend", "visits", "never_seen"))
[(20.0, 10.0), (3.0, 0.0), (0.0, 0.0)]
"""

from __future__ import annotations

from collections.abc import Iterable

from river import preprocessing


def standard_scaling(scaler: preprocessing.StandardScaler, names: Iterable[str]) -> list[tuple[float, float]]:
    """(mean, standard deviation) of each named feature: ``(x - mean) / deviation`` is what
    ``scaler.transform_one`` gives, and 0 where the deviation is 0."""
    return [(scaler.means.get(name, 0.0), scaler.vars.get(name, 0.0) ** 0.5) for name in names]
