"""``crm360 bench --cpu``: reproducible outputs, so its digest can vouch that a faster change
changed nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from streams.measure.cpubench import BACKFILL_ROUNDS, run_cpu_bench

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
    checked = run_cpu_bench(3_000, suppressed=500)  # suppressions of nobody in the stream change nothing
    assert checked["suppressed_identifiers"] == 500 and checked["digest"] == first["digest"]


def test_a_backfill_on_disk_moves_every_customer_in_and_out_each_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """States and memberships on disk behind a cache of a tenth of the customers, as a worker
    over a million keeps them: each round every customer enters or leaves, once."""
    monkeypatch.setenv("CRM360_STATE_STORE", "rocksdb")
    monkeypatch.setenv("CRM360_STATE_CACHE_CUSTOMERS", "30")
    first, again = run_cpu_bench(3_000, backfill=True), run_cpu_bench(3_000, backfill=True)
    assert first["customers"] > 300
    assert first["backfill_changes"] == BACKFILL_ROUNDS * first["customers"]
    assert first["backfill_cpu_s"] > 0 and first["backfill_us_per_change"] > 0
    assert (first["backfill_changes"], first["digest"]) == (again["backfill_changes"], again["digest"])


def test_with_identities_every_op_is_handled_and_the_outputs_are_reproducible() -> None:
    """The graph's ops read back in the same process until none is left: every merge the
    events ask for is done, each op handled once, and two runs give the same outputs."""
    first, again = run_cpu_bench(3_000, identities=True), run_cpu_bench(3_000, identities=True)
    assert first["events"] == first["applied"] == 3_000
    assert first["profiles_merged"] > 50
    assert first["identity_ops"] == first["identity_ops_sent"] > first["profiles_merged"]
    assert (first["profiles_merged"], first["digest"]) == (again["profiles_merged"], again["digest"])
    plain = run_cpu_bench(3_000)
    assert plain["profiles_merged"] == plain["identity_ops"] == 0 and plain["digest"] != first["digest"]


def test_with_audiences_the_digest_is_the_same_in_every_process() -> None:
    """Entries and exits (and their features) come out in one order whatever a process's
    string hashing: the digest of two processes with different hash seeds is the same."""

    def digest(seed: str) -> dict[str, Any]:
        env = os.environ | {"PYTHONHASHSEED": seed}
        command = [sys.executable, "-m", "streams.cli", "bench", "--cpu", "--events", "3000", "--audiences", "20"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=True)
        figures: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        return figures

    first, other = digest("1"), digest("2")
    assert first["audience_changes"] > 0 and first["audiences"] == 20
    assert first["digest"] == other["digest"]
