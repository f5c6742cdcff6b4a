"""Grafana in docker-compose.yml: provisioning wired, the dashboard generated from the panels,
and every panel's SQL run on chDB against the migrated schema (no Docker engine here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from clickhouse_connect.driver.client import Client

from schemas.alerts import ChurnAlert
from schemas.audiences import AudienceEvent
from sinks.clickhouse import ClickHouseSink
from sinks.query import run_readonly
from streams.analytics import grafana
from streams.analytics.panels import HEADLINES, PANELS
from tests.test_deployment import compose
from tests.test_views import reader, writer  # noqa: F401 - the chDB fixtures with the hand-built dataset

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "grafana" / "dashboards" / "crm360.json"
REGENERATE = "python -m streams.analytics.grafana > grafana/dashboards/crm360.json"


def committed() -> dict[str, Any]:
    return json.loads(COMMITTED.read_text())


def panels() -> list[dict[str, Any]]:
    """The dashboard's panels that query (not the section rows)."""
    return [p for p in committed()["panels"] if p["type"] != "row"]


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Bind mounts of a service: container path -> host path (relative to the repository)."""
    pairs = (v.split(":") for v in service["volumes"])
    return {target: host for host, target, *_ in pairs if host.startswith(".")}


def utc(iso: str) -> datetime:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def dataset(writer: Client, reader: Client) -> Iterator[Client]:  # noqa: F811
    """The views' dataset, plus what the model writes: a segment's description, an alert on the
    data's last day and two quality measurements, so that every panel has rows."""
    sink = ClickHouseSink(writer)
    sink.add_row(
        "segments",
        {
            "segment": 1,
            "description": "big spenders",
            "spend_per_order": 1.0,
            "purchases_per_month": 1.0,
            "visits_per_month": 1.0,
            "model_version": 1,
        },
    )
    alert = ChurnAlert(
        alert_id="a1",
        customer_id="c1",
        churn_probability=0.8,
        previous_probability=0.6,
        threshold=0.7,
        drivers={"recency_days": 1.2},
        segment=1,
        segment_description="big spenders",
        value_tier="platinum",
        monetary_total=320.0,
        last_purchase_at=utc("2024-03-02T15:00:00"),
        model_version=2,
        as_of=utc("2024-04-01T00:00:00"),
        created_at=utc("2024-04-01T00:00:01"),
    )
    sink.add_row("churn_alerts", alert.model_dump())
    for version, at, auc in ((1, "2024-03-01T00:00:00", 0.7), (2, "2024-04-01T00:00:00", 0.75)):
        sink.add_row(
            "model_metrics",
            {
                "measured_at": utc(at),
                "model_version": version,
                "labels_learned": 10 * version,
                "labels": 10 * version,
                "churn_rate": 0.2,
                "roc_auc": auc,
                "log_loss": 0.5,
                "brier": 0.2,
                "calibration_error": 0.1,
            },
        )
    entry = AudienceEvent(
        audience="big_spenders",
        version=1,
        change="entered",
        customer_id="c1",
        identifiers=["c1"],
        features={"monetary_total": 320.0},
        as_of=utc("2024-04-01T00:00:00"),
        created_at=utc("2024-04-01T00:00:01"),
    )
    sink.add_row("audience_events", entry.model_dump() | {"features": "{}", "published": True})
    assert sink.flush() == 5
    yield reader


def provisioned(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "grafana" / "provisioning" / name).read_text())


def test_committed_dashboard_is_the_generated_one() -> None:
    assert COMMITTED.read_text() == grafana.render(), f"grafana/dashboards/crm360.json is stale; run: {REGENERATE}"


