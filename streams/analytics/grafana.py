"""The Grafana dashboard of ``docker-compose.yml``, generated from :mod:`streams.analytics.panels`.

Every panel of the live dashboard and the report becomes a Grafana panel reading ClickHouse
through the provisioned data source: the headline as one ``stat`` per figure, charts as bar
charts, time series or colour-graded grids, tables as tables. A panel's SQL is the panel's own
query; where Grafana needs other columns, it is wrapped (``SELECT ... FROM (<panel sql>)``),
never rewritten, so the views stay the single source.

The dashboard is committed as ``grafana/dashboards/crm360.json``; regenerate it with
``python -m streams.analytics.grafana > grafana/dashboards/crm360.json``.

Examples
--------
>>> board = dashboard()
>>> board["uid"], len([p for p in board["panels"] if p["type"] == "stat"]) == len(HEADLINES)
('crm360', True)
>>> print(wrap("SELECT 1 AS a, 2 AS b", "b"))
SELECT b
FROM (
SELECT 1 AS a, 2 AS b
)
"""

from __future__ import annotations

import json
from typing import Any

from sinks.views import AT_RISK_PROBABILITY
from streams.analytics.panels import HEADLINES, PANELS, SECTIONS, Panel

Json = dict[str, Any]

PLUGIN = "grafana-clickhouse-datasource"
#: The uid of the provisioned ClickHouse data source (grafana/provisioning/datasources/clickhouse.yaml).
DATASOURCE_UID = "crm360-clickhouse"
DATASOURCE: Json = {"type": PLUGIN, "uid": DATASOURCE_UID}
TABLE, TIME_SERIES = 1, 0  # the plugin's ``format``
WIDTH = 24  # Grafana's grid columns
UNITS = {"count": ("none", 0), "money": ("currencyUSD", 0), "share": ("percentunit", 1)}
BLUE, ORANGE = "#2a6f97", "#e07a5f"


def wrap(sql: str, columns: str, tail: str = "") -> str:
    """``columns`` of the rows of ``sql`` (a panel's query, unchanged), then ``tail``."""
    return f"SELECT {columns}\nFROM (\n{sql.strip()}\n)" + (f"\n{tail}" if tail else "")


def target(sql: str, fmt: int = TABLE) -> Json:
    """One query of the ClickHouse plugin (v4), in its SQL editor."""
    return {
        "refId": "A",
        "datasource": DATASOURCE,
        "editorType": "sql",
        "format": fmt,
        "queryType": "timeseries" if fmt == TIME_SERIES else "table",
        "rawSql": sql,
    }


def override(name: str, **properties: Any) -> Json:
    """Field settings for the column ``name`` (``a__b`` stands for Grafana's ``a.b``)."""
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": key.replace("__", "."), "value": value} for key, value in properties.items()],
    }


def base(panel: Panel, kind: str, sql: str, fmt: int = TABLE, title: str | None = None) -> Json:
    """A Grafana panel of ``kind`` running ``sql``, described by what the panel shows."""
    return {
        "type": kind,
        "title": title or panel.title,
        "description": panel.shows,
        "datasource": DATASOURCE,
        "targets": [target(sql, fmt)],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {},
    }


def stats(panel: Panel) -> list[Json]:
    """The headline: one ``stat`` per figure, each reading its own column of the headline query."""
    shown = []
    for column, label, how in HEADLINES:
        unit, decimals = UNITS[how]
        stat = base(panel, "stat", wrap(panel.sql, column), title=label)
        stat["fieldConfig"]["defaults"] = {
            "unit": unit,
            "decimals": decimals,
            "color": {"mode": "fixed", "fixedColor": BLUE},
        }
        stat["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "value",
        }
        shown.append(stat)
    return shown


def bars(panel: Panel, sql: str, x: str, unit: str = "none", **options: Any) -> Json:
    """A bar chart: one bar per row, labelled by column ``x``, for each other number column."""
    chart = base(panel, "barchart", sql)
    chart["fieldConfig"]["defaults"] = {"unit": unit, "color": {"mode": "palette-classic"}}
    chart["options"] = {
        "xField": x,
        "orientation": "auto",
        "showValue": "auto",
        "stacking": "none",
        "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
        **options,
    }
    return chart


def matrix(panel: Panel, row: str, column: str, value: str, unit: str) -> Json:
    """A grid (rows x columns) as a table with colour-graded cells, pivoted by Grafana."""
    grid = base(panel, "table", panel.sql.strip())
    grid["transformations"] = [
        {"id": "groupingToMatrix", "options": {"rowField": row, "columnField": column, "valueField": value}}
    ]
    grid["fieldConfig"]["defaults"] = {
        "unit": unit,
        "color": {"mode": "continuous-blues"},
        "custom": {"cellOptions": {"type": "color-background", "mode": "gradient"}},
    }
    grid["fieldConfig"]["overrides"] = [override(f"{row}\\{column}", unit="none", custom__cellOptions={"type": "auto"})]
    return grid


def series(panel: Panel, time: str, values: str, unit: str = "none") -> Json:
    """A time series of ``values`` over the column ``time``."""
    chart = base(panel, "timeseries", wrap(panel.sql, f"{time}, {values}", f"ORDER BY {time}"), TIME_SERIES)
    chart["fieldConfig"]["defaults"] = {"unit": unit, "custom": {"drawStyle": "line", "showPoints": "auto"}}
    chart["options"] = {"legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"}}
    return chart


