"""``crm360 bench``: one run of the command on a private stack prints its table and, as its
last line, the JSON figures the issue asks for, consistent with one another."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # a real broker and worker

ROOT = Path(__file__).resolve().parents[1]


def test_bench_prints_consistent_figures() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "bench", "--events", "6000", "--audiences", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["events"] == 6000 and figures["customers"] > 0
    assert figures["events_per_s"] > 0 and all(rate > 0 for rate in figures["raw_consumer_before_after"])
    assert figures["worker_processes"] >= 1
    assert figures["worker_cpu_s"] > 0 and 0 < figures["worker_cpu_share"] < figures["worker_processes"] + 0.5
    assert abs(figures["raw_consumer_events_per_s"] - sum(figures["raw_consumer_before_after"]) / 2) <= 0.1
    assert abs(figures["ratio_to_raw"] - figures["events_per_s"] / figures["raw_consumer_events_per_s"]) < 1e-3
    # Every event was applied by the end, which also waits for the last merge and the rows.
    assert figures["events_applied_per_s"] >= figures["events_per_s"] and figures["after_applied_s"] >= 0
    ends = 6000 / figures["events_applied_per_s"] + figures["after_applied_s"], 6000 / figures["events_per_s"]
    assert abs(ends[0] - ends[1]) < 0.02
    # Every probe seen; how many were sent (one per 0.1 s for 15 s at most) is the machine's
    # speed: 88 on a loaded machine failed a bound of 100 that the code could not change.
    assert figures["freshness_samples"] == figures["freshness_probes"] >= 20
    assert 0 < figures["freshness_p50_s"] <= figures["freshness_p95_s"] < 10
    # Three audiences live, the first of which every probe enters; then two backfilled: the
    # few who spent most, and everyone.
    assert figures["audiences"] == 3 and figures["audience_changes"] > 0
    assert 0 < figures["audience_freshness_p50_s"] <= figures["audience_freshness_p95_s"] < 10
    assert figures["backfill_customers"] == figures["customers"] == figures["backfill_everyone_members"]
    assert 0 < figures["backfill_big_spenders_members"] < figures["customers"]
    assert figures["backfill_big_spenders_s"] > 0 and figures["backfill_customers_per_s"] > 0
    assert figures["bytes_per_customer"] > 100
    assert figures["kafka_mib_per_million_events"] > 0 and figures["clickhouse_mib_per_million_events"] > 0
    table = {line.split()[0] for line in lines if line.strip() and not line.startswith("{")}
    assert {"events_per_s", "raw_consumer_events_per_s", "freshness_p95_s", "bytes_per_customer"} <= table
