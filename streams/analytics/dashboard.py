"""The live dashboard: ``GET /dashboard`` on the worker, refreshing itself every few seconds.

The page is static HTML; its script fetches ``/dashboard/data`` (the dashboard panels of
:mod:`streams.analytics.panels`, queried through the read-only path) and draws them with plotly.js,
which the worker serves from the installed ``plotly`` package: no CDN, works offline.

Examples
--------
>>> page = dashboard_page(refresh_s=5)
>>> "plotly.min.js" in page and "https://" not in page
True
>>> [p.key for p in DASHBOARD_PANELS][:3]
['headline', 'segments', 'rfm_grid']
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any

from sinks.query import QueryResult
from streams.analytics.panels import HEADLINES, PANELS, Panel, Shown, format_value, show

DASHBOARD_PANELS: list[Panel] = [panel for panel in PANELS.values() if panel.on_dashboard]
EMPTY_HINT = "No data yet: send events (POST /events, crm360 replay or crm360 demo) and this fills in within seconds."


@functools.cache
def plotly_js() -> bytes:
    """plotly.js as bundled by the ``plotly`` Python package (read once: 4.8 MB)."""
    return (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()


@functools.cache
def page(name: str) -> str:
    """A page template of ``streams/analytics/pages``."""
    return (resources.files("streams.analytics") / "pages" / name).read_text(encoding="utf-8")


def headline_figures(shown: Shown) -> list[dict[str, Any]]:
    """The headline figures: key, label, raw value and the value as shown (zeros when empty)."""
    row = shown.rows[0] if shown.rows else {}
    return [
        {"key": key, "label": label, "value": row.get(key), "text": format_value(row.get(key), how)}
        for key, label, how in HEADLINES
    ]


def show_all(panels: list[Panel], query: Callable[[str], QueryResult], since: date | None = None) -> dict[str, Shown]:
    """Every panel's query run and drawn; a failing query is reported in its panel only."""
    shown: dict[str, Shown] = {}
    for panel in panels:
        try:
            result = query(panel.query(since))
        except Exception as error:  # noqa: BLE001 - one panel's failure must not blank the page
            shown[panel.key] = Shown(panel, [], None, None, str(error).strip().splitlines()[0])
            continue
        shown[panel.key] = show(panel, result.columns, result.rows)
    return shown


def dashboard_data(query: Callable[[str], QueryResult]) -> dict[str, Any]:
    """What the page draws: headline figures and each dashboard panel, as JSON-ready data."""
    shown = show_all(DASHBOARD_PANELS, query)
    headline = shown.pop("headline")
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_time": headline.rows[0]["data_time"] if headline.summary else None,
        "headline": headline_figures(headline),
        "headline_error": headline.error,
        "summary": headline.summary,
        "panels": {key: value.to_dict() for key, value in shown.items()},
        "empty_hint": EMPTY_HINT,
    }


class DashboardCache:
    """The newest dashboard data, recomputed at most every ``max_age_s`` whatever the number of viewers."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._data: dict[str, Any] | None = None
        self._at = 0.0

    def fresh(self) -> dict[str, Any] | None:
        if self._data is not None and time.monotonic() - self._at < self.max_age_s:
            return self._data
        return None

    def keep(self, data: dict[str, Any]) -> dict[str, Any]:
        self._data, self._at = data, time.monotonic()
        return data


def dashboard_page(refresh_s: float) -> str:
    """The page; it draws ``/dashboard/data`` every ``refresh_s`` seconds."""
    panels = [
        {"key": p.key, "title": p.title, "shows": p.shows, "kind": p.kind}
        for p in DASHBOARD_PANELS
        if p.kind != "stats"
    ]
    return (
        page("dashboard.html")
        .replace("__PANELS__", json.dumps(panels))
        .replace("__REFRESH_MS__", str(int(refresh_s * 1000)))
        .replace("__HEADLINES__", json.dumps([{"key": k, "label": label} for k, label, _ in HEADLINES]))
    )
