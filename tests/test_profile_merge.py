"""Two profiles of one person folded into one (``processors.profile_merge``): the features equal
those of one state that applied every event, recomputed here independently."""

from __future__ import annotations

import random
from typing import Any

import pytest

from processors.config import DAY, ModelConfig
from processors.features import SNAPSHOT_WIDTH, CustomerState, apply, profile
from processors.profile_merge import merge_profiles
from processors.snapshots import STAYED, UNKNOWN, capture, record_purchase
from tests.test_processors import CFG, T0, profile_update, purchase, social, visit

MODELS = ModelConfig()
#: Conversion is judged against the last visit only (documented); sums in another order round apart.
APPROXIMATE = {"visit_to_purchase_rate": 1.0, "engagement_score": 0.011, "monetary_total": 0.011}
APPROXIMATE |= {"revenue_30d": 0.011, "revenue_90d": 0.011}


def history(rng: random.Random, span_days: float = 400) -> list[Any]:
    events = [
        purchase(
            n,
            rng.uniform(0, span_days),
            round(rng.uniform(1, 90), 2),
            rng.choice(["purchase"] * 5 + ["refund"]),
            rng.choice(["books", "music", "games"]),
            rng.randint(1, 3),
        )
        for n in range(rng.randint(0, 25))
    ]
    events += [visit(n, rng.uniform(0, span_days), rng.uniform(1, 300), rng.choice(["app", "web"])) for n in range(20)]
    events += [social(n, rng.uniform(0, span_days), rng.choice(["like", "comment", "share"])) for n in range(10)]
    events += [
        profile_update(n, rng.uniform(0, span_days), **{name: f"{name}-{n}"})
        for n, name in enumerate(rng.sample(["region", "city", "age_band"], rng.randint(0, 3)))
    ]
    return events


def state_of(events: list[Any], rng: random.Random | None = None) -> CustomerState:
    """One state that applied ``events``, in event-time order or, given ``rng``, shuffled but
    for profile updates (an update older than the newest applied one is ignored: documented)."""
    state = CustomerState("c")
    ordered = sorted(events, key=lambda e: e.epoch)
    if rng:
        rng.shuffle(ordered)
        updates = iter(sorted((e for e in ordered if e.type == "customer_profile"), key=lambda e: e.epoch))
        ordered = [next(updates) if e.type == "customer_profile" else e for e in ordered]
    for event in ordered:
        apply(state, event, CFG)
    return state


def assert_same_profile(got_state: CustomerState, want_state: CustomerState, at: float) -> None:
    got, want = profile(got_state, at, CFG), profile(want_state, at, CFG)
    for name, tolerance in APPROXIMATE.items():
        assert got.pop(name) == pytest.approx(want.pop(name), abs=tolerance), name
    assert got == want


@pytest.mark.parametrize("seed", range(40))
def test_a_merged_profile_equals_one_state_of_every_event(seed: int) -> None:
    rng = random.Random(seed)
    events = history(rng)
    mine = [e for e in events if rng.random() < 0.5]
    theirs = [e for e in events if e not in mine]
    survivor, absorbed = state_of(mine, rng), state_of(theirs, rng)
    kept = absorbed.to_json()
    assert merge_profiles(survivor, absorbed, CFG, MODELS) == 0
    assert absorbed.to_json() == kept  # left as it was
    one = state_of(events)
    assert survivor.events_applied == one.events_applied == len(events)
    assert list(survivor.applied_ids) == list(one.applied_ids)
    assert survivor.daily.keys() == one.daily.keys()  # no bucket kept that one state would have dropped
    for after_days in (0, 20, 45, 70, 100):
        assert_same_profile(survivor, one, T0 + (400 + after_days) * DAY)
    # Any event of either, delivered again after the merge, is a duplicate.
    assert {apply(survivor, event, CFG) for event in events} == {"duplicate"}


