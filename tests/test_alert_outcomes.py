"""Churn alerts labelled with what happened, on embedded ClickHouse: the outcome of each alert
on event time, precision, lead time and revenue per rule, and the uplift of the alerts told
over the control group, checked against figures worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from schemas.alerts import ChurnAlert
from schemas.events import parse_event
from sinks.clickhouse import ClickHouseSink, connect, migrate
from sinks.query import connect_readonly, run_readonly

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("release_clickhouse")]  # embedded ClickHouse

DAY = 86_400.0
T0 = 1_704_067_200.0  # 2024-01-01


def alert(customer: str, day: float, last_purchase_day: float, control: bool = False) -> dict[str, Any]:
    return ChurnAlert(
        alert_id=f"{customer}:{day}",
        customer_id=customer,
        churn_probability=0.8,
        previous_probability=0.5,
        threshold=0.7,
        drivers={},
        segment=None,
        segment_description=None,
        value_tier="gold",
        monetary_total=100.0,
        last_purchase_at=datetime.fromtimestamp(T0 + last_purchase_day * DAY, tz=UTC),
        model_version=3,
        as_of=datetime.fromtimestamp(T0 + day * DAY, tz=UTC),
        created_at=datetime.fromtimestamp(T0, tz=UTC),
        horizon_days=30.0,
        control=control,
    ).model_dump()


def purchase(customer: str, day: float, amount: float) -> Any:
    return parse_event(
        {
            "type": "purchase",
            "event_id": f"{customer}-{day}",
            "customer_id": customer,
            "ts": T0 + day * DAY,
            "channel": "web",
            "order_id": f"{customer}-{day}",
            "amount": amount,
            "currency": "EUR",
        }
    )


def test_alert_outcomes_rules_and_uplift(tmp_path: Path) -> None:
    client = connect(f"chdb://{tmp_path / 'ch'}")
    migrate(client)
    sink = ClickHouseSink(client)
    for row in (
        alert("a", 0, -40),  # bought again in the horizon: the alert was wrong, 50 of revenue
        alert("b", 0, -20),  # did not: right, 10 days of the horizon left when alerted
        alert("c", 0, -10, control=True),  # control, bought again
        alert("d", 0, -10, control=True),  # control, did not
        alert("e", 50, -5),  # its horizon has not passed: not matured
    ):
        sink.add_row("churn_alerts", row)
    sink.add_events([purchase("a", 10, 50.0), purchase("a", 40, 99.0), purchase("c", 5, 20.0), purchase("f", 60, 1.0)])
    sink.flush()
    reader = connect_readonly(client.uri)

    outcomes = run_readonly(
        reader,
        "SELECT customer_id, matured, purchases_after, revenue_after, days_since_purchase "
        "FROM v_alert_outcomes ORDER BY customer_id",
    ).rows
    assert outcomes == [
        ["a", True, 1, 50.0, 40.0],
        ["b", True, 0, 0.0, 20.0],
        ["c", True, 1, 20.0, 10.0],
        ["d", True, 0, 0.0, 10.0],
        ["e", False, 0, 0.0, 55.0],
    ]
    rules = run_readonly(reader, "SELECT * FROM v_alert_rules")
    assert dict(zip(rules.columns, rules.rows[0])) == {
        "threshold": 0.7,
        "value_tier": "gold",
        "alerts": 3,
        "matured_alerts": 2,
        "precision": 0.5,
        "median_lead_days": 10.0,
        "revenue_after": 50.0,
    }
    uplift = run_readonly(reader, "SELECT * FROM v_alert_uplift")
    assert dict(zip(uplift.columns, uplift.rows[0])) == {
        "threshold": 0.7,
        "value_tier": "gold",
        "told": 2,
        "held_out": 2,
        "told_rebought": 0.5,
        "held_out_rebought": 0.5,
        "uplift": 0.0,
        "uplift_margin_95": 0.98,
        "told_revenue_per_alert": 25.0,
        "held_out_revenue_per_alert": 10.0,
    }
    reader.close()
