"""A worker process's running totals."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Counters:
    """Running totals shown on ``/metrics``."""

    messages: int = 0
    events_in: int = 0
    events_applied: int = 0
    duplicates_skipped: int = 0
    late_applied: int = 0
    dead_letters: int = 0
    batches: int = 0
    feature_rows: int = 0
    aging_passes: int = 0
    labels_released: int = 0
    alerts: int = 0
    #: Alerts of the control group: recorded, not published.
    alerts_held_out: int = 0
    #: Entries into and exits from audiences.
    audience_changes: int = 0
    #: Events that reached an identifier merged into another profile, sent on to it.
    events_forwarded: int = 0
    #: Profiles merged into others, and links a guard refused (``processors.identity``).
    profiles_merged: int = 0
    links_refused: int = 0
    #: Ops of the identity graph queued to send, and handled: equal (summed over the worker's
    #: processes) when the graph's work is done.
    identity_ops_out: int = 0
    identity_ops_in: int = 0
    #: Events dropped for naming an erased person's identifier, and erasures handled (one per identifier).
    suppressed: int = 0
    erasures: int = 0
    #: Customers whose feature row could not be computed (a bug): their state is kept, unscored.
    rows_failed: int = 0
    state_bytes_avg: float = 0.0
    watermarks: dict[int, float] = field(default_factory=dict)
