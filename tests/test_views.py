"""The analysts' views on chDB: exact figures on a small hand-built dataset with duplicates.

Five customers, Jan-Mar 2024 (UTC):

====  ======================  =============================================  ==========================
id    visits (utm_campaign)   purchases (refunds)                            features (final version)
====  ======================  =============================================  ==========================
c1    01-05 winter, 02-09     01-06 100, 02-10 120 (02-10 -20), 03-02 80+20   seg 1, churn 0.8, platinum
c2    01-18 none, 01-19       01-20 150, 03-15 50                            seg 1, churn 0.5, gold
c3    02-08 spring            02-10 23:30 40                                 seg 2, churn 0.2, bronze
c4    03-05 spring            03-02 60 (before its first visit) (03-20 -10)  unscored, silver
c5    03-10 spring            none (a prospect)                              unscored, none
====  ======================  =============================================  ==========================

Duplicates that must not count: c1's purchase of 01-06, c3's visit and one of c1's likes are
inserted twice; c1 has an older feature row (segment 2, 100 of revenue) written after the
newer one; c2's feature row is written twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from processors.config import FeatureConfig
from processors.features import CustomerState, profile
from schemas.events import parse_event
from sinks.clickhouse import ClickHouseSink, connect, migrate
from sinks.query import connect_readonly, run_readonly
from sinks.tables import DATABASE
from sinks.views import VIEWS

pytestmark = pytest.mark.integration  # embedded ClickHouse

README = Path(__file__).resolve().parents[1] / "README.md"


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def purchase(event_id: str, customer_id: str, ts: str, amount: float, kind: str = "purchase") -> dict[str, Any]:
    return {
        "type": "purchase",
        "event_id": event_id,
        "customer_id": customer_id,
        "ts": ts,
        "channel": "web",
        "order_id": event_id,
        "amount": amount,
        "currency": "EUR",
        "kind": kind,
    }


def visit(event_id: str, customer_id: str, ts: str, utm_campaign: str | None) -> dict[str, Any]:
    return {
        "type": "visit",
        "event_id": event_id,
        "customer_id": customer_id,
        "ts": ts,
        "channel": "web",
        "session_id": event_id,
        "utm_campaign": utm_campaign,
    }


def social(event_id: str, customer_id: str, ts: str, platform: str, action: str) -> dict[str, Any]:
    return {
        "type": "social_interaction",
        "event_id": event_id,
        "customer_id": customer_id,
        "ts": ts,
        "channel": "social",
        "platform": platform,
        "action": action,
    }


def features(customer_id: str, **values: Any) -> dict[str, Any]:
    """A feature row: a prospect's row at the end of March, with ``values`` set."""
    row = profile(CustomerState(customer_id), at("2024-04-01T00:00:00+00:00"), FeatureConfig())
    assert set(values) <= set(row)
    return row | values


EVENTS = [
    purchase("p1", "c1", "2024-01-06T10:00:00+00:00", 100.0),
    purchase("p2", "c1", "2024-02-10T10:00:00+00:00", 120.0),
    purchase("r1", "c1", "2024-02-10T18:00:00+00:00", 20.0, kind="refund"),
    purchase("p3", "c1", "2024-03-02T12:00:00+00:00", 80.0),
    purchase("p3b", "c1", "2024-03-02T15:00:00+00:00", 20.0),
    purchase("p4", "c2", "2024-01-20T08:00:00+00:00", 150.0),
    purchase("p5", "c2", "2024-03-15T08:00:00+00:00", 50.0),
    purchase("p6", "c3", "2024-02-11T00:30:00+01:00", 40.0),  # 2024-02-10 23:30 UTC
    purchase("p7", "c4", "2024-03-02T01:00:00+00:00", 60.0),
    purchase("r2", "c4", "2024-03-20T09:00:00+00:00", 10.0, kind="refund"),
    visit("v1", "c1", "2024-01-05T10:00:00+00:00", "winter"),
    visit("v2", "c1", "2024-02-09T10:00:00+00:00", "spring"),
    visit("v3", "c2", "2024-01-18T08:00:00+00:00", None),
    visit("v4", "c2", "2024-01-19T08:00:00+00:00", "winter"),
    visit("v5", "c3", "2024-02-08T23:30:00+00:00", "spring"),
    visit("v6", "c4", "2024-03-05T00:00:00+00:00", "spring"),
    visit("v7", "c5", "2024-03-10T00:00:00+00:00", "spring"),
    social("s1", "c1", "2024-01-07T12:00:00+00:00", "instagram", "like"),
    social("s2", "c1", "2024-01-08T12:00:00+00:00", "instagram", "comment"),
    social("s3", "c1", "2024-02-01T12:00:00+00:00", "instagram", "like"),
    social("s4", "c1", "2024-02-02T12:00:00+00:00", "tiktok", "share"),
    social("s5", "c2", "2024-01-21T12:00:00+00:00", "instagram", "like"),
    social("s6", "c3", "2024-02-11T12:00:00+00:00", "tiktok", "review"),
    social("s7", "c5", "2024-03-11T12:00:00+00:00", "instagram", "follow"),
]
DUPLICATE_EVENTS = ["p1", "v5", "s3"]

