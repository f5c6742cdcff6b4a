"""A simple customer lifetime value estimate over a horizon.

``clv_estimate = (1 - churn_probability) * purchases_per_day * horizon_days * avg_order_value``

where ``purchases_per_day = purchase_count / max(tenure_days, 30)`` (the customer's own
rate, with at least a month of tenure so a brand-new buyer is not extrapolated from one
day) and ``avg_order_value`` is net of refunds. It is the expected net revenue of the next
``horizon_days`` if the customer keeps their past rhythm while active, discounted by the
chance they churn. Customers who never bought have no estimate.

Examples
--------
>>> clv_estimate(purchase_count=6, net_value=300.0, tenure_days=180.0, churn_probability=0.25, horizon_days=365)
456.25
>>> clv_estimate(0, 0.0, 10.0, 0.5, 365) is None
True
"""

from __future__ import annotations


def clv_estimate(
    purchase_count: int, net_value: float, tenure_days: float | None, churn_probability: float, horizon_days: float
) -> float | None:
    if purchase_count <= 0:
        return None
    per_day = purchase_count / max(tenure_days or 0.0, 30.0)
    return round((1.0 - churn_probability) * per_day * horizon_days * net_value / purchase_count, 2)
