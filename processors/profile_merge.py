"""Two customers found to be one person: folding one's state into the other's.

When identity resolution links two profiles, the absorbed one's state is folded into the
survivor's, so that its features are those of one state that applied the events of both, in
any order (:func:`processors.features.apply` counts an event of any lateness exactly):

- counts, totals and daily buckets add, first times take the earlier, last times the later,
  and the de-duplication digests unite, so an event of either is never counted again;
- the engagement scores add, each decayed from its own time;
- the latest return after a churn-length gap (the ``reactivated`` stage) is found among the
  purchases of both: those the absorbed state remembers (its first, its last and the ends of
  its latest gap) are counted into the survivor's as late purchases, and between them, where
  the absorbed state had no churn-length gap, purchases a half churn length apart stand for
  the ones it does not remember (any gap of the merged history that shows in a stage ends at
  a remembered purchase);
- profile fields: those of the newer profile update win, field by field; a field only the
  older one set is kept; consent, purpose by purpose, is the later statement of either;
- churn snapshots: one per grid point (the survivor's where both have one), marked as stayed
  if either person's remembered purchases fall in its horizon, so no label counts twice;
- the models' last outputs are the survivor's until the profile is scored again; alerting
  keeps the survivor's arming and the later of the two last alerts; audience memberships are
  the survivor's (the absorbed profile leaves its audiences, ``processors.audiences``).

Two things stay approximate, as they are for events that arrive out of order: a visit's
conversion is judged against the last visit only (the survivor's later last visit is converted
if the absorbed profile's last purchase followed it within the attribution window), and
categories and channels beyond ``max_tracked_values`` are the survivor's first.

Examples
--------
>>> from schemas.events import parse_event
>>> from processors.features import CustomerState, apply, profile
>>> features, models = FeatureConfig(), ModelConfig()
>>> def buy(customer, n, day, amount):
...     return parse_event({"type": "purchase", "event_id": f"o{n}", "customer_id": customer, "ts": day * DAY,
...                         "channel": "pos", "order_id": f"o{n}", "amount": amount, "currency": "EUR"})
>>> account, card = CustomerState("c1"), CustomerState("loyalty_card:L7")
>>> apply(account, buy("c1", 1, 10, 30.0), features), apply(card, buy("loyalty_card:L7", 2, 4, 12.5), features)
('applied', 'applied')
>>> merge_profiles(account, card, features, models)
0
>>> row = profile(account, watermark=20 * DAY, config=features)
>>> row["customer_id"], row["purchase_count"], row["monetary_total"], row["first_purchase_at"] / DAY
('c1', 2, 42.5, 4.0)
>>> apply(account, buy("loyalty_card:L7", 2, 4, 12.5), features)   # the card's purchase again: counted once
'duplicate'
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from itertools import pairwise

from processors import engagement
from processors.config import DAY, FeatureConfig, ModelConfig
from processors.features import (
    SNAPSHOT_WIDTH,
    CustomerState,
    count_value,
    oldest_kept_day,
    record_consents,
    track_reactivation,
)
from processors.snapshots import STAYED, record_purchase


def merge_profiles(
    survivor: CustomerState, absorbed: CustomerState, features: FeatureConfig, models: ModelConfig
) -> int:
    """Fold ``absorbed`` into ``survivor`` (changed in place; ``absorbed`` is left as it was).

    Returns how many events both had applied: each of them is counted twice in the sums (the
    stream applies an event to one profile only, so this stays 0).
    """
    overlap = _unite_applied(survivor, absorbed)
    survivor.events_applied += absorbed.events_applied
    for kind, newest in absorbed.newest_by_type.items():
        survivor.newest_by_type[kind] = max(newest, survivor.newest_by_type.get(kind, newest))
    survivor.first_seen_at = _earlier(survivor.first_seen_at, absorbed.first_seen_at)
    survivor.newest_event_at = _later(survivor.newest_event_at, absorbed.newest_event_at)
    _merge_snapshots(survivor, absorbed, models)  # before the purchases: each side's own are needed
    _merge_visits(survivor, absorbed, features)
    _merge_purchases(survivor, absorbed, features)
    _merge_daily(survivor, absorbed, features)
    for name, amount in sorted(absorbed.channel_counts.items()):
        count_value(survivor.channel_counts, name, amount, features.max_tracked_values)
    for name, quantity in sorted(absorbed.category_quantities.items()):
        count_value(survivor.category_quantities, name, quantity, features.max_tracked_values)
    if absorbed.engagement_score:
        survivor.engagement_score, survivor.engagement_as_of = engagement.add(
            survivor.engagement_score,
            survivor.engagement_as_of,
            absorbed.engagement_score,
            absorbed.engagement_as_of,
            features.engagement_half_life_days * DAY,
        )
    survivor.last_interaction_at = _later(survivor.last_interaction_at, absorbed.last_interaction_at)
    _merge_profile_fields(survivor, absorbed)
    survivor.last_alert_at = _later(survivor.last_alert_at, absorbed.last_alert_at)
    record_consents(survivor.consents, absorbed.consents)
    return overlap


def _earlier(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _later(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _unite_applied(survivor: CustomerState, absorbed: CustomerState) -> int:
    """Unite the sorted digests of applied events (the survivor's content where both have an
    id); returns how many ids both had."""
    ids, contents = array("Q"), array("I")
    mine, theirs = survivor.applied_ids, absorbed.applied_ids
    i = j = overlap = 0
    while i < len(mine) or j < len(theirs):
        if j == len(theirs) or (i < len(mine) and mine[i] <= theirs[j]):
            if j < len(theirs) and mine[i] == theirs[j]:
                overlap += 1
                j += 1
            ids.append(mine[i])
            contents.append(survivor.applied_contents[i])
            i += 1
        else:
            ids.append(theirs[j])
            contents.append(absorbed.applied_contents[j])
            j += 1
    survivor.applied_ids, survivor.applied_contents = ids, contents
    if absorbed.ids_known_from is not None:  # states of an earlier version: remembered from the later time
        known = dict(survivor.ids_known_from or {})
        for kind, since in absorbed.ids_known_from.items():
            known[kind] = max(since, known.get(kind, since))
        survivor.ids_known_from = known
    return overlap


def remembered_purchases(state: CustomerState) -> list[float]:
    """Purchase times the state remembers: its first and last, and the ends of its latest gap.

    >>> state = CustomerState("c1", first_purchase_at=0.0, last_purchase_at=9.0, reactivated_after=2.0,
    ...                       reactivated_at=7.0)
    >>> remembered_purchases(state)
    [0.0, 2.0, 7.0, 9.0]
    """
    times = (state.first_purchase_at, state.reactivated_after, state.reactivated_at, state.last_purchase_at)
    return sorted({t for t in times if t is not None})


def _standing_purchases(state: CustomerState, churn: float) -> Iterator[float]:
    """The remembered purchases, and between them, except across the latest churn-length gap,
    points a half churn length apart that stand for the purchases the state does not remember
    (their gaps are shorter than a churn length, or too old to show in a stage)."""
    remembered = remembered_purchases(state)
    gap = (state.reactivated_after, state.reactivated_at)
    for start, end in pairwise(remembered):
        yield start
        if (start, end) != gap:
            filler = start + churn / 2
            while filler < end:
                yield filler
                filler += churn / 2
    if remembered:
        yield remembered[-1]


def _merge_purchases(survivor: CustomerState, absorbed: CustomerState, features: FeatureConfig) -> None:
    churn = features.churn_days * DAY
    for ts in _standing_purchases(absorbed, churn):
        track_reactivation(survivor, ts, churn)
        survivor.first_purchase_at = _earlier(survivor.first_purchase_at, ts)
        survivor.last_purchase_at = _later(survivor.last_purchase_at, ts)
    survivor.purchase_count += absorbed.purchase_count
    survivor.monetary_total += absorbed.monetary_total
    survivor.refund_count += absorbed.refund_count
    survivor.refund_total += absorbed.refund_total


def _merge_daily(survivor: CustomerState, absorbed: CustomerState, features: FeatureConfig) -> None:
    """Buckets add; the days no window reaches from the newest event of both are dropped, as
    one state would have dropped them (or never counted them)."""
    daily = survivor.daily
    for day, bucket in absorbed.daily.items():
        mine = daily.get(day)
        daily[day] = list(bucket) if mine is None else [a + b for a, b in zip(mine, bucket, strict=True)]
    if survivor.newest_event_at is not None:
        oldest_day = oldest_kept_day(survivor.newest_event_at, features.allowed_lateness_days * DAY)
        survivor.daily = {day: bucket for day, bucket in daily.items() if day >= oldest_day}


def _merge_visits(survivor: CustomerState, absorbed: CustomerState, features: FeatureConfig) -> None:
    """Visits add; the later last visit stays the last, converted if it was or if the other
    profile's last purchase followed it within the attribution window."""
    survivor.visit_count += absorbed.visit_count
    survivor.visit_seconds_total += absorbed.visit_seconds_total
    survivor.converted_visits += absorbed.converted_visits
    other_purchase = absorbed.last_purchase_at
    if absorbed.last_visit_at is not None and (
        survivor.last_visit_at is None or absorbed.last_visit_at > survivor.last_visit_at
    ):
        other_purchase = survivor.last_purchase_at
        survivor.last_visit_at, survivor.last_visit_converted = absorbed.last_visit_at, absorbed.last_visit_converted
    last_visit = survivor.last_visit_at
    if (
        last_visit is not None
        and other_purchase is not None
        and not survivor.last_visit_converted
        and 0 <= other_purchase - last_visit <= features.visit_attribution_hours * 3600
    ):
        survivor.last_visit_converted = True
        survivor.converted_visits += 1


