"""An in-memory stand-in for the ClickHouse sink, for pipeline unit tests (no database)."""

from __future__ import annotations

from typing import Any

from schemas.rows import DeadLetter
from sinks.erasure import RowErasure


class MemorySink:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.features: list[dict[str, Any]] = []
        self.dead: list[DeadLetter] = []
        self.membership: dict[tuple[str, str], int] = {}
        self.rows: dict[str, list[dict[str, Any]]] = {}
        #: Customers whose feature row was deleted (a profile merged into another).
        self.deleted: list[str] = []
        self.erasures: list[RowErasure] = []

    def add_membership_change(self, dimension: str, name: str, customers: int) -> None:
        self.membership[dimension, name] = self.membership.get((dimension, name), 0) + customers

    def add_row(self, table: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).append(row)

    def add_events(self, events: Any) -> None:
        self.events.extend(events)

    def queued_events(self) -> int:
        return len(self.events)

    def retract_events(self, since: int, events: Any) -> None:
        unwanted = {(e.customer_id, e.event_id) for e in events}
        self.events[since:] = [e for e in self.events[since:] if (e.customer_id, e.event_id) not in unwanted]

    def add_features(self, row: dict[str, Any], version: int, updated_ms: int, deleted: bool = False) -> None:
        if deleted:
            self.deleted.append(row["customer_id"])
        else:
            self.features.append(row)

    def add_dead_letter(self, letter: DeadLetter) -> None:
        self.dead.append(letter)

    def add_erasure(self, erasure: RowErasure) -> None:
        self.erasures.append(erasure)