def test_compose_wires_grafana_to_clickhouse() -> None:
    services = compose()["services"]
    grafana_, clickhouse = services["grafana"], services["clickhouse"]
    assert grafana_["image"].startswith("grafana/grafana:") and not grafana_["image"].endswith(":latest")
    assert "3000:3000" in grafana_["ports"]
    assert grafana_["depends_on"] == {"clickhouse": {"condition": "service_healthy"}}
    assert grafana_["environment"]["GF_INSTALL_PLUGINS"].split()[0] == grafana.PLUGIN
    assert "/api/health" in " ".join(grafana_["healthcheck"]["test"])
    # Provisioning and dashboards are mounted read-only from folders that exist here.
    binds = mounts(grafana_)
    assert binds["/etc/grafana/provisioning"] == "./grafana/provisioning"
    for volume in grafana_["volumes"]:
        if volume.startswith("."):
            assert volume.endswith(":ro") and (ROOT / volume.split(":")[0]).is_dir(), volume
    # The dashboard provider reads the mounted dashboards folder, which holds the dashboard.
    (provider,) = provisioned("dashboards/crm360.yaml")["providers"]
    folder = provider["options"]["path"]
    assert (ROOT / binds[folder] / COMMITTED.name).samefile(COMMITTED)
    # The data source: the plugin, over HTTP to the clickhouse service, with its credentials.
    (source,) = provisioned("datasources/clickhouse.yaml")["datasources"]
    assert (source["type"], source["uid"]) == (grafana.PLUGIN, grafana.DATASOURCE_UID)
    settings, env = source["jsonData"], clickhouse["environment"]
    assert (settings["protocol"], settings["host"], settings["port"]) == ("http", "clickhouse", 8123)
    assert "8123:8123" in clickhouse["ports"]
    assert (settings["username"], source["secureJsonData"]["password"]) == (
        env["CLICKHOUSE_USER"],
        env["CLICKHOUSE_PASSWORD"],
    )
    assert settings["defaultDatabase"] == "crm360"
    # Every panel and every query names that data source.
    for panel in panels():
        assert panel["datasource"] == {"type": source["type"], "uid": source["uid"]}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_dashboard_is_valid_and_covers_every_panel() -> None:
    board = committed()
    assert board["uid"] and board["title"] and board["schemaVersion"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        covered = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        assert panel["title"]
    for panel in panels():
        assert panel["targets"] and all(t["rawSql"].strip() for t in panel["targets"]), panel["title"]
        for target in panel["targets"]:
            assert target["editorType"] == "sql" and target["refId"]
            assert (target["format"], target["queryType"]) in ((1, "table"), (0, "timeseries"))
    # Same panels as the live dashboard and the report: one stat per headline figure, one panel
    # per other panel, each described by what it shows.
    by_description: dict[str, list[str]] = {}
    for panel in panels():
        by_description.setdefault(panel["description"], []).append(panel["title"])
    assert by_description == {
        p.shows: [label for _, label, _ in HEADLINES] if p.kind == "stats" else [p.title] for p in PANELS.values()
    }
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == list(dict.fromkeys(p.section for p in PANELS.values()))
    types = {p["title"]: p["type"] for p in panels()}
    assert {types[p.title] for p in PANELS.values() if p.kind == "table"} == {"table"}
    assert types["Daily revenue"] == types["Churn model quality"] == "timeseries"


def fields(panel: dict[str, Any]) -> set[str]:
    """Columns the panel's options and transformations name."""
    named = {panel["options"][key] for key in ("xField", "colorByField") if key in panel["options"]}
    for transformation in panel.get("transformations", []):
        options = transformation["options"]
        named |= {options[key] for key in ("rowField", "columnField", "valueField")}
    return named


@pytest.mark.integration  # embedded ClickHouse
@pytest.mark.parametrize("title", [p["title"] for p in panels()])
def test_every_panel_query_runs_on_chdb(dataset: Client, title: str) -> None:
    (panel,) = [p for p in panels() if p["title"] == title]
    (target,) = panel["targets"]
    result = run_readonly(dataset, target["rawSql"])
    assert result.rows, title
    assert fields(panel) <= set(result.columns), title
    if panel["type"] == "stat":
        assert len(result.columns) == 1 and len(result.rows) == 1
    if panel["type"] == "timeseries":
        assert result.columns[0] in ("day", "measured_at")


@pytest.mark.integration  # embedded ClickHouse
def test_wrapped_queries_keep_the_panels_rows(dataset: Client) -> None:
    """A wrapped query shows the panel's own rows, in its order."""

    def query(title: str) -> list[list[Any]]:
        (panel,) = [p for p in panels() if p["title"] == title]
        return run_readonly(dataset, panel["targets"][0]["rawSql"]).rows

    def own(key: str, *columns: str) -> list[list[Any]]:
        result = run_readonly(dataset, PANELS[key].sql)
        return [[row[result.columns.index(c)] for c in columns] for row in result.rows]

    result = run_readonly(dataset, PANELS["headline"].sql)
    headline = dict(zip(result.columns, result.rows[0], strict=True))
    for column, label, _ in HEADLINES:
        assert query(label) == [[headline[column]]]
    assert query("Segment sizes") == [["1 (big spenders)", 2], ["2", 1], ["unscored", 2]]
    assert [row[0] for row in query("Churn alerts today")] == [1]
    assert query("RFM segments") == own("rfm_segments", "rfm_segment", "customers")
    assert query("Funnel") == [["visited", 5], ["first purchase", 3], ["repeat purchase", 2]]
    assert query("Churn risk") == [["0.2", 1, 0.2], ["0.5", 1, 0.5], ["0.8", 1, 0.8]]
    assert query("Value at risk by tier") == own("at_risk_by_tier", "value_tier", "monetary_at_risk")
    assert query("Social engagement by platform") == own("engagement", "platform", "likes", "comments", "shares")
    assert query("Daily revenue") == own("revenue_daily", "day", "gross_revenue", "net_revenue")
    assert query("Churn model quality") == own("model_quality", "measured_at", "roc_auc", "calibration_error")