C1 = features(
    "c1",
    purchase_count=4,
    monetary_total=320.0,
    last_purchase_at=at("2024-03-02T15:00:00+00:00"),
    engagement_score=4.0,
    region="North",
    city="Oslo",
    age_band="25-34",
    gender="f",
    acquisition_channel="search",
    rfm_r=5,
    rfm_f=4,
    rfm_m=5,
    rfm_segment="Champions",
    value_tier="platinum",
    lifecycle_stage="active",
    segment=1,
    churn_probability=0.8,
)
C1_OLDER = features(
    "c1",
    purchase_count=1,
    monetary_total=100.0,
    last_purchase_at=at("2024-01-06T10:00:00+00:00"),
    engagement_score=1.0,
    region="North",
    city="Oslo",
    rfm_r=3,
    rfm_f=1,
    rfm_m=3,
    rfm_segment="Need Attention",
    value_tier="silver",
    lifecycle_stage="new",
    segment=2,
    churn_probability=0.1,
)
C2 = features(
    "c2",
    purchase_count=2,
    monetary_total=200.0,
    last_purchase_at=at("2024-03-15T08:00:00+00:00"),
    engagement_score=2.0,
    region="North",
    city="Bergen",
    age_band="35-44",
    gender="m",
    acquisition_channel="social",
    rfm_r=2,
    rfm_f=2,
    rfm_m=4,
    rfm_segment="At Risk",
    value_tier="gold",
    lifecycle_stage="at_risk",
    segment=1,
    churn_probability=0.5,
)
C3 = features(
    "c3",
    purchase_count=1,
    monetary_total=40.0,
    last_purchase_at=at("2024-02-10T23:30:00+00:00"),
    engagement_score=0.5,
    region="South",
    city="Rome",
    age_band="25-34",
    gender="m",
    acquisition_channel="search",
    rfm_r=1,
    rfm_f=1,
    rfm_m=1,
    rfm_segment="Lost",
    value_tier="bronze",
    lifecycle_stage="churned",
    segment=2,
    churn_probability=0.2,
)
C4 = features(
    "c4",
    purchase_count=1,
    monetary_total=60.0,
    last_purchase_at=at("2024-03-02T01:00:00+00:00"),
    engagement_score=1.0,
    region="South",
    city="Rome",
    rfm_r=5,
    rfm_f=1,
    rfm_m=2,
    rfm_segment="Potential Loyalist",
    value_tier="silver",
    lifecycle_stage="new",
)
C5 = features("c5", engagement_score=0.25)


@pytest.fixture(scope="module")
def writer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A chDB database holding the dataset (and its duplicates), and its writing client."""
    writer = connect(f"chdb://{tmp_path_factory.mktemp('views') / 'ch'}")
    assert migrate(writer) == [1, 2, 5, 6, 7, 8, 9, 10, 11, 12]
    for table in ("purchases", "visits", "social_interactions", "customer_features"):
        writer.command(f"SYSTEM STOP MERGES {DATABASE}.{table}")  # keep the duplicates on disk
    sink = ClickHouseSink(writer)
    for event in EVENTS:
        sink.add_events([parse_event(event)])
    for row, version in ((C1, 2), (C2, 1), (C3, 1), (C4, 1), (C5, 1)):
        sink.add_features(row, version, 1)
    sink.flush()
    for event in EVENTS:  # redelivered events and feature rows, in a later batch
        if event["event_id"] in DUPLICATE_EVENTS:
            sink.add_events([parse_event(event)])
    sink.add_features(C1_OLDER, 1, 2)
    sink.add_features(C2, 1, 2)
    assert sink.flush() == 5
    yield writer
    writer.close()  # chDB opens one data directory per process: let other tests open theirs


@pytest.fixture(scope="module")
def reader(writer: Client) -> Iterator[Client]:
    """An analyst's client on the dataset: the read-only query path."""
    client = connect_readonly(writer.uri)
    yield client
    client.close()


def view(reader: Client, name: str) -> tuple[list[str], list[list[Any]]]:
    result = run_readonly(reader, f"SELECT * FROM {name}")
    return result.columns, result.rows


