"""The suppression list on the compacted ``suppressions`` topic, followed by every worker
process into its pipeline's :class:`~processors.privacy.Suppressions` and changed through any of
them: a record per identifier digest (``schemas.privacy.Suppression``), ``lifted`` once the
suppression is lifted. Every process reads the whole list before it applies any event
(:attr:`SuppressionList.caught_up`), so a restart or a replay never rebuilds an erased person."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import faust
from pydantic import ValidationError

from processors.privacy import Suppressions, identifier_hash
from schemas.privacy import Suppression
from schemas.topics import SUPPRESSIONS
from streams.worker.compacted import CompactedTopic

log = logging.getLogger("crm360")


class SuppressionList:
    """The ``suppressions`` topic of one worker process, declared on ``app``, applied to ``suppressions``."""

    def __init__(self, app: faust.App, bootstrap: str, suppressions: Suppressions) -> None:
        self.suppressions = suppressions
        self.records = CompactedTopic(app, bootstrap, SUPPRESSIONS, self._receive)
        self.caught_up = self.records.caught_up

    async def suppress(self, identifiers: list[str], request_id: str, lifted: bool = False) -> list[str]:
        """Suppress ``identifiers`` (or lift their suppression), durable before this returns;
        returns their digests."""
        await self.records.read_all()
        now = datetime.now(tz=UTC)
        digests = [identifier_hash(name) for name in identifiers]
        for digest in digests:
            await self.send(Suppression(identifier_hash=digest, request_id=request_id, at=now, lifted=lifted))
        return digests

    async def send(self, suppression: Suppression) -> None:
        await self.records.publish(suppression.identifier_hash.encode(), suppression.model_dump_json().encode())

    def _receive(self, key: bytes | None, raw: bytes | None) -> None:
        if raw is None:
            return
        try:
            suppression = Suppression.model_validate_json(raw)
        except ValidationError as error:  # a bad record must not stop the worker
            log.error("ignoring an unreadable suppression: %s", error)
            return
        if suppression.lifted:
            self.suppressions.lift(suppression.identifier_hash)
        else:
            self.suppressions.add(suppression.identifier_hash)
