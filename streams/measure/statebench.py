"""What a customer state costs in each store: resident memory per customer, time per read and write.

``python -m streams.measure.statebench --customers 1000000 --store rocksdb [--cache 100000]`` fills a
store with the bench's simulated customers (the states of ``crm360 bench``'s first 300,000
events, applied with the real :func:`~processors.features.apply`, copied under new ids up to
``--customers``), then reads and writes random customers as the worker does (get, change,
write back, a checkpoint every 5,000) and prints one JSON line: resident memory over the
process's start per customer, microseconds per read (a cache miss decodes the state) and per
write (with the checkpoint's write batch). Run each store in its own process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from processors.features import CustomerState, apply
from schemas.topics import partition_for
from streams.measure.bench import simulated_events
from streams.settings import Settings
from streams.worker.memory import resident_bytes


def template_states(events: int = 300_000) -> list[bytes]:
    """The JSON of every customer's state after the bench's first ``events`` events."""
    config = Settings().feature_config()
    states: dict[str, CustomerState] = {}
    for event in simulated_events(events, seed=7):
        state = states.setdefault(event.customer_id, CustomerState(event.customer_id))
        apply(state, event, config, event.epoch)
    return [state.to_json() for state in states.values()]


def run(store: str, customers: int, cache: int, operations: int = 100_000, partitions: int = 4) -> dict[str, Any]:
    templates = [CustomerState.from_json(raw) for raw in template_states()]
    keys = [f"customer-{i:08d}".encode() for i in range(customers)]
    partition_of = dict(zip(keys, (partition_for(key, partitions) for key in keys))).__getitem__
    gc.collect()
    before = resident_bytes(os.getpid())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="crm360-statebench-") as folder:
        if store == "memory":
            table: Any = {}
            for i, key in enumerate(keys):
                state = CustomerState.from_json(templates[i % len(templates)].to_json())
                state.customer_id = key.decode()
                table[key] = state
        else:
            from faust.stores.rocksdb import RocksDBOptions

            from streams.worker.statestore import DiskTable

            options = RocksDBOptions(**Settings().rocksdb_options())
            databases = {p: options.open(Path(folder) / str(p)) for p in range(partitions)}
            table = DiskTable(databases.__getitem__, lambda: range(partitions), partition_of, cache, kind=CustomerState)
            for start in range(0, customers, 10_000):
                for i in range(start, min(start + 10_000, customers)):
                    state = CustomerState.from_json(templates[i % len(templates)].to_json())
                    state.customer_id = keys[i].decode()
                    table[keys[i]] = state
                table.persist(table.take_changes(partition_of), dict.fromkeys(range(partitions), start))
        filled = time.perf_counter() - started
        gc.collect()
        resident = resident_bytes(os.getpid()) - before
        rng = random.Random(1)
        picks = [keys[rng.randrange(customers)] for _ in range(operations)]
        read_s = write_s = 0.0
        for n, key in enumerate(picks, start=1):
            began = time.perf_counter()
            state = table.get(key)
            read_s += time.perf_counter() - began
            state.events_applied += 1
            began = time.perf_counter()
            table[key] = state
            if store != "memory" and n % 5_000 == 0:
                table.persist(table.take_changes(table.partition_of), dict.fromkeys(range(partitions), n))
            write_s += time.perf_counter() - began
        gc.collect()
        return {
            "store": store,
            "customers": customers,
            "cache": cache if store != "memory" else None,
            "fill_s": round(filled, 1),
            "resident_mb": round(resident / 2**20, 1),
            "resident_bytes_per_customer": round(resident / customers),
            "resident_after_reads_per_customer": round((resident_bytes(os.getpid()) - before) / customers),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "read_us": round(read_s / operations * 1e6, 2),
            "write_us": round(write_s / operations * 1e6, 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["memory", "rocksdb"], default="rocksdb")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--cache", type=int, default=Settings().state_cache_customers)
    args = parser.parse_args()
    print(json.dumps(run(args.store, args.customers, args.cache)))


if __name__ == "__main__":
    main()
