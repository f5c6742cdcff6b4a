"""ClickHouse's HTTP interface served by a real worker over embedded ClickHouse: real clients
(clickhouse-connect's HTTP client, plain HTTP in several formats) read what ``/sql`` reads,
with parameters, the API key as their password, and nothing but read-only SELECTs."""

from __future__ import annotations

import base64
import csv
import io
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import clickhouse_connect
import pyarrow.parquet as pq
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.conftest import publish, purchases

pytestmark = pytest.mark.integration

KEY = "s3cret-key"
QUERY = "SELECT customer_id, purchase_count, monetary_total FROM customer_features FINAL ORDER BY customer_id"


def http(port: int, query: str, password: str = KEY, **params: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a plain GET as curl would send it."""
    url = f"http://127.0.0.1:{port}/?" + urllib.parse.urlencode({"query": query, **params})
    auth = base64.b64encode(f"default:{password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_analysts_clients_read_the_embedded_database_through_the_worker(start_worker: Any, broker: str) -> None:
    worker = start_worker(CRM360_API_KEY=KEY)
    port = int(worker.env["CRM360_CLICKHOUSE_HTTP_PORT"])
    events, expected = purchases(90, 30)
    publish(broker, events)
    worker.client.api_key = KEY
    worker.wait_for("SELECT count() FROM customer_features FINAL", 30)
    in_process = worker.client.sql(QUERY).rows  # the same query through /sql

    client = clickhouse_connect.get_client(host="127.0.0.1", port=port, password=KEY)
    frame = client.query_df(QUERY)
    assert frame.values.tolist() == in_process
    table = client.query_arrow(QUERY)
    assert [list(row.values()) for row in table.to_pylist()] == in_process
    bound = client.query(
        "SELECT purchase_count FROM customer_features FINAL WHERE customer_id = {c:String}", parameters={"c": "k7"}
    )
    assert bound.result_rows == [(expected["k7"][0],)]

    status, headers, body = http(port, QUERY, default_format="CSVWithNames")
    assert status == 200 and headers["X-ClickHouse-Format"] == "CSVWithNames"
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == ["customer_id", "purchase_count", "monetary_total"]
    assert [[r[0], int(r[1]), float(r[2])] for r in rows[1:]] == in_process
    status, _, body = http(port, QUERY + " FORMAT JSON")
    assert status == 200 and [list(r.values()) for r in json.loads(body)["data"]] == in_process
    status, _, body = http(port, QUERY + " FORMAT Parquet")
    assert status == 200 and pq.read_table(io.BytesIO(body)).to_pylist()[0]["customer_id"] == in_process[0][0]
    status, _, body = http(port, "SELECT number, toString(number) FROM numbers(300000)")  # streamed in chunks
    lines = body.decode().splitlines()
    assert status == 200 and len(lines) == 300_000 and lines[-1] == "299999\t299999"
    status, _, body = http(port, "SELECT {n:UInt32} + 1", param_n="41")
    assert (status, body) == (200, b"42\n")

    status, headers, body = http(port, "SELECT 1", password="wrong")
    assert status == 401 and headers["X-ClickHouse-Exception-Code"] == "516"
    for refused in (
        "DROP TABLE customer_features",
        "INSERT INTO purchases (event_id) VALUES ('x')",
        "SELECT * FROM system.processes",
        "SELECT 1 SETTINGS readonly = 0",
        "SELECT * FROM file('/etc/passwd')",
    ):
        status, headers, body = http(port, refused)
        # Refused by crm360's read-only path (497), or by ClickHouse's parser before anything runs.
        assert status in (400, 403) and b"DB::Exception" in body, (refused, body)
        assert status == 400 or headers["X-ClickHouse-Exception-Code"] == "497", (refused, body)
    status, headers, body = http(port, "SELECT no_such_column FROM customer_features")
    assert status == 400 and b"DB::Exception" in body and headers["X-ClickHouse-Exception-Code"] == "47"
    with pytest.raises(DatabaseError):
        client.command("TRUNCATE TABLE customer_features")
    assert worker.client.sql(QUERY).rows == in_process  # nothing changed
