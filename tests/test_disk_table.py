"""The customer table on disk (``streams.worker.statestore.DiskTable``): its count of customers
stays exact, and a checkpoint of customers read from disk looks none of them up again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faust.stores.rocksdb import RocksDBOptions

from processors.features import CustomerState
from streams.settings import Settings
from streams.worker.statestore import DiskTable


class CountedLookups:
    """A database that counts the existence checks asked of it."""

    def __init__(self, database: Any) -> None:
        self.database, self.lookups = database, 0

    def __contains__(self, key: bytes) -> bool:
        self.lookups += 1
        return key in self.database

    def __getitem__(self, key: bytes) -> bytes:
        return self.database[key]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.database[key] = value

    def __getattr__(self, name: str) -> Any:
        return getattr(self.database, name)


def checkpoint(table: DiskTable, offset: int) -> None:
    table.persist(table.take_changes(table.partition_of), {0: offset, 1: offset})


def test_the_count_stays_exact_and_customers_read_from_disk_are_not_looked_up_again(tmp_path: Path) -> None:
    options = RocksDBOptions(**Settings().rocksdb_options())
    databases = {p: CountedLookups(options.open(tmp_path / str(p))) for p in (0, 1)}
    owned = {0, 1}

    def partition_of(key: bytes) -> int:
        return int(key.decode()[1:]) % 2

    table = DiskTable(databases.__getitem__, lambda: owned, partition_of, cache_size=10, kind=CustomerState)  # type: ignore[arg-type]
    keys = [f"c{i}".encode() for i in range(100)]
    for key in keys:
        table[key] = CustomerState(key.decode(), events_applied=1)
    checkpoint(table, 1)
    assert len(table) == 100 and len(table.cache) <= 10 + 64  # the rest evicted

    # Read back from disk (evicted), changed and written: no look-up whether they exist.
    for database in databases.values():
        database.lookups = 0
    for key in keys[:50]:
        state = table.get(key)
        assert state is not None
        state.events_applied += 1
        table[key] = state
    assert len(table) == 100
    checkpoint(table, 2)
    assert sum(d.lookups for d in databases.values()) == 0
    assert [table.stored(key).events_applied for key in keys[:50]] == [2] * 50  # type: ignore[union-attr]

    # New customers, erased ones (read from disk, or never read), one given up with its partition.
    del table[keys[0]]
    del table[keys[99]]
    table[b"c100"] = CustomerState("c100", events_applied=1)
    assert len(table) == 99
    checkpoint(table, 3)
    assert len(table) == 99 and table.get(keys[0]) is None and table.get(keys[99]) is None
    table.get(keys[2])
    table.drop(lambda key: partition_of(key) == 0)
    owned.discard(0)
    assert len(table) == 99 - 50  # partition 1: c1 .. c97 odd, but c99
    owned.add(0)
    state = table.get(keys[2])  # the partition back: read from disk again
    assert state is not None
    table[keys[2]] = state
    checkpoint(table, 4)
    assert len(table) == 99


def test_a_peek_reads_what_it_needs_of_a_customer_on_disk_and_keeps_none(tmp_path: Path) -> None:
    """A backfill peeks at a million customers: those on disk are read, not decoded into the
    cache (which holds the customers the stream works on)."""
    options = RocksDBOptions(**Settings().rocksdb_options())
    databases = {0: options.open(tmp_path / "0")}
    table = DiskTable(databases.__getitem__, lambda: {0}, lambda key: 0, cache_size=1, kind=CustomerState)
    for name in ("c1", "c2", "c3"):
        table[name.encode()] = CustomerState(name, events_applied=1)
    table.persist(table.take_changes(table.partition_of), {0: 1})
    cached = set(table.cache)
    on_disk = next(key for key in (b"c1", b"c2", b"c3") if key not in cached)
    assert table.peek(on_disk, lambda raw: CustomerState.from_json(raw).customer_id) == on_disk.decode()
    assert set(table.cache) == cached
    assert table.peek(next(iter(cached)), bytes) is table.cache[next(iter(cached))]
    del table[on_disk]
    assert table.peek(on_disk, bytes) is None  # erased, still on disk until the next checkpoint
    assert table.peek(b"c9", bytes) is None
