"""The identity graph's part of a worker process's pipeline.

An event that reaches an identifier merged into another profile is sent on to it, an event that
names other identifiers links them, and the graph's ops (read from ``identity-ops`` with the
input) are handled here (``processors.identity_graph``). What they send waits in
:attr:`Identities.outgoing` for the worker, which makes the records they changed durable
first (``streams.worker.app``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Protocol

from processors.audiences import NONE, Audiences, Change, Contact, Membership
from processors.config import FeatureConfig, IdentityConfig, ModelConfig
from processors.features import CustomerState, profile
from processors.identity_graph import Decision, IdentityGraph, Op
from schemas.events import BaseEvent, parse_event_json
from schemas.rows import DeadLetter, IdentityMerge
from sinks.clickhouse import ClickHouseSink
from streams.worker.counters import Counters
from streams.worker.message import Message
from streams.worker.privacy import Privacy
from streams.worker.reasons import conflict, processing_failed

log = logging.getLogger(__name__)

#: Links and unions sent lately that events naming the same pair do not send again, until
#: their merge makes them moot (a linking event repeats while its merge is under way). The
#: first one reaches its target: offsets are committed only once their events' ops are sent,
#: and a restart, reading those events again, sends theirs again.
RECENT_LINKS = 100_000
#: The kinds of op that :data:`RECENT_LINKS` keeps from repeating.
LINKS = ("link", "union")
#: The version of a profile's deleted row in ``customer_features``: the highest there is.
DELETED_VERSION = (1 << 64) - 1


class Pipeline(Protocol):
    """What the identity part needs of its pipeline (``streams.worker.pipeline``)."""

    config: FeatureConfig
    model_config: ModelConfig
    counters: Counters
    watermarks: dict[int, float]
    sink: ClickHouseSink
    clock: Callable[[], float]
    audiences: Audiences
    memberships: MutableMapping[bytes, Membership]
    privacy: Privacy

    def partition_of(self, key: bytes) -> int: ...

    def held(self, key: bytes) -> CustomerState | None: ...

    def touch(self, key: bytes, state: CustomerState, home: int) -> None: ...

    def apply(self, state: CustomerState, event: BaseEvent, ts: float, home: int) -> str: ...

    def dead(self, dead: list[DeadLetter], source: str, message: Message, reason: str, payload: str) -> None: ...

    def record_audience_changes(
        self, contact: Contact, membership: Membership, row: dict, changes: list[Change], version: int, now_ms: int
    ) -> None: ...

    def keep_membership(self, key: bytes, membership: Membership) -> None: ...


class Identities:
    """Links, forwarded events and the graph's ops of one pipeline, over its customer table."""

    def __init__(self, pipeline: Pipeline, config: IdentityConfig) -> None:
        self.pipeline = pipeline
        self.graph = IdentityGraph(_Records(pipeline), config, pipeline.config, pipeline.model_config)
        #: Ops to send, and the identifiers whose records handled an op since the last
        #: :meth:`take` (durable before the ops go).
        self.outgoing: list[Op] = []
        self._handled: dict[str, None] = {}
        self._recent_links: dict[tuple[str, str, str], None] = {}
        #: Merges and refusals decided, for the ``identity-merges`` topic.
        self.merges: list[IdentityMerge] = []

    def link(self, state: CustomerState, event: BaseEvent, ts: float) -> None:
        """The event applied to ``state`` (held by the batch) names other identifiers: join them
        to its profile."""
        key = state.customer_id
        ops = self.graph.link(key, event.others, ts)
        if ops:  # the record is durable before they go (a link that sends nothing needs no early write)
            self._handled[key] = None
        self._send_links(ops)

    def forward(self, state: CustomerState, event: BaseEvent, ts: float) -> None:
        """An event of an identifier merged into another profile: on to the profile, with
        links to the other identifiers it names."""
        counters = self.pipeline.counters
        onward = self.graph.follow(state, event)
        if onward is not None:
            self._send([Op("event", onward, payload=event.model_dump_json())])
            counters.events_forwarded += 1
        else:  # the state it keeps for its profile holds it: it reaches the profile there
            counters.duplicates_skipped += 1
        went = state.identity.merged_into  # type: ignore[union-attr]
        self._send_links([Op("link", went, other=other, at=ts) for other in event.others])  # type: ignore[arg-type]

    def handle(self, message: Message, dead: list[DeadLetter], source: str, horizon: float) -> None:
        """Handle the graph's ops of one record, in order (``Op.pack``)."""
        try:
            ops = Op.unpack(message.value or b"")
        except (ValueError, TypeError, KeyError) as error:
            payload = (message.value or b"").decode(errors="replace")
            self.pipeline.dead(dead, source, message, f"not identity ops: {type(error).__name__}: {error}", payload)
            return
        for index, op in enumerate(ops):
            self._handle(op, index, message, dead, source)

    def _handle(self, op: Op, index: int, message: Message, dead: list[DeadLetter], source: str) -> None:
        """Handle one op (the record's ``index``-th): its events applied, its decisions
        recorded, a profile that merged into another taken out of ``customer_features``."""
        pipeline = self.pipeline
        pipeline.counters.identity_ops_in += 1
        if pipeline.privacy.suppressions.names_any((op.target, op.other, *op.identifiers)):
            pipeline.counters.suppressed += 1  # an erased person's: it must not rebuild them
            return
        key = op.target.encode()
        if pipeline.partition_of(key) != message.partition:
            pipeline.dead(dead, source, message, f"identity op for {op.target!r} on the wrong partition", op.payload)
            return
        before = pipeline.held(key)
        was_profile = before is not None and before.is_profile  # before the op changes it
        try:
            handled = self.graph.handle(op)
        except Exception as error:  # a bug one op meets must not fail the batch
            log.exception("identity op %s for %r failed", op.kind, op.target)
            pipeline.dead(dead, source, message, processing_failed(error, index), op.to_json().decode())
            return
        self._handled[op.target] = None
        self._send(handled.ops)
        after = pipeline.held(key)
        if was_profile and after is not None and not after.is_profile:
            self._delete_profile(after, message.partition)
        watermarks = pipeline.watermarks
        newest = after.newest_event_at if after is not None else None
        if newest is not None and newest > watermarks.get(message.partition, float("-inf")):
            watermarks[message.partition] = newest  # a profile absorbed here brings its event time
        for profile_id, raw in handled.events:
            self._apply_forwarded(profile_id, raw, message, dead, source)
        for decision in handled.decisions:
            self._record(decision)

    def take(self) -> tuple[list[Op], list[str]]:
        """The ops to send, and the identifiers whose records handled ops since the last call:
        the worker makes their records durable before it sends the ops, then calls
        :meth:`sent` with them."""
        ops, self.outgoing = self.outgoing, []
        handled, self._handled = list(self._handled), {}
        return ops, handled

    def sent(self, handled: list[str]) -> None:
        for key in handled:
            self.graph.sent(key)

    def unsent(self, ops: list[Op], handled: list[str]) -> None:
        """Sending them failed: they go first with the next send."""
        self.outgoing[:0] = ops
        self._handled = dict.fromkeys(handled) | self._handled

    def _send_links(self, ops: list[Op]) -> None:
        """``ops`` (of links an event asks for) to send, but links and unions sent lately."""
        recent = self._recent_links
        new = [op for op in ops if op.kind not in LINKS or (op.kind, op.target, op.other) not in recent]
        recent.update(((op.kind, op.target, op.other), None) for op in new if op.kind in LINKS)
        while len(recent) > RECENT_LINKS:
            del recent[next(iter(recent))]
        self._send(new)

    def _send(self, ops: list[Op]) -> None:
        """Queue ``ops`` for the worker to send (:meth:`take`)."""
        self.outgoing += ops
        self.pipeline.counters.identity_ops_out += len(ops)

    def _apply_forwarded(
        self, profile_id: str, raw: str, message: Message, dead: list[DeadLetter], source: str
    ) -> None:
        """An event sent on from an identifier merged into ``profile_id`` (counted, and its raw
        row written, where it was read)."""
        pipeline, counters = self.pipeline, self.pipeline.counters
        event = parse_event_json(raw.encode())
        key, home, ts = profile_id.encode(), message.partition, event.epoch
        state = pipeline.held(key) or CustomerState(profile_id)
        try:
            seen = pipeline.apply(state, event, ts, home)
        except Exception as error:  # noqa: BLE001 - a bug one event meets must not fail the others
            pipeline.dead(dead, source, message, processing_failed(error, 0), raw)
            counters.events_in -= 1  # taken in where it was read, and left out here
            return
        if seen == "conflict":
            pipeline.dead(dead, source, message, conflict(event), raw)
            counters.events_in -= 1
            return
        pipeline.touch(key, state, home)
        if ts > pipeline.watermarks.get(home, float("-inf")):
            pipeline.watermarks[home] = ts
        if seen == "duplicate":
            counters.duplicates_skipped += 1
            return
        counters.events_applied += 1
        counters.late_applied += seen == "late"

    def _delete_profile(self, state: CustomerState, home: int) -> None:
        """A profile merged into another leaves ``customer_features`` (a deleted row, above
        every version it had), the groups it counted in and its audiences."""
        pipeline, sink = self.pipeline, self.pipeline.sink
        if state.events_applied:
            watermark = pipeline.watermarks.get(home, state.newest_event_at or 0.0)
            row = profile(state, watermark, pipeline.config)
            # Above any version it had or will be given (a merged identifier never becomes a
            # profile again), whatever the watermark was then.
            now_ms = int(pipeline.clock() * 1000)
            sink.add_features(row, DELETED_VERSION, now_ms, deleted=True)
            key = state.customer_id.encode()
            membership = pipeline.memberships.get(key, NONE)
            if membership.audiences:
                changes = pipeline.audiences.leave_all(membership)
                pipeline.record_audience_changes(Contact.of(state), NONE, row, changes, DELETED_VERSION, now_ms)
                pipeline.keep_membership(key, NONE)
        if state.rfm_segment is not None:  # it counted in a segment and an RFM group
            sink.add_membership_change("segment", "unscored" if state.segment is None else str(state.segment), -1)
            sink.add_membership_change("rfm_segment", state.rfm_segment, -1)

    def _record(self, decision: Decision) -> None:
        """A merge or a refused link, for ``identity_merges`` and its topic (and ``identities``)."""
        pipeline, sink = self.pipeline, self.pipeline.sink
        now = datetime.fromtimestamp(pipeline.clock(), tz=UTC)
        merge = IdentityMerge(
            decided_at=now,
            linked_at=datetime.fromtimestamp(decision.at, tz=UTC),
            survivor=decision.survivor,
            absorbed=decision.absorbed,
            identifiers=list(decision.identifiers),
            outcome=decision.outcome,
            rule=decision.rule,
        )
        sink.add_row("identity_merges", dict(merge))
        self.merges.append(merge)
        merged = decision.outcome == "merged"
        for name in (decision.survivor, *decision.identifiers) if merged else ():
            sink.add_row("identities", {"identifier": name, "profile_id": decision.survivor, "updated_at": now})
        if merged:
            pipeline.counters.profiles_merged += 1
        else:
            pipeline.counters.links_refused += 1

    def take_merges(self) -> list[IdentityMerge]:
        """The merges and refusals decided since the last call, to publish."""
        merges, self.merges = self.merges, []
        return merges


class _Records:
    """The identity graph's records: the customer table, as the batch under way left it."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def get(self, key: str) -> CustomerState | None:
        return self.pipeline.held(key.encode())

    def put(self, key: str, state: CustomerState) -> None:
        raw = key.encode()
        self.pipeline.touch(raw, state, self.pipeline.partition_of(raw))
