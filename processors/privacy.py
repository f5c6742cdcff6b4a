"""Suppressed identifiers: an erased person's events never rebuild their profile.

The list holds SHA-256 digests of identifiers as one string (``kind:value``; a
``customer_id`` bare), so it can be shared and kept without holding the identifiers.

>>> suppressions = Suppressions()
>>> suppressions.add(identifier_hash("anonymous_id:d1"))
>>> suppressions.names_any(["c1", "anonymous_id:d1"]), suppressions.names_any(["c1"])
(True, False)
>>> identifier_hash("c1")[:12]
'd0f631ca1ddb'
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from schemas.events import BaseEvent


def identifier_hash(name: str) -> str:
    """The SHA-256 digest of an identifier, in hexadecimal."""
    return hashlib.sha256(name.encode()).hexdigest()


class Suppressions:
    """The digests of suppressed identifiers; empty, a check costs one comparison."""

    def __init__(self) -> None:
        self.hashes: set[str] = set()

    def __len__(self) -> int:
        return len(self.hashes)

    def add(self, digest: str) -> None:
        self.hashes.add(digest)

    def lift(self, digest: str) -> None:
        self.hashes.discard(digest)

    def names_any(self, identifiers: Iterable[str]) -> bool:
        """Whether any of ``identifiers`` is suppressed."""
        hashes = self.hashes
        return bool(hashes) and any(identifier_hash(name) in hashes for name in identifiers)

    def suppresses(self, event: BaseEvent) -> bool:
        """Whether ``event`` names a suppressed identifier (its ``customer_id`` or another)."""
        return bool(self.hashes) and self.names_any([event.customer_id, *event.others])
