"""The analysts' views: ready-made SQL views over the ClickHouse tables (migration 5).

Every view reads deduplicated rows, so a redelivered event or a rewritten feature row is
never counted twice: raw events through ``FINAL`` (one row per ``event_id``) and
``customer_features FINAL`` (one row per customer, its highest ``version``).

Conventions shared by the views:

- a customer is a row of ``customer_features`` (every customer with any event has one);
- ``segment`` and ``churn_probability`` are NULL until the models score a customer:
  averages skip NULLs, at-risk counts are 0, and a NULL segment is shown as ``'unscored'``;
- a customer is *at risk* when ``churn_probability >= 0.5``;
- a missing profile value is shown as ``'unknown'``, and ``'all'`` marks a total row;
- revenue is gross purchases (``monetary_total``) unless refunds are shown beside it;
- money is rounded to 2 decimals, shares and probabilities to 4, days to 2;
- days are UTC calendar days.

Migration 5 creates the views once per database (those of later tables, the migration of
their tables): a view changed later needs a new migration that re-creates it (``CREATE OR REPLACE VIEW`` makes re-running harmless).

Examples
--------
>>> print(VIEWS["v_top_at_risk"].ddl().splitlines()[0])
CREATE OR REPLACE VIEW crm360.v_top_at_risk AS
>>> VIEWS["v_rfm_grid"].description
'Customers and revenue by (rfm_r, rfm_f): the 5x5 RFM grid of scored customers, empty cells as 0.'
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

from schemas.events import SocialAction
from sinks.tables import DATABASE

#: A customer is at risk from this churn probability on.
AT_RISK_PROBABILITY = 0.5

FEATURES = f"{DATABASE}.customer_features FINAL"


@dataclass(frozen=True)
class View:
    """One analysts' view: its name, what it shows (in the user's words) and its query."""

    name: str
    description: str
    select: str
    #: The migration that creates it (after the tables it reads).
    migration: int = 5

    def ddl(self) -> str:
        return f"CREATE OR REPLACE VIEW {DATABASE}.{self.name} AS\n{self.select.strip()}"


SEGMENT_SUMMARY = View(
    "v_segment_summary",
    "Per model segment and per RFM segment (dimension, name): customers, share of all customers, "
    "revenue (gross purchases), orders, average order value (revenue / orders), average churn "
    f"probability and customers at risk (churn_probability >= {AT_RISK_PROBABILITY}).",
    f"""
SELECT
    pair.1 AS dimension,
    pair.2 AS name,
    count() AS customers,
    round(count() / sum(count()) OVER (PARTITION BY dimension), 4) AS share,
    round(sum(monetary_total), 2) AS revenue,
    sum(purchase_count) AS orders,
    round(sum(monetary_total) / nullIf(sum(purchase_count), 0), 2) AS avg_order_value,
    round(avg(churn_probability), 4) AS avg_churn_probability,
    countIf(churn_probability >= {AT_RISK_PROBABILITY}) AS at_risk_customers
FROM {FEATURES}
ARRAY JOIN [
    ('segment', ifNull(toString(segment), 'unscored')),
    ('rfm_segment', ifNull(rfm_segment, 'unscored'))
] AS pair
GROUP BY dimension, name
ORDER BY dimension, customers DESC, name
""",
)

RFM_GRID = View(
    "v_rfm_grid",
    "Customers and revenue by (rfm_r, rfm_f): the 5x5 RFM grid of scored customers, empty cells as 0.",
    f"""
SELECT r AS rfm_r, f AS rfm_f, sum(customer) AS customers, round(sum(monetary), 2) AS revenue
FROM (
    SELECT assumeNotNull(rfm_r) AS r, assumeNotNull(rfm_f) AS f, 1 AS customer, monetary_total AS monetary
    FROM {FEATURES}
    WHERE rfm_r IS NOT NULL AND rfm_f IS NOT NULL
    UNION ALL
    SELECT toInt64(intDiv(cell, 5) + 1), toInt64(cell % 5 + 1), 0, 0 FROM (SELECT arrayJoin(range(25)) AS cell)
)
GROUP BY rfm_r, rfm_f
ORDER BY rfm_r, rfm_f
""",
)

COHORT_RETENTION = View(
    "v_cohort_retention",
    "Monthly cohorts (month of first purchase) x months since: cohort size, buyers that month and "
    "retention (buyers / cohort_size), up to the latest month with a purchase; refunds are not purchases.",
    f"""
