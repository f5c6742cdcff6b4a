"""Who is in which audience: every emitted feature row checked against every live audience.

A customer's memberships (:class:`Membership`: audience name to the event time they entered)
are kept next to their state, in their own changelog-backed table: a change of membership is
decided once, where the customer is, and survives restarts, and a backfill that moves a million
customers sends a small record each, not their states. A customer enters when the condition becomes true;
leaves when it is no longer true and they have been a member for the audience's minimum stay
(in event time); leaves every audience that was deleted.

An audience with a consent ``purpose`` publishes only members who gave it: one who did not is
a member (counted) but withheld (``Membership.withheld``) from its destinations; consent
given later publishes their entry, consent withdrawn their exit (``reason="consent"``), and
the exit of a withheld member is not published either.

>>> from schemas.audiences import Audience
>>> audiences = Audiences()
>>> audiences.define(Audience(name="at_risk", condition="churn_probability > 0.6", min_stay_days=7, version=1))
>>> consents, member = {}, Membership()
>>> def decide(row):
...     global member
...     changes, member = audiences.decide(consents, member, row)
...     return changes
>>> [(c.audience.name, c.change) for c in decide({"churn_probability": 0.7, "as_of": 0.0})]
[('at_risk', 'entered')]
>>> decide({"churn_probability": 0.2, "as_of": 3 * DAY})  # within the minimum stay
[]
>>> [c.change for c in decide({"churn_probability": 0.2, "as_of": 8 * DAY})]
['exited']
>>> audiences.define(Audience(name="emailable", condition="churn_probability > 0.6", purpose="marketing_email", version=1))
>>> [(c.audience.name, c.change, c.published) for c in decide({"churn_probability": 0.7, "as_of": 9 * DAY})]
[('at_risk', 'entered', True), ('emailable', 'entered', False)]
>>> consents["marketing_email"] = [1.0, 9 * DAY]
>>> [(c.audience.name, c.change, c.reason, c.published) for c in decide({"churn_probability": 0.7, "as_of": 9 * DAY})]
[('emailable', 'entered', 'consent', True)]
>>> Membership.from_json(member.to_json()) == member
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from processors.conditions import Condition, parse_condition
from processors.config import DAY
from processors.features import CustomerState, consented, is_profile
from schemas.audiences import Audience


@dataclass(frozen=True)
class Membership:
    """The audiences a customer is a member of, and the event time they entered each; of
    those, the ones whose destinations do not have them (no consent for their purpose).
    Never changed in place: :meth:`Audiences.decide` gives a new one."""

    audiences: dict[str, float] = field(default_factory=dict)
    withheld: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        return orjson.dumps({"audiences": self.audiences, "withheld": self.withheld})

    @classmethod
    def from_json(cls, raw: bytes) -> Membership:
        data = orjson.loads(raw)
        return cls(data["audiences"], data["withheld"])


#: A customer in no audience.
NONE = Membership()


@dataclass(frozen=True)
class Contact:
    """What an audience's destinations learn of a customer: their id and identifiers; and their
    consents, which tell what destinations may learn of them."""

    customer_id: str
    identifiers: list[str]
    consents: dict[str, list[float]]

    @classmethod
    def of(cls, state: CustomerState) -> Contact:
        identity = state.identity
        identifiers = list(identity.identifiers) if identity is not None else [state.customer_id]
        return cls(state.customer_id, identifiers, state.consents)

    @classmethod
    def of_stored(cls, raw: bytes) -> Contact | None:
        """The contact of a stored state (:meth:`CustomerState.to_json`), None when it is no
        profile: read of its first document only (a backfill reads a million of them); a state
        written as one document is read whole.

        >>> from processors.identity import Identity
        >>> states = [CustomerState("c1", events_applied=1, consents={"profiling": [1.0, 5.0]}),
        ...           CustomerState("c2", events_applied=2, identity=Identity(["c2", "email:x"])),
        ...           CustomerState("c3", events_applied=1, identity=Identity(merged_into="c2")), CustomerState("c4")]
        >>> [Contact.of_stored(s.to_json()) == (Contact.of(s) if s.is_profile else None) for s in states]
        [True, True, True, True]
        >>> one_document = orjson.dumps(orjson.loads(states[1].to_json().replace(b"}\\n{", b",")))
        >>> Contact.of_stored(one_document) == Contact.of(states[1])
        True
        """
        data = orjson.loads(raw.partition(b"\n")[0])
        identity = data["identity"]
        if not is_profile(data["events_applied"], identity["merged_into"] if identity is not None else None):
            return None
        customer_id = data["customer_id"]
        identifiers = list(identity["identifiers"]) if identity is not None else [customer_id]
        return cls(customer_id, identifiers, data.get("consents", {}))


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
    """A customer entered or left ``audience`` (``reason="consent"``: only for its destinations),
    told to its destinations when ``published``."""

    audience: LiveAudience
    change: Literal["entered", "exited"]
    reason: Literal["condition", "deleted", "merged", "consent"] = "condition"
    published: bool = True


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
        #: The generation at which each audience (live or deleted) last changed.
        self.changed_at: dict[str, int] = {}

    def define(self, audience: Audience) -> None:
        """Add or replace ``audience`` (its condition must parse)."""
        current = self.live.get(audience.name)
        if current is not None and current.definition == audience:
            return
        self.live[audience.name] = LiveAudience(audience, parse_condition(audience.condition))
        self.deleted.pop(audience.name, None)
        self.generation += 1
        self.changed_at[audience.name] = self.generation

    def delete(self, name: str) -> None:
        gone = self.live.pop(name, None)
        if gone is not None:
            self.deleted[name] = gone
            self.generation += 1
            self.changed_at[name] = self.generation

    def changed_since(self, generation: int) -> list[str]:
        """The audiences defined, changed or deleted after ``generation``."""
        return [name for name, at in self.changed_at.items() if at > generation]

    def read_for(self, changed: list[str]) -> tuple[list[str], list[Condition]]:
        """What a backfill of the audiences ``changed`` reads of customers' current rows: every
        live audience's columns (a customer read is decided over every audience), and the
        conditions of the changed ones still live (whom they may let in)."""
        columns = sorted({column for audience in self.live.values() for column in audience.condition.columns})
        return columns, [self.live[name].condition for name in changed if name in self.live]

    def decide(
        self, consents: Mapping[str, list[float]], membership: Membership, row: Mapping[str, Any]
    ) -> tuple[list[Change], Membership]:
        """The changes of the customer's ``membership`` that ``row`` (their new feature row,
        times as epoch seconds) makes, and their membership after them (``membership`` itself
        when none), given their ``consents``."""
        members, withheld = membership.audiences, membership.withheld
        as_of = row["as_of"]
        changes: list[Change] = []
        kept: dict[str, float] | None = None
        hidden: list[str] | None = None
        for name, audience in self.live.items():
            entered = members.get(name)
            inside = audience.condition(row)
            purpose = audience.definition.purpose
            allowed = purpose is None or consented(consents, purpose)
            if inside and entered is None:
                changes.append(Change(audience, "entered", published=allowed))
                kept = kept if kept is not None else dict(members)
                kept[name] = as_of
                if not allowed:
                    hidden = (hidden if hidden is not None else list(withheld)) + [name]
            elif entered is None:
                continue
            elif not inside and as_of - entered >= audience.definition.min_stay_days * DAY:
                changes.append(Change(audience, "exited", published=name not in withheld))
                kept = kept if kept is not None else dict(members)
                del kept[name]
                if name in withheld:
                    hidden = [n for n in (hidden if hidden is not None else withheld) if n != name]
            elif (name in withheld) == allowed:  # consent given or withdrawn while a member
                changes.append(Change(audience, "entered" if allowed else "exited", reason="consent"))
                current = hidden if hidden is not None else withheld
                hidden = [n for n in current if n != name] if allowed else [*current, name]
        for name in members:
            if name not in self.live:
                gone = self.deleted.get(name)
                if gone is not None:
                    changes.append(Change(gone, "exited", reason="deleted", published=name not in withheld))
                kept = kept if kept is not None else dict(members)
                del kept[name]
                if name in withheld:
                    hidden = [n for n in (hidden if hidden is not None else withheld) if n != name]
        if kept is None and hidden is None:
            return changes, membership
        return changes, Membership(members if kept is None else kept, withheld if hidden is None else hidden)

    def leave_all(self, membership: Membership) -> list[Change]:
        """The exits of a customer who leaves every audience (a profile merged into another)."""
        return [
            Change(audience, "exited", reason="merged", published=name not in membership.withheld)
            for name in membership.audiences
            if (audience := self.live.get(name) or self.deleted.get(name)) is not None
        ]
