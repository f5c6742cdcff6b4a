"""When a customer's churn risk is worth an alert: threshold, hysteresis, cooldown, tiers.

An alert fires when the churn probability reaches ``alert_threshold`` while the customer
is armed; it then disarms until the probability falls below ``alert_rearm_below``, and no
second alert comes within ``alert_cooldown_days`` of event time. Optionally only chosen
value tiers alert.

Examples
--------
>>> from processors.features import CustomerState
>>> config = ModelConfig(alert_threshold=0.7, alert_rearm_below=0.5, alert_cooldown_days=30)
>>> state = CustomerState("c1")
>>> [should_alert(state, p, "gold", day * DAY, config) for day, p in
...     [(0, 0.72), (1, 0.9), (2, 0.6), (3, 0.75), (4, 0.4), (5, 0.8), (40, 0.45), (41, 0.8)]]
[True, False, False, False, False, False, False, True]
"""

from __future__ import annotations

import hashlib

from processors.config import DAY, ModelConfig
from processors.features import CustomerState


def in_control_group(customer_id: str, share: float) -> bool:
    """Whether the customer's alerts are held out: the first 8 bytes of the SHA-256 of their id,
    as a fraction of 2**64, below ``share``; the same answer on every worker, run and restart.

    >>> in_control_group("c1", 0.0), in_control_group("c1", 1.0)
    (False, True)
    >>> sum(in_control_group(f"c{n}", 0.2) for n in range(10_000))
    1958
    """
    digest = hashlib.sha256(customer_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def should_alert(state: CustomerState, probability: float, value_tier: str, at: float, config: ModelConfig) -> bool:
    """Decide, and update the customer's alerting state (armed, last alert time)."""
    if probability < config.alert_rearm_below:
        state.alert_armed = True
        return False
    if not state.alert_armed or probability < config.alert_threshold:
        return False
    if config.alert_value_tiers and value_tier not in config.alert_value_tiers:
        return False
    if state.last_alert_at is not None and at - state.last_alert_at < config.alert_cooldown_days * DAY:
        return False
    state.alert_armed = False
    state.last_alert_at = at
    return True
