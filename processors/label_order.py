"""Matured labels put in one event-time order across partitions before the models learn them.

Every partition releases its labels as its own event time passes the end of their horizon,
some partitions ahead of others. Learnt as they come, the labels' order changes with the
timing of a run, and so do the online models: the CLV total of the same data moved from
-7% to +13% of the actual between runs. So every release reports its partition's
*frontier*, the snapshot time up to which it has released labels, and a label is held until
every partition's frontier passed it. Held labels are learnt in order of event time, ties
in a fixed pseudo-random order of customers: the order is the same whatever the timing.

A partition holds the others back only while it is worth waiting for: not when it has no
customers (its frontier reported as ``None``), nor when its frontier lags the leading one
by more than ``slack_days`` of event time (its events stopped coming), nor once nothing was
released for ``max_wait_s`` of wall time while labels waited (a worker stalled), nor beyond
``max_held`` held labels (memory: the labels of the oldest event times are learnt). Labels no
later than what was learnt already when they come (late ones) are learnt at once.

Held labels are not kept with the models: they are in the training messages, which a
restarted trainer reads again from :attr:`LabelOrder.reread_from` (:meth:`LabelOrder.hold_again`).

>>> from processors.config import DAY
>>> from processors.snapshots import Inputs, LabelledSnapshot
>>> x = Inputs(*[0.0] * 11)
>>> order = LabelOrder(partitions=2)
>>> order.add([LabelledSnapshot("a", 20 * DAY, False, x)], {0: 30 * DAY}, now=0.0, offset=1)  # 1 unheard of
[]
>>> ready = order.add([LabelledSnapshot("b", 10 * DAY, True, x)], {1: 25 * DAY}, now=1.0, offset=2)
>>> [label.customer_id for label in ready], order.learnt_through / DAY
(['b', 'a'], 25.0)
>>> order.add([LabelledSnapshot("c", 40 * DAY, True, x)], {0: 45 * DAY}, now=2.0, offset=3)  # 1 still at 25
[]
>>> order.first_held_offset
3
>>> [label.customer_id for label in order.add([], {}, now=70.0, offset=4)]  # nothing came for a minute
['c']
"""

from __future__ import annotations

import heapq
import math
import zlib

from processors.config import DAY
from processors.snapshots import LabelledSnapshot

#: A partition whose frontier lags the leading one by more than this no longer holds labels back.
SLACK_DAYS = 365.0
#: Held labels are all learnt when nothing was released for this long.
MAX_WAIT_S = 60.0
#: Beyond this many held labels (about 400 bytes each) the oldest event times are learnt.
MAX_HELD = 250_000


def learning_order(label: LabelledSnapshot) -> tuple[float, int]:
    """Where a label comes when labels are learnt: by event time, ties in a fixed
    pseudo-random order of customers."""
    return label.at, zlib.crc32(label.customer_id.encode())


class LabelOrder:
    """Labels held until every partition's frontier passed them (see the module)."""

    def __init__(
        self,
        partitions: int,
        slack_days: float = SLACK_DAYS,
        max_wait_s: float = MAX_WAIT_S,
        max_held: int = MAX_HELD,
    ) -> None:
        self.partitions = partitions
        self.slack = slack_days * DAY
        self.max_wait_s = max_wait_s
        self.max_held = max_held
        #: Per partition, the snapshot time up to which it released labels (None: no customers).
        self.frontiers: dict[int, float | None] = {}
        #: Every label at or before this event time was learnt; later ones are held.
        self.learnt_through = -math.inf
        #: Held labels by (event time, tie-break, training offset, arrival).
        self.held: list[tuple[float, int, int, int, LabelledSnapshot]] = []
        self.arrived = 0
        #: Restored from a snapshot: the offset from which its training messages hold labels.
        self.reread_from: int | None = None
        self.waiting_since: float | None = None  # wall time since which nothing was released

    def __getstate__(self) -> dict[str, object]:
        """Without the held labels (read again from their messages) and the wall clock."""
        return {**self.__dict__, "held": [], "reread_from": self.first_held_offset, "waiting_since": None}

    @property
    def first_held_offset(self) -> int | None:
        """The training offset of the first message whose labels are held (None: none are)."""
        return min((entry[2] for entry in self.held), default=None)

    def frontier(self) -> float:
        """Snapshot time up to which every partition worth waiting for released its labels."""
        reported = [f for f in self.frontiers.values() if f is not None]
        if not reported or any(p not in self.frontiers for p in range(self.partitions)):
            return -math.inf
        floor = max(reported) - self.slack
        return min(f for f in reported if f >= floor)

    def add(
        self, labels: list[LabelledSnapshot], frontiers: dict[int, float | None], now: float, offset: int
    ) -> list[LabelledSnapshot]:
        """Hold ``labels`` of the training message at ``offset``, released with the partitions'
        ``frontiers`` (those its worker reported); returns the labels due at wall time ``now``,
        in order."""
        self.frontiers.update(frontiers)
        if labels and not self.held:
            self.waiting_since = now  # the wait starts with the first held label
        for label in labels:
            self._hold(label, offset)
        return self.due(now)

    def hold_again(self, labels: list[LabelledSnapshot], offset: int) -> None:
        """After a restart, from :attr:`reread_from` on: hold those of ``labels`` (of the message
        at ``offset``) that were held, not learnt."""
        for label in labels:
            if label.at > self.learnt_through:
                self._hold(label, offset)

    def _hold(self, label: LabelledSnapshot, offset: int) -> None:
        self.arrived += 1
        heapq.heappush(self.held, (*learning_order(label), offset, self.arrived, label))

    def due(self, now: float) -> list[LabelledSnapshot]:
        """The held labels due at wall time ``now``, in order: those the frontier passed and
        late ones (all of them once nothing was released for ``max_wait_s``)."""
        held = self.held
        if self.waiting_since is None:  # restored: the wait starts now
            self.waiting_since = now
        stalled = bool(held) and now - self.waiting_since >= self.max_wait_s
        until = max(self.learnt_through, max(entry[0] for entry in held) if stalled else self.frontier())
        ready = []
        while held and (held[0][0] <= until or len(held) > self.max_held):  # over the cap: the oldest times
            until = max(until, held[0][0])
            ready.append(heapq.heappop(held)[4])
        if until > self.learnt_through:  # the frontier moved on: those still held wait from now
            self.waiting_since = now
        self.learnt_through = until
        return ready
