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

With ``--churn`` it also measures what resolution does to the churn scores analysts see: once
every profile is scored by the newest model, the ROC AUC of ``churn_probability`` over the
profiles against whether their person had churned by the end (the simulation's latent churn
time; a profile is its majority person's), next to a second run of the same events with their
other identifiers left out, so that every identifier stays a profile of its own.

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
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import click

from processors.quality import roc_auc
from schemas.envelope import pack
from schemas.events import BaseEvent, parse_event
from streams.local.simulate import Simulation
from streams.local.stack import WorkerProcess, private_stack
from streams.local.until import until
from streams.measure.bench import produce
from streams.measure.evaluate import wait_for_models


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


def churn_auc(
    events: Iterable[dict[str, Any]],
    person_of: dict[str, str],
    profile_of: Callable[[str], str],
    churned: dict[str, bool],
    scores: dict[str, float | None],
) -> dict[str, Any]:
    """ROC AUC of the profiles' churn ``scores`` (profile id -> ``churn_probability``, None
    unscored: counted as 0.5) against ``churned`` of each profile's majority person (by events;
    ``events``, ``person_of`` and ``profile_of`` as for :func:`resolution_figures`).

    >>> events = [{"event_id": "e1", "key": "c1"}, {"event_id": "e2", "key": "d1"}, {"event_id": "e3", "key": "c2"}]
    >>> person_of = {"e1": "ann", "e2": "ann", "e3": "bob"}
    >>> churn_auc(events, person_of, lambda key: key, {"ann": True, "bob": False}, {"c1": 0.9, "d1": 0.2, "c2": 0.4})
    {'profiles': 3, 'unscored': 0, 'churn_roc_auc': 0.5}
    >>> merged = {"d1": "c1"}
    >>> churn_auc(events, person_of, lambda key: merged.get(key, key), {"ann": True, "bob": False}, {"c1": 0.9, "c2": 0.4})
    {'profiles': 2, 'unscored': 0, 'churn_roc_auc': 1.0}
    """
    persons_of: dict[str, Counter[str]] = {}
    for event in events:
        profile = profile_of(event["key"])
        persons_of.setdefault(profile, Counter())[person_of[event["event_id"]]] += 1
    profiles = [profile for profile in persons_of if profile in scores]
    labels = [churned[persons_of[profile].most_common(1)[0][0]] for profile in profiles]
    values = [scores[profile] for profile in profiles]
    auc = roc_auc(labels, [0.5 if value is None else value for value in values])
    return {
        "profiles": len(profiles),
        "unscored": sum(1 for value in values if value is None),
        "churn_roc_auc": None if auc is None else round(auc, 4),
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


def measure(
    people: int, days: int, seed: int, progress: Callable[[str], None] = lambda _: None, churn: bool = False
) -> dict[str, Any]:
    """The figures of one simulation run through a private local stack (see the module's text);
    with ``churn``, also the churn AUC with and without resolution (the stacks then age and
    re-score every second, as ``crm360 evaluate``'s does)."""
    simulation = Simulation(customers=people, days=days, seed=seed, identities=True)
    events = [parse_event(raw) for raw in simulation.events()]
    truth = simulation.ground_truth()
    person_of = {event_id: person for person, known in truth.items() for event_id in known["event_ids"]}
    keyed = [{"event_id": e.event_id, "key": e.customer_id} for e in events]
    shared = {name for known in truth.values() for name in known["identifiers"]}
    shared_devices = sum(1 for known in truth.values() for name in known["identifiers"]) - len(shared)
    often = {"aging_interval_s": "1", "rescore_interval_s": "1"} if churn else {}
    with private_stack("resolution", 4, **often) as (settings, worker):
        worker.start()
        progress(f"{len(events)} events of {people} people ...")
        produce(settings.kafka_bootstrap, pack(events, settings.partitions, 1000))
        started = time.monotonic()

        def settled() -> dict[str, float] | None:
            m = worker.metrics()
            done = events_done(m)
            progress(f"  {int(done)}/{len(events)} applied, {int(m.get('crm360_profiles_merged_total', 0))} merges")
            ops_done = m.get("crm360_identity_ops_in_total", 0) == m.get("crm360_identity_ops_out_total", 0)
            return m if done >= len(events) and ops_done else None

        metrics = until(settled, "every event applied and every merge done", timeout=1800, every=1.0)
        seconds = time.monotonic() - started
        until(lambda: worker.sql("SELECT count() FROM identities")[0][0] > 0 or None, "identities written", 60)
        time.sleep(2 * float(settings.flush_interval_s))  # the last merges' rows
        rows = worker.sql("SELECT identifier, profile_id FROM identities FINAL")
        scores = profile_scores(worker) if churn else {}
    profile_of = {identifier: profile for identifier, profile in rows}
    figures: dict[str, Any] = {
        "people": people,
        "events": len(events),
        "shared_identifiers": shared_devices,
        "merges": int(metrics.get("crm360_profiles_merged_total", 0)),
        "links_refused": int(metrics.get("crm360_links_refused_total", 0)),
        "identity_ops": int(metrics.get("crm360_identity_ops_in_total", 0)),
        "seconds": round(seconds, 1),
        "with_resolution": resolution_figures(keyed, person_of, lambda key: profile_of.get(key, key)),
        "without_resolution": resolution_figures(keyed, person_of, lambda key: key),
        "reference_union_find": resolution_figures(keyed, person_of, linked_components(events)),
    }
    if churn:
        end = simulation.start + days * 86_400
        churned = {person: known["churn_at"] < end for person, known in truth.items()}
        alone = without_links(events)
        with private_stack("resolution", 4, **often) as (settings, worker):
            worker.start()
            progress(f"{len(alone)} events without their other identifiers ...")
            produce(settings.kafka_bootstrap, pack(alone, settings.partitions, 1000))

            until(lambda: events_done(worker.metrics()) >= len(alone) or None, "every event applied", 1800, every=1.0)
            unresolved = profile_scores(worker)
        sent = {event.event_id for event in alone}
        kept = [event for event in keyed if event["event_id"] in sent]
        figures["churn"] = {
            "with_resolution": churn_auc(keyed, person_of, lambda key: profile_of.get(key, key), churned, scores),
            "without_resolution": churn_auc(kept, person_of, lambda key: key, churned, unresolved),
        }
    return figures


def events_done(metrics: dict[str, float]) -> float:
    """Events a worker is through with: applied, or passed by as sent before."""
    return metrics.get("crm360_events_applied_total", 0) + metrics.get("crm360_duplicates_skipped_total", 0)


def without_links(events: Iterable[BaseEvent]) -> list[BaseEvent]:
    """The events as a pipeline without resolution sees them: each keyed by its identifier
    alone, naming no other, and no identify events (they only link).

    >>> from schemas.events import parse_event
    >>> seen = [parse_event({"type": "visit", "event_id": "v1", "ts": 0, "channel": "web", "session_id": "s1",
    ...                      "identifiers": {"anonymous_id": "d1", "email": "a@b.c"}}),
    ...         parse_event({"type": "identify", "event_id": "i1", "ts": 0, "channel": "web", "customer_id": "c1",
    ...                      "identifiers": {"anonymous_id": "d1"}})]
    >>> [(event.event_id, event.customer_id, event.others) for event in without_links(seen)]
    [('v1', 'anonymous_id:d1', [])]
    """
    return [event.model_copy(update={"identifiers": {}}) for event in events if event.type != "identify"]


def profile_scores(worker: WorkerProcess) -> dict[str, float | None]:
    """Each live profile's ``churn_probability``, once every one is scored by the newest model."""
    wait_for_models(worker, timeout=600)
    return dict(worker.sql("SELECT customer_id, churn_probability FROM customer_features FINAL"))


@click.command()
@click.option("--people", default=2000, show_default=True)
@click.option("--days", default=365, show_default=True)
@click.option("--seed", default=42, show_default=True)
@click.option("--churn", is_flag=True, help="Also the churn AUC with and without resolution (a second run).")
def main(people: int, days: int, seed: int, churn: bool) -> None:
    """Profiles against people on a simulation with identities, through a private local stack."""
    click.echo(json.dumps(measure(people, days, seed, progress=click.echo, churn=churn), indent=2))


if __name__ == "__main__":
    main()
