"""What a worker costs as its customers grow: memory, throughput, start-up, stop.

``python -m streams.measure.scalebench --customers 1000000 [--events-per-customer 3]`` starts a private
stack (broker, storage, worker with the shell's ``CRM360_STATE_STORE`` and cache), publishes
purchases for that many customers (a few each, over two years that end before today), waits
until the worker applied them all and committed, then stops and restarts it and prints one JSON
line: events per second while filling, the worker's resident memory (its processes together)
at the end and at its peak while filling, and its growth over the idle worker per customer, the stop time, the time until a restarted worker is healthy, and until it has
applied one more purchase (the first batch of each partition also reads what it needs of the
restored state); with ``--audience``, also how long a new audience takes to hold its members once
the worker settled after the fill.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

from schemas.envelope import pack
from schemas.events import parse_event
from streams.local.stack import WorkerProcess, private_stack
from streams.local.until import until
from streams.measure.bench import backfill, process_cpu_seconds, produce
from streams.settings import Settings
from streams.worker.memory import resident_bytes

DAY = 86_400.0
START = time.time() - 800 * DAY


#: Events generated and sent at a time (10 million at once would take the bench 10 GB).
EVENTS_AT_ONCE = 200_000


def purchases(customers: int, each: int, begin: int = 0, end: int | None = None) -> list[Any]:
    """Events ``begin`` to ``end`` of ``each`` purchases per customer, spread over two years,
    in time order.

    >>> [(event.event_id, event.customer_id) for event in purchases(2, 2, begin=1, end=3)]
    [('s1', 'c1'), ('s2', 'c0')]
    """
    span = 730 * DAY
    n = customers * each
    return [
        parse_event(
            {
                "type": "purchase",
                "event_id": f"s{i}",
                "customer_id": f"c{i % customers}",
                "ts": START + span * i / n,
                "channel": "web",
                "order_id": f"o{i}",
                "amount": float(i % 97) + 0.5,
                "currency": "EUR",
            }
        )
        for i in range(begin, min(end or n, n))
    ]


def publish(address: str, partitions: int, customers: int, each: int) -> None:
    """Send the purchases a slice at a time, printing progress on stderr."""
    n = customers * each
    for begin in range(0, n, EVENTS_AT_ONCE):
        produce(address, pack(purchases(customers, each, begin, begin + EVENTS_AT_ONCE), partitions, 1000))
        print(f"sent {min(begin + EVENTS_AT_ONCE, n):,} of {n:,} events", file=sys.stderr, flush=True)


def worker_resident_bytes(pid: int) -> int:
    """Resident memory of a process and its children (a worker's helpers)."""
    total = resident_bytes(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += worker_resident_bytes(int(child))
    return total


def settle(pid: int, window_s: float = 3.0, busy_share: float = 0.1, timeout: float = 3_600.0) -> float:
    """Seconds until the worker's processes used less than ``busy_share`` of a core over
    ``window_s``: the aging pass and checkpoints a fill leaves behind are over."""
    began = time.monotonic()
    last = [process_cpu_seconds(pid) or 0.0]

    def quiet() -> bool | None:
        used = process_cpu_seconds(pid) or 0.0
        busy, last[0] = used - last[0], used
        return busy < busy_share * window_s or None

    time.sleep(window_s)
    until(quiet, "the worker settled after the fill", timeout, every=window_s)
    return time.monotonic() - began


class PeakResident:
    """The largest :func:`worker_resident_bytes` of ``pid``, sampled every second while in use."""

    def __init__(self, pid: int) -> None:
        self.pid, self.bytes = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.bytes = max(self.bytes, worker_resident_bytes(self.pid))
            if self._stop.wait(1.0):
                return


def wait_for(worker: WorkerProcess, name: str, at_least: float, timeout: float = 3_600.0) -> float:
    """Seconds until the worker's metric ``name`` reaches ``at_least``."""
    began = time.monotonic()

    def reached() -> bool:
        try:
            return worker.metrics().get(name, 0.0) >= at_least
        except OSError:
            return False

    until(reached, f"{name} at {at_least}", timeout)
    return time.monotonic() - began


def run(customers: int, each: int, audience: bool = False) -> dict[str, Any]:
    own = Settings()
    with private_stack(
        "scalebench", 4, state_store=own.state_store, state_cache_customers=str(own.state_cache_customers)
    ) as (settings, worker):
        address = settings.kafka_bootstrap
        worker.start()
        assert worker.process is not None
        idle = worker_resident_bytes(worker.process.pid)
        began = time.monotonic()
        with PeakResident(worker.process.pid) as peak:
            publish(address, settings.partitions, customers, each)
            wait_for(worker, "crm360_events_in_total", customers * each)
            fill_s = time.monotonic() - began  # producing included: the worker reads as they come
            time.sleep(settings.commit_interval_s + 2)  # a commit: the restart reads nothing before it
        # Timed on a settled worker: what the backfill itself costs, not the fill's aftermath.
        backfilled = {"settle_s": round(settle(worker.process.pid), 1)} | backfill(worker) if audience else {}
        resident = worker_resident_bytes(worker.process.pid)
        stopped = time.monotonic()
        worker.stop(signal.SIGTERM, grace_s=120)
        stop_s = time.monotonic() - stopped
        started = time.monotonic()
        worker.start(timeout=3_600)
        healthy_s = time.monotonic() - started
        produce(
            address,
            pack(
                [
                    parse_event(
                        {
                            "type": "purchase",
                            "event_id": "after-restart",
                            "customer_id": "c0",
                            "ts": START + 731 * DAY,
                            "channel": "web",
                            "order_id": "after-restart",
                            "amount": 1.0,
                            "currency": "EUR",
                        }
                    )
                ],
                settings.partitions,
            ),
        )
        wait_for(worker, "crm360_events_in_total", 1)
        first_s = time.monotonic() - started
        return {
            "customers": customers,
            "events": customers * each,
            "state_store": own.state_store,
            "fill_events_per_s": round(customers * each / fill_s, 1),
            "resident_mib": round(resident / 2**20, 1),
            "peak_resident_mib": round(peak.bytes / 2**20, 1),
            "resident_bytes_per_customer": round((resident - idle) / customers, 1),  # over the idle worker
            "stop_s": round(stop_s, 1),
            "restart_healthy_s": round(healthy_s, 1),
            "restart_first_event_s": round(first_s, 1),
            **backfilled,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--events-per-customer", type=int, default=3)
    parser.add_argument("--audience", action="store_true", help="Also time a new audience's backfill over all of them.")
    args = parser.parse_args()
    print(json.dumps(run(args.customers, args.events_per_customer, args.audience)))


if __name__ == "__main__":
    main()
