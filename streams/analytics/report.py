"""``crm360 report``: the CRM analysis report as one self-contained HTML file.

Every panel of :mod:`streams.analytics.panels`, grouped in the report's sections (segmentation, RFM,
interaction and engagement, sales funnel, cohorts and retention, churn and at-risk value,
model quality), each with what it shows and its key number in words. plotly.js is embedded,
so the file opens offline and can be mailed as it is.

Examples
--------
>>> cell("2024-03-01T12:34:56.789"), cell(0.25), cell(None)
('2024-03-01 12:34', '0.25', '')
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from sinks.query import QueryResult
from streams.analytics.dashboard import headline_figures, page, plotly_js, show_all
from streams.analytics.panels import PANELS, SECTIONS, Shown

ISO_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d)[\d:.]*$")


def cell(value: Any) -> str:
    """A table value as shown: times to the minute, NULL as empty."""
    if value is None:
        return ""
    return ISO_TIME.sub(r"\1 \2", value) if isinstance(value, str) else str(value)


def table_html(rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element."""
    return json.dumps(value).replace("</", "<\\/")


def panel_html(shown: Shown) -> str:
    panel = shown.panel
    parts = [
        f'<article class="panel" id="panel-{panel.key}">',
        f"<h3>{html.escape(panel.title)}</h3>",
        f'<p class="shows">{html.escape(panel.shows)}</p>',
    ]
    if shown.error:
        parts.append(f'<div class="empty">This panel\'s query failed: {html.escape(shown.error)}</div>')
    elif shown.summary is None:
        parts.append(f'<div class="empty">{html.escape(panel.empty_message)}</div>')
    else:
        parts.append(f'<p class="says">{html.escape(shown.summary)}</p>')
        if shown.figure is not None:
            parts.append(f'<div class="chart" id="chart-{panel.key}"></div>')
            parts.append(
                f"<script>Plotly.newPlot('chart-{panel.key}', {script_json(shown.figure['data'])}, "
                f"{script_json(shown.figure['layout'])}, {{displayModeBar: false, responsive: true}});</script>"
            )
        elif panel.kind == "table":
            parts.append(table_html(shown.rows))
    parts.append("</article>")
    return "\n".join(parts)


def build_report(
    query: Callable[[str], QueryResult],
    since: date | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> str:
    """The report's HTML, every panel queried through ``query`` (time charts from ``since`` on)."""
    shown: dict[str, Shown] = {}
    for number, panel in enumerate(PANELS.values(), start=1):
        progress(f"[{number}/{len(PANELS)}] {panel.title}")
        shown |= show_all([panel], query, since)
    headline = shown["headline"]
    data_time = cell(headline.rows[0]["data_time"]) + " UTC" if headline.summary else "no data yet"
    figures = "".join(
        f'<div class="figure"><div class="label">{html.escape(f["label"])}</div>'
        f'<div class="value" data-headline="{f["key"]}" data-value="{html.escape(str(f["value"] or ""))}">'
        f"{html.escape(f['text'])}</div></div>"
        for f in headline_figures(headline)
    )
    sections = [s for s in SECTIONS if s != "Headline"]
    contents = "".join(f'<li><a href="#section-{n}">{html.escape(s)}</a></li>' for n, s in enumerate(sections, 1))
    body = []
    for number, section in enumerate(sections, start=1):
        body.append(f'<section id="section-{number}" data-section="{html.escape(section)}">')
        body.append(f"<h2>{number}. {html.escape(section)}</h2>")
        body.extend(panel_html(s) for s in shown.values() if s.panel.section == section)
        body.append("</section>")
    window = f"time charts from {since.isoformat()} on; " if since else ""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return page("report.html").format(
        plotly=plotly_js().decode("utf-8"),
        generated=generated,
        data_time=html.escape(data_time),
        window=html.escape(window),
        figures=figures,
        summary=html.escape(headline.summary or headline.error or "No customers yet."),
        contents=contents,
        body="\n".join(body),
    )