SELECT
    cohort_month,
    month_number - 1 AS months_since,
    cohort_size,
    buyers,
    round(buyers / cohort_size, 4) AS retention
FROM (
    SELECT cohort_month, count() AS cohort_size, sumForEach(bought) AS buyers_by_month
    FROM (
        WITH (
            SELECT max(toStartOfMonth(ts, 'UTC')) FROM {DATABASE}.purchases FINAL WHERE kind = 'purchase'
        ) AS last_month
        SELECT
            min(month) AS cohort_month,
            groupUniqArray(month) AS months,
            arrayMap(
                i -> toUInt64(has(months, addMonths(cohort_month, i))),
                range(toUInt64(dateDiff('month', cohort_month, last_month)) + 1)
            ) AS bought
        FROM (
            SELECT customer_id, toStartOfMonth(ts, 'UTC') AS month
            FROM {DATABASE}.purchases FINAL
            WHERE kind = 'purchase'
        )
        GROUP BY customer_id
    )
    GROUP BY cohort_month
)
ARRAY JOIN buyers_by_month AS buyers, arrayEnumerate(buyers_by_month) AS month_number
ORDER BY cohort_month, months_since
""",
)

FUNNEL = View(
    "v_funnel",
    "Visit -> first purchase -> repeat purchase, overall and by acquisition channel and by "
    "utm_campaign of the first visit (dimension, value): visited = customers with a visit; "
    "purchased = visited customers with a purchase at or after their first visit; repeated = "
    "purchased customers with a second such purchase; conversion rates purchased / visited and "
    "repeated / purchased; median days from first visit to first purchase and from first to second purchase.",
    f"""
SELECT
    step.1 AS dimension,
    step.2 AS value,
    count() AS visited,
    countIf(length(buys) >= 1) AS purchased,
    countIf(length(buys) >= 2) AS repeated,
    round(purchased / visited, 4) AS visit_to_purchase_rate,
    round(repeated / nullIf(purchased, 0), 4) AS purchase_to_repeat_rate,
    round(quantileExactInclusive(0.5)(days_to_purchase), 2) AS median_days_to_purchase,
    round(quantileExactInclusive(0.5)(days_to_repeat), 2) AS median_days_to_repeat
FROM (
    SELECT
        buys,
        first_campaign,
        channel,
        if(length(buys) >= 1,
           (toUnixTimestamp64Milli(buys[1]) - toUnixTimestamp64Milli(first_visit_at)) / 86400000,
           NULL) AS days_to_purchase,
        if(length(buys) >= 2,
           (toUnixTimestamp64Milli(buys[2]) - toUnixTimestamp64Milli(buys[1])) / 86400000,
           NULL) AS days_to_repeat
    FROM (
        SELECT
            v.customer_id AS customer_id,
            v.first_visit_at AS first_visit_at,
            v.first_campaign AS first_campaign,
            arraySort(arrayFilter(t -> t >= v.first_visit_at, p.purchase_times)) AS buys
        FROM (
            SELECT
                customer_id,
                min(ts) AS first_visit_at,
                argMin(tuple(utm_campaign), (ts, event_id)).1 AS first_campaign
            FROM {DATABASE}.visits FINAL
            GROUP BY customer_id
        ) AS v
        LEFT JOIN (
            SELECT customer_id, groupArray(ts) AS purchase_times
            FROM {DATABASE}.purchases FINAL
            WHERE kind = 'purchase'
            GROUP BY customer_id
        ) AS p ON p.customer_id = v.customer_id
    ) AS j
    LEFT JOIN (
        SELECT customer_id, acquisition_channel AS channel FROM {FEATURES}
    ) AS c ON c.customer_id = j.customer_id
)
ARRAY JOIN [
    ('overall', 'all'),
    ('acquisition_channel', ifNull(channel, 'unknown')),
    ('utm_campaign', ifNull(first_campaign, 'none'))
] AS step
GROUP BY dimension, value
ORDER BY indexOf(['overall', 'acquisition_channel', 'utm_campaign'], dimension), visited DESC, value
""",
)

REVENUE_DAILY = View(
    "v_revenue_daily",
    "Per UTC day with a purchase or a refund: gross revenue, refunded amount, net revenue "
    "(gross - refunds), orders, buyers, new buyers (first purchase ever that day), "
    "returning buyers and refunds.",
    f"""
