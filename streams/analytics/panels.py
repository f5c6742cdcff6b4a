"""The analysts' panels: one query each, its chart and its key number in words.

The live dashboard (``GET /dashboard``), the shareable report (``crm360 report``) and the
Grafana dashboard of ``docker-compose.yml`` all show these panels, so they always agree.
Every query reads the analysts' views (or deduplicated tables) through the read-only query
path; a panel turns its rows into a Plotly figure (plain JSON, drawn by plotly.js) and into
one sentence with the key number.

"Now" is the data's own clock: the newest event time the worker has seen
(``max(as_of)`` of ``customer_features``), so a replay of last year's file reads like last
year, and a live stream reads like today.

Examples
--------
>>> PANELS["funnel"].query(None).startswith("SELECT visited")
True
>>> print(PANELS["revenue_daily"].query(dt.date(2024, 1, 31)).splitlines()[-1])
WHERE day >= toDate('2024-01-31')
>>> summarize_funnel([{"visited": 200, "purchased": 50, "repeated": 10,
...     "visit_to_purchase_rate": 0.25, "purchase_to_repeat_rate": 0.2,
...     "median_days_to_purchase": 3.5, "median_days_to_repeat": 40.0}])
'1 in 4 visitors buy (25.0%, 50 of 200), a median 3.5 days after their first visit; 20.0% of buyers buy again.'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from sinks.tables import DATABASE
from sinks.views import AT_RISK_PROBABILITY

Row = dict[str, Any]
Figure = dict[str, Any]
Kind = Literal["stats", "chart", "table"]

DB = DATABASE
CLOCK = f"(SELECT max(as_of) FROM {DB}.customer_features)"
ACTIVE_STAGES = ("new", "active", "reactivated")
COLORS = ["#2a6f97", "#e07a5f", "#81b29a", "#f2cc8f", "#6d597a", "#3d405b", "#b56576", "#52796f"]


@dataclass(frozen=True)
class Panel:
    """One panel: where it goes, its query, its picture and its sentence."""

    key: str
    title: str
    section: str
    #: One sentence on what the chart shows.
    shows: str
    sql: str
    kind: Kind
    #: Draws the rows (charts only).
    figure: Callable[[list[Row]], Figure] | None
    #: The key number in words; only called with at least one row.
    summary: Callable[[list[Row]], str]
    on_dashboard: bool
    #: Output column that ``--since`` filters on (None: the panel shows the current state).
    since_column: str | None = None
    #: A column whose sum is 0 when there is nothing to show although the query returns rows
    #: (the headline's one row of zeros, the RFM grid's 25 empty cells).
    counted_by: str | None = None
    #: What the panel needs before it can show anything, for its empty state.
    needs: str = "customers with purchases"

    @property
    def empty_message(self) -> str:
        return f"Nothing to show yet: this panel needs {self.needs}."

    def query(self, since: dt.date | None) -> str:
        """The panel's SQL, limited to rows at or after ``since`` when the panel has a time axis."""
        if since is None or self.since_column is None:
            return self.sql.strip()
        return f"SELECT * FROM (\n{self.sql.strip()}\n)\nWHERE {self.since_column} >= toDate('{since.isoformat()}')"


# --- words -------------------------------------------------------------------------------


def count_words(n: float) -> str:
    """A whole number with thousands separators.

    >>> count_words(12345.0)
    '12,345'
    """
    return f"{round(n):,}"


def money_words(amount: float | None) -> str:
    """An amount of money, rounded to whole units.

    >>> money_words(1234567.891), money_words(None)
    ('$1,234,568', '$0')
    """
    return f"${amount or 0:,.0f}"


def share_words(share: float | None) -> str:
    """A share as a percentage.

    >>> share_words(0.35714), share_words(None)
    ('35.7%', 'n/a')
    """
    return "n/a" if share is None else f"{100 * share:.1f}%"


def one_in(share: float) -> str:
    """A share as "1 in N" (or "N in M" when that reads better).

    >>> one_in(0.25), one_in(0.6), one_in(0.0)
    ('1 in 4', '3 in 5', 'none')
    """
    if share <= 0:
        return "none"
    if share < 0.5:
        return f"1 in {round(1 / share)}"
    ratio = Fraction(share).limit_denominator(10)
    return f"{ratio.numerator} in {ratio.denominator}"


# --- pictures ----------------------------------------------------------------------------


