"""Who is in which audience: every emitted feature row checked against every live audience.

A customer's memberships live in their state (``CustomerState.audiences``: audience name to
the event time they entered), so a change of membership is decided once, where the customer
is, and survives restarts with the state. A customer enters when the condition becomes true;
leaves when it is no longer true and they have been a member for the audience's minimum stay
(in event time); leaves every audience that was deleted.

>>> from schemas.audiences import Audience
>>> audiences = Audiences()
>>> audiences.define(Audience(name="at_risk", condition="churn_probability > 0.6", min_stay_days=7, version=1))
>>> state = CustomerState("c1")
>>> [(c.audience.name, c.change) for c in audiences.decide(state, {"churn_probability": 0.7, "as_of": 0.0})]
[('at_risk', 'entered')]
>>> audiences.decide(state, {"churn_probability": 0.2, "as_of": 3 * DAY})  # within the minimum stay
[]
>>> [c.change for c in audiences.decide(state, {"churn_probability": 0.2, "as_of": 8 * DAY})]
['exited']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from processors.conditions import Condition, parse_condition
from processors.config import DAY
from processors.features import CustomerState
from schemas.audiences import Audience


@dataclass(frozen=True)
class LiveAudience:
    """A definition with its parsed condition."""

    definition: Audience
    condition: Condition

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def version(self) -> int:
        return self.definition.version


@dataclass(frozen=True)
class Change:
    """A customer entered or left ``audience``."""

    audience: LiveAudience
    change: Literal["entered", "exited"]


class Audiences:
    """The live audiences of a worker process, as the ``audiences`` topic defines them.

    ``generation`` grows with every change, so whoever holds customers knows to check them
    all again (the backfill of a new or changed audience).
    """

    def __init__(self) -> None:
        self.live: dict[str, LiveAudience] = {}
        #: Deleted audiences (their last definition): their members leave.
        self.deleted: dict[str, LiveAudience] = {}
        self.generation = 0

    def define(self, audience: Audience) -> None:
        """Add or replace ``audience`` (its condition must parse)."""
        current = self.live.get(audience.name)
        if current is not None and current.definition == audience:
            return
        self.live[audience.name] = LiveAudience(audience, parse_condition(audience.condition))
        self.deleted.pop(audience.name, None)
        self.generation += 1

    def delete(self, name: str) -> None:
        gone = self.live.pop(name, None)
        if gone is not None:
            self.deleted[name] = gone
            self.generation += 1

    def decide(self, state: CustomerState, row: Mapping[str, Any]) -> list[Change]:
        """The changes of the customer's memberships that ``row`` (their new feature row, times as
        epoch seconds) makes; ``state.audiences`` is replaced (not changed in place) when any."""
        members = state.audiences
        as_of = row["as_of"]
        changes: list[Change] = []
        kept: dict[str, float] | None = None
        for name, audience in self.live.items():
            entered = members.get(name)
            inside = audience.condition(row)
            if inside and entered is None:
                changes.append(Change(audience, "entered"))
                kept = kept if kept is not None else dict(members)
                kept[name] = as_of
            elif not inside and entered is not None and as_of - entered >= audience.definition.min_stay_days * DAY:
                changes.append(Change(audience, "exited"))
                kept = kept if kept is not None else dict(members)
                del kept[name]
        for name in members:
            if name not in self.live:
                gone = self.deleted.get(name)
                if gone is not None:
                    changes.append(Change(gone, "exited"))
                kept = kept if kept is not None else dict(members)
                del kept[name]
        if kept is not None:
            state.audiences = kept
        return changes

    def leave_all(self, state: CustomerState) -> list[Change]:
        """The customer leaves every audience (a profile merged into another)."""
        changes = [
            Change(audience, "exited")
            for name in state.audiences
            if (audience := self.live.get(name) or self.deleted.get(name)) is not None
        ]
        state.audiences = {}
        return changes
