"""The pipeline's part of erasure and suppression (``DELETE /customers/{id}``, ``crm360 forget``).

An erasure reaches the owner of each of the person's identifiers as a record of the
``erasures`` topic, read in order with the input of that identifier's partition. The owner
suppresses every identifier of the request (events naming one are dropped from then on,
counted, with a dead letter that holds no payload), erases the identifier's state (a tombstone
in the changelog at the next checkpoint), and queues an erasure of every ClickHouse row naming
the person, run once the rows it wrote before are in (:class:`~sinks.erasure.RowErasure`).
Identifiers the state knows and the request did not (a link the request's author had not
seen yet) are suppressed and erased too: their suppressions and erasures wait in
:meth:`Privacy.take` for the worker to send, with a tombstone for each profile record a
producer sent of a suppressed customer to the compacted ``customer-profiles`` topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import ValidationError

from processors.privacy import Suppressions, identifier_hash
from schemas.privacy import Erasure, PrivacyRecord, Suppression
from schemas.rows import DeadLetter
from sinks.erasure import RowErasure
from streams.worker.message import Message


@dataclass
class Outgoing:
    """What the worker sends for the pipeline's privacy work: suppressions first (durable before
    anything else goes), erasures, and customers whose ``customer-profiles`` records to tombstone."""

    suppressions: list[Suppression] = field(default_factory=list)
    erasures: list[Erasure] = field(default_factory=list)
    tombstones: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.suppressions or self.erasures or self.tombstones)


if TYPE_CHECKING:
    from streams.worker.pipeline import CustomerPipeline


def suppressed_reason(count: int) -> str:
    """The reason of the dead letter of a message's events naming suppressed identifiers.

    >>> suppressed_reason(2)
    "2 event(s) naming an erased person's identifier dropped (suppressed; their content is not kept)"
    """
    return f"{count} event(s) naming an erased person's identifier dropped (suppressed; their content is not kept)"


class Privacy:
    """Suppressed identifiers and erasures of one worker process's pipeline."""

    def __init__(self, pipeline: CustomerPipeline) -> None:
        self.pipeline = pipeline
        self.suppressions = Suppressions()
        self.outgoing = Outgoing()

    def take(self) -> Outgoing:
        """What to send since the last call."""
        taken, self.outgoing = self.outgoing, Outgoing()
        return taken

    def unsent(self, taken: Outgoing) -> None:
        """Sending ``taken`` failed: the next :meth:`take` gives it again."""
        self.outgoing.suppressions[:0] = taken.suppressions
        self.outgoing.erasures[:0] = taken.erasures
        self.outgoing.tombstones[:0] = taken.tombstones

    def erase(self, message: Message, dead: list[DeadLetter], source: str) -> None:
        """Handle one record of the ``erasures`` topic (see the module's text)."""
        pipeline = self.pipeline
        try:
            erasure = Erasure.model_validate_json(message.value or b"")
        except ValidationError as error:  # its content may name a person: not kept
            pipeline.dead(dead, source, message, f"not an erasure: {error.error_count()} error(s)", "")
            return
        key = erasure.identifier.encode()
        if pipeline.partition_of(key) != message.partition:
            pipeline.dead(dead, source, message, "an erasure on the wrong partition: key it by its identifier", "")
            return
        for name in erasure.identifiers:
            self.suppressions.add(identifier_hash(name))
        state = pipeline.held(key)
        identifiers = erasure.identifiers
        if state is not None:
            identity = state.identity
            known = {state.customer_id}
            if identity is not None:
                known |= set(identity.identifiers) | ({identity.merged_into} if identity.merged_into else set())
            more = sorted(known - set(identifiers))
            if more:
                identifiers = [*identifiers, *more]
                self._spread(erasure, more, identifiers)
            pipeline.forget(key, state)
        pipeline.sink.add_erasure(
            RowErasure(erasure.request_id, identifier_hash(erasure.identifier), identifiers, int(state is not None))
        )
        pipeline.counters.erasures += 1

    def _spread(self, erasure: Erasure, more: list[str], identifiers: list[str]) -> None:
        """Suppress and erase ``more``, identifiers of the person the request did not name."""
        now = datetime.now(tz=UTC)
        hashes = [identifier_hash(name) for name in more]
        for name, digest in zip(more, hashes):
            self.suppressions.add(digest)
            self.outgoing.suppressions.append(
                Suppression(identifier_hash=digest, request_id=erasure.request_id, at=now)
            )
            self.outgoing.erasures.append(
                Erasure(request_id=erasure.request_id, identifier=name, identifiers=identifiers, asked_at=now)
            )
        record = PrivacyRecord(request_id=erasure.request_id, at=now, action="suppressed", identifier_hashes=hashes)
        self.pipeline.sink.add_row("privacy_log", record.model_dump())
