"""How well profiles match people, on a simulation whose true person of every event is known
(``Simulation(identities=True)``).

``python -m streams.measure.resolution --people 2000 --days 365`` runs such a simulation through
a private local stack (broker, worker, embedded ClickHouse), reads where each identifier ended
(``identities``) and prints the figures with resolution, without it (every identifier its own
profile) and for the reference: identifiers joined wherever an event named them together
(union-find), which glues people who share a device.

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

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import click

from schemas.envelope import pack
from schemas.events import BaseEvent, parse_event
from streams.local.simulate import Simulation
from streams.local.stack import private_stack
from streams.local.until import until
from streams.measure.bench import produce


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


def linked_components(events: Iterable[BaseEvent]) -> Callable[[str], str]:
    """The reference: each identifier's component when every identifier an event names is joined.

    >>> from schemas.events import parse_event
    >>> seen = [parse_event({"type": "identify", "event_id": "i1", "ts": 0, "channel": "web", "customer_id": "c1",
    ...                      "identifiers": {"anonymous_id": "d1"}})]
    >>> component = linked_components(seen)
    >>> component("anonymous_id:d1") == component("c1") != component("c2")
    True
    """
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        while parent.setdefault(name, name) != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for event in events:
        for other in event.others:
            parent[find(other)] = find(event.customer_id)
    return find


def measure(people: int, days: int, seed: int, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The figures of one simulation run through a private local stack (see the module's text)."""
    simulation = Simulation(customers=people, days=days, seed=seed, identities=True)
    events = [parse_event(raw) for raw in simulation.events()]
    truth = simulation.ground_truth()
    person_of = {event_id: person for person, known in truth.items() for event_id in known["event_ids"]}
    keyed = [{"event_id": e.event_id, "key": e.customer_id} for e in events]
    shared = {name for known in truth.values() for name in known["identifiers"]}
    shared_devices = sum(1 for known in truth.values() for name in known["identifiers"]) - len(shared)
    with private_stack("resolution", 4) as (settings, worker):
        worker.start()
        progress(f"{len(events)} events of {people} people ...")
        produce(settings.kafka_bootstrap, pack(events, settings.partitions, 1000))
        started = time.monotonic()

        def settled() -> dict[str, float] | None:
            m = worker.metrics()
            done = m.get("crm360_events_applied_total", 0) + m.get("crm360_duplicates_skipped_total", 0)
            progress(f"  {int(done)}/{len(events)} applied, {int(m.get('crm360_profiles_merged_total', 0))} merges")
            ops_done = m.get("crm360_identity_ops_in_total", 0) == m.get("crm360_identity_ops_out_total", 0)
            return m if done >= len(events) and ops_done else None

        figures = until(settled, "every event applied and every merge done", timeout=1800, every=1.0)
        seconds = time.monotonic() - started
        until(lambda: worker.sql("SELECT count() FROM identities")[0][0] > 0 or None, "identities written", 60)
        time.sleep(2 * float(settings.flush_interval_s))  # the last merges' rows
        rows = worker.sql("SELECT identifier, profile_id FROM identities FINAL")
    profile_of = {identifier: profile for identifier, profile in rows}
    return {
        "people": people,
        "events": len(events),
        "shared_identifiers": shared_devices,
        "merges": int(figures.get("crm360_profiles_merged_total", 0)),
        "links_refused": int(figures.get("crm360_links_refused_total", 0)),
        "identity_ops": int(figures.get("crm360_identity_ops_in_total", 0)),
        "seconds": round(seconds, 1),
        "with_resolution": resolution_figures(keyed, person_of, lambda key: profile_of.get(key, key)),
        "without_resolution": resolution_figures(keyed, person_of, lambda key: key),
        "reference_union_find": resolution_figures(keyed, person_of, linked_components(events)),
    }


@click.command()
@click.option("--people", default=2000, show_default=True)
@click.option("--days", default=365, show_default=True)
@click.option("--seed", default=42, show_default=True)
def main(people: int, days: int, seed: int) -> None:
    """Profiles against people on a simulation with identities, through a private local stack."""
    click.echo(json.dumps(measure(people, days, seed, progress=click.echo), indent=2))


if __name__ == "__main__":
    main()
