"""How well profiles match people, on a simulation whose true person of every event is known
(``Simulation(identities=True)``).

A person is *one profile* when every one of their events landed in the same profile and that
profile holds no one else's events; a profile is *wrongly merged* when it holds events of more
than one person (a device that two people share is the hard case).

Examples
--------
>>> events = [{"event_id": "e1", "key": "c1"}, {"event_id": "e2", "key": "anonymous_id:d1"},
...           {"event_id": "e3", "key": "c2"}]
>>> person_of = {"e1": "ann", "e2": "ann", "e3": "bob"}
>>> figures = resolution_figures(events, person_of, profile_of=lambda key: key)   # no resolution
>>> figures["people"], figures["people_as_one_profile"], figures["profiles"], figures["wrongly_merged_profiles"]
(2, 1, 3, 0)
>>> merged = {"anonymous_id:d1": "c1"}
>>> resolution_figures(events, person_of, profile_of=lambda key: merged.get(key, key))["people_as_one_profile"]
2
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def resolution_figures(
    events: Iterable[dict[str, Any]], person_of: dict[str, str], profile_of: Callable[[str], str]
) -> dict[str, int]:
    """Figures over ``events`` (each with its ``event_id`` and its ``key``, the identifier it was
    keyed by); ``person_of`` names each event's true person, ``profile_of`` the profile an
    identifier resolves to."""
    profiles_of_person: dict[str, set[str]] = {}
    people_of_profile: dict[str, set[str]] = {}
    for event in events:
        person, profile = person_of[event["event_id"]], profile_of(event["key"])
        profiles_of_person.setdefault(person, set()).add(profile)
        people_of_profile.setdefault(profile, set()).add(person)
    one = sum(
        1
        for profiles in profiles_of_person.values()
        if len(profiles) == 1 and len(people_of_profile[next(iter(profiles))]) == 1
    )
    return {
        "people": len(profiles_of_person),
        "people_as_one_profile": one,
        "profiles": len(people_of_profile),
        "wrongly_merged_profiles": sum(1 for people in people_of_profile.values() if len(people) > 1),
    }