def layout(**extra: Any) -> dict[str, Any]:
    """The shared look: compact margins, no title (the page has it), transparent background."""
    return {
        "margin": {"l": 60, "r": 20, "t": 10, "b": 50},
        "height": 320,
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": "system-ui, sans-serif", "size": 12},
        "colorway": COLORS,
        **extra,
    }


def bar(x: list[Any], y: list[Any], x_title: str, y_title: str, text: list[str] | None = None) -> Figure:
    trace: dict[str, Any] = {"type": "bar", "x": x, "y": y}
    if text is not None:
        trace |= {"text": text, "textposition": "auto"}
    return {
        "data": [trace],
        "layout": layout(xaxis={"title": {"text": x_title}, "type": "category"}, yaxis={"title": {"text": y_title}}),
    }


def heatmap(x: list[Any], y: list[Any], z: list[list[Any]], x_title: str, y_title: str, z_title: str) -> Figure:
    trace = {
        "type": "heatmap",
        "x": x,
        "y": y,
        "z": z,
        "colorscale": "Blues",
        "reversescale": True,
        "colorbar": {"title": {"text": z_title}},
        "hoverongaps": False,
    }
    return {
        "data": [trace],
        "layout": layout(
            xaxis={"title": {"text": x_title}, "type": "category"},
            yaxis={"title": {"text": y_title}, "type": "category"},
        ),
    }


def grid(rows: list[Row], x: str, y: str, z: str) -> tuple[list[Any], list[Any], list[list[Any]]]:
    """Rows of (x, y, z) as a matrix: z[y][x], None where a cell has no row.

    >>> grid([{"a": 1, "b": "p", "v": 5}, {"a": 2, "b": "q", "v": 6}], "a", "b", "v")
    ([1, 2], ['p', 'q'], [[5, None], [None, 6]])
    """
    xs = sorted({row[x] for row in rows})
    ys = sorted({row[y] for row in rows})
    cells = {(row[x], row[y]): row[z] for row in rows}
    return xs, ys, [[cells.get((a, b)) for a in xs] for b in ys]


# --- headline ----------------------------------------------------------------------------

HEADLINE_SQL = f"""
SELECT
    count() AS customers,
    countIf(lifecycle_stage IN {ACTIVE_STAGES}) AS active_customers,
    (SELECT round(sum(amount), 2) FROM {DB}.purchases FINAL
     WHERE kind = 'purchase' AND ts > {CLOCK} - INTERVAL 30 DAY) AS revenue_30d,
    round(countIf(lifecycle_stage = 'churned') / nullIf(countIf(purchase_count > 0), 0), 4) AS churn_rate,
    countIf(churn_probability >= {AT_RISK_PROBABILITY}) AS at_risk_customers,
    (SELECT count() FROM {DB}.churn_alerts FINAL
     WHERE toDate(as_of, 'UTC') = toDate({CLOCK}, 'UTC')) AS alerts_today,
    (SELECT count() FROM {DB}.identity_merges FINAL WHERE outcome = 'merged') AS profiles_unified,
    {CLOCK} AS data_time
FROM {DB}.customer_features FINAL
"""

#: The headline figures: column, label, format.
HEADLINES: list[tuple[str, str, str]] = [
    ("customers", "Customers", "count"),
    ("active_customers", "Active", "count"),
    ("revenue_30d", "Revenue, last 30 days", "money"),
    ("churn_rate", "Churn rate", "share"),
    ("at_risk_customers", "At risk", "count"),
    ("alerts_today", "Churn alerts today", "count"),
    ("profiles_unified", "Profiles unified", "count"),
]


def format_value(value: Any, how: str) -> str:
    """A headline value as shown: count, money or share.

    >>> format_value(1234, "count"), format_value(None, "money"), format_value(0.1234, "share")
    ('1,234', '$0', '12.3%')
    """
    if how == "money":
        return money_words(value)
    if how == "share":
        return share_words(value)
    return count_words(value or 0)


def summarize_headline(rows: list[Row]) -> str:
    h = rows[0]
    return (
        f"{count_words(h['customers'])} customers, {count_words(h['active_customers'])} of them active; "
        f"{money_words(h['revenue_30d'])} revenue in the last 30 days; churn rate {share_words(h['churn_rate'])}; "
        f"{count_words(h['at_risk_customers'])} customers at risk and {count_words(h['alerts_today'])} churn alerts today; "
        f"{count_words(h['profiles_unified'])} profiles unified with others (identity resolution)."
    )


# --- segmentation and RFM ----------------------------------------------------------------

