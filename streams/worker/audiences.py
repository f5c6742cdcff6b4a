"""Audience definitions on the compacted ``audiences`` topic: followed by every worker process
into its pipeline, and changed through any of them (``/audiences``, ``crm360 audience``).

A definition is a record keyed by the audience's name; a change is a new record with the next
version; a deleted audience keeps a record marked ``deleted`` (so that a process that starts
later still lets its members leave). Every process reads the topic from its beginning before
it checks any customer (:attr:`AudienceDefinitions.caught_up`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import faust
from pydantic import ValidationError

from processors.audiences import Audiences
from processors.conditions import ConditionError, parse_condition
from schemas.audiences import Audience
from schemas.topics import AUDIENCES
from streams.worker.compacted import CompactedTopic

log = logging.getLogger("crm360")


class AudienceDefinitions:
    """The ``audiences`` topic of one worker process, declared on ``app``, applied to ``audiences``."""

    def __init__(self, app: faust.App, bootstrap: str, audiences: Audiences) -> None:
        self.audiences = audiences
        #: Every definition read, deleted ones too, by name.
        self.known: dict[str, Audience] = {}
        #: The webhook of each audience that has one (``streams.worker.destinations``).
        self.webhooks: dict[str, str] = {}
        self.definitions = CompactedTopic(app, bootstrap, AUDIENCES, self._receive)
        self.caught_up = self.definitions.caught_up

    def listed(self) -> list[Audience]:
        """The audiences that exist, by name."""
        return sorted((a for a in self.known.values() if not a.deleted), key=lambda a: a.name)

    def get(self, name: str) -> Audience | None:
        audience = self.known.get(name)
        return audience if audience is not None and not audience.deleted else None

    async def save(self, audience: Audience) -> Audience:
        """Create or change ``audience`` (its condition checked first: :class:`ConditionError`);
        returns it with its new version once the topic has it."""
        parse_condition(audience.condition)
        await self.definitions.read_all()
        before = self.known.get(audience.name)
        same = before is not None and not before.deleted and _definition(before) == _definition(audience)
        if same:
            assert before is not None
            return before
        saved = audience.model_copy(
            update={
                "version": (before.version if before else 0) + 1,
                "updated_at": datetime.now(tz=UTC),
                "deleted": False,
            }
        )
        await self._publish(saved)
        return saved

    async def delete(self, name: str) -> Audience | None:
        """Delete the audience ``name`` (its members leave); None if there is none."""
        await self.definitions.read_all()
        before = self.get(name)
        if before is None:
            return None
        gone = before.model_copy(
            update={"version": before.version + 1, "updated_at": datetime.now(tz=UTC), "deleted": True}
        )
        await self._publish(gone)
        return gone

    async def _publish(self, audience: Audience) -> None:
        await self.definitions.publish(audience.name.encode(), audience.model_dump_json().encode())

    def _receive(self, key: bytes | None, raw: bytes | None) -> None:
        """Apply one definition, unless this process has a newer one of it already."""
        if raw is None:
            return
        try:
            audience = Audience.model_validate_json(raw)
            before = self.known.get(audience.name)
            if before is not None and before.version >= audience.version:
                return
            if audience.deleted:
                self.audiences.delete(audience.name)
            else:
                self.audiences.define(audience)
        except (ValidationError, ConditionError) as error:  # a bad record must not stop the worker
            log.error("ignoring an unreadable audience definition: %s", error)
            return
        self.known[audience.name] = audience
        self.webhooks = {a.name: a.webhook for a in self.known.values() if a.webhook and not a.deleted}


def _definition(audience: Audience) -> dict[str, Any]:
    """What a marketer sets (a save of the same is no change)."""
    return audience.model_dump(include={"condition", "description", "min_stay_days", "purpose", "webhook"})