SELECT
    day,
    round(sumIf(amount, kind = 'purchase'), 2) AS gross_revenue,
    round(sumIf(amount, kind = 'refund'), 2) AS refund_amount,
    round(sumIf(amount, kind = 'purchase') - sumIf(amount, kind = 'refund'), 2) AS net_revenue,
    countIf(kind = 'purchase') AS orders,
    uniqExactIf(customer_id, kind = 'purchase') AS buyers,
    uniqExactIf(customer_id, kind = 'purchase' AND day = first_purchase_day) AS new_buyers,
    buyers - new_buyers AS returning_buyers,
    countIf(kind = 'refund') AS refund_count
FROM (
    SELECT
        customer_id,
        kind,
        amount,
        toDate(ts, 'UTC') AS day,
        minIf(toDate(ts, 'UTC'), kind = 'purchase') OVER (PARTITION BY customer_id) AS first_purchase_day
    FROM {DATABASE}.purchases FINAL
)
GROUP BY day
ORDER BY day
""",
)

CHURN_RISK = View(
    "v_churn_risk",
    "Distribution of churn probability by value tier: customers and their gross purchases "
    "(monetary_at_risk) per bucket of 0.1 (churn_bucket = lower bound, NULL = not scored yet).",
    f"""
SELECT
    value_tier,
    if(churn_probability >= 0.9, 0.9, floor(churn_probability * 10) / 10) AS churn_bucket,
    count() AS customers,
    round(sum(monetary_total), 2) AS monetary_at_risk
FROM {FEATURES}
GROUP BY value_tier, churn_bucket
ORDER BY value_tier, churn_bucket
""",
)

TOP_AT_RISK = View(
    "v_top_at_risk",
    f"Customers at risk (churn_probability >= {AT_RISK_PROBABILITY}), most valuable first "
    "(by monetary total), with their value tier, RFM segment and last purchase.",
    f"""
SELECT customer_id, churn_probability, monetary_total, value_tier, rfm_segment, last_purchase_at
FROM {FEATURES}
WHERE churn_probability >= {AT_RISK_PROBABILITY}
ORDER BY monetary_total DESC, churn_probability DESC, customer_id
""",
)


def _by_profile(first: str, second: str, pairs: str) -> str:
    """Customers, revenue, churned share and average churn probability per ``pairs`` of values
    of two profile fields (``first_value``, ``second_value`` or ``'all'``)."""
    return f"""
SELECT
    pair.1 AS {first},
    pair.2 AS {second},
    count() AS customers,
    round(sum(monetary_total), 2) AS revenue,
    round(countIf(lifecycle_stage = 'churned') / count(), 4) AS churned_share,
    round(avg(churn_probability), 4) AS avg_churn_probability
FROM (
    SELECT
        ifNull({first}, 'unknown') AS first_value,
        ifNull({second}, 'unknown') AS second_value,
        monetary_total,
        lifecycle_stage,
        churn_probability
    FROM {FEATURES}
)
ARRAY JOIN [{pairs}] AS pair
GROUP BY {first}, {second}
ORDER BY {first} = 'all', {first}, {second} = 'all', {second}
"""


GEO = View(
    "v_geo",
    "By region and city (city 'all' = the region's total, region 'all' = everyone): customers, "
    "revenue, churned share (lifecycle_stage = 'churned', of the customers) and average churn probability.",
    _by_profile("region", "city", "(first_value, second_value), (first_value, 'all'), ('all', 'all')"),
)

DEMOGRAPHICS = View(
    "v_demographics",
    "By age band and gender ('all' = total over that field): customers, revenue, churned share "
    "(lifecycle_stage = 'churned', of the customers) and average churn probability.",
    _by_profile(
        "age_band",
        "gender",
        "(first_value, second_value), (first_value, 'all'), ('all', second_value), ('all', 'all')",
    ),
)

_ACTIONS = typing.get_args(SocialAction)
_ACTION_COUNTS = ",\n        ".join(f"countIf(action = '{action}') AS {action}s" for action in _ACTIONS)
_ACTION_SUMS = ",\n    ".join(f"sum({action}s) AS {action}s" for action in _ACTIONS)

ENGAGEMENT = View(
    "v_engagement",
    "Social actions by platform and model segment: interactions, count per action, customers "
    "who interacted and their average engagement score (each customer counted once).",
    f"""
