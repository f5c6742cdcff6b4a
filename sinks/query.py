"""The read-only query path analysts use (``crm360 sql``, ``POST /sql``, the dashboard).

Read-only by construction, at three levels:

- the connection (:func:`connect_readonly`): its session has the per-query limits and then
  ``readonly = 1``, which forbids writes and any change of settings, those in the query text
  included. Nothing is set or restored per query, so nothing a query does can change the
  connection. (The driver used to apply per-call settings with ``SET`` and restore them
  afterwards: a refused statement left ``readonly = 1`` behind and every later query failed.)
- the statement (:func:`statement`): ClickHouse's own parser reads the text; it must be
  exactly one SELECT (else "Multi-statements are not allowed", from ClickHouse) that reads
  crm360's tables only: no other database (``system.processes`` holds other users' queries),
  no files (``file()``, ``INTO OUTFILE``), no URLs or remote servers (table functions other
  than value generators), no dictionaries or tables named in strings. What runs is the
  statement as ClickHouse formatted it, one statement by construction.
- the scheduling (:class:`ReadOnlyPool`): queries run on a pool's own threads and
  connections, so a long analyst query holds neither the dashboard (its own pool) nor the
  worker's ClickHouse writes.

Embedded chDB has no users or grants, so these checks are what keeps an analyst in
``crm360``; on a ClickHouse server the connection is also the read-only user
``crm360_reader`` (see :func:`reader_statements`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from clickhouse_connect.driver.client import Client

from sinks.clickhouse import connect
from sinks.tables import DATABASE, READER

MAX_RESULT_ROWS = 100_000
#: Every read's limits, then read-only mode, in this order: once ``readonly = 1`` is set no
#: setting can change. With embedded chDB they are the reading session's settings; on a
#: server, the settings profile of the read-only user.
READONLY_SETTINGS: dict[str, int | str] = {
    "max_execution_time": 60,  # seconds
    "max_memory_usage": 1_000_000_000,  # bytes
    "max_result_rows": MAX_RESULT_ROWS,
    "result_overflow_mode": "break",  # a longer result is cut at about MAX_RESULT_ROWS rows
    "readonly": 1,
}
#: Table functions that only generate values (no file, URL, server or database behind them).
GENERATORS = frozenset({"numbers", "zeros", "generateSeries", "generate_series", "values"})
#: Functions that read outside the query's tables: files, dictionaries (which may load from
#: anywhere), tables and columns named in strings. Compared in lower case.
OUTSIDE_FUNCTIONS = frozenset({"file", "joinget", "joingetornull", "hascolumnintable"})
#: ``x IN db.table``: the right side of these may name a table.
IN_FUNCTIONS = frozenset(
    {"in", "notIn", "globalIn", "globalNotIn", "nullIn", "notNullIn", "globalNullIn", "globalNotNullIn"}
)

#: Tables outside crm360's that describe the server and its tables, which SQL clients read on
#: connect and to browse tables (besides ``information_schema``): none holds data or queries.
CATALOG = frozenset(
    ("system", name)
    for name in (
        "settings",
        "functions",
        "databases",
        "tables",
        "columns",
        "data_type_families",
        "table_engines",
        "formats",
        "time_zones",
        "build_options",
        "one",
        "collations",
        "table_functions",
        "aggregate_function_combinators",
        "keywords",
    )
)

T = TypeVar("T")


class Refused(ValueError):
    """The query is not one SELECT over crm360's tables; the message says why."""


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of a query, with JSON-ready values."""

    columns: list[str]
    rows: list[list[Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows}


def sql_string(value: str) -> str:
    """A ClickHouse string literal.

    >>> print(sql_string("it's"))
    'it\\'s'
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def connect_readonly(dsn: str, limits: dict[str, int | str] = READONLY_SETTINGS) -> Client:
    """A connection whose session is read-only, with ``limits`` (ending with ``readonly = 1``).

    ``dsn`` is the data's (``chdb://...``) or, for a server, the read-only user's (see
    ``Settings.clickhouse_reader_url``), whose settings profile holds :data:`READONLY_SETTINGS`.
    """
    if dsn.startswith("chdb://"):  # each chDB client has its own session, set here once, in order
        return connect(dsn, database=DATABASE, settings=limits)
    return connect(dsn, database=DATABASE)


def reader_statements(password: str) -> list[str]:
    """What makes the read-only user :data:`~sinks.tables.READER` of a ClickHouse server, with the
    limits of :data:`READONLY_SETTINGS` as its settings profile and SELECT on crm360's tables
    only. Run at every worker start (after the migrations): password and limits follow the code.
    chDB has no users (it refuses these: no writable access storage)."""
    limits = ", ".join(
        f"{name} = {value if isinstance(value, int) else sql_string(value)}"
        for name, value in READONLY_SETTINGS.items()
    )
    profile = f"{DATABASE}_readonly"
    return [
        f"CREATE SETTINGS PROFILE IF NOT EXISTS {profile}",
        f"ALTER SETTINGS PROFILE {profile} SETTINGS {limits}",
        f"CREATE USER IF NOT EXISTS {READER}",
        (
            f"ALTER USER {READER} IDENTIFIED WITH sha256_password BY {sql_string(password)} "
            f"DEFAULT DATABASE {DATABASE} SETTINGS PROFILE {sql_string(profile)}"
        ),
        f"GRANT SELECT ON {DATABASE}.* TO {READER}",
    ]


