"""Customer state on disk (CRM360_STATE_STORE=rocksdb): more customers than the cache holds, exact
across every kind of restart, and a restart that reads only the changelog after its checkpoint."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from faust.stores.rocksdb import Store
from faust.types import TP
from rocksdict import AccessType, Options, Rdict

from streams.app import fetched_end_offsets
from streams.publisher import EventPublisher
from tests.conftest import assert_exact_purchases, purchases

DISK = {"CRM360_STATE_STORE": "rocksdb", "CRM360_STATE_CACHE_CUSTOMERS": "50"}


def persisted_offsets(data_dir: Path) -> dict[int, int]:
    """Per partition, the changelog offset its database says it holds (the worker is stopped)."""
    offsets = {}
    for path in data_dir.glob("faust/**/customers-*.db"):
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        offsets[int(path.name.removesuffix(".db").rsplit("-", 1)[1])] = int(db[Store.offset_key])
        db.close()
    return offsets


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_more_customers_than_the_cache_stay_exact_across_a_restart(
    start_worker: Any, broker: str, stop_signal: int
) -> None:
    """2,000 customers through a cache of 50, the worker stopped mid-stream and started again."""
    worker = start_worker(CRM360_WORKER_PROCESSES="2", CRM360_COMMIT_INTERVAL_S="1", **DISK)
    events, expected = purchases(12_000, 2_000)

    def produce() -> None:
        with EventPublisher(broker, partitions=4, envelope_size=100) as publisher:
            for n, event in enumerate(events, start=1):
                publisher.publish(event)
                if n % 1_000 == 0:
                    publisher.flush()
                    time.sleep(0.2)

    producer = threading.Thread(target=produce)
    producer.start()
    deadline = time.monotonic() + 60
    while worker.metric("crm360_events_applied_total") < 5_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 0 < worker.metric("crm360_events_applied_total") < len(events)
    worker.stop(stop_signal)
    producer.join()
    restarted = start_worker(CRM360_WORKER_PROCESSES="2", **DISK)
    assert_exact_purchases(restarted, expected)
    for customer in ("k0", "k777", "k1999"):  # live profiles of customers long evicted from the cache
        status, answer = restarted.get(f"/customers/{customer}")
        assert status == 200 and answer["source"] == "live", answer
        assert answer["customer"]["purchase_count"] == expected[customer][0]


def test_a_restart_reads_only_the_changelog_written_after_its_checkpoint(
    start_worker: Any, broker: str, worker_env: dict[str, str]
) -> None:
    """Stopped, the worker's databases hold every state up to the changelog's end: the next start
    reads none of its history again, and carries on exactly."""
    worker = start_worker(CRM360_WORKER_PROCESSES="1", **DISK)
    events, expected = purchases(6_000, 2_000)
    with EventPublisher(broker, partitions=4, envelope_size=100) as publisher:
        for event in events[:4_000]:
            publisher.publish(event)
    worker.wait_for_metric("crm360_events_applied_total", 4_000)
    worker.stop(signal.SIGTERM)
    data_dir = Path(worker_env["CRM360_DATA_DIR"])
    persisted = persisted_offsets(data_dir)
    changelog = f"{worker_env['CRM360_APP_ID']}-customers-changelog"
    ends = asyncio.run(fetched_end_offsets([broker], [TP(changelog, p) for p in range(4)]))
    assert persisted == {tp.partition: end - 1 for tp, end in ends.items()}  # the last record of each
    started = time.monotonic()
    restarted = start_worker(CRM360_WORKER_PROCESSES="1", **DISK)
    print(f"start-up on a filled data dir: {time.monotonic() - started:.1f} s")
    with EventPublisher(broker, partitions=4, envelope_size=100) as publisher:
        for event in events[4_000:]:
            publisher.publish(event)
    assert_exact_purchases(restarted, expected)
