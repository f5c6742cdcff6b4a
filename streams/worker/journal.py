"""The input messages applied since the last checkpoint, to rebuild a customer without one event.

A bug met by one event must not fail its batch, nor leave its customer half changed. The
pipeline then rebuilds that customer: from its state as of the last checkpoint (what a restart
would restore), it applies again the customer's events read since, in the order they came,
except the one that failed (:meth:`~streams.worker.pipeline.CustomerPipeline.ingest`). The journal
keeps those messages, per customer partition, as the raw bytes the broker gave, with the
wall-clock horizon each was judged by: the rebuild decides what it decided. The worker
clears it at each checkpoint (the next restart reads the same messages again from the
committed offsets); it holds at most the input of one checkpoint interval.

A position is (entry, index): the entry's number in its partition's journal, the index of the
event among the message's valid ones.

>>> journal = Journal()
>>> journal.add(3, "purchases", 40, b'{"type": "visit", "event_id": "v1", "customer_id": "c1", "ts": 5, '
...             b'"channel": "web", "session_id": "s1"}', horizon=1e10)
0
>>> [(position, event.event_id) for position, event, _ in journal.events(3, "c1", until=(1, 0))]
[((0, 0), 'v1')]
>>> journal.where(3, (0, 0))
('purchases', 40)
>>> journal.clear(); list(journal.events(3, "c1", until=(1, 0)))
[]
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator

from schemas.envelope import decode_message
from schemas.events import BaseEvent

#: An event's place in the journal: (entry, index among the message's valid events).
Position = tuple[int, int]


class Journal:
    """Per customer partition: (topic, offset, raw value, horizon) of each message, in order."""

    def __init__(self) -> None:
        self._entries: dict[int, list[tuple[str, int, bytes | None, float]]] = {}

    def add(self, partition: int, topic: str, offset: int, value: bytes | None, horizon: float) -> int:
        """Keep a message about to be applied; returns its entry number."""
        entries = self._entries.setdefault(partition, [])
        entries.append((topic, offset, value, horizon))
        return len(entries) - 1

    def events(
        self, partition: int, customer_id: str, until: Position, skip: Collection[Position] = ()
    ) -> Iterator[tuple[Position, BaseEvent, float]]:
        """The customer's events (position, event, horizon) before ``until``, in order,
        except those at ``skip``."""
        for entry, (_, _, value, horizon) in enumerate(self._entries.get(partition, [])[: until[0] + 1]):
            events, _ = decode_message(value)
            for index, event in enumerate(events):
                position = (entry, index)
                if position >= until:
                    return
                if event.customer_id == customer_id and position not in skip:
                    yield position, event, horizon

    def where(self, partition: int, position: Position) -> tuple[str, int]:
        """The topic and offset of the message holding ``position``."""
        topic, offset, _, _ = self._entries[partition][position[0]]
        return topic, offset

    def clear(self, partitions: Iterable[int] | None = None) -> None:
        """Forget every message (a checkpoint), or those of ``partitions`` (given up)."""
        if partitions is None:
            self._entries.clear()
        for partition in partitions or ():
            self._entries.pop(partition, None)
