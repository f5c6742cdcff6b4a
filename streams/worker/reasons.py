"""Why the pipeline dead-letters a valid event."""

from __future__ import annotations

from schemas.events import BaseEvent


def processing_failed(error: Exception, index: int) -> str:
    """Why an event that met a bug is dead-lettered.

    >>> processing_failed(ZeroDivisionError("division by zero"), 2)
    'processing failed on valid event 3 of the message: ZeroDivisionError: division by zero (a bug: please report it)'
    """
    return (
        f"processing failed on valid event {index + 1} of the message: {type(error).__name__}: "
        f"{str(error)[:300]} (a bug: please report it)"
    )


def conflict(event: BaseEvent) -> str:
    """Why an event whose id was applied with other content is dead-lettered.

    >>> from schemas.events import parse_event
    >>> conflict(parse_event({"type": "visit", "event_id": "v1", "customer_id": "c1", "ts": 0, "channel": "web",
    ...                       "session_id": "s1"}))[:89]
    "conflict: visit event_id 'v1' of customer 'c1' was applied before with other content; the"
    """
    kind = event.type
    return (
        f"conflict: {kind} event_id {event.event_id!r} of customer {event.customer_id!r} "
        "was applied before with other content; the first stands (an event id names one event: "
        "send a new or corrected event with a new id)"
    )