@pytest.mark.parametrize("seed", range(10))
def test_chains_of_merges_in_any_order_give_the_same_profile(seed: int) -> None:
    rng = random.Random(seed)
    events = history(rng)
    parts: list[list[Any]] = [[], [], []]
    for event in events:
        rng.choice(parts).append(event)
    first, second, third = (state_of(part, rng) for part in parts)
    merge_profiles(second, third, CFG, MODELS)  # the card's profile absorbs the cookie's ...
    merge_profiles(first, second, CFG, MODELS)  # ... then the account absorbs the card's
    for after_days in (0, 45, 100):
        assert_same_profile(first, state_of(events), T0 + (400 + after_days) * DAY)


def test_the_latest_return_after_a_churn_length_gap_is_found_across_both_profiles() -> None:
    """Purchases only, split between two profiles in every way: the stage shown (``reactivated``
    needs the latest churn-length gap) is the stage of one state of all of them."""
    for seed in range(300):
        rng = random.Random(seed)
        events = [purchase(n, rng.uniform(0, 600), 10) for n in range(rng.randint(2, 12))]
        mine = [e for e in events if rng.random() < 0.5]
        survivor, absorbed = state_of(mine, rng), state_of([e for e in events if e not in mine], rng)
        merge_profiles(survivor, absorbed, CFG, MODELS)
        one = state_of(events)
        for after_days in range(0, 100, 5):
            at = T0 + (600 + after_days) * DAY
            assert profile(survivor, at, CFG)["lifecycle_stage"] == profile(one, at, CFG)["lifecycle_stage"], seed


def test_an_event_both_profiles_applied_is_reported() -> None:
    survivor, absorbed = state_of([purchase(1, 0, 10), purchase(2, 1, 5)]), state_of([purchase(2, 1, 5)])
    assert merge_profiles(survivor, absorbed, CFG, MODELS) == 1
    assert survivor.purchase_count == 3  # counted twice in the sums: the stream never lets it happen
    assert len(survivor.applied_ids) == 2


def snapshotted(events: list[Any]) -> CustomerState:
    """A state that took churn snapshots as the worker does (nothing released yet)."""
    state = CustomerState("c")
    for event in sorted(events, key=lambda e: e.epoch):
        capture(state, event.epoch, float("-inf"), MODELS, CFG)
        apply(state, event, CFG)
        if event.type == "purchase":
            record_purchase(state, event.epoch, event.amount, MODELS)
    return state


def grid(state: CustomerState) -> dict[float, float]:
    """Each snapshot's time -> its outcome (unknown, or the spend in its horizon)."""
    rows = state.snapshots
    return {rows[i]: rows[i + 1] for i in range(0, len(rows), SNAPSHOT_WIDTH)}


def test_snapshots_of_both_histories_are_kept_once_per_grid_point() -> None:
    account = snapshotted([purchase(1, 0, 10), visit(1, 100), purchase(2, 300, 10)])
    card = snapshotted([purchase(3, 50, 20), purchase(4, 200, 20), purchase(5, 420, 20)])
    mine, theirs = grid(account), grid(card)
    both = set(mine) & set(theirs)
    assert both and set(theirs) - set(mine)  # grid points in common, and some only the card has
    merge_profiles(account, card, CFG, MODELS)
    merged = grid(account)
    assert len(account.snapshots) == len(merged) * SNAPSHOT_WIDTH  # one snapshot per grid point
    assert set(merged) == set(mine) | set(theirs)
    horizon = MODELS.churn_horizon_days * DAY
    # Every purchase is remembered by its side; a side's amounts count where it had the grid point.
    sides = [(mine, [(0, 10.0), (300, 10.0)]), (theirs, [(50, 20.0), (200, 20.0), (420, 20.0)])]
    for at, outcome in merged.items():
        within = [
            (grid_, amount) for grid_, bought in sides for day, amount in bought if at < T0 + day * DAY <= at + horizon
        ]
        spend = sum(amount for grid_, amount in within if at in grid_)
        assert outcome == (STAYED + spend if within else UNKNOWN), at