SEGMENTS_SQL = f"""
SELECT
    s.name AS segment,
    d.description AS description,
    s.customers AS customers,
    s.share AS share,
    s.revenue AS revenue,
    s.avg_churn_probability AS avg_churn_probability,
    s.at_risk_customers AS at_risk_customers
FROM {DB}.v_segment_summary AS s
LEFT JOIN (SELECT toString(segment) AS name, description FROM {DB}.segments FINAL) AS d ON d.name = s.name
WHERE s.dimension = 'segment'
ORDER BY s.name
"""


def _segment_label(row: Row) -> str:
    return f"{row['segment']} ({row['description']})" if row.get("description") else str(row["segment"])


def figure_segments(rows: list[Row]) -> Figure:
    trace = {
        "type": "bar",
        "orientation": "h",
        "y": [_segment_label(r) for r in rows],
        "x": [r["customers"] for r in rows],
        "text": [share_words(r["share"]) for r in rows],
        "textposition": "auto",
    }
    return {
        "data": [trace],
        "layout": layout(
            xaxis={"title": {"text": "customers"}},
            yaxis={"type": "category", "autorange": "reversed", "automargin": True},
        ),
    }


def summarize_segments(rows: list[Row]) -> str:
    top = max(rows, key=lambda r: (r["customers"], r["segment"]))
    richest = max(rows, key=lambda r: (r["revenue"], r["segment"]))
    return (
        f"The largest segment is {_segment_label(top)} with {count_words(top['customers'])} customers "
        f"({share_words(top['share'])} of all); segment {_segment_label(richest)} brings the most revenue, "
        f"{money_words(richest['revenue'])}."
    )


RFM_SEGMENTS_SQL = f"""
SELECT name AS rfm_segment, customers, share, revenue, at_risk_customers
FROM {DB}.v_segment_summary
WHERE dimension = 'rfm_segment'
ORDER BY customers DESC, rfm_segment
"""


def figure_rfm_segments(rows: list[Row]) -> Figure:
    return bar(
        [r["rfm_segment"] for r in rows],
        [r["customers"] for r in rows],
        "RFM segment",
        "customers",
        [share_words(r["share"]) for r in rows],
    )


def summarize_rfm_segments(rows: list[Row]) -> str:
    top = rows[0]
    slipping = [r for r in rows if r["rfm_segment"] in ("At Risk", "Can't Lose Them")]
    return (
        f"{top['rfm_segment']} is the largest RFM segment ({count_words(top['customers'])} customers, "
        f"{share_words(top['share'])}); {count_words(sum(r['customers'] for r in slipping))} good customers are "
        f"slipping away (At Risk or Can't Lose Them), with {money_words(sum(r['revenue'] for r in slipping))} bought."
    )


RFM_GRID_SQL = f"SELECT rfm_r, rfm_f, customers, revenue FROM {DB}.v_rfm_grid ORDER BY rfm_r, rfm_f"


def figure_rfm_grid(rows: list[Row]) -> Figure:
    xs, ys, z = grid(rows, "rfm_f", "rfm_r", "customers")
    return heatmap(xs, ys, z, "frequency score (F)", "recency score (R)", "customers")


def summarize_rfm_grid(rows: list[Row]) -> str:
    total = sum(r["customers"] for r in rows)
    best = next((r for r in rows if r["rfm_r"] == 5 and r["rfm_f"] == 5), {"customers": 0, "revenue": 0.0})
    top = max(rows, key=lambda r: (r["customers"], -r["rfm_r"], -r["rfm_f"]))
    return (
        f"The fullest cell is R{top['rfm_r']}/F{top['rfm_f']} with {count_words(top['customers'])} of "
        f"{count_words(total)} scored customers; the best cell, R5/F5, holds {count_words(best['customers'])} "
        f"customers and {money_words(best['revenue'])} of revenue."
    )


# --- engagement --------------------------------------------------------------------------

ENGAGEMENT_SQL = f"""
SELECT
    e.platform AS platform,
    sum(e.interactions) AS interactions,
    sum(e.likes) AS likes,
    sum(e.comments) AS comments,
    sum(e.shares) AS shares,
    sum(e.customers) AS customers,
    round(sum(e.avg_engagement_score * e.customers) / sum(e.customers), 4) AS avg_engagement_score
FROM {DB}.v_engagement AS e
GROUP BY e.platform
ORDER BY interactions DESC, platform
"""


