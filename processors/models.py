"""The published models: the churn model, the value model and the segmenter, versioned,
trained in one place.

A single :class:`Trainer` learns from every partition's matured labels (and a sample of
live customers for the segments), measures itself prequentially, and publishes
:class:`Models` snapshots; every worker scores with the latest snapshot it received.
A snapshot records the training-stream offset it has learned through, and the partitions'
frontiers and the offset from which its messages hold labels not learnt yet
(:mod:`processors.label_order`), so a trainer that restarts from it neither skips nor repeats a
label.

Examples
--------
>>> from processors.snapshots import Inputs, LabelledSnapshot
>>> trainer = Trainer(ModelConfig(segment_warmup=2))
>>> lapsed = Inputs(200.0, 1.0, 15.0, 200.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0)
>>> loyal = Inputs(2.0, 9.0, 500.0, 300.0, 30.0, 3.0, 150.0, 2.0, 4.0, 40.0, 298.0)
>>> trainer.observe([lapsed, loyal])
>>> trainer.learn([LabelledSnapshot("c1", 0.0, True, lapsed), LabelledSnapshot("c2", 0.0, False, loyal)])
>>> models = Models.from_bytes(trainer.publish(training_offset=7))
>>> models.version, models.training_offset, models.churn.labels_learned
(1, 7, 2)
>>> score = models.score(lapsed)
>>> 0.0 < score.churn_probability < 1.0 and score.segment in models.descriptions
True
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from processors.churn import ChurnModel
from processors.clv import ValueModel
from processors.config import ModelConfig
from processors.label_order import MAX_WAIT_S, LabelOrder, learning_order
from processors.quality import Prequential
from processors.segments import Segmenter
from processors.snapshots import Inputs, LabelledSnapshot

#: Labels learnt in one step of :meth:`Trainer.receiving` (about 50 µs each: some 25 ms a step).
LEARNT_AT_ONCE = 500


def finite(inputs: Sequence[float]) -> bool:
    """Whether every input is a finite number. Bounded amounts keep them so (``schemas.events``);
    the trainer checks anyway, as one infinite input crashed it (NaN centroids) and would
    poison every later version of the model.

    >>> finite([1.0, 0.0]), finite([1.0, float("inf")]), finite([float("nan")])
    (True, False, False)
    """
    return all(map(math.isfinite, inputs))


@dataclass(frozen=True, slots=True)
class Score:
    churn_probability: float
    segment: int | None


@dataclass
class Models:
    """What every worker scores with. Version 0 is the untrained start (probability 0.5)."""

    churn: ChurnModel
    segmenter: Segmenter
    version: int = 0
    training_offset: int = -1
    descriptions: dict[int, str] = field(default_factory=dict)
    value: ValueModel = field(default_factory=ValueModel)
    #: The trainer's labels held until every partition released up to them.
    label_order: LabelOrder | None = None

    def __setstate__(self, state: dict) -> None:
        """Snapshots published before the value model start one (labelled 90 days ahead);
        those before the label order hold none."""
        state.setdefault("value", ValueModel())
        state.setdefault("label_order", None)
        self.__dict__.update(state)

    @classmethod
    def initial(cls, config: ModelConfig) -> Models:
        return cls(
            ChurnModel(config.learning_rate, config.averaging_labels),
            Segmenter(config.segments, config.segment_step, config.segment_warmup),
            value=ValueModel(config.churn_horizon_days, config.learning_rate, config.averaging_labels),
        )

    def score(self, inputs: Inputs, features: dict[str, float] | None = None) -> Score:
        return Score(round(self.churn.probability(inputs, features), 4), self.segmenter.segment(inputs))

    def to_bytes(self) -> bytes:
        """Serialized for the compacted model topic (internal: pickle, trusted producers only)."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def from_bytes(raw: bytes) -> Models:
        models = pickle.loads(raw)  # written only by crm360's own trainer
        if not isinstance(models, Models):
            raise TypeError(f"not a crm360 model snapshot: {type(models).__name__}")
        return models


class Trainer:
    """Learns the shared models from labelled snapshots and customer observations."""

    def __init__(
        self,
        config: ModelConfig,
        start: Models | None = None,
        window: int = 20_000,
        partitions: int = 1,
        max_hold_s: float = MAX_WAIT_S,
    ) -> None:
        self.models = start or Models.initial(config)
        self.order = self.models.label_order = self.models.label_order or LabelOrder(partitions)
        self.order.partitions, self.order.max_wait_s = partitions, max_hold_s
        self.quality = Prequential(window)

    def observe(self, inputs: list[Inputs]) -> None:
        """Let the segmenter learn from live customers' inputs (finite ones: see :func:`finite`)."""
        for one in filter(finite, inputs):
            self.models.segmenter.learn(one)

    def receive(
        self, labels: list[LabelledSnapshot], frontiers: dict[int, float | None], now: float, offset: int
    ) -> int:
        """Hold ``labels`` of the training message at ``offset``, released with their
        partitions' ``frontiers``, until every partition released up to them
        (:class:`~processors.label_order.LabelOrder`), and learn those due at wall time ``now``;
        returns how many were learnt."""
        return sum(self.receiving(labels, frontiers, now, offset))

    def receiving(
        self,
        labels: list[LabelledSnapshot],
        frontiers: dict[int, float | None],
        now: float,
        offset: int,
        step: int = LEARNT_AT_ONCE,
    ) -> Iterator[int]:
        """As :meth:`receive`, learning ``step`` labels at a time in the same order: yields how
        many each step learnt (an event loop does its other work in between)."""
        due = sorted(self.order.add(labels, frontiers, now, offset), key=learning_order)
        for start in range(0, len(due), step):
            part = due[start : start + step]
            self.learn(part)
            yield len(part)

    def learn(self, labels: list[LabelledSnapshot]) -> None:
        """Score each label with the current churn model (prequential), then learn it (the
        value model learns its spend, given that score), in the
        event-time order of the snapshots (partitions release labels in bulk; ties in the
        :func:`~processors.label_order.learning_order`); labels whose
        inputs are not all finite are skipped (see :func:`finite`)."""
        churn, value = self.models.churn, self.models.value
        for label in sorted(labels, key=learning_order):
            if finite(label.inputs) and math.isfinite(label.spend):
                expected = churn.learn(label.inputs, label.churned)
                self.quality.record(expected, label.churned)
                value.learn(label.inputs, expected, label.spend, label.at)

    def publish(self, training_offset: int) -> bytes:
        """A new version of the models, having learned through ``training_offset``."""
        models = self.models
        models.version += 1
        models.training_offset = training_offset
        if models.segmenter.seeded:
            models.descriptions = {i: models.segmenter.describe(i) for i in models.segmenter.centroids()}
        return models.to_bytes()