def table(panel: Panel) -> Json:
    """The panel's rows as they are, rates as percentages and amounts as money."""
    shown = base(panel, "table", panel.sql.strip())
    shown["fieldConfig"]["overrides"] = [
        {
            "matcher": {"id": "byRegexp", "options": "/rate$|^churn_probability$/"},
            "properties": [{"id": "unit", "value": "percentunit"}],
        },
        {
            "matcher": {"id": "byRegexp", "options": "/^monetary/"},
            "properties": [{"id": "unit", "value": "currencyUSD"}],
        },
    ]
    return shown


def chart(panel: Panel) -> Json:
    """A chart panel as the fitting Grafana panel."""
    sql = panel.sql
    if panel.key == "segments":
        label = "if(empty(ifNull(description, '')), segment, concat(segment, ' (', description, ')')) AS segment"
        return bars(panel, wrap(sql, f"{label}, customers"), "segment")
    if panel.key == "rfm_segments":
        return bars(panel, wrap(sql, "rfm_segment, customers"), "rfm_segment")
    if panel.key == "engagement":
        return bars(panel, wrap(sql, "platform, likes, comments, shares"), "platform", stacking="normal")
    if panel.key == "funnel":
        steps = "step, customers"
        unpivot = (
            "ARRAY JOIN ['visited', 'first purchase', 'repeat purchase'] AS step, "
            "[visited, purchased, repeated] AS customers"
        )
        return bars(panel, wrap(sql, steps, unpivot), "step", orientation="horizontal")
    if panel.key == "churn_histogram":
        # Bars coloured by their bucket: orange from AT_RISK_PROBABILITY on, as on the live dashboard.
        shown = bars(
            panel,
            wrap(sql, "toString(churn_bucket) AS churn_probability, customers, churn_bucket"),
            "churn_probability",
            colorByField="churn_bucket",
        )
        shown["fieldConfig"]["overrides"] = [
            override(
                "churn_bucket",
                custom__hideFrom={"viz": True, "legend": True, "tooltip": True},
                color={"mode": "thresholds"},
                thresholds={
                    "mode": "absolute",
                    "steps": [{"color": BLUE, "value": None}, {"color": ORANGE, "value": AT_RISK_PROBABILITY}],
                },
            )
        ]
        return shown
    if panel.key == "at_risk_by_tier":
        return bars(panel, wrap(sql, "value_tier, monetary_at_risk"), "value_tier", "currencyUSD")
    if panel.key == "rfm_grid":
        return matrix(panel, "rfm_r", "rfm_f", "customers", "none")
    if panel.key == "cohorts":
        return matrix(panel, "cohort_month", "months_since", "retention", "percentunit")
    if panel.key == "revenue_daily":
        return series(panel, "day", "gross_revenue, net_revenue", "currencyUSD")
    if panel.key == "model_quality":
        return series(panel, "measured_at", "roc_auc, calibration_error")
    if panel.key == "audiences":  # long format: the plugin draws one series per audience
        return series(panel, "day", "audience, members")
    raise ValueError(f"no Grafana panel for chart {panel.key!r}")


def grafana_panels(panel: Panel) -> list[Json]:
    """The Grafana panels of one panel (several for the headline)."""
    if panel.kind == "stats":
        return stats(panel)
    return [chart(panel) if panel.kind == "chart" else table(panel)]


def size(shown: Json) -> tuple[int, int]:
    """Width and height on the grid: stats small, plain tables wide, charts half."""
    if shown["type"] == "stat":
        return WIDTH // len(HEADLINES), 4
    if shown["type"] == "table" and "transformations" not in shown:
        return WIDTH, 9
    return WIDTH // 2, 9


def lines(shown: list[Json]) -> list[list[Json]]:
    """Panels in lines of the grid, in order; a panel alone on its line takes the whole width."""
    rows: list[list[Json]] = []
    for item in shown:
        w, _ = size(item)
        if not rows or sum(size(p)[0] for p in rows[-1]) + w > WIDTH:
            rows.append([])
        rows[-1].append(item)
    return rows


def dashboard() -> Json:
    """The crm360 dashboard: a row per report section, its panels below, in the report's order."""
    panels: list[Json] = []
    y = 0
    for section in SECTIONS:
        panels.append(
            {
                "type": "row",
                "title": section,
                "collapsed": False,
                "panels": [],
                "gridPos": {"x": 0, "y": y, "w": WIDTH, "h": 1},
            }
        )
        y += 1
        shown = [g for p in PANELS.values() if p.section == section for g in grafana_panels(p)]
        for line in lines(shown):
            x = 0
            for item in line:
                w, h = size(item)
                item["gridPos"] = {"x": x, "y": y, "w": WIDTH if len(line) == 1 else w, "h": h}
                panels.append(item)
                x += w
            y += max(size(item)[1] for item in line)
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return {
        "uid": "crm360",
        "title": "crm360",
        "description": "The analysts' panels of crm360 (streams/analytics/panels.py), read from ClickHouse.",
        "tags": ["crm360"],
        "editable": False,
        "schemaVersion": 39,
        "version": 1,
        # Replays keep their own event times (CDNOW is 1997-98): show every day on the time axes.
        "time": {"from": "now-30y", "to": "now"},
        "refresh": "30s",
        "timezone": "utc",
        "panels": panels,
    }


def render() -> str:
    """The dashboard as committed: indented JSON and a final newline."""
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
