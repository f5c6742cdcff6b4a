"""The trainer learns every partition's labels in one event-time order, whatever order the
partitions release them in, also across a trainer restart (no broker, no database)."""

from __future__ import annotations

import random

from processors.config import DAY, ModelConfig
from processors.label_order import LabelOrder
from processors.models import Models, Trainer
from processors.snapshots import Inputs, LabelledSnapshot
from streams.worker.aging import BEFORE_WATERMARK_S
from tests.test_models import T0, new_pipeline, purchase
from tests.test_models import feed as feed_events

GRID = 14 * DAY
#: One release: (partition, labels, the partition's frontier after it).
Release = tuple[int, list[LabelledSnapshot], float]


def releases(partitions: int = 2, grid_points: int = 12, customers: int = 60) -> list[list[Release]]:
    """Per partition, its releases in its own order: one per grid point, each reporting it."""
    rng = random.Random(7)
    out: list[list[Release]] = []
    for home in range(partitions):
        own: list[Release] = []
        for point in range(grid_points):
            at = T0 + point * GRID
            labels = []
            for i in range(customers):
                recency, count = rng.uniform(1, 200), rng.randint(1, 12)
                inputs = Inputs(recency, count, count * 40.0, 300.0, 30.0, 1.0, 40.0, 1.0, 2.0, 10.0, 100.0)
                churned = rng.random() < recency / 250
                labels.append(
                    LabelledSnapshot(f"p{home}-{i}", at, churned, inputs, 0.0 if churned else rng.uniform(10, 300))
                )
            own.append((home, labels, at))
        out.append(own)
    return out


def interleave(per_partition: list[list[Release]], ahead: int) -> list[Release]:
    """Partition 1 runs ``ahead`` releases ahead of partition 0."""
    first, second = per_partition
    out = second[:ahead]
    for i, release in enumerate(first):
        out.append(release)
        out += second[ahead + i : ahead + i + 1]
    return out


def learnt(trainer: Trainer) -> tuple[object, ...]:
    """What the models learnt: the churn and value models' weights and the value model's level,
    retention and interval."""
    churn, value = trainer.models.churn, trainer.models.value
    return (
        churn.labels_learned,
        churn.intercept,
        churn.weights,
        value.intercept,
        value.weights,
        value.smearing,
        value.bands,
        list(value.ratios),
    )


def receive_all(trainer: Trainer, arrivals: list[Release], first_offset: int = 0) -> None:
    for offset, (home, labels, frontier) in enumerate(arrivals[first_offset:], start=first_offset):
        trainer.receive(labels, {home: frontier}, now=0.0, offset=offset)


def test_the_models_learn_the_same_whatever_order_the_partitions_release_labels_in() -> None:
    per_partition = releases()
    models = []
    for ahead in (0, 3, 6):
        trainer = Trainer(ModelConfig(), partitions=2)
        receive_all(trainer, interleave(per_partition, ahead))
        assert trainer.models.churn.labels_learned == 2 * 12 * 60
        models.append(learnt(trainer))
    assert models[0] == models[1] == models[2]
    # Learnt as they come, the same releases make different models.
    as_they_come = []
    for ahead in (0, 3):
        trainer = Trainer(ModelConfig(), partitions=2)
        for _, labels, _ in interleave(per_partition, ahead):
            trainer.learn(labels)
        as_they_come.append(learnt(trainer))
    assert as_they_come[0] != as_they_come[1]


def test_a_restarted_trainer_holds_again_what_it_held_and_learns_each_label_once() -> None:
    arrivals = interleave(releases(), ahead=4)
    straight = Trainer(ModelConfig(), partitions=2)
    receive_all(straight, arrivals)

    first = Trainer(ModelConfig(), partitions=2)
    receive_all(first, arrivals[:15])
    assert first.order.held  # partition 1 ran ahead: its labels wait
    published = Models.from_bytes(first.publish(training_offset=14))
    order = published.label_order
    assert order is not None and order.held == [] and order.reread_from is not None
    restarted = Trainer(ModelConfig(), published, partitions=2)
    for offset in range(order.reread_from, 15):  # what the hub reads again from the training topic
        restarted.order.hold_again(arrivals[offset][1], offset)
    restarted.order.reread_from = None
    assert len(restarted.order.held) == len(first.order.held)
    receive_all(restarted, arrivals, first_offset=15)
    assert learnt(restarted) == learnt(straight)
    assert restarted.models.churn.labels_learned == straight.models.churn.labels_learned