def test_duplicates_are_stored_and_views_are_migrated_once(writer: Client, reader: Client) -> None:
    stored = "SELECT (SELECT count() FROM {0}), (SELECT count() FROM {0} FINAL)"
    assert run_readonly(reader, stored.format("purchases")).rows == [[11, 10]]
    assert run_readonly(reader, stored.format("visits")).rows == [[8, 7]]
    assert run_readonly(reader, stored.format("social_interactions")).rows == [[8, 7]]
    assert run_readonly(reader, stored.format("customer_features")).rows == [[7, 5]]
    assert writer.query(
        "SELECT name FROM system.tables WHERE database = 'crm360' AND engine = 'View' ORDER BY name"
    ).result_rows == [(name,) for name in sorted(VIEWS)]
    assert migrate(writer) == []


def test_segment_summary(reader: Client) -> None:
    columns, rows = view(reader, "v_segment_summary")
    assert columns == [
        "dimension",
        "name",
        "customers",
        "share",
        "revenue",
        "orders",
        "avg_order_value",
        "avg_churn_probability",
        "at_risk_customers",
    ]
    assert rows == [
        ["rfm_segment", "At Risk", 1, 0.2, 200.0, 2, 100.0, 0.5, 1],
        ["rfm_segment", "Champions", 1, 0.2, 320.0, 4, 80.0, 0.8, 1],
        ["rfm_segment", "Lost", 1, 0.2, 40.0, 1, 40.0, 0.2, 0],
        ["rfm_segment", "Potential Loyalist", 1, 0.2, 60.0, 1, 60.0, None, 0],
        ["rfm_segment", "Prospects", 1, 0.2, 0.0, 0, None, None, 0],  # c5 never bought
        ["segment", "1", 2, 0.4, 520.0, 6, 86.67, 0.65, 2],
        ["segment", "unscored", 2, 0.4, 60.0, 1, 60.0, None, 0],
        ["segment", "2", 1, 0.2, 40.0, 1, 40.0, 0.2, 0],
    ]


def test_rfm_grid(reader: Client) -> None:
    columns, rows = view(reader, "v_rfm_grid")
    assert columns == ["rfm_r", "rfm_f", "customers", "revenue"]
    filled = {(5, 4): [1, 320.0], (2, 2): [1, 200.0], (1, 1): [1, 40.0], (5, 1): [1, 60.0]}
    assert rows == [[r, f, *filled.get((r, f), [0, 0.0])] for r in range(1, 6) for f in range(1, 6)]


def test_cohort_retention(reader: Client) -> None:
    columns, rows = view(reader, "v_cohort_retention")
    assert columns == ["cohort_month", "months_since", "cohort_size", "buyers", "retention"]
    assert rows == [
        ["2024-01-01", 0, 2, 2, 1.0],
        ["2024-01-01", 1, 2, 1, 0.5],  # c2 skipped February
        ["2024-01-01", 2, 2, 2, 1.0],
        ["2024-02-01", 0, 1, 1, 1.0],
        ["2024-02-01", 1, 1, 0, 0.0],
        ["2024-03-01", 0, 1, 1, 1.0],
    ]


def test_funnel(reader: Client) -> None:
    columns, rows = view(reader, "v_funnel")
    assert columns == [
        "dimension",
        "value",
        "visited",
        "purchased",
        "repeated",
        "visit_to_purchase_rate",
        "purchase_to_repeat_rate",
        "median_days_to_purchase",
        "median_days_to_repeat",
    ]
    # Days to the first purchase: c1 1, c2 2, c3 2; to the repeat: c1 35, c2 55.
    # c4 bought only before its first visit, c5 never.
    assert rows == [
        ["overall", "all", 5, 3, 2, 0.6, 0.6667, 2.0, 45.0],
        ["acquisition_channel", "search", 2, 2, 1, 1.0, 0.5, 1.5, 35.0],
        ["acquisition_channel", "unknown", 2, 0, 0, 0.0, None, None, None],
        ["acquisition_channel", "social", 1, 1, 1, 1.0, 1.0, 2.0, 55.0],
        ["utm_campaign", "spring", 3, 1, 0, 0.3333, 0.0, 2.0, None],
        ["utm_campaign", "none", 1, 1, 1, 1.0, 1.0, 2.0, 55.0],
        ["utm_campaign", "winter", 1, 1, 1, 1.0, 1.0, 1.0, 35.0],
    ]