def figure_engagement(rows: list[Row]) -> Figure:
    platforms = [r["platform"] for r in rows]
    data = [
        {"type": "bar", "name": action, "x": platforms, "y": [r[action] for r in rows]}
        for action in ("likes", "comments", "shares")
    ]
    return {
        "data": data,
        "layout": layout(
            barmode="stack",
            xaxis={"title": {"text": "platform"}, "type": "category"},
            yaxis={"title": {"text": "social actions"}},
        ),
    }


def summarize_engagement(rows: list[Row]) -> str:
    total = sum(r["interactions"] for r in rows)
    top = rows[0]
    return (
        f"{count_words(total)} social interactions; {top['platform']} leads with {count_words(top['interactions'])} "
        f"({share_words(top['interactions'] / total)}) from {count_words(top['customers'])} customers, "
        f"average engagement score {top['avg_engagement_score']:.2f}."
    )


# --- funnel ------------------------------------------------------------------------------

FUNNEL_COLUMNS = """visited, purchased, repeated, visit_to_purchase_rate, purchase_to_repeat_rate,
    median_days_to_purchase, median_days_to_repeat"""
FUNNEL_SQL = f"SELECT {FUNNEL_COLUMNS}\nFROM {DB}.v_funnel\nWHERE dimension = 'overall'"
FUNNEL_BY_CHANNEL_SQL = (
    f"SELECT value AS acquisition_channel, {FUNNEL_COLUMNS}\nFROM {DB}.v_funnel\n"
    "WHERE dimension = 'acquisition_channel'\nORDER BY visited DESC, acquisition_channel"
)


def figure_funnel(rows: list[Row]) -> Figure:
    f = rows[0]
    trace = {
        "type": "funnel",
        "y": ["visited", "first purchase", "repeat purchase"],
        "x": [f["visited"], f["purchased"], f["repeated"]],
        "textinfo": "value+percent initial",
    }
    return {"data": [trace], "layout": layout(margin={"l": 120, "r": 20, "t": 10, "b": 30})}


def summarize_funnel(rows: list[Row]) -> str:
    f = rows[0]
    days = f["median_days_to_purchase"]
    after = f", a median {days:g} days after their first visit" if days is not None else ""
    return (
        f"{one_in(f['visit_to_purchase_rate'])} visitors buy ({share_words(f['visit_to_purchase_rate'])}, "
        f"{count_words(f['purchased'])} of {count_words(f['visited'])}){after}; "
        f"{share_words(f['purchase_to_repeat_rate'])} of buyers buy again."
    )


def summarize_funnel_by_channel(rows: list[Row]) -> str:
    best = max(rows, key=lambda r: (r["visit_to_purchase_rate"], r["visited"]))
    return (
        f"Visitors acquired through {best['acquisition_channel']} convert best: "
        f"{share_words(best['visit_to_purchase_rate'])} of {count_words(best['visited'])} buy."
    )


# --- cohorts and revenue -----------------------------------------------------------------

COHORTS_SQL = f"""
SELECT cohort_month, months_since, cohort_size, buyers, retention
FROM {DB}.v_cohort_retention
ORDER BY cohort_month, months_since
"""


def figure_cohorts(rows: list[Row]) -> Figure:
    xs, ys, z = grid(rows, "months_since", "cohort_month", "retention")
    figure = heatmap(
        xs, [str(y)[:7] for y in ys], z, "months since first purchase", "cohort (first purchase month)", "retention"
    )
    figure["layout"]["yaxis"]["autorange"] = "reversed"
    figure["layout"]["margin"]["l"] = 90
    return figure


def summarize_cohorts(rows: list[Row]) -> str:
    second = [r for r in rows if r["months_since"] == 1]
    if not second:
        return f"{count_words(len({r['cohort_month'] for r in rows}))} cohort so far; no second month yet."
    size = sum(r["cohort_size"] for r in second)
    buyers = sum(r["buyers"] for r in second)
    best = max(second, key=lambda r: (r["retention"], str(r["cohort_month"])))
    worst = min(second, key=lambda r: (r["retention"], str(r["cohort_month"])))
    return (
        f"Across {len(second)} cohorts, {share_words(buyers / size)} of new customers buy again in the month after "
        f"their first purchase ({count_words(buyers)} of {count_words(size)}); best {month_words(best)} "
        f"({share_words(best['retention'])}), weakest {month_words(worst)} ({share_words(worst['retention'])})."
    )


def month_words(row: Row) -> str:
    """The cohort month of a row, as YYYY-MM."""
    return str(row["cohort_month"])[:7]


REVENUE_DAILY_SQL = f"""
SELECT day, gross_revenue, net_revenue, orders, buyers, new_buyers, returning_buyers
FROM {DB}.v_revenue_daily
ORDER BY day
"""


