"""Churn labels on event time: snapshots of a customer and their delayed labels.

Every customer is snapshotted on a grid of event time (every ``snapshot_every_days``). A
snapshot at time ``g`` holds the model inputs as they were at ``g`` (events up to ``g``
included) and is labelled once the horizon has passed: churned if no purchase came in
``(g, g + horizon]``, and the spend of the purchases that did (what the value model learns). A label is released only when the partition's
watermark passes ``g + horizon``, also when the purchase came early, so the model never
sees a label before it could be known and early "stayed" labels do not outnumber late
"churned" ones.

Snapshots at grid points before a customer's next event are captured into the state when
that event arrives (the state is written then anyway); snapshots after the customer's
newest event are derived from the unchanged state when they mature, so idle customers
cost nothing until then.

Examples
--------
>>> from schemas.events import parse_event
>>> from processors.features import CustomerState, apply
>>> features, models = FeatureConfig(), ModelConfig(churn_horizon_days=30, snapshot_every_days=10)
>>> state = CustomerState("c1")
>>> def buy(day):
...     event = parse_event({"type": "purchase", "event_id": f"o{day}", "customer_id": "c1",
...         "ts": day * DAY, "channel": "web", "order_id": f"o{day}", "amount": 10.0, "currency": "EUR"})
...     capture(state, event.epoch, released_until=float("-inf"), config=models, features=features)
...     apply(state, event, features)
...     record_purchase(state, event.epoch, event.amount, models)
>>> buy(1); buy(25)           # snapshots at days 10 and 20 are taken, then both see a purchase
>>> [(at / DAY, outcome) for at, outcome in zip(state.snapshots[::SNAPSHOT_WIDTH], state.snapshots[1::SNAPSHOT_WIDTH])]
[(10.0, 10.0), (20.0, 10.0)]
>>> labels = mature(state, 0.0, 75 * DAY, models, features)   # horizons of days 10 .. 40 passed
>>> [(label.at / DAY, label.churned, label.spend) for label in labels]
[(10.0, False, 10.0), (20.0, False, 10.0), (30.0, True, 0.0), (40.0, True, 0.0)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from processors import engagement
from processors.config import DAY, FeatureConfig, ModelConfig
from processors.features import B_PURCHASES, B_REVENUE, B_VISITS, SNAPSHOT_WIDTH, CustomerState, window_sums


class Inputs(NamedTuple):
    """The raw numbers the models see of a customer at one time, by name (the models transform
    them: see ``processors.churn`` and ``processors.segments``); a snapshot keeps them in this
    order.

    >>> inputs = Inputs(30.0, 3.0, 90.0, 120.0, 45.0, 1.0, 30.0, 0.0, 0.0, 0.0, 120.0)
    >>> inputs.recency_days, inputs._asdict()["monetary_total"]
    (30.0, 90.0)
    """

    recency_days: float
    purchase_count: float
    #: Net of refunds.
    monetary_total: float
    tenure_days: float
    #: -1 for fewer than two purchases.
    mean_days_between_purchases: float
    purchases_90d: float
    revenue_90d: float
    engagement_score: float
    visits_30d: float
    visit_count: float
    active_days: float


#: A snapshot's outcome while no purchase came in its horizon; once one did, the outcome is the
#: spend of the purchases in it (at least :data:`STAYED`).
UNKNOWN, STAYED = -1.0, 0.0


@dataclass(frozen=True, slots=True)
class LabelledSnapshot:
    """A customer's inputs at event time ``at``, whether they churned in the horizon after and
    what they spent in it."""

    customer_id: str
    at: float
    churned: bool
    inputs: Inputs
    spend: float = 0.0


def inputs_at(state: CustomerState, at: float, features: FeatureConfig) -> Inputs:
    """Model inputs of ``state`` at event time ``at``.

    Prospects (no purchase yet) count recency and tenure from their first event.
    """
    half_life = features.engagement_half_life_days * DAY
    last_30d, last_90d = window_sums(state, at)
    return _inputs(
        state,
        at,
        last_90d[B_PURCHASES],
        round(last_90d[B_REVENUE], 2),
        round(engagement.decayed(state.engagement_score, state.engagement_as_of, at, half_life), 4),
        last_30d[B_VISITS],
    )


def profile_inputs(state: CustomerState, row: dict[str, Any]) -> Inputs:
    """The model inputs of a feature row of ``state`` (see ``processors.features.profile``):
    :func:`inputs_at` its ``as_of``, reusing the row's window sums and engagement score.

    >>> from processors.features import profile
    >>> state = CustomerState("c1", first_seen_at=0.0, newest_event_at=0.0, daily={0: [1.0, 9.5, 2.0, 0, 0, 0]})
    >>> row = profile(state, watermark=5 * DAY, config=FeatureConfig())
    >>> profile_inputs(state, row) == inputs_at(state, 5 * DAY, FeatureConfig())
    True
    """
    purchases_90d, visits_30d = float(row["purchases_90d"]), float(row["visits_30d"])
    return _inputs(state, row["as_of"], purchases_90d, row["revenue_90d"], row["engagement_score"], visits_30d)


def _inputs(
    state: CustomerState,
    at: float,
    purchases_90d: float,
    revenue_90d: float,
    engagement_score: float,
    visits_30d: float,
) -> Inputs:
    first_seen = state.first_seen_at if state.first_seen_at is not None else at
    last = state.last_purchase_at if state.last_purchase_at is not None else first_seen
    first = state.first_purchase_at if state.first_purchase_at is not None else first_seen
    count = state.purchase_count
    gap = (last - first) / DAY / (count - 1) if count > 1 else -1.0
    return Inputs(
        round(max(at - last, 0.0) / DAY, 3),
        float(count),
        round(max(state.monetary_total - state.refund_total, 0.0), 2),
        round(max(at - first, 0.0) / DAY, 3),
        round(gap, 3),
        purchases_90d,
        revenue_90d,
        engagement_score,
        visits_30d,
        float(state.visit_count),
        round(max(min(state.newest_event_at or first_seen, at) - first_seen, 0.0) / DAY, 3),
    )


def _grid(after: float, until: float, every: float) -> range:
    """Indices k of grid points ``k * every`` with ``after <= k * every < until``."""
    return range(math.ceil(after / every), math.ceil(until / every))


def _eligible(state: CustomerState, at: float, config: ModelConfig) -> bool:
    last = state.last_purchase_at if state.last_purchase_at is not None else state.first_seen_at
    return last is not None and (at - last) / DAY <= config.snapshot_max_recency_days


def capture(
    state: CustomerState, ts: float, released_until: float, config: ModelConfig, features: FeatureConfig
) -> None:
    """Before applying an event at ``ts``: keep the snapshots of grid points since the
    customer's newest event (the state still is as it was then), except those whose label
    was already released, and drop released ones."""
    horizon, every = config.churn_horizon_days * DAY, config.snapshot_every_days * DAY
    snapshots = state.snapshots
    if snapshots and snapshots[0] + horizon <= released_until:  # oldest first: released ones lead
        kept = next(
            (i for i in range(0, len(snapshots), SNAPSHOT_WIDTH) if snapshots[i] + horizon > released_until),
            len(snapshots),
        )
        del snapshots[:kept]
    newest = state.newest_event_at
    if newest is None or ts <= newest:
        return
    for k in _grid(max(newest, released_until - horizon), ts, every):
        at = k * every
        if at + horizon > released_until and _eligible(state, at, config):
            snapshots.append(at)
            snapshots.append(UNKNOWN)
            snapshots.extend(inputs_at(state, at, features))


def record_purchase(state: CustomerState, ts: float, amount: float, config: ModelConfig) -> None:
    """A purchase of ``amount`` at ``ts``: every earlier snapshot within the horizon stayed,
    and spent that much more."""
    horizon, snapshots = config.churn_horizon_days * DAY, state.snapshots
    for i in range(0, len(snapshots), SNAPSHOT_WIDTH):
        if snapshots[i] < ts <= snapshots[i] + horizon:
            snapshots[i + 1] = max(snapshots[i + 1], STAYED) + amount


def mature(
    state: CustomerState, released_until: float, watermark: float, config: ModelConfig, features: FeatureConfig
) -> list[LabelledSnapshot]:
    """Labels whose horizon ends in ``(released_until, watermark]``: captured snapshots, and
    snapshots of grid points since the customer's newest event (no purchase since: churned)."""
    horizon, every = config.churn_horizon_days * DAY, config.snapshot_every_days * DAY
    snapshots = state.snapshots
    labels = [
        LabelledSnapshot(
            state.customer_id,
            snapshots[i],
            snapshots[i + 1] < STAYED,
            Inputs._make(snapshots[i + 2 : i + SNAPSHOT_WIDTH].tolist()),
            max(snapshots[i + 1], STAYED),
        )
        for i in range(0, len(snapshots), SNAPSHOT_WIDTH)
        if released_until < snapshots[i] + horizon <= watermark
    ]
    newest = state.newest_event_at
    if newest is None:
        return labels
    # Grid points at or after the newest event; the state is as it was at each of them.
    for k in _grid(max(newest, released_until - horizon + 1e-6), watermark - horizon + 1e-6, every):
        at = k * every
        if _eligible(state, at, config):
            labels.append(LabelledSnapshot(state.customer_id, at, True, inputs_at(state, at, features)))
    return labels
