"""The customer table (and the table of their audience memberships) as the pipeline writes it:
changes are sent to the changelog in bulk.

A write to a Faust table sends one changelog record through Faust's per-message path, which
at the worker's rates costs a large share of its time (docs/performance.md).
The pipeline writes to a :class:`BufferedTable` instead. It keeps states in the Faust table's
local store and remembers which customers changed; after each batch the worker takes their
records (:meth:`BufferedTable.take_changes`) and sends one record batch per partition through
the app's producer, whose flush before every offset commit waits for them. Recovery reads
these records like any others: the key is the customer id, the value the state's JSON.

>>> from processors.features import CustomerState
>>> table = BufferedTable({})
>>> table[b"c1"] = CustomerState("c1")
>>> table[b"c1"].customer_id, len(table)
('c1', 1)
>>> [(partition, key) for partition, records in table.take_changes(lambda key: 3).items() for key, _ in records]
[(3, b'c1')]
>>> table.take_changes(lambda key: 3)   # taken: nothing changed since
{}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Protocol, Self, TypeVar

#: A changelog record: customer id, value JSON (None: the customer was deleted).
Record = tuple[bytes, bytes | None]


class Stored(Protocol):
    """A value of a table: a customer's state, or their memberships."""

    def to_json(self) -> bytes: ...

    @classmethod
    def from_json(cls, raw: bytes) -> Self: ...


V = TypeVar("V", bound=Stored)


class BufferedTable(MutableMapping[bytes, V]):
    """Customers' values by key in ``store``, remembering the keys written since the last
    :meth:`take_changes`."""

    def __init__(self, store: MutableMapping[bytes, V]) -> None:
        self.store = store
        self._changed: dict[bytes, None] = {}  # insertion-ordered set

    def __getitem__(self, key: bytes) -> V:
        return self.store[key]

    def get(self, key: bytes, default: V | None = None) -> V | None:  # type: ignore[override]
        return self.store.get(key, default)

    def __setitem__(self, key: bytes, state: V) -> None:
        self.store[key] = state
        self._changed[key] = None

    def __delitem__(self, key: bytes) -> None:
        del self.store[key]
        self._changed[key] = None

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.store)

    def __len__(self) -> int:
        return len(self.store)

    def drop(self, unwanted: Callable[[bytes], bool]) -> int:
        """Remove the customers whose key is ``unwanted`` from the store, sending no changelog
        records, not even of changes not yet taken (their partitions belong to another process
        now); returns how many.

        >>> from processors.features import CustomerState
        >>> table = BufferedTable({b"a": CustomerState("a"), b"b": CustomerState("b")})
        >>> table[b"a"] = CustomerState("a")
        >>> table.drop(lambda key: key == b"a"), list(table), table.take_changes(len)
        (1, [b'b'], {})
        """
        keys = [key for key in self.store if unwanted(key)]
        for key in keys:
            del self.store[key]
            self._changed.pop(key, None)
        return len(keys)

    def changed(self) -> Iterator[bytes]:
        """The keys written since the last :meth:`take_changes`."""
        return iter(self._changed)

    def changes(self) -> int:
        """How many keys were written since the last :meth:`take_changes`."""
        return len(self._changed)

    def in_memory(self) -> int:
        """How many states are decoded in memory (all of them here; on disk, the cache)."""
        return len(self.store)

    def take_changes(
        self, partition_of: Callable[[bytes], int], only: Iterable[bytes] | None = None
    ) -> dict[int, list[Record]]:
        """The changelog records of every key written since the last call (or of those of
        ``only`` that were), by partition: the state as it is now, serialized once however
        often it was written.

        >>> from processors.features import CustomerState
        >>> table = BufferedTable({})
        >>> table[b"a"], table[b"b"] = CustomerState("a"), CustomerState("b")
        >>> [key for _, records in table.take_changes(lambda key: 0, only=[b"b", b"z"]).items() for key, _ in records]
        [b'b']
        >>> list(table.changed())   # the others wait for the next call
        [b'a']
        """
        if only is None:
            changed, self._changed = self._changed, {}
        else:
            changed = {key: None for key in only if self._changed.pop(key, False) is None}
        by_partition: dict[int, list[Record]] = {}
        for key in changed:
            state = self.store.get(key)
            record = (key, None if state is None else state.to_json())
            by_partition.setdefault(partition_of(key), []).append(record)
        return by_partition