def figure_revenue_daily(rows: list[Row]) -> Figure:
    days = [str(r["day"]) for r in rows]
    data = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": "gross revenue",
            "x": days,
            "y": [r["gross_revenue"] for r in rows],
        },
        {"type": "scatter", "mode": "lines", "name": "net revenue", "x": days, "y": [r["net_revenue"] for r in rows]},
    ]
    return {
        "data": data,
        "layout": layout(
            xaxis={"title": {"text": "day (UTC)"}, "type": "date"},
            yaxis={"title": {"text": "revenue"}},
            legend={"orientation": "h"},
        ),
    }


def summarize_revenue_daily(rows: list[Row]) -> str:
    last = rows[-1]
    best = max(rows, key=lambda r: (r["gross_revenue"], str(r["day"])))
    total = sum(r["gross_revenue"] for r in rows)
    return (
        f"{money_words(total)} gross revenue over {count_words(len(rows))} trading days; the best day was "
        f"{best['day']} ({money_words(best['gross_revenue'])}); on {last['day']}, {count_words(last['orders'])} "
        f"orders from {count_words(last['new_buyers'])} new and {count_words(last['returning_buyers'])} returning buyers."
    )


# --- churn -------------------------------------------------------------------------------

CHURN_HISTOGRAM_SQL = f"""
SELECT churn_bucket, sum(customers) AS customers, round(sum(monetary_at_risk), 2) AS monetary
FROM {DB}.v_churn_risk
WHERE churn_bucket IS NOT NULL
GROUP BY churn_bucket
ORDER BY churn_bucket
"""

BUCKETS = [round(b / 10, 1) for b in range(10)]


def figure_churn_histogram(rows: list[Row]) -> Figure:
    counts = {round(r["churn_bucket"], 1): r["customers"] for r in rows}
    labels = [f"{b:.1f}–{b + 0.1:.1f}" for b in BUCKETS]
    figure = bar(labels, [counts.get(b, 0) for b in BUCKETS], "churn probability", "customers")
    figure["data"][0]["marker"] = {"color": [COLORS[1] if b >= AT_RISK_PROBABILITY else COLORS[0] for b in BUCKETS]}
    return figure


def summarize_churn_histogram(rows: list[Row]) -> str:
    scored = sum(r["customers"] for r in rows)
    risky = [r for r in rows if r["churn_bucket"] >= AT_RISK_PROBABILITY]
    at_risk = sum(r["customers"] for r in risky)
    return (
        f"{count_words(at_risk)} of {count_words(scored)} scored customers ({share_words(at_risk / scored)}) have a "
        f"churn probability of {AT_RISK_PROBABILITY:g} or more; they bought {money_words(sum(r['monetary'] for r in risky))} so far."
    )


AT_RISK_BY_TIER_SQL = f"""
SELECT
    c.value_tier AS value_tier,
    sum(c.customers) AS customers,
    sumIf(c.customers, c.churn_bucket >= {AT_RISK_PROBABILITY}) AS at_risk_customers,
    round(sumIf(c.monetary_at_risk, c.churn_bucket >= {AT_RISK_PROBABILITY}), 2) AS monetary_at_risk
FROM {DB}.v_churn_risk AS c
GROUP BY c.value_tier
ORDER BY indexOf(['platinum', 'gold', 'silver', 'bronze', 'none'], value_tier), value_tier
"""


def figure_at_risk_by_tier(rows: list[Row]) -> Figure:
    return bar(
        [r["value_tier"] for r in rows],
        [r["monetary_at_risk"] for r in rows],
        "value tier",
        "purchases of customers at risk",
        [f"{count_words(r['at_risk_customers'])} customers" for r in rows],
    )


def summarize_at_risk_by_tier(rows: list[Row]) -> str:
    total = sum(r["monetary_at_risk"] for r in rows)
    top = max(rows, key=lambda r: (r["monetary_at_risk"], r["value_tier"]))
    return (
        f"Customers at risk bought {money_words(total)} in all; the {top['value_tier']} tier carries the most, "
        f"{money_words(top['monetary_at_risk'])} from {count_words(top['at_risk_customers'])} customers."
    )


TOP_AT_RISK_SQL = f"""
SELECT customer_id, round(churn_probability, 3) AS churn_probability, monetary_total, value_tier, rfm_segment,
    last_purchase_at
FROM {DB}.v_top_at_risk
LIMIT 10
"""


