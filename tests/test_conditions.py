"""Audience conditions (processors.conditions): what they accept and refuse, and their truth on
random rows equal to ClickHouse's own evaluation of the same text (embedded chDB, no worker)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import clickhouse_connect
import pytest

from processors.conditions import ConditionError, parse_condition

#: Columns of customer_features of each kind the random conditions use, and their ClickHouse types.
COLUMNS = {
    "purchase_count": "Int64",
    "churn_probability": "Nullable(Float64)",
    "monetary_total": "Float64",
    "region": "Nullable(String)",
    "value_tier": "String",
    "last_purchase_at": "Nullable(DateTime64(3, 'UTC'))",
}
TEXTS = ["north", "south", "O'Brien", "gold", "silver", "", "tab\\t"]
TIMES = ["2024-01-01", "2024-01-02 12:00:00", "2024-01-03"]
DAY0 = 1_704_067_200.0  # 2024-01-01


def random_row(rng: random.Random, n: int) -> dict[str, Any]:
    return {
        "id": n,
        "purchase_count": rng.randrange(0, 6),
        "churn_probability": None if rng.random() < 0.3 else round(rng.random(), 2),
        "monetary_total": round(rng.uniform(0, 200), 1),
        "region": None if rng.random() < 0.3 else rng.choice(TEXTS),
        "value_tier": rng.choice(TEXTS),
        "last_purchase_at": None if rng.random() < 0.3 else DAY0 + rng.randrange(0, 3 * 86_400_000, 3_600_000) / 1000,
    }


def literal(rng: random.Random, column: str) -> str:
    if "DateTime" in COLUMNS[column]:
        return f"'{rng.choice(TIMES)}'"
    if COLUMNS[column].endswith("String)") or COLUMNS[column] == "String":
        return "'" + rng.choice(TEXTS).replace("'", "''") + "'"
    return str(rng.choice([0, 1, 2, 3, 0.25, 0.5, 0.75, 50, 100.5, -1]))


def predicate(rng: random.Random) -> str:
    column = rng.choice(list(COLUMNS))
    shape = rng.randrange(6)
    if shape == 0:
        return f"{column} {rng.choice(['=', '!=', '<>', '<', '<=', '>', '>='])} {literal(rng, column)}"
    if shape == 1:
        values = ", ".join(literal(rng, column) for _ in range(rng.randrange(1, 4)))
        return f"{column} {rng.choice(['IN', 'NOT IN', 'in'])} ({values})"
    if shape == 2:
        return f"{column} {rng.choice(['BETWEEN', 'NOT BETWEEN'])} {literal(rng, column)} AND {literal(rng, column)}"
    if shape == 3:
        return f"{column} IS {rng.choice(['', 'NOT '])}NULL"
    return f"{column} {rng.choice(['>', '='])} {literal(rng, column)}"


def condition(rng: random.Random, depth: int = 0) -> str:
    roll = rng.random()
    if depth > 2 or roll < 0.35:
        return predicate(rng)
    if roll < 0.5:
        return f"NOT {condition(rng, depth + 1)}"
    if roll < 0.6:
        return f"({condition(rng, depth + 1)})"
    joiner = rng.choice([" AND ", " OR ", " and ", " or "])
    return joiner.join(condition(rng, depth + 1) for _ in range(rng.randrange(2, 4)))


@pytest.mark.integration  # embedded ClickHouse
def test_random_conditions_are_as_true_as_clickhouse_says() -> None:
    """300 random conditions on 60 random rows: true, false or unknown (NULL) exactly as
    ClickHouse evaluates the same text (precedence of NOT, AND and OR included) and the
    condition's own SQL (``Condition.sql``, which a backfill asks ClickHouse for)."""
    rng = random.Random(7)
    rows = [random_row(rng, n) for n in range(60)]
    client = clickhouse_connect.get_client(dsn="chdb://memory")
    columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
    client.command(f"CREATE TABLE rows (id Int64, {columns}) ENGINE = Memory")
    stored = [
        row
        | {
            "last_purchase_at": None
            if row["last_purchase_at"] is None
            else datetime.fromtimestamp(row["last_purchase_at"], UTC)
        }
        for row in rows
    ]
    client.insert("rows", [list(row.values()) for row in stored], column_names=list(rows[0]))
    for _ in range(300):
        text = condition(rng)
        parsed = parse_condition(text)
        # The language has no escapes: a backslash in its text is one in ClickHouse's SQL only as \\.
        texts = [parsed.sql] if "\\" in text else [text, parsed.sql]
        for sql in texts:
            answers = {n: truth for n, truth in client.query(f"SELECT id, ({sql}) FROM rows ORDER BY id").result_rows}
            for row in rows:
                truth = parsed.truth(row)
                clickhouse = answers[row["id"]]
                assert truth == (None if clickhouse is None else bool(clickhouse)), (sql, row)
                assert parsed(row) is (clickhouse == 1)


def test_times_compare_with_iso_dates_and_times() -> None:
    day = parse_condition("last_purchase_at >= '2024-01-01' AND last_purchase_at < '2024-01-02T00:00:00+00:00'")
    assert day({"last_purchase_at": 1_704_067_200.0}) and day({"last_purchase_at": 1_704_153_599.0})
    assert not day({"last_purchase_at": 1_704_153_600.0}) and not day({"last_purchase_at": None})
    zoned = parse_condition("signup_at > '2024-01-01T01:00:00+02:00'")  # 2023-12-31T23:00Z
    assert zoned({"signup_at": 1_704_063_601.0}) and not zoned({"signup_at": 1_704_063_600.0})


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "empty condition: write one, e.g. churn_probability > 0.6"),
        ("   ", "empty condition: write one, e.g. churn_probability > 0.6"),
        ("recency > 30", "unknown column 'recency' at 1 (did you mean recency_days?)"),
        ("purchase_count > 'two'", "purchase_count is a number: compare it with a number, not 'two' (at 18)"),
        ("region = north", "region is text: compare it with text in quotes, not north (at 10)"),
        ("signup_at > '01/02/2024'", "signup_at is a time: '01/02/2024' at 13 is not an ISO date or time"),
        ("purchase_count >", "purchase_count is a number: compare it with a number, not nothing (at 17)"),
        ("purchase_count > 1 purchase_count < 3", "unexpected 'purchase_count' at 20: join conditions with AND or OR"),
        ("(purchase_count > 1", "expected ) at 20, found the end"),
        ("purchase_count BETWEEN 1 OR 3", "expected AND at 26, found 'OR'"),
        ("purchase_count ~ 3", "cannot read '~ 3' at 16"),
        ("purchase_count LIKE 3", "expected a comparison (=, !=, <, <=, >, >=, IN, BETWEEN, IS) at 16, found 'LIKE'"),
        ("purchase_count NOT = 3", "expected IN or BETWEEN after NOT at 16"),
        ("AND purchase_count > 1", "expected a column name at 1, found 'AND'"),
        ("region = 'open", 'cannot read "\'open" at 10'),
        ("__import__('os') = 1", "unknown column '__import__' at 1"),
    ],
)
def test_a_wrong_condition_says_what_and_where(text: str, error: str) -> None:
    with pytest.raises(ConditionError) as raised:
        parse_condition(text)
    assert str(raised.value) == error
