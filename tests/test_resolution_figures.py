"""Identity resolution measured against the people of a simulation whose truth is known, through
the real broker, worker and chDB (``streams.measure.resolution``)."""

from __future__ import annotations

import pytest

from streams.measure.resolution import measure


@pytest.mark.integration
def test_resolution_joins_people_as_far_as_their_events_link_them_and_glues_no_more_than_shared_devices() -> None:
    figures = measure(people=200, days=120, seed=3)
    resolved, apart, reference = (
        figures["with_resolution"],
        figures["without_resolution"],
        figures["reference_union_find"],
    )
    assert figures["merges"] > 100 and figures["links_refused"] >= 1  # shared tablets meet the guard
    # Everyone the events link is one profile, as with a union of every link (the ceiling) ...
    assert resolved["people_as_one_profile"] >= reference["people_as_one_profile"] > 5 * apart["people_as_one_profile"]
    assert resolved["profiles"] < apart["profiles"] / 2
    # ... and a profile holds two people's events only through a device they share.
    assert resolved["wrongly_merged_profiles"] <= figures["shared_identifiers"]