def _nodes(tree: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a parsed query, parents first (no recursion: the parser allows 1000 levels)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for value in reversed(node.values()):
            children = value if isinstance(value, list) else [value]
            stack.extend(reversed([child for child in children if isinstance(child, dict)]))


def _outside(identifier: dict[str, Any], catalog: bool) -> str | None:
    """Why a table name is refused: another database than crm360's (with ``catalog``, but the
    tables of :data:`CATALOG` that clients read to describe the server and its tables)."""
    parts = identifier.get("name_parts") or [identifier["name"]]
    if len(parts) > 1 and parts[0] != DATABASE:
        if catalog and (parts[0].lower() == "information_schema" or tuple(parts[:2]) in CATALOG):
            return None
        return f"{identifier['name']}: only the tables of the {DATABASE} database can be read"
    return None


def _problem(node: dict[str, Any], catalog: bool) -> str | None:
    """Why one node of a parsed SELECT is refused, if it is."""
    kind = node.get("type")
    if "out_file" in node:
        return "INTO OUTFILE: queries cannot write files"
    if "settings_ast" in node:
        return "SETTINGS: the limits of queries here are fixed"
    if kind == "TableIdentifier":
        return _outside(node, catalog)
    if kind == "TableExpression" and "table_function" in node:
        name = node["table_function"]["name"]
        if name not in GENERATORS:
            return f"table function {name}(): only the value generators {', '.join(sorted(GENERATORS))} are allowed"
    if kind == "Function":
        name = node["name"]
        if name.lower() in OUTSIDE_FUNCTIONS or name.lower().startswith("dict"):
            return f"function {name}() reads outside the {DATABASE} tables"
        arguments = node.get("arguments", {}).get("children", [])
        if name in IN_FUNCTIONS and len(arguments) == 2 and arguments[1].get("type") == "Identifier":
            return _outside(arguments[1], catalog)
    return None


@dataclass(frozen=True)
class Select:
    """One SELECT as ClickHouse formats it, without its ``FORMAT`` clause, and that format."""

    sql: str
    format: str | None


def parse_select(client: Client, sql: str, catalog: bool = False) -> Select:
    """The one SELECT ``sql`` holds; :class:`Refused` if it is not one SELECT over crm360's
    tables (with ``catalog``, also :data:`CATALOG`). ClickHouse's parser reads it (errors are
    its own).

    A ``SETTINGS`` clause is refused (a read-only session refuses it anyway): the limits hold.
    """
    tree, formatted = client.query(
        "SELECT parseQueryToJSON({sql:String}), formatQuerySingleLine({sql:String})", parameters={"sql": sql}
    ).result_rows[0]
    try:
        parsed = orjson.loads(tree)
    except orjson.JSONDecodeError:
        raise Refused("the query is nested too deeply") from None
    if parsed["type"] != "SelectWithUnionQuery":
        raise Refused(f"only SELECT queries are run here, not {parsed['type']}")
    for node in _nodes(parsed):
        problem = _problem(node, catalog)
        if problem:
            raise Refused(problem)
    text = str(formatted)
    fmt = parsed.get("format_ast", {}).get("name")
    if fmt is not None:  # formatted last: "... FORMAT <name>" (SETTINGS, which could follow, is refused)
        text = text.removesuffix(f" FORMAT {fmt}")
    return Select(text, fmt)


def statement(client: Client, sql: str) -> str:
    """The one SELECT ``sql`` holds, as ClickHouse formats it, without a ``FORMAT`` clause
    (:class:`Refused`: the client chooses the format, e.g. ``crm360 sql --format``); see
    :func:`parse_select`."""
    select = parse_select(client, sql)
    if select.format is not None:
        raise Refused("FORMAT: the output format is chosen by the client (crm360 sql --format)")
    return select.sql


def run_readonly(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
    """Run one SELECT over crm360's tables on a :func:`connect_readonly` connection; errors
    come from ClickHouse, or are :class:`Refused`. Tables can be named bare (``purchases``)."""
    result = client.query(statement(client, sql), parameters=parameters)
    return QueryResult(list(result.column_names), [[_plain(v) for v in row] for row in result.result_rows])


class ReadOnlyPool:
    """``size`` read-only connections, each owned by one of the pool's own threads.

    Queries beyond ``size`` wait for a free thread without taking one of the event loop's
    default threads (which write to ClickHouse), and never wait for another pool's queries.
    The connections are read-only with ``limits`` (:func:`connect_readonly`); with None they
    are ``dsn``'s own, without limits: for the worker's own reads, whose statements are its
    code's (a backfill reads every customer).
    """

    def __init__(self, dsn: str, size: int, name: str, limits: dict[str, int | str] | None = READONLY_SETTINGS) -> None:
        self.dsn = dsn
        self.limits = limits
        self._threads = ThreadPoolExecutor(size, thread_name_prefix=f"crm360-{name}")
        self._local = threading.local()

    def _call(self, use: Callable[[Client], T]) -> T:
        client = getattr(self._local, "client", None)
        if client is None:  # opened in its thread, on first use: a failure is the query's error
            opened = connect_readonly(self.dsn, self.limits) if self.limits else connect(self.dsn, database=DATABASE)
            client = self._local.client = opened
        return use(client)

    async def run(self, use: Callable[[Client], T]) -> T:
        """``use(client)`` in one of the pool's threads, with that thread's connection.

        ``await pool.run(lambda client: run_readonly(client, "SELECT 1"))``
        """
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._call, use)