def summarize_top_at_risk(rows: list[Row]) -> str:
    top = rows[0]
    return (
        f"The most valuable customer at risk is {top['customer_id']}: {money_words(top['monetary_total'])} bought, "
        f"churn probability {share_words(top['churn_probability'])}."
    )


ALERTS_SQL = f"""
SELECT as_of, customer_id, round(churn_probability, 3) AS churn_probability, value_tier, monetary_total,
    ifNull(segment_description, '') AS segment
FROM {DB}.churn_alerts FINAL
ORDER BY as_of DESC, customer_id
LIMIT 20
"""


def summarize_alerts(rows: list[Row]) -> str:
    newest = rows[0]
    return (
        f"The newest alert: customer {newest['customer_id']} at {share_words(newest['churn_probability'])} churn "
        f"probability ({money_words(newest['monetary_total'])} bought), as of {str(newest['as_of'])[:16].replace('T', ' ')} UTC."
    )


ALERT_RULES_SQL = f"""
SELECT
    r.threshold AS threshold,
    r.value_tier AS value_tier,
    r.alerts AS alerts,
    r.matured_alerts AS matured_alerts,
    r.precision AS precision,
    r.median_lead_days AS median_lead_days,
    r.revenue_after AS revenue_after,
    u.held_out AS held_out,
    u.uplift AS uplift,
    u.uplift_margin_95 AS uplift_margin_95
FROM {DB}.v_alert_rules AS r
LEFT JOIN {DB}.v_alert_uplift AS u ON u.threshold = r.threshold AND u.value_tier = r.value_tier
WHERE r.alerts > 0
ORDER BY r.alerts DESC
"""


def summarize_alert_rules(rows: list[Row]) -> str:
    top = rows[0]
    if not top["matured_alerts"]:
        return (
            f"{count_words(top['alerts'])} alerts for {top['value_tier']} customers; none has reached its horizon yet."
        )
    told = (
        f" Against the control group the share who bought again moved by {top['uplift']:+.1%} "
        f"(± {top['uplift_margin_95']:.1%})."
        if top["held_out"] and top["uplift_margin_95"] is not None
        else ""
    )
    return (
        f"Of {count_words(top['matured_alerts'])} matured alerts for {top['value_tier']} customers at threshold "
        f"{top['threshold']:g}, {share_words(top['precision'])} were right (no purchase in the horizon), with "
        f"{top['median_lead_days'] or 0:g} days of lead; those who bought again spent {money_words(top['revenue_after'])}."
        + told
    )


# --- audiences ---------------------------------------------------------------------------

AUDIENCES_SQL = f"""
SELECT audience, day, members, entered, exited
FROM {DB}.v_audience_sizes_daily
ORDER BY audience, day
"""


def figure_audiences(rows: list[Row]) -> Figure:
    by_audience: dict[str, list[Row]] = {}
    for row in rows:
        by_audience.setdefault(row["audience"], []).append(row)
    data = [
        {
            "type": "scatter",
            "mode": "lines",
            "line": {"shape": "hv"},
            "name": name,
            "x": [str(r["day"]) for r in days],
            "y": [r["members"] for r in days],
        }
        for name, days in by_audience.items()
    ]
    return {
        "data": data,
        "layout": layout(
            xaxis={"title": {"text": "day (UTC, event time)"}, "type": "date"},
            yaxis={"title": {"text": "members"}},
            legend={"orientation": "h"},
        ),
    }


def summarize_audiences(rows: list[Row]) -> str:
    """
    >>> summarize_audiences([{"audience": "a", "day": "2024-01-01", "members": 3, "entered": 3, "exited": 0},
    ...     {"audience": "a", "day": "2024-01-02", "members": 2, "entered": 0, "exited": 1},
    ...     {"audience": "b", "day": "2024-01-02", "members": 1, "entered": 1, "exited": 0}])
    '2 audiences; the largest, a, has 2 members (on 2024-01-02: 0 entered, 1 left).'
    """
    last: dict[str, Row] = {}
    for row in rows:
        last[row["audience"]] = row
    largest = max(last.values(), key=lambda r: (r["members"], r["audience"]))
    return (
        f"{count_words(len(last))} audience{'s' if len(last) != 1 else ''}; the largest, {largest['audience']}, has "
        f"{count_words(largest['members'])} members (on {largest['day']}: {count_words(largest['entered'])} entered, "
        f"{count_words(largest['exited'])} left)."
    )


# --- model quality -----------------------------------------------------------------------

