"""Customer states on disk, with the most recently written ones kept decoded in memory.

In memory a customer's state takes 5-10 KB of resident memory, so the population a worker can
hold is bounded by RAM, and a restart reads the whole changelog before serving. A
:class:`DiskTable` keeps every state in RocksDB (faust's ``rocksdb://`` store, one database
per partition, through ``rocksdict``) as the same JSON the changelog holds, and at most
``cache_size`` decoded :class:`CustomerState` objects in front of it, plus those changed since
the last checkpoint: the pipeline mutates states as objects and never decodes one per event.

At each checkpoint the worker sends the changed states to the changelog
(:meth:`~streams.worker.changelog.BufferedTable.take_changes`) and, once the broker acknowledged them,
writes the same bytes to each partition's database in one write batch with the changelog
offset they reach (:meth:`DiskTable.persist`), the offset faust's recovery starts from: a
restart reads only the changelog records written after the last checkpoint. Then the cache
drops the least recently written states beyond ``cache_size``.

>>> from rocksdict import Options, Rdict
>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> databases = {p: Rdict(f"{folder}/{p}", Options(raw_mode=True)) for p in (0, 1)}
>>> table = DiskTable(databases.__getitem__, lambda: {0, 1}, partition_of=lambda key: key[-1] % 2, cache_size=1,
...                   kind=CustomerState)
>>> table[b"c1"], table[b"c2"] = CustomerState("c1"), CustomerState("c2")
>>> changes = table.take_changes(table.partition_of)
>>> table.persist(changes, {0: 10, 1: 11})          # the changelog offsets the records reached
>>> len(table.cache), table.get(b"c1").customer_id, databases[1][OFFSET_KEY], len(table)
(1, 'c1', b'11', 2)
>>> sorted(key for _, key, _ in table.customers({0, 1}))
[b'c1', b'c2']

The offset is where faust's store keeps it:

>>> from faust.stores.rocksdb import Store
>>> Store.offset_key == OFFSET_KEY
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import TypeVar, cast

from rocksdict import Rdict, WriteBatch

from processors.features import CustomerState
from streams.worker.changelog import BufferedTable, Record, V

#: Where faust's RocksDB store keeps a partition's changelog offset (inside its database).
#: Spelled out: the pipeline imports this module and stays free of faust.
OFFSET_KEY = b"__faust\0offset__"
#: Where a partition's database keeps the newest event time of its customers: what a worker new
#: to the partition starts its watermark from, without reading every customer.
NEWEST_KEY = b"__crm360\0newest__"
#: Where a partition's database keeps how many customers it holds (RocksDB only estimates it).
COUNT_KEY = b"__crm360\0customers__"
#: What a pass over many customers reads of their stored values (:meth:`DiskTable.peek`).
T = TypeVar("T")
#: Keys of a partition's database that are no customer.
RESERVED_KEYS = frozenset({OFFSET_KEY, NEWEST_KEY, COUNT_KEY})


def counted(database: Rdict) -> int:
    """How many customers ``database`` holds; counted once, and kept, in a database written
    before the count was kept."""
    raw = database.get(COUNT_KEY)
    if raw is None:
        keys = database.keys()  # an Rdict has no __iter__
        raw = database[COUNT_KEY] = str(sum(1 for key in keys if key not in RESERVED_KEYS)).encode()
    return int(raw)


def with_newest(database: Rdict, newest: float | None) -> float | None:
    """The newer of ``newest`` and the newest event time ``database`` keeps (None: neither)."""
    raw = database.get(NEWEST_KEY)
    kept = None if raw is None else float(raw)
    if kept is None or newest is None:
        return newest if kept is None else kept
    return max(kept, newest)


class DiskTable(BufferedTable[V]):
    """Customers' values of ``kind`` (their states, or their memberships) in per-partition
    RocksDB databases (``database(partition)``) of which ``owned()`` are this process's, the
    last ``cache_size`` written kept decoded."""

    def __init__(
        self,
        database: Callable[[int], Rdict],
        owned: Callable[[], Iterable[int]],
        partition_of: Callable[[bytes], int],
        cache_size: int,
        kind: type[V],
    ) -> None:
        super().__init__({})
        self.kind = kind
        #: Decoded states, least recently written first; holds every changed one until persisted.
        self.cache = self.store
        self.database, self.owned, self.partition_of, self.cache_size = database, owned, partition_of, cache_size
        #: Evict when the cache outgrows its size by this much (a walk per eviction, not per read).
        self._slack = max(64, cache_size // 8)
        #: Customers deleted (erased) since the last :meth:`persist`: still on disk until then.
        self.deleted: set[bytes] = set()
        #: Cached customers known to be in their database (read from it, or written by
        #: :meth:`persist`): counting them needs no look-up, which costs about as much as the write.
        self._on_disk: set[bytes] = set()

    def get(self, key: bytes, default: V | None = None) -> V | None:  # type: ignore[override]
        state = self.cache.get(key)
        if state is None:
            raw = self._on_disk_of(key)
            if raw is None:
                return default
            state = self.cache[key] = self.kind.from_json(raw)
            self._on_disk.add(key)
            if len(self.cache) > self.cache_size + self._slack:
                self._evict()
        return state

    def peek(self, key: bytes, read: Callable[[bytes], T]) -> V | T | None:
        """The customer's value when cached, else what ``read`` makes of its stored bytes, not
        cached (a pass over many customers that needs a little of each)."""
        state = self.cache.get(key)
        if state is not None:
            return state
        raw = self._on_disk_of(key)
        return None if raw is None else read(raw)

    def stored(self, key: bytes) -> V | None:
        """The customer's value as of the last :meth:`persist` (None: none then), decoded afresh."""
        raw = self._persisted(key)
        return None if raw is None else self.kind.from_json(raw)

    def _on_disk_of(self, key: bytes) -> bytes | None:
        """The customer's stored bytes, unless deleted since the last :meth:`persist`."""
        return None if key in self.deleted else self._persisted(key)

    def _persisted(self, key: bytes) -> bytes | None:
        """The customer's bytes as of the last :meth:`persist`."""
        partition = self.partition_of(key)
        # Not another process's partition: this one's database of it may be from long ago.
        return self.database(partition).get(key) if partition in self.owned() else None

    def __getitem__(self, key: bytes) -> V:
        state = self.get(key)
        if state is None:
            raise KeyError(key)
        return state

    def __setitem__(self, key: bytes, state: V) -> None:
        self.cache.pop(key, None)  # to the end: least recently written first
        self.deleted.discard(key)
        super().__setitem__(key, state)

    def __delitem__(self, key: bytes) -> None:
        """Delete the customer (erased): gone at once, from disk at the next :meth:`persist`."""
        self.cache.pop(key, None)
        self.deleted.add(key)
        self._changed[key] = None

    def __iter__(self) -> Iterator[bytes]:
        return (key for _, key, _ in self.customers(set(self.owned()), decode=False))

    def __len__(self) -> int:
        """The customers of the owned partitions: those on disk, and those new since the last
        :meth:`persist`."""
        owned = set(self.owned())
        fresh = 0
        for key in self._changed:
            partition = self.partition_of(key)
            if partition in owned:
                fresh += (key not in self.deleted) - self._in_database(key, partition)
        return sum(counted(self.database(p)) for p in owned) + fresh

    def customers(self, partitions: set[int], decode: bool = True) -> Iterator[tuple[int, bytes, V | None]]:
        """Every customer of ``partitions`` (partition, key, state), partition by partition: the
        cached states first, then the others from disk, decoded one at a time and not cached
        (a pass over every customer holds one state at a time; it must not change them)."""
        cached: dict[int, list[tuple[bytes, V]]] = {p: [] for p in partitions}
        for key, state in self.cache.items():
            cached.get(self.partition_of(key), []).append((key, state))
        for partition in sorted(partitions):
            for key, state in cached[partition]:
                yield partition, key, state
            # A database in raw mode: its keys are bytes (rocksdict's stubs type every mode's keys).
            for key, raw in cast(Iterator[tuple[bytes, bytes]], self.database(partition).items()):
                if key not in RESERVED_KEYS and key not in self.cache and key not in self.deleted:
                    yield partition, key, self.kind.from_json(raw) if decode else None

    def take_changes(
        self, partition_of: Callable[[bytes], int], only: Iterable[bytes] | None = None
    ) -> dict[int, list[Record]]:
        """The changed states' records (see :class:`BufferedTable`); they stay marked changed
        (not evictable, and sent again by the next call) until :meth:`persist` wrote them."""
        changed = dict(self._changed)
        records = super().take_changes(partition_of, only)
        self._changed = changed
        return records

    def newest(self, partition: int) -> float | None:
        """The newest event time of the partition's customers on disk (None: none, or a database
        written before it was kept)."""
        return with_newest(self.database(partition), None)

    def persist(self, records: dict[int, list[Record]], offsets: dict[int, int]) -> None:
        """Write the ``records`` :meth:`take_changes` gave, acknowledged by the changelog up to
        ``offsets`` (per partition, the offset of its last record), one write batch per
        partition, with the newest event time of the partition's customers; then evict what the
        cache holds beyond its size."""
        for partition, partition_records in records.items():
            database = self.database(partition)
            batch = WriteBatch(raw_mode=True)
            newest: float | None = None
            customers = counted(database)
            for key, value in partition_records:
                if value is None:  # erased
                    customers -= self._in_database(key, partition)
                    batch.delete(key)
                    self.deleted.discard(key)
                else:
                    customers += not self._in_database(key, partition)
                    batch.put(key, value)
                self._changed.pop(key, None)
                state = self.cache.get(key)
                if isinstance(state, CustomerState) and state.newest_event_at is not None:
                    newest = state.newest_event_at if newest is None else max(newest, state.newest_event_at)
            batch.put(OFFSET_KEY, str(offsets[partition]).encode())
            batch.put(COUNT_KEY, str(customers).encode())
            kept = with_newest(database, newest)
            if kept is not None:
                batch.put(NEWEST_KEY, repr(kept).encode())
            database.write(batch)
            for key, value in partition_records:
                if value is None:
                    self._on_disk.discard(key)
                elif key in self.cache:
                    self._on_disk.add(key)
        self._evict()

    def _in_database(self, key: bytes, partition: int) -> bool:
        return key in self._on_disk or key in self.database(partition)

    def drop(self, unwanted: Callable[[bytes], bool]) -> int:
        """Forget the cached states whose key is ``unwanted`` (their partitions belong to another
        process now; their changes were sent to the changelog on revocation). Their databases
        stay as they are: should a partition come back, recovery reads its changelog from the
        offset its database reached."""
        keys = [key for key in self.cache if unwanted(key)]
        for key in keys:
            del self.cache[key]
            self._changed.pop(key, None)
            self._on_disk.discard(key)
        self.deleted = {key for key in self.deleted if not unwanted(key)}
        return len(keys)

    def _evict(self) -> None:
        """Drop the least recently written unchanged states beyond ``cache_size``."""
        excess = len(self.cache) - self.cache_size
        if excess <= 0:
            return
        for key in list(islice((key for key in self.cache if key not in self._changed), excess)):
            del self.cache[key]
            self._on_disk.discard(key)
