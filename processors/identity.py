"""Identifiers, and what a profile's state keeps of its identity.

An event names its person by identifiers of declared kinds (``IdentityConfig.kinds``), written
``kind:value`` (``anonymous_id:a9f3``, ``email:3b5e...``), except a ``customer_id``, which is
its bare value (``schemas.identifiers``), so the customers of events that carry only a
``customer_id`` keep their ids. Every identifier resolves to one profile, named by the
identifier it started from; ``processors.identity_graph`` keeps the graph in the stream.

Examples
--------
>>> config = IdentityConfig()
>>> kind_of("anonymous_id:a9f3", config), kind_of("c1", config), kind_of("shop:7", config)
('anonymous_id', 'customer_id', 'customer_id')
>>> conflict(["c1", "email:x"], ["anonymous_id:a9f3", "email:y"], config)
"unique kind email: 'email:x' and 'email:y'"
>>> rank("c9", config) < rank("loyalty_card:7", config) < rank("anonymous_id:a", config)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from processors.config import IdentityConfig
from schemas.identifiers import CUSTOMER_ID


def kind_of(name: str, config: IdentityConfig) -> str:
    """The kind of an identifier: the declared kind it starts with, else ``customer_id``."""
    kind, colon, _ = name.partition(":")
    return kind if colon and kind != CUSTOMER_ID and kind in config.kinds else CUSTOMER_ID


#: How profiles compare: the lower survives a merge.
Rank = tuple[int, str]
#: Merged identifiers followed at most, in one process, to the profile they went to.
MOST_HOPS = 10


def rank(profile_id: str, config: IdentityConfig) -> Rank:
    """The profile named by the most lasting kind of identifier survives (the order of
    ``IdentityConfig.kinds``: an account, then a loyalty card, an email, a phone, a social
    handle, a device), then the first by name. It depends on the name alone, so two profiles
    always agree on which of them survives, whatever each has seen."""
    return (config.kinds.index(kind_of(profile_id, config)), profile_id)


def conflict(mine: list[str], theirs: list[str], config: IdentityConfig) -> str | None:
    """Why two profiles may not merge: two values of a kind declared unique per person (a
    shared device seen with two accounts), or more identifiers than a profile may hold."""
    held: dict[str, str] = {}
    for name in mine:
        kind = kind_of(name, config)
        if kind in config.unique_kinds:
            held[kind] = name
    for name in theirs:
        kind = kind_of(name, config)
        if kind in config.unique_kinds and held.get(kind, name) != name:
            return f"unique kind {kind}: {held[kind]!r} and {name!r}"
    if len(set(mine) | set(theirs)) > config.max_identifiers:
        return f"more than {config.max_identifiers} identifiers (CRM360_MAX_IDENTIFIERS)"
    return None


@dataclass(slots=True)
class Identity:
    """What a state keeps of its identity, once its profile took part in a link (a plain
    customer's state has none).

    A profile (a root) holds its identifiers; an identifier merged into another profile keeps
    only where it went (``merged_into``), so events and links that reach it follow.
    """

    #: Of a profile: every identifier it holds, its own name first. Of a merged identifier:
    #: those it held, while it keeps its state (until its absorb is sent), then none.
    identifiers: list[str] = field(default_factory=list)
    #: Of a merged identifier: the profile it went to (a merged one too, at times: follow it).
    merged_into: str | None = None
    #: The profile this one is absorbing alone (it may hold identifiers of unique kinds): links
    #: that reach it meanwhile wait in ``waiting``.
    absorbing: str | None = None
    #: Profiles of one identifier of a kind not unique (devices) this one asked to join it, all
    #: at once: a surrender asked of it meanwhile waits in ``waiting``.
    joining: list[str] = field(default_factory=list)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    #: The merges and refused links this profile decided, oldest first (the latest
    #: ``IdentityConfig.history`` of them).
    history: list[dict[str, Any]] = field(default_factory=list)
    #: Profiles a guard refused to merge with this one (refused for good: the guards only
    #: tighten as profiles grow), so their links are not tried again.
    refused: list[str] = field(default_factory=list)
    #: What the last change of this record sent, kept with it until it is known to be sent:
    #: a record restored with it sends it again (``processors.identity_graph``).
    outbox: list[dict[str, Any]] = field(default_factory=list)
