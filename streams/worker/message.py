"""A message the pipeline reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """An input record: where it came from and its raw value."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