MODEL_QUALITY_SQL = f"""
SELECT *
FROM (
    SELECT
        m.model_version AS model_version,
        max(m.measured_at) AS measured_at,
        argMax(m.labels_learned, m.measured_at) AS labels_learned,
        round(argMax(m.roc_auc, m.measured_at), 4) AS roc_auc,
        round(argMax(m.log_loss, m.measured_at), 4) AS log_loss,
        round(argMax(m.calibration_error, m.measured_at), 4) AS calibration_error,
        round(argMax(m.churn_rate, m.measured_at), 4) AS churn_rate
    FROM {DB}.model_metrics AS m
    GROUP BY m.model_version
    ORDER BY model_version DESC
    LIMIT 500
)
ORDER BY model_version
"""


def figure_model_quality(rows: list[Row]) -> Figure:
    x = [r["labels_learned"] for r in rows]
    data = [
        {"type": "scatter", "mode": "lines+markers", "name": "ROC AUC", "x": x, "y": [r["roc_auc"] for r in rows]},
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "calibration error",
            "x": x,
            "y": [r["calibration_error"] for r in rows],
        },
    ]
    return {
        "data": data,
        "layout": layout(
            xaxis={"title": {"text": "labels learned"}},
            yaxis={"title": {"text": "prequential score"}, "range": [0, 1]},
            legend={"orientation": "h"},
        ),
    }


def summarize_model_quality(rows: list[Row]) -> str:
    last = rows[-1]
    if last["roc_auc"] is None:
        return f"Model version {last['model_version']} has learned {count_words(last['labels_learned'])} labels; too few to score yet."
    return (
        f"Model version {last['model_version']}, after {count_words(last['labels_learned'])} labels, ranks a churner "
        f"above a stayer {share_words(last['roc_auc'])} of the time (ROC AUC {last['roc_auc']:.3f}); "
        f"its probabilities are off by {share_words(last['calibration_error'])} on average."
    )


# --- the panels ----------------------------------------------------------------------------

