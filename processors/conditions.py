"""Audience conditions: a small SQL-like language over a customer's feature row, parsed and
checked against the row's columns, never ``eval``-ed.

Grammar (keywords in any case)::

    condition  := or
    or         := and ("OR" and)*
    and        := not ("AND" not)*
    not        := "NOT" not | "(" condition ")" | predicate
    predicate  := column ("=" | "!=" | "<>" | "<" | "<=" | ">" | ">=") literal
                | column ["NOT"] "IN" "(" literal ("," literal)* ")"
                | column ["NOT"] "BETWEEN" literal "AND" literal
                | column "IS" ["NOT"] "NULL"
    literal    := number | 'text' (a quote inside doubled: 'O''Brien')

Columns are those of ``customer_features`` (:class:`schemas.rows.CustomerFeatures`): numbers
compare with numbers, text with text, times with an ISO date or time in quotes (UTC unless it
says otherwise). As in SQL, a comparison with a missing value (NULL) is unknown, ``NOT`` of
unknown is unknown, and only a condition that is true makes a member.

>>> condition = parse_condition("churn_probability > 0.6 AND value_tier IN ('gold', 'platinum')")
>>> condition({"churn_probability": 0.7, "value_tier": "gold"}), condition({"churn_probability": 0.7, "value_tier": "bronze"})
(True, False)
>>> condition({"churn_probability": None, "value_tier": "gold"})
False
>>> condition.columns
('churn_probability', 'value_tier')
>>> parse_condition("NOT churn_probability > 0.6")({"churn_probability": None})
False
>>> parse_condition("last_purchase_at < '2024-01-01'")({"last_purchase_at": 1_700_000_000.0})
True
>>> parse_condition("churn_probabilty > 0.6")
Traceback (most recent call last):
...
processors.conditions.ConditionError: unknown column 'churn_probabilty' at 1 (did you mean churn_probability?)
>>> parse_condition("value_tier > 3")
Traceback (most recent call last):
...
processors.conditions.ConditionError: value_tier is text: compare it with text in quotes, not 3 (at 14)
"""

from __future__ import annotations

import difflib
import operator
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from schemas.rows import CustomerFeatures

#: What a column holds, as a condition compares it.
NUMBER, TEXT, TIME = "number", "text", "time"

#: True, False, or None: unknown (a comparison with a missing value).
Truth = bool | None
Row = Mapping[str, Any]


def column_kinds(model: type[BaseModel] = CustomerFeatures) -> dict[str, str]:
    """The kind of each field of a pydantic row model.

    >>> kinds = column_kinds()
    >>> kinds["recency_days"], kinds["region"], kinds["last_purchase_at"]
    ('number', 'text', 'time')
    """
    kinds = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        kinds[name] = TIME if annotation is datetime else TEXT if annotation is str else NUMBER
    return kinds


#: The columns of ``customer_features`` a condition may name.
FEATURE_COLUMNS = column_kinds()


class ConditionError(ValueError):
    """A condition that cannot be read or does not fit the columns; says where and why."""


@dataclass(frozen=True)
class Condition:
    """A parsed condition: call it with a feature row (times as epoch seconds) for membership."""

    text: str
    #: The columns it names, in the order it names them first.
    columns: tuple[str, ...]
    truth: Callable[[Row], Truth]
    #: The same condition as a ClickHouse expression over ``customer_features`` (times compared
    #: as epoch seconds, as here): true, false or NULL for a row exactly as :attr:`truth` is.
    sql: str

    def __call__(self, row: Row) -> bool:
        return self.truth(row) is True


_TOKEN = re.compile(
    r"(?:(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<text>'(?:[^']|'')*')"
    r"|(?P<op><=|>=|!=|<>|=|<|>|\(|\)|,)|(?P<word>[A-Za-z_][A-Za-z0-9_]*))"
)
_KEYWORDS = {"AND", "OR", "NOT", "IN", "BETWEEN", "IS", "NULL"}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class _Token:
    kind: str  # number, text, op, word, end
    value: str
    at: int  # 1-based position in the condition, for messages