SELECT
    platform,
    segment_name AS segment,
    sum(interactions) AS interactions,
    {_ACTION_SUMS},
    count() AS customers,
    round(avg(engagement_score), 4) AS avg_engagement_score
FROM (
    SELECT
        platform,
        customer_id,
        count() AS interactions,
        {_ACTION_COUNTS}
    FROM {DATABASE}.social_interactions FINAL
    GROUP BY platform, customer_id
) AS s
INNER JOIN (
    SELECT customer_id, ifNull(toString(segment), 'unscored') AS segment_name, engagement_score
    FROM {FEATURES}
) AS c ON c.customer_id = s.customer_id
GROUP BY platform, segment
ORDER BY platform, segment
""",
)

AUDIENCE_SIZES_DAILY = View(
    "v_audience_sizes_daily",
    "Per audience and day of event time (as_of): customers who entered, who left, and members "
    "at the end of the day (entries less exits so far); consent given or withdrawn by a member "
    "changes what destinations were told, not membership, and is not counted.",
    f"""
SELECT
    audience,
    toDate(as_of) AS day,
    countIf(change = 'entered') AS entered,
    countIf(change = 'exited') AS exited,
    sum(toInt64(countIf(change = 'entered')) - toInt64(countIf(change = 'exited')))
        OVER (PARTITION BY audience ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS members
FROM {DATABASE}.audience_events FINAL
WHERE reason != 'consent'
GROUP BY audience, day
ORDER BY audience, day
""",
    migration=9,
)

AUDIENCE_OVERLAP = View(
    "v_audience_overlap",
    "Per pair of audiences (audience < other): members of each, members of both, and the "
    "overlap as a share of the smaller (0 when one is empty) and of either (Jaccard).",
    f"""
WITH members AS (SELECT audience, customer_id FROM {DATABASE}.audience_membership FINAL),
sizes AS (SELECT audience, count() AS size FROM members GROUP BY audience)
SELECT
    a.audience AS audience,
    b.audience AS other,
    sa.size AS audience_members,
    sb.size AS other_members,
    countIf(m2.customer_id != '') AS both,
    round(if(least(sa.size, sb.size) = 0, 0, both / least(sa.size, sb.size)), 4) AS share_of_smaller,
    round(if(sa.size + sb.size - both = 0, 0, both / (sa.size + sb.size - both)), 4) AS jaccard
FROM sizes AS a
CROSS JOIN sizes AS b
INNER JOIN sizes AS sa ON sa.audience = a.audience
INNER JOIN sizes AS sb ON sb.audience = b.audience
LEFT JOIN members AS m1 ON m1.audience = a.audience
LEFT JOIN members AS m2 ON m2.audience = b.audience AND m2.customer_id = m1.customer_id
WHERE a.audience < b.audience
GROUP BY audience, other, audience_members, other_members
ORDER BY audience, other
""",
    migration=9,
)

#: The views, by name.
ALERT_OUTCOMES = View(
    "v_alert_outcomes",
    "Per churn alert: what happened after it, on event time: whether its horizon has passed "
    "(matured: the newest purchase of anyone is later than as_of + horizon_days), the customer's "
    "purchases and revenue within the horizon (none: the alert was right), days since their last "
    "purchase when alerted, and whether they were in the control group (never told).",
    f"""
SELECT
    a.alert_id AS alert_id,
    a.customer_id AS customer_id,
    a.as_of AS as_of,
    a.threshold AS threshold,
    a.value_tier AS value_tier,
    a.control AS control,
    a.churn_probability AS churn_probability,
    a.horizon_days AS horizon_days,
    a.as_of + toIntervalMillisecond(toInt64(a.horizon_days * 86400000)) AS decided_at,
    decided_at <= (SELECT max(ts) FROM {DATABASE}.purchases) AS matured,
    round(dateDiff('second', a.last_purchase_at, a.as_of) / 86400, 2) AS days_since_purchase,
    countIf(p.ts > a.as_of AND p.ts <= decided_at) AS purchases_after,
    round(sumIf(p.amount, p.ts > a.as_of AND p.ts <= decided_at), 2) AS revenue_after
FROM (SELECT * FROM {DATABASE}.churn_alerts FINAL) AS a
LEFT JOIN (SELECT customer_id, ts, amount FROM {DATABASE}.purchases FINAL WHERE kind = 'purchase') AS p
    ON p.customer_id = a.customer_id
GROUP BY alert_id, customer_id, as_of, threshold, value_tier, control, churn_probability, horizon_days,
    a.last_purchase_at
ORDER BY as_of, alert_id
""",
    migration=11,
)

ALERT_RULES = View(
    "v_alert_rules",
    "Per alert rule (threshold, value_tier), alerts sent (the control group left out): how many, "
    "how many matured, precision (share of matured alerts whose customer made no purchase in the "
    "horizon), the median lead time of the right ones (days left of the horizon since their last "
    "purchase when alerted), and the revenue of the alerted customers who bought again in it.",
    f"""
SELECT
    threshold,
    value_tier,
    count() AS alerts,
    countIf(matured) AS matured_alerts,
    round(if(matured_alerts = 0, 0, countIf(matured AND purchases_after = 0) / matured_alerts), 4) AS precision,
    round(quantileExactIf(0.5)(horizon_days - days_since_purchase, matured AND purchases_after = 0), 2)
        AS median_lead_days,
    round(sumIf(revenue_after, matured), 2) AS revenue_after
FROM {DATABASE}.v_alert_outcomes
WHERE NOT control
GROUP BY threshold, value_tier
ORDER BY threshold, value_tier
""",
    migration=11,
)

ALERT_UPLIFT = View(
    "v_alert_uplift",
    "Per alert rule (threshold, value_tier), matured alerts: customers told and of the control "
    "group, the share of each who bought again within the horizon, the uplift (told less control) "
    "with its 95% margin (normal approximation: the uplift is real when it exceeds its margin), "
    "and revenue per alerted customer of each.",
    f"""
SELECT
    threshold,
    value_tier,
    countIf(NOT control) AS told,
    countIf(control) AS held_out,
    round(if(told = 0, 0, countIf(NOT control AND purchases_after > 0) / told), 4) AS told_rebought,
    round(if(held_out = 0, 0, countIf(control AND purchases_after > 0) / held_out), 4) AS held_out_rebought,
    round(told_rebought - held_out_rebought, 4) AS uplift,
    round(if(told = 0 OR held_out = 0, NULL, 1.96 * sqrt(told_rebought * (1 - told_rebought) / told
        + held_out_rebought * (1 - held_out_rebought) / held_out)), 4) AS uplift_margin_95,
    round(avgIf(revenue_after, NOT control), 2) AS told_revenue_per_alert,
    round(avgIf(revenue_after, control), 2) AS held_out_revenue_per_alert
FROM {DATABASE}.v_alert_outcomes
WHERE matured
GROUP BY threshold, value_tier
ORDER BY threshold, value_tier
""",
    migration=11,
)

VIEWS: dict[str, View] = {
    view.name: view
    for view in (
        SEGMENT_SUMMARY,
        RFM_GRID,
        COHORT_RETENTION,
        FUNNEL,
        REVENUE_DAILY,
        CHURN_RISK,
        TOP_AT_RISK,
        GEO,
        DEMOGRAPHICS,
        ENGAGEMENT,
        AUDIENCE_SIZES_DAILY,
        AUDIENCE_OVERLAP,
        ALERT_OUTCOMES,
        ALERT_RULES,
        ALERT_UPLIFT,
    )
}