def test_a_partition_holds_labels_back_only_while_it_is_worth_waiting_for() -> None:
    label = LabelledSnapshot("c", 100 * DAY, False, Inputs(*[1.0] * 11), 20.0)
    empty = LabelOrder(partitions=2)
    assert empty.add([label], {0: 100 * DAY, 1: None}, now=0.0, offset=0) == [label]  # 1 has no customers
    stopped = LabelOrder(partitions=2, slack_days=365)
    assert stopped.add([label], {0: 100 * DAY, 1: -300 * DAY}, now=0.0, offset=0) == [label]  # 1 stopped long ago
    lagging = LabelOrder(partitions=2, slack_days=365)
    assert lagging.add([label], {0: 100 * DAY, 1: 50 * DAY}, now=0.0, offset=0) == []
    assert lagging.add([], {}, now=59.0, offset=1) == []
    assert lagging.add([], {}, now=61.0, offset=2) == [label]  # nothing released for a minute
    late = LabelledSnapshot("d", 90 * DAY, True, Inputs(*[1.0] * 11))
    assert lagging.add([late], {}, now=62.0, offset=3) == [late]  # behind what was learnt: at once
    quiet = LabelOrder(partitions=2, slack_days=365)
    quiet.add([], {0: 100 * DAY, 1: 50 * DAY}, now=0.0, offset=0)
    assert quiet.add([label], {}, now=600.0, offset=1) == []  # after a quiet spell the wait starts with it
    assert quiet.add([], {1: 100 * DAY}, now=601.0, offset=2) == [label]
    capped = LabelOrder(partitions=2, max_held=2)
    at = [LabelledSnapshot(c, day * DAY, False, Inputs(*[1.0] * 11)) for c, day in (("x", 3), ("y", 1), ("z", 1))]
    assert capped.add(at, {0: 5 * DAY}, now=0.0, offset=0) == [at[2], at[1]]  # day 1 whole, by the tie-break
    assert capped.held[0][4] == at[0] and capped.learnt_through == 1 * DAY


def test_a_worker_reports_each_partition_frontier_once_it_moved() -> None:
    config = ModelConfig(churn_horizon_days=30, snapshot_every_days=14)
    pipeline, _, _ = new_pipeline(config, partitions=2)
    customers = [c for c in (f"c{i}" for i in range(40)) if pipeline.partition_of(c.encode()) == 0][:3]

    def feed(days: list[float]) -> None:
        events = [purchase(c, n, day) for n, day in enumerate(days) for c in customers]
        feed_events(pipeline, events)

    feed([0.0, 20.0])
    # 0 is yet to release: none of its labels is older than its first event; 1 is to be restored.
    assert pipeline.take_training({0, 1}, {0, 1}).frontiers == {0: T0 - BEFORE_WATERMARK_S}
    pipeline.age({0, 1})
    assert pipeline.take_training({0, 1}, {0}).frontiers == {
        0: T0 + 20 * DAY - 30 * DAY - BEFORE_WATERMARK_S
    }  # 1 may have events
    assert pipeline.take_training({0, 1}, {0, 1}).frontiers == {1: None}  # 1 was read through: it has none
    assert pipeline.take_training({0, 1}, {0, 1}).frontiers == {}
    feed([0.0, 20.0, 60.0])
    pipeline.age({0, 1})
    batch = pipeline.take_training({0, 1}, {0, 1})
    assert batch.frontiers == {0: T0 + 60 * DAY - 30 * DAY - BEFORE_WATERMARK_S}
    assert batch.labels and max(label.at for label in batch.labels) <= T0 + 30 * DAY


def test_a_partition_that_had_no_customers_holds_the_others_labels_back_once_they_come() -> None:
    """A replay onto an empty worker: every partition was read through, without customers, so
    none held the others back. One whose customers came later than the others' (its process
    was slower) kept that word until its first release, and the trainer learnt the others'
    labels meanwhile: its own, older, came late, learnt out of order (924 of 118,333 in a
    ``crm360 evaluate``, whose figures then moved from run to run)."""
    config = ModelConfig(churn_horizon_days=30, snapshot_every_days=14)
    pipeline, _, _ = new_pipeline(config, partitions=2)
    trainer = Trainer(config, partitions=2)
    pipeline.age({0, 1})
    batch = pipeline.take_training({0, 1}, {0, 1})
    assert batch.frontiers == {0: None, 1: None}
    trainer.receive(batch.labels, batch.frontiers, now=0.0, offset=0)
    by_partition = {
        p: [c for c in (f"c{i}" for i in range(40)) if pipeline.partition_of(c.encode()) == p] for p in (0, 1)
    }
    first, later = by_partition[0][0], by_partition[1][0]
    feed_events(pipeline, [purchase(first, 0, 0.0), purchase(later, 0, 5.0), purchase(first, 1, 100.0)])
    batch = pipeline.take_training({1}, {1})  # partition 1's process, yet to age it
    assert batch.frontiers == {1: T0 + 5 * DAY - BEFORE_WATERMARK_S}
    trainer.receive(batch.labels, batch.frontiers, now=1.0, offset=1)
    pipeline.age({0})  # partition 0's process releases days 0 .. 56 (70 ends at its watermark)
    batch = pipeline.take_training({0}, {0})
    trainer.receive(batch.labels, batch.frontiers, now=2.0, offset=2)
    assert trainer.order.learnt_through < T0 + 5 * DAY  # day 0 learnt; days 14 .. 56 wait for partition 1
    assert sorted(entry[0] for entry in trainer.order.held) == [T0 + day * DAY for day in (14, 28, 42, 56)]
