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
        PAGE.replace("__PANELS__", json.dumps(panels))
        .replace("__REFRESH_MS__", str(int(refresh_s * 1000)))
        .replace("__HEADLINES__", json.dumps([{"key": k, "label": label} for k, label, _ in HEADLINES]))
    )


PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>crm360 live dashboard</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d2733; }
  header { display: flex; align-items: baseline; gap: 1rem; padding: 0.8rem 1.2rem; background: #1d3557; color: #fff; }
  header h1 { font-size: 1.2rem; margin: 0; }
  #status { font-size: 0.85rem; opacity: 0.85; }
  #status.stale { color: #ffb4a2; opacity: 1; }
  main { padding: 1rem 1.2rem; }
  .headline { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 0.8rem; }
  .figure { background: #fff; border-radius: 8px; padding: 0.7rem 0.9rem; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  .figure .label { font-size: 0.8rem; color: #5c6b7a; }
  .figure .value { font-size: 1.6rem; font-weight: 600; margin-top: 0.2rem; }
  #summary { margin: 0.8rem 0; color: #34495e; }
  .panels { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 1rem; }
  .panel { background: #fff; border-radius: 8px; padding: 0.8rem 1rem; box-shadow: 0 1px 2px rgba(0,0,0,.08); min-width: 0; }
  .panel h2 { font-size: 1rem; margin: 0 0 0.2rem; }
  .panel .shows { font-size: 0.8rem; color: #5c6b7a; margin: 0 0 0.4rem; }
  .panel .says { font-size: 0.9rem; margin: 0.4rem 0 0; }
  .empty, .error { padding: 2.5rem 1rem; text-align: center; color: #5c6b7a; background: #f8f9fb; border-radius: 6px; }
  .error { color: #9b2226; }
  table { border-collapse: collapse; width: 100%; font-size: 0.82rem; }
  th, td { text-align: left; padding: 0.25rem 0.4rem; border-bottom: 1px solid #e6e9ed; white-space: nowrap; }
  th { color: #5c6b7a; font-weight: 600; }
  .scroll { overflow-x: auto; max-height: 330px; }
</style>
<script src="/dashboard/plotly.min.js"></script>
</head>
<body>
<header><h1>crm360 · live customer view</h1><span id="status">loading ...</span></header>
<main>
  <section class="headline" id="headline"></section>
  <p id="summary"></p>
  <section class="panels" id="panels"></section>
</main>
<script>
const PANELS = __PANELS__;
const HEADLINES = __HEADLINES__;
const REFRESH_MS = __REFRESH_MS__;
const KEY = new URLSearchParams(location.search).get("key");
const $ = (id) => document.getElementById(id);
const ISO = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d)[\d:.]*$/;
const cell = (v) => (typeof v === "string" && ISO.test(v)) ? v.replace(ISO, "$1 $2") : v;
const esc = (v) => String(v ?? "").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

$("headline").innerHTML = HEADLINES.map((h) =>
  `<div class="figure"><div class="label">${esc(h.label)}</div><div class="value" data-headline="${h.key}">–</div></div>`).join("");
$("panels").innerHTML = PANELS.map((p) =>
  `<div class="panel" id="panel-${p.key}" data-kind="${p.kind}"><h2>${esc(p.title)}</h2><p class="shows">${esc(p.shows)}</p>` +
  `<div class="body" id="body-${p.key}"></div><p class="says" id="says-${p.key}"></p></div>`).join("");

function table(rows) {
  const cols = Object.keys(rows[0]);
  return `<div class="scroll"><table><thead><tr>${cols.map((c) => `<th>${esc(c)}</th>`).join("")}</tr></thead><tbody>` +
    rows.map((r) => `<tr>${cols.map((c) => `<td>${esc(cell(r[c]))}</td>`).join("")}</tr>`).join("") + "</tbody></table></div>";
}

function draw(key, panel, hint) {
  const body = $("body-" + key);
  $("says-" + key).textContent = panel.summary || "";
  if (panel.error) {
    Plotly.purge(body);
    body.innerHTML = `<div class="error">This panel's query failed: ${esc(panel.error)}</div>`;
  } else if (!panel.summary) {
    Plotly.purge(body);
    body.innerHTML = `<div class="empty">${esc(hint || panel.empty)}</div>`;
  } else if (panel.figure) {
    if (!body.classList.contains("js-plotly-plot")) body.innerHTML = "";
    Plotly.react(body, panel.figure.data, panel.figure.layout, {displayModeBar: false, responsive: true});
  } else {
    body.innerHTML = table(panel.rows);
  }
}

async function refresh() {
  try {
    const response = await fetch("/dashboard/data" + (KEY ? "?key=" + encodeURIComponent(KEY) : ""));
    if (!response.ok) throw new Error((await response.json()).error || response.statusText);
    const data = await response.json();
    for (const h of data.headline) {
      const cell = document.querySelector(`[data-headline="${h.key}"]`);
      cell.textContent = h.text;
      cell.dataset.value = h.value ?? "";
    }
    $("summary").textContent = data.headline_error ? "Headline query failed: " + data.headline_error : (data.summary || data.empty_hint);
    for (const p of PANELS) draw(p.key, data.panels[p.key], data.summary ? null : data.empty_hint);
    $("status").className = "";
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}` +
      (data.data_time ? ` · data as of ${data.data_time.replace("T", " ").slice(0, 16)} (event time)` : "");
    document.body.dataset.refreshed = data.generated_at;
  } catch (error) {
    $("status").className = "stale";
    $("status").textContent = `cannot refresh (${error.message}); retrying every ${REFRESH_MS / 1000} s`;
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
"""
