"""The analysts' query path (``POST /sql``, ``crm360 sql``, the dashboard) is read-only by
construction: one SELECT over crm360's tables, on connections no query can change, and a long
query holds neither the dashboard nor other queries. Against chDB directly and a real worker."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from sinks.clickhouse import connect, migrate
from sinks.query import READONLY_SETTINGS, Refused, connect_readonly, reader_statements, run_readonly
from sinks.tables import DATABASE

pytestmark = pytest.mark.integration  # embedded ClickHouse

ROOT = Path(__file__).resolve().parents[1]
SECRET = "crm360-secret-5f1d"  # the content of a file no query may read
LIMITS = "SELECT getSetting('readonly'), getSetting('max_execution_time'), currentDatabase()"

#: What analysts tried, and what stops it: ClickHouse's parser, read-only mode, or the checks.
ATTEMPTS = [
    ("SELECT 1; INSERT INTO dead_letters (reason) VALUES ('x'); SELECT 1", "Multi-statements are not allowed"),
    ("SELECT 1; DROP TABLE purchases; SELECT 1", "Multi-statements are not allowed"),
    ("SELECT 1; CREATE TABLE t (a UInt8) ENGINE = Memory; SELECT 1", "Multi-statements are not allowed"),
    ("SELECT 1; SELECT * FROM file('SECRET_FILE', 'LineAsString'); SELECT 1", "Multi-statements are not allowed"),
    ("INSERT INTO dead_letters (reason) VALUES ('x')", "INSERT"),
    ("INSERT INTO dead_letters (reason) SELECT 'x'", "only SELECT"),
    ("SET readonly = 0", "only SELECT"),
    ("CREATE TABLE t (a UInt8) ENGINE = Memory", "only SELECT"),
    ("DROP TABLE purchases", "only SELECT"),
    ("USE system", "only SELECT"),
    ("KILL QUERY WHERE 1", "only SELECT"),
    ("SELECT 1 SETTINGS max_execution_time = 0", "readonly"),
    ("SELECT query FROM system.processes", "only the tables of the crm360 database"),
    ("SELECT count() FROM INFORMATION_SCHEMA.TABLES", "only the tables of the crm360 database"),
    ("SELECT 1 WHERE 1 IN system.one", "only the tables of the crm360 database"),
    ("SELECT * FROM other.secrets", "only the tables of the crm360 database"),
    ("SELECT * FROM merge('system', '^processes$')", "table function merge()"),
    ("SELECT * FROM file('SECRET_FILE', 'LineAsString')", "table function file()"),
    ("SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')", "table function url()"),
    ("SELECT file('SECRET_FILE')", "function file()"),
    ("SELECT dictGet('d', 'a', 1)", "function dictGet()"),
    ("SELECT joinGet('system.one', 'dummy', 0)", "function joinGet()"),
    ("SELECT 1 INTO OUTFILE '/tmp/crm360-outfile'", "INTO OUTFILE"),
]


@pytest.fixture
def attempts(tmp_path: Path) -> list[tuple[str, str]]:
    """:data:`ATTEMPTS`, reading a secret file of this test's."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    return [(sql.replace("SECRET_FILE", str(secret_file)), reason) for sql, reason in ATTEMPTS]


@pytest.fixture
def data(tmp_path: Path) -> Iterator[tuple[Client, str]]:
    """A migrated chDB database with one dead letter, another database beside it, and its DSN."""
    dsn = f"chdb://{tmp_path / 'ch'}"
    writer = connect(dsn)
    migrate(writer)
    writer.command("CREATE DATABASE other")
    writer.command("CREATE TABLE other.secrets (a String) ENGINE = MergeTree ORDER BY a")
    writer.command(f"INSERT INTO {DATABASE}.dead_letters (reason) VALUES ('seen')")
    yield writer, dsn
    writer.close()  # chDB opens one data directory per process: let other tests open theirs


@pytest.fixture
def reader(data: tuple[Client, str]) -> Iterator[Client]:
    client = connect_readonly(data[1])
    yield client
    client.close()


