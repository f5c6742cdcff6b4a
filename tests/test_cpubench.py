"""``crm360 bench --cpu``: reproducible outputs, so its digest can vouch that a faster change
changed nothing."""

from __future__ import annotations

import pytest

from streams.measure.cpubench import run_cpu_bench

pytestmark = pytest.mark.integration  # embedded ClickHouse


def test_cpu_bench_outputs_are_reproducible_and_the_digest_sees_them() -> None:
    first, again = run_cpu_bench(3_000), run_cpu_bench(3_000)
    assert first["events"] == first["applied"] == 3_000
    assert first["feature_rows"] > 0 and first["changelog_bytes"] > 0 and first["events_per_cpu_s"] > 0
    assert first["baseline_cpu_s"] > 0 and first["times_baseline_cpu"] > 1  # the pipeline does more than decode
    same = ("events", "applied", "feature_rows", "alerts", "changelog_bytes", "digest")
    assert {k: first[k] for k in same} == {k: again[k] for k in same}
    other = run_cpu_bench(3_000, batch_messages=7)  # other batches: other rows and states
    assert other["events"] == 3_000 and other["digest"] != first["digest"]