_PANELS = [
    Panel(
        "headline",
        "Headline",
        "Headline",
        "The customer base now: customers, active customers, revenue in the last 30 days, churn rate, "
        f"customers at risk (churn probability >= {AT_RISK_PROBABILITY}), churn alerts today (event time) and "
        "profiles unified with another by identity resolution (merged into it).",
        HEADLINE_SQL,
        "stats",
        None,
        summarize_headline,
        True,
        counted_by="customers",
    ),
    Panel(
        "segments",
        "Segment sizes",
        "Segmentation",
        "Customers per model segment (labelled by what its centroid stands for), with the share of all customers.",
        SEGMENTS_SQL,
        "chart",
        figure_segments,
        summarize_segments,
        True,
        needs="customers",
    ),
    Panel(
        "rfm_segments",
        "RFM segments",
        "RFM",
        "Customers per RFM segment (recency, frequency and monetary scores against the live quintiles).",
        RFM_SEGMENTS_SQL,
        "chart",
        figure_rfm_segments,
        summarize_rfm_segments,
        False,
    ),
    Panel(
        "rfm_grid",
        "RFM grid",
        "RFM",
        "Scored customers by recency score (rows) and frequency score (columns): the classic 5x5 grid.",
        RFM_GRID_SQL,
        "chart",
        figure_rfm_grid,
        summarize_rfm_grid,
        True,
        counted_by="customers",
    ),
    Panel(
        "engagement",
        "Social engagement by platform",
        "Interaction and engagement",
        "Likes, comments and shares per social platform.",
        ENGAGEMENT_SQL,
        "chart",
        figure_engagement,
        summarize_engagement,
        False,
        needs="social interaction events",
    ),
    Panel(
        "funnel",
        "Funnel",
        "Sales funnel",
        "Customers who visited, then made a first purchase, then a repeat purchase.",
        FUNNEL_SQL,
        "chart",
        figure_funnel,
        summarize_funnel,
        True,
        needs="visit events (the funnel starts at a visit)",
    ),
    Panel(
        "funnel_by_channel",
        "Funnel by acquisition channel",
        "Sales funnel",
        "The same funnel per acquisition channel, with conversion rates and median days between steps.",
        FUNNEL_BY_CHANNEL_SQL,
        "table",
        None,
        summarize_funnel_by_channel,
        False,
        needs="visit events (the funnel starts at a visit)",
    ),
    Panel(
        "cohorts",
        "Cohort retention",
        "Cohorts and retention",
        "Share of each monthly cohort (month of first purchase) buying again N months later.",
        COHORTS_SQL,
        "chart",
        figure_cohorts,
        summarize_cohorts,
        True,
        "cohort_month",
    ),
    Panel(
        "revenue_daily",
        "Daily revenue",
        "Cohorts and retention",
        "Gross and net (after refunds) revenue per UTC day.",
        REVENUE_DAILY_SQL,
        "chart",
        figure_revenue_daily,
        summarize_revenue_daily,
        True,
        "day",
    ),
    Panel(
        "churn_histogram",
        "Churn risk",
        "Churn and at-risk value",
        f"Scored customers by churn probability; orange bars are at risk (>= {AT_RISK_PROBABILITY}).",
        CHURN_HISTOGRAM_SQL,
        "chart",
        figure_churn_histogram,
        summarize_churn_histogram,
        True,
        needs="customers scored by the churn model",
    ),
    Panel(
        "at_risk_by_tier",
        "Value at risk by tier",
        "Churn and at-risk value",
        "What customers at risk have bought so far, per value tier.",
        AT_RISK_BY_TIER_SQL,
        "chart",
        figure_at_risk_by_tier,
        summarize_at_risk_by_tier,
        False,
        needs="customers scored by the churn model",
    ),
    Panel(
        "top_at_risk",
        "Most valuable customers at risk",
        "Churn and at-risk value",
        "The ten customers at risk who have bought the most.",
        TOP_AT_RISK_SQL,
        "table",
        None,
        summarize_top_at_risk,
        False,
        needs=f"customers with a churn probability of {AT_RISK_PROBABILITY} or more",
    ),
    Panel(
        "alerts",
        "Latest churn alerts",
        "Churn and at-risk value",
        "The newest churn alerts sent to marketing tools.",
        ALERTS_SQL,
        "table",
        None,
        summarize_alerts,
        True,
        "as_of",
        needs="churn alerts (customers whose churn probability crossed the alert threshold)",
    ),
    Panel(
        "alert_rules",
        "Do the alerts keep anyone?",
        "Churn and at-risk value",
        "Per alert rule (threshold, value tier): alerts, those whose horizon passed, the share that were right, "
        "days of lead, revenue of those who bought again, and the uplift over the control group.",
        ALERT_RULES_SQL,
        "table",
        None,
        summarize_alert_rules,
        True,
        counted_by="alerts",
        needs="churn alerts (and, for the uplift, CRM360_ALERT_HOLDOUT_SHARE above 0)",
    ),
    Panel(
        "audiences",
        "Audience sizes",
        "Audiences",
        "Members of each live audience at the end of each day of event time.",
        AUDIENCES_SQL,
        "chart",
        figure_audiences,
        summarize_audiences,
        True,
        "day",
        needs="audiences (crm360 audience create) with members",
    ),
    Panel(
        "model_quality",
        "Churn model quality",
        "Model quality",
        "Prequential ROC AUC and calibration error of the churn model on its last 20,000 matured labels, "
        "per model version.",
        MODEL_QUALITY_SQL,
        "chart",
        figure_model_quality,
        summarize_model_quality,
        False,
        needs="matured churn labels (a churn horizon of event time after the first customers)",
    ),
]

#: Every panel, by key, in the order of the report.
PANELS: dict[str, Panel] = {panel.key: panel for panel in _PANELS}
#: The report's sections, in order.
SECTIONS: list[str] = list(dict.fromkeys(panel.section for panel in _PANELS))


@dataclass(frozen=True)
class Shown:
    """A panel with its data: rows, figure and sentence (None when there are no rows yet), or
    the error of its query."""

    panel: Panel
    rows: list[Row]
    figure: Figure | None
    summary: str | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.panel.title,
            "shows": self.panel.shows,
            "kind": self.panel.kind,
            "rows": self.rows,
            "figure": self.figure,
            "summary": self.summary,
            "error": self.error,
            "empty": self.panel.empty_message,
        }


def has_data(panel: Panel, rows: list[Row]) -> bool:
    """Whether there is anything to show."""
    if panel.counted_by is not None:
        return any(row[panel.counted_by] for row in rows)
    return bool(rows)


def show(panel: Panel, columns: list[str], values: list[list[Any]]) -> Shown:
    """Rows of a panel's query as a :class:`Shown` panel."""
    rows = [dict(zip(columns, row)) for row in values]
    if not has_data(panel, rows):
        return Shown(panel, rows, None, None)
    return Shown(panel, rows, panel.figure(rows) if panel.figure else None, panel.summary(rows))