def test_one_select_over_crm360_and_a_refusal_changes_nothing(
    data: tuple[Client, str], reader: Client, attempts: list[tuple[str, str]]
) -> None:
    writer, _ = data
    before = run_readonly(reader, LIMITS).rows
    assert before == [[1, READONLY_SETTINGS["max_execution_time"], DATABASE]]
    for sql, reason in attempts:
        with pytest.raises(Exception, match=reason) as refused:
            run_readonly(reader, sql)
        assert SECRET not in str(refused.value)
        assert run_readonly(reader, LIMITS).rows == before, sql  # the connection is as it was
    assert writer.query(f"SELECT count() FROM {DATABASE}.dead_letters").result_rows == [(1,)]
    assert writer.query(f"EXISTS TABLE {DATABASE}.purchases").result_rows == [(1,)]
    assert writer.query(f"EXISTS TABLE {DATABASE}.t").result_rows == [(0,)]
    assert not Path("/tmp/crm360-outfile").exists()
    # What analysts need still runs: views, CTEs, unions, generators, crm360.-qualified names.
    assert sorted(
        run_readonly(
            reader,
            "WITH d AS (SELECT reason FROM dead_letters) SELECT reason FROM d UNION ALL "
            "SELECT toString(number) FROM numbers(1) UNION ALL "
            "SELECT reason FROM crm360.dead_letters",
        ).rows
    ) == [["0"], ["seen"], ["seen"]]
    assert run_readonly(reader, "SELECT count() FROM v_funnel").rows == [[0]]
    with pytest.raises(Refused, match="nested too deeply"):  # the parser's 1000 levels are deeper than JSON's 1024
        run_readonly(reader, "SELECT " + "[" * 900 + "1" + "]" * 900)


def test_the_read_only_user_statements_parse_and_chdb_has_no_users(data: tuple[Client, str]) -> None:
    """A server gets the read-only user at worker start. No server here: ClickHouse's parser
    checks the statements, and chDB shows why it relies on the query checks instead."""
    writer, _ = data
    statements = reader_statements("s3cr'et")
    for statement in statements:
        assert writer.query("SELECT formatQuery({s:String})", parameters={"s": statement}).result_rows
    assert "readonly = 1" in statements[1] and "GRANT SELECT ON crm360.* TO crm360_reader" in statements
    with pytest.raises(Exception, match="ACCESS_DENIED|ACCESS_STORAGE"):
        writer.command(statements[0])


def post_sql(worker: Any, sql: str) -> tuple[int, Any]:
    return worker.request("POST", "/sql", sql.encode())


def test_sql_refusals_leave_sql_the_cli_and_the_dashboard_working(
    start_worker: Any, attempts: list[tuple[str, str]]
) -> None:
    worker = start_worker()
    event = {
        "type": "purchase",
        "event_id": "s1",
        "customer_id": "ann",
        "ts": "2024-03-01T12:00:00Z",
        "channel": "pos",
        "order_id": "s1",
        "amount": 10.0,
        "currency": "EUR",
    }
    assert worker.request("POST", "/events", json.dumps(event).encode())[0] == 200
    worker.wait_for("SELECT count() AS n FROM customer_features FINAL", 1)
    for sql, reason in attempts:
        status, answer = post_sql(worker, sql)
        assert status == 400 and reason in answer["error"] and SECRET not in answer["error"], (sql, answer)
    assert worker.sql("SELECT count() AS n FROM dead_letters")[0]["n"] == 0  # nothing was inserted
    assert worker.sql("SELECT count() AS n FROM purchases FINAL")[0]["n"] == 1  # nor dropped
    assert "Unknown table" in post_sql(worker, "SELECT * FROM t")[1]["error"]  # nor created
    status, board = worker.get("/dashboard/data")
    assert status == 200 and board["headline_error"] is None
    assert board["headline"][0] == {"key": "customers", "label": "Customers", "value": 1, "text": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "sql", "SELECT count() AS n FROM customer_features"],
        cwd=ROOT,
        env=worker.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert worker.get("/customers/nobody")[0] == 404  # read from ClickHouse, on the dashboard's connection
    assert worker.get("/health")[0] == 200


#: About 13 s of sleeping, in five blocks (ClickHouse allows at most 3 s of sleep per block).
LONG_QUERY = "SELECT sum(sleepEachRow(0.00004)) AS s FROM numbers(327045)"


def test_a_long_analyst_query_holds_neither_the_dashboard_nor_other_queries(start_worker: Any) -> None:
    worker = start_worker()
    answers: dict[str, Any] = {}

    def long_query() -> None:
        started = time.monotonic()
        answers["long"] = post_sql(worker, LONG_QUERY)
        answers["long_s"] = time.monotonic() - started

    analyst = threading.Thread(target=long_query)
    analyst.start()
    time.sleep(1.0)  # the long query is running
    started = time.monotonic()
    status, board = worker.get("/dashboard/data")
    dashboard_s, dashboard_during_long = time.monotonic() - started, analyst.is_alive()
    other, other_during_long = post_sql(worker, "SELECT 1 AS one"), analyst.is_alive()
    analyst.join()
    assert answers["long"] == (200, {"columns": ["s"], "rows": [[0]]}) and answers["long_s"] > 5
    assert status == 200 and board["headline_error"] is None and board["headline"][0]["value"] == 0
    assert other == (200, {"columns": ["one"], "rows": [[1]]})
    # Measured, not timed tightly: both answered while the long query still ran.
    assert dashboard_during_long and other_during_long, (dashboard_s, answers["long_s"])