def test_revenue_daily(reader: Client) -> None:
    columns, rows = view(reader, "v_revenue_daily")
    assert columns == [
        "day",
        "gross_revenue",
        "refund_amount",
        "net_revenue",
        "orders",
        "buyers",
        "new_buyers",
        "returning_buyers",
        "refund_count",
    ]
    assert rows == [
        ["2024-01-06", 100.0, 0.0, 100.0, 1, 1, 1, 0, 0],
        ["2024-01-20", 150.0, 0.0, 150.0, 1, 1, 1, 0, 0],
        ["2024-02-10", 160.0, 20.0, 140.0, 2, 2, 1, 1, 1],
        ["2024-03-02", 160.0, 0.0, 160.0, 3, 2, 1, 1, 0],
        ["2024-03-15", 50.0, 0.0, 50.0, 1, 1, 0, 1, 0],
        ["2024-03-20", 0.0, 10.0, -10.0, 0, 0, 0, 0, 1],
    ]


def test_churn_risk_and_top_at_risk(reader: Client) -> None:
    columns, rows = view(reader, "v_churn_risk")
    assert columns == ["value_tier", "churn_bucket", "customers", "monetary_at_risk"]
    assert rows == [
        ["bronze", 0.2, 1, 40.0],
        ["gold", 0.5, 1, 200.0],
        ["none", None, 1, 0.0],
        ["platinum", 0.8, 1, 320.0],
        ["silver", None, 1, 60.0],
    ]
    columns, rows = view(reader, "v_top_at_risk")
    assert columns == [
        "customer_id",
        "churn_probability",
        "monetary_total",
        "value_tier",
        "rfm_segment",
        "last_purchase_at",
    ]
    assert rows == [
        ["c1", 0.8, 320.0, "platinum", "Champions", "2024-03-02T15:00:00"],
        ["c2", 0.5, 200.0, "gold", "At Risk", "2024-03-15T08:00:00"],
    ]


def test_geo(reader: Client) -> None:
    columns, rows = view(reader, "v_geo")
    assert columns == ["region", "city", "customers", "revenue", "churned_share", "avg_churn_probability"]
    assert rows == [
        ["North", "Bergen", 1, 200.0, 0.0, 0.5],
        ["North", "Oslo", 1, 320.0, 0.0, 0.8],
        ["North", "all", 2, 520.0, 0.0, 0.65],
        ["South", "Rome", 2, 100.0, 0.5, 0.2],
        ["South", "all", 2, 100.0, 0.5, 0.2],
        ["unknown", "unknown", 1, 0.0, 0.0, None],
        ["unknown", "all", 1, 0.0, 0.0, None],
        ["all", "all", 5, 620.0, 0.2, 0.5],
    ]


def test_demographics(reader: Client) -> None:
    columns, rows = view(reader, "v_demographics")
    assert columns == ["age_band", "gender", "customers", "revenue", "churned_share", "avg_churn_probability"]
    assert rows == [
        ["25-34", "f", 1, 320.0, 0.0, 0.8],
        ["25-34", "m", 1, 40.0, 1.0, 0.2],
        ["25-34", "all", 2, 360.0, 0.5, 0.5],
        ["35-44", "m", 1, 200.0, 0.0, 0.5],
        ["35-44", "all", 1, 200.0, 0.0, 0.5],
        ["unknown", "unknown", 2, 60.0, 0.0, None],
        ["unknown", "all", 2, 60.0, 0.0, None],
        ["all", "f", 1, 320.0, 0.0, 0.8],
        ["all", "m", 2, 240.0, 0.5, 0.35],
        ["all", "unknown", 2, 60.0, 0.0, None],
        ["all", "all", 5, 620.0, 0.2, 0.5],
    ]


def test_engagement(reader: Client) -> None:
    columns, rows = view(reader, "v_engagement")
    assert columns == [
        "platform",
        "segment",
        "interactions",
        "likes",
        "comments",
        "shares",
        "follows",
        "mentions",
        "reviews",
        "customers",
        "avg_engagement_score",
    ]
    assert rows == [
        ["instagram", "1", 4, 3, 1, 0, 0, 0, 0, 2, 3.0],  # c1 (4.0) and c2 (2.0), each once
        ["instagram", "unscored", 1, 0, 0, 0, 1, 0, 0, 1, 0.25],
        ["tiktok", "1", 1, 0, 0, 1, 0, 0, 0, 1, 4.0],
        ["tiktok", "2", 1, 0, 0, 0, 0, 0, 1, 1, 0.5],
    ]


def test_readme_lists_every_view_with_a_working_example(reader: Client) -> None:
    section = README.read_text().split("## Analyst views", 1)[1].split("\n## ", 1)[0]
    for view_ in VIEWS.values():
        assert f"`{view_.name}`: {view_.description}" in section
    examples = re.findall(r"^  Example: `(SELECT .+)`$", section, flags=re.MULTILINE)
    assert len(examples) == len(VIEWS)
    for example in examples:
        assert run_readonly(reader, example).rows
