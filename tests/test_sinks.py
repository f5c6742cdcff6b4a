"""ClickHouse on chDB: migrations, idempotent writes, the read-only path, and CLI errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from processors.config import FeatureConfig
from processors.features import CustomerState, apply, profile, row_version
from schemas.events import parse_event
from sinks.clickhouse import ClickHouseSink, connect, migrate
from sinks.query import run_readonly
from sinks.tables import DATABASE

ROOT = Path(__file__).resolve().parents[1]


def test_migrations_idempotent_writes_and_readonly_queries(tmp_path: Path) -> None:
    client = connect(f"chdb://{tmp_path / 'ch'}")
    assert migrate(client) == [1, 2, 5, 6]
    assert migrate(client) == []
    sink = ClickHouseSink(client)
    event = parse_event({"type": "purchase", "event_id": "e1", "customer_id": "c1", "ts": 1_700_000_000,
                         "channel": "pos", "order_id": "o1", "amount": 12.5, "currency": "EUR",
                         "items": [{"sku": "a", "category": "books", "quantity": 2, "unit_price": 6.25}]})
    state = CustomerState("c1")
    apply(state, event, FeatureConfig())
    old = profile(state, 1_700_000_000, FeatureConfig())
    new = profile(state, 1_700_086_400, FeatureConfig())
    for _ in range(2):  # the same batch written twice (a redelivery) changes nothing
        sink.add_event(event)
        sink.add_features(new, row_version(state, new["as_of"]), 2)
        sink.add_features(old, row_version(state, old["as_of"]), 3)
        assert sink.flush() == 3
    reader = connect(f"chdb://{tmp_path / 'ch'}", database=DATABASE)
    rows = run_readonly(reader, "SELECT count() AS n, sum(amount), any(item_categories) FROM purchases FINAL").rows
    assert rows == [[1, 12.5, ["books"]]]
    features = run_readonly(reader, "SELECT recency_days, as_of FROM customer_features FINAL").rows
    assert features == [[1.0, "2023-11-15T22:13:20"]]  # the row for the later watermark wins
    for statement in ("DROP TABLE purchases", "INSERT INTO purchases (event_id) VALUES ('x')",
                      "SELECT * FROM file('/etc/passwd', 'LineAsString')"):
        with pytest.raises(Exception, match="readonly"):
            run_readonly(reader, statement)


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "CRM360_WEB_PORT": "1", "CRM360_DATA_DIR": str(tmp_path / "none")}
    done = subprocess.run([sys.executable, "-m", "streams.cli", "sql", "SELECT 1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "crm360 up" in done.stderr
    done = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], cwd=ROOT,
                          env=env | {"CRM360_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no Kafka broker answers" in done.stderr and "Traceback" not in done.stderr
