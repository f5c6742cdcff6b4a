"""Forgetting a person on request (``DELETE /customers/{id}``, ``crm360 forget ID``).

Given any of the person's identifiers, the request finds the others it can (the live state
this process holds, ClickHouse's ``identities``), suppresses every one (the shared
``suppressions`` topic: no process applies their events again), writes tombstones of their
records to the compacted ``customer-profiles`` topic, and sends an erasure to the owner of each
identifier's partition (``streams.worker.privacy``), which erases its state and the rows naming
the person, and erases identifiers it finds in turn. The request is complete when every
identifier suppressed for it was erased: ``privacy_log`` says so, row by row. Nothing of the
person is kept but digests of their identifiers. An operator may lift an identifier's
suppression (``DELETE /suppressions/{id}``): its events then start a new profile.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any, cast

import faust

from processors.features import CustomerState
from processors.identity import MOST_HOPS
from schemas.privacy import Erasure, PrivacyRecord
from schemas.topics import CUSTOMER_PROFILES, ERASURES, partition_for
from sinks.clickhouse import ClickHouseSink
from sinks.query import ReadOnlyPool, run_readonly
from streams.worker.faust_corrections import FlushingProducer
from streams.worker.suppressions import SuppressionList

#: How long a request waits for its erasures before it answers that they are under way.
WAIT_S = 30.0
KNOWN_SQL = (
    "SELECT identifier FROM identities FINAL WHERE profile_id IN "
    "(SELECT profile_id FROM identities FINAL WHERE identifier = {id:String}) OR profile_id = {id:String} "
    "UNION DISTINCT SELECT profile_id FROM identities FINAL WHERE identifier = {id:String}"
)
PROGRESS_SQL = (
    "SELECT action, identifier_hashes, customer_states, removed FROM privacy_log WHERE request_id = {id:String}"
)


class Forgetting:
    """Erasure requests, taken by the process that owns ClickHouse (``reads``)."""

    def __init__(
        self,
        app: faust.App,
        partitions: int,
        table: MutableMapping[bytes, CustomerState],
        suppressions: SuppressionList,
        sink: ClickHouseSink,
        reads: ReadOnlyPool,
    ) -> None:
        self.app, self.partitions, self.table = app, partitions, table
        self.suppressions, self.sink, self.reads = suppressions, sink, reads

    async def forget(self, asked: str, wait_s: float = WAIT_S) -> dict[str, Any]:
        """Erase the person ``asked`` names; the answer says what was erased where, and
        whether all of it is done (``complete``) or still under way after ``wait_s``."""
        request_id = uuid.uuid4().hex
        identifiers = await self.identifiers_of(asked)
        digests = await self.suppressions.suppress(identifiers, request_id)
        now = datetime.now(tz=UTC)
        record = PrivacyRecord(request_id=request_id, at=now, action="suppressed", identifier_hashes=digests)
        self.sink.add_row("privacy_log", record.model_dump())
        producer = cast(FlushingProducer, self.app.producer)
        for name in identifiers:
            key, partition = name.encode(), partition_for(name, self.partitions)
            erasure = Erasure(request_id=request_id, identifier=name, identifiers=identifiers, asked_at=now)
            await producer.send_records(CUSTOMER_PROFILES, partition, [(key, None)])
            await producer.send_records(ERASURES, partition, [(key, erasure.model_dump_json().encode())])
        await producer.flush()
        deadline = time.monotonic() + wait_s
        while True:
            answer = await self.progress(request_id, set(digests))
            if answer["complete"] or time.monotonic() > deadline:
                return answer
            await asyncio.sleep(0.25)

    async def lift(self, identifier: str) -> dict[str, Any]:
        """Lift the suppression of ``identifier``: its events start a new profile from now on
        (what was erased stays erased)."""
        request_id = uuid.uuid4().hex
        was = self.suppressions.suppressions.names_any([identifier])
        digests = await self.suppressions.suppress([identifier], request_id, lifted=True)
        record = PrivacyRecord(
            request_id=request_id, at=datetime.now(tz=UTC), action="lifted", identifier_hashes=digests
        )
        self.sink.add_row("privacy_log", record.model_dump())
        return {"request_id": request_id, "was_suppressed": was}

    async def identifiers_of(self, asked: str) -> list[str]:
        """``asked`` and the person's other identifiers known here: in the live state this
        process holds, and in ClickHouse's ``identities``."""
        found = [asked]
        name = asked
        for _ in range(MOST_HOPS):
            state = self.table.get(name.encode())
            identity = state.identity if state is not None else None
            if identity is None:
                break
            found += [name, *identity.identifiers]
            if identity.merged_into is None:
                break
            name = identity.merged_into
        known = await self.reads.run(lambda client: run_readonly(client, KNOWN_SQL, {"id": asked}))
        found += [row[0] for row in known.rows if row[0]]
        return list(dict.fromkeys(found))

    async def progress(self, request_id: str, digests: set[str]) -> dict[str, Any]:
        """What ``privacy_log`` says of the request: identifiers suppressed and erased, states
        and rows removed per table."""
        log = await self.reads.run(lambda client: run_readonly(client, PROGRESS_SQL, {"id": request_id}))
        suppressed, erased = set(digests), set()
        states, removed = 0, dict[str, int]()
        for action, hashes, customer_states, rows in log.rows:
            if action == "suppressed":
                suppressed |= set(hashes)
            elif action == "erased":
                erased |= set(hashes)
                states += customer_states
                for table, count in rows.items():
                    removed[table] = removed.get(table, 0) + count
        return {
            "request_id": request_id,
            "complete": suppressed <= erased,
            "identifiers": len(suppressed),
            "identifiers_erased": len(suppressed & erased),
            "customer_states": states,
            "removed": dict(sorted(removed.items())),
        }