def _tokens(text: str) -> list[_Token]:
    tokens, position = [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise ConditionError(f"cannot read {text[position : position + 10]!r} at {position + 1}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        keyword = kind == "word" and value.upper() in _KEYWORDS
        tokens.append(_Token(kind, value.upper() if keyword else value, position + 1))
        position = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str, columns: Mapping[str, str]) -> None:
        self.tokens, self.index, self.columns, self.used = _tokens(text), 0, columns, dict[str, None]()

    @property
    def next(self) -> _Token:
        return self.tokens[self.index]

    def take(self, value: str | None = None) -> _Token:
        token = self.next
        if value is not None and token.value != value:
            found = "the end" if token.kind == "end" else repr(token.value)
            raise ConditionError(f"expected {value} at {token.at}, found {found}")
        self.index += 1
        return token

    def accept(self, value: str) -> bool:
        if self.next.value == value and self.next.kind in ("word", "op"):
            self.index += 1
            return True
        return False

    def condition(self) -> _Node:
        parts = [self.conjunction()]
        while self.accept("OR"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else _joined(parts, decisive=True)

    def conjunction(self) -> _Node:
        parts = [self.negation()]
        while self.accept("AND"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else _joined(parts, decisive=False)

    def negation(self) -> _Node:
        if self.accept("NOT"):
            inner, sql = self.negation()
            return (lambda row: None if (truth := inner(row)) is None else not truth), f"NOT {sql}"
        if self.accept("("):
            group = self.condition()
            self.take(")")
            return group
        return self.predicate()

    def predicate(self) -> _Node:
        token = self.take()
        if token.kind != "word" or token.value in _KEYWORDS:
            found = "the end" if token.kind == "end" else repr(token.value)
            raise ConditionError(f"expected a column name at {token.at}, found {found}")
        name, kind = token.value, self.columns.get(token.value)
        if kind is None:
            close = difflib.get_close_matches(name, self.columns, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConditionError(f"unknown column {name!r} at {token.at}{hint}")
        self.used[name] = None
        column = f"(toUnixTimestamp64Milli({name}) / 1000)" if kind == TIME else name
        if self.accept("IS"):
            negated = self.accept("NOT")
            self.take("NULL")
            if negated:
                return (lambda row: row.get(name) is not None), f"({column} IS NOT NULL)"
            return (lambda row: row.get(name) is None), f"({column} IS NULL)"
        negated = self.accept("NOT")
        if self.accept("IN"):
            self.take("(")
            values = [self.literal(name, kind)]
            while self.accept(","):
                values.append(self.literal(name, kind))
            self.take(")")
            members = frozenset(values)
            listed = ", ".join(map(_sql_literal, values))
            in_sql = f"({column} {'NOT IN' if negated else 'IN'} ({listed}))"
            return _known(name, lambda v: (v in members) != negated), in_sql
        if self.accept("BETWEEN"):
            low = self.literal(name, kind)
            self.take("AND")
            high = self.literal(name, kind)
            between = (
                f"({column} {'NOT BETWEEN' if negated else 'BETWEEN'} {_sql_literal(low)} AND {_sql_literal(high)})"
            )
            return _known(name, lambda v: (low <= v <= high) != negated), between
        if negated:
            raise ConditionError(f"expected IN or BETWEEN after NOT at {self.tokens[self.index - 1].at}")
        op = self.take()
        compare = _COMPARE.get(op.value) if op.kind == "op" else None
        if compare is None:
            found = "the end" if op.kind == "end" else repr(op.value)
            raise ConditionError(
                f"expected a comparison (=, !=, <, <=, >, >=, IN, BETWEEN, IS) at {op.at}, found {found}"
            )
        value = self.literal(name, kind)
        symbol = "!=" if op.value == "<>" else op.value
        return _known(name, lambda v: compare(v, value)), f"({column} {symbol} {_sql_literal(value)})"

    def literal(self, column: str, kind: str) -> float | str:
        token = self.take()
        if token.kind == "number" and kind == NUMBER:
            return float(token.value)
        if token.kind == "text" and kind == TEXT:
            return token.value[1:-1].replace("''", "'")
        if token.kind == "text" and kind == TIME:
            text = token.value[1:-1]
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise ConditionError(f"{column} is a time: {text!r} at {token.at} is not an ISO date or time") from None
            return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        found = "nothing" if token.kind == "end" else token.value
        wanted = {NUMBER: "a number", TEXT: "text in quotes", TIME: "an ISO date or time in quotes"}[kind]
        raise ConditionError(
            f"{column} is {'a ' if kind != TEXT else ''}{kind}: compare it with {wanted}, not {found} (at {token.at})"
        )


#: A parsed part of a condition: its truth for a row, and the same in ClickHouse's SQL.
_Node = tuple[Callable[[Row], Truth], str]


def _known(name: str, test: Callable[[Any], bool]) -> Callable[[Row], Truth]:
    def truth(row: Row) -> Truth:
        value = row.get(name)
        return None if value is None else test(value)

    return truth


def _sql_literal(value: float | str) -> str:
    r"""A literal as ClickHouse reads it (its strings take backslash escapes too).

    >>> print(_sql_literal(0.5), _sql_literal("O'Brien \\ co"))
    0.5 'O\'Brien \\ co'
    """
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value)


def _joined(parts: list[_Node], decisive: bool) -> _Node:
    """AND (``decisive`` False: one false part decides) or OR (True: one true part decides),
    unknown when no part decides and one is unknown (as in ClickHouse)."""
    truths = [truth for truth, _ in parts]

    def truth(row: Row) -> Truth:
        unknown = False
        for part in truths:
            value = part(row)
            if value is decisive:
                return decisive
            unknown = unknown or value is None
        return None if unknown else not decisive

    return truth, "(" + (" OR " if decisive else " AND ").join(sql for _, sql in parts) + ")"


def parse_condition(text: str, columns: Mapping[str, str] = FEATURE_COLUMNS) -> Condition:
    """The condition ``text`` says, over ``columns`` (name to kind); :class:`ConditionError` if
    it cannot be read or names a column wrongly."""
    if not text.strip():
        raise ConditionError("empty condition: write one, e.g. churn_probability > 0.6")
    parser = _Parser(text, columns)
    truth, sql = parser.condition()
    if parser.next.kind != "end":
        raise ConditionError(f"unexpected {parser.next.value!r} at {parser.next.at}: join conditions with AND or OR")
    return Condition(text, tuple(parser.used), truth, sql)