def _merge_profile_fields(survivor: CustomerState, absorbed: CustomerState) -> None:
    """The newer update's fields win; a field only the other set is kept."""
    if absorbed.profile_updated_at is not None and (
        survivor.profile_updated_at is None or absorbed.profile_updated_at > survivor.profile_updated_at
    ):
        survivor.profile = survivor.profile | absorbed.profile
        survivor.profile_updated_at = absorbed.profile_updated_at
    else:
        survivor.profile = absorbed.profile | survivor.profile


def _merge_snapshots(survivor: CustomerState, absorbed: CustomerState, models: ModelConfig) -> None:
    """One snapshot per grid point, each marked stayed if the other side's remembered purchases
    fall in its horizon; where both have one, the spends add (a side's purchases it does not
    remember add to the other side's snapshots no spend: the state keeps no amounts per purchase)."""
    theirs = CustomerState(absorbed.customer_id, snapshots=array("d", absorbed.snapshots))
    for ts in remembered_purchases(survivor):
        record_purchase(theirs, ts, 0.0, models)
    for ts in remembered_purchases(absorbed):
        record_purchase(survivor, ts, 0.0, models)
    mine, others = _rows(survivor.snapshots), _rows(theirs.snapshots)
    for at, row in mine.items():
        other = others.get(at)
        if other is not None and max(row[1], other[1]) >= STAYED:
            row[1] = max(row[1], STAYED) + max(other[1], STAYED)
    merged = others | mine
    survivor.snapshots = array("d", (n for at in sorted(merged) for n in merged[at]))


def _rows(snapshots: array[float]) -> dict[float, array[float]]:
    return {snapshots[i]: snapshots[i : i + SNAPSHOT_WIDTH] for i in range(0, len(snapshots), SNAPSHOT_WIDTH)}
