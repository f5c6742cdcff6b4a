"""Fixtures that start the real local broker and real crm360 workers (chDB embedded)."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.local import stack
from streams.local.broker import LocalKafka
from streams.local.storage import LocalStorage
from streams.local.until import until
from streams.sdk.publisher import EventPublisher
from streams.worker.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
#: Real purchases (see tests/data/README.md): the development half of CDNOW next to the
#: checkout when it is there, else the sample of it in the repository.
CDNOW_DEVELOPMENT = ROOT.parent / "shared" / "data" / "cdnow_dev.txt"
CDNOW_SAMPLE = ROOT / "tests" / "data" / "cdnow_sample.txt"
CDNOW = CDNOW_DEVELOPMENT if CDNOW_DEVELOPMENT.exists() else CDNOW_SAMPLE
#: Fixtures that start the local broker or a worker: a test using one is an integration test.
INTEGRATION_FIXTURES = frozenset({"storage", "kafka", "broker", "worker_env", "start_worker"})


def fast_tier(config: pytest.Config) -> bool:
    """Whether this run is the unit tier (``-m "not integration"``, ``make test-fast``)."""
    return config.getoption("markexpr") == "not integration"


def pytest_configure(config: pytest.Config) -> None:
    if fast_tier(config):
        # A unit test that opens embedded ClickHouse fails instead of passing slowly: the tier
        # promises neither broker nor chDB.
        sys.modules["chdb"] = None  # type: ignore[assignment]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that start the broker or a worker are marked ``integration``; those that open
    embedded ClickHouse are marked in their modules."""
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStorage]:
    """One local storage (SeaweedFS) for the session: it takes seconds to start, and each
    test's broker keeps its log in a bucket of its own."""
    directory = tmp_path_factory.mktemp("storage")
    local = LocalStorage(directory / "data", log_path=directory / "storage.log")
    local.start()
    yield local
    local.stop()


@pytest.fixture
def release_clickhouse() -> Iterator[None]:
    """chDB opens one data directory per process, until its last client is gone: the driver's
    error of a failed insert holds its client in a reference cycle, which the next test's
    directory must not wait on."""
    yield
    gc.collect()


@pytest.fixture
def kafka(storage: LocalStorage, tmp_path: Path) -> Iterator[LocalKafka]:
    """A fresh local Tansu broker on a free loopback port, durable in its own bucket (topic
    names are fixed, so each test gets its own cluster)."""
    local = LocalKafka(f"127.0.0.1:{free_port()}", tmp_path, cluster=f"test-{uuid.uuid4().hex[:12]}", storage=storage)
    local.start()
    yield local
    local.stop()


@pytest.fixture
def broker(kafka: LocalKafka) -> str:
    """The address of the test's own broker."""
    return kafka.address


class WorkerProcess(stack.WorkerProcess):
    """A ``crm360 worker`` subprocess with test helpers."""

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """One request with exactly ``headers`` (none: no API key)."""
        return self.client.request(method, path, body, headers or {})

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def sql(self, query: str) -> list[dict[str, Any]]:  # type: ignore[override]
        result = self.client.sql(query)
        return [dict(zip(result.columns, row)) for row in result.rows]

    def metric(self, name: str) -> float:
        return self.client.metrics()[name]

    def wait_for_metric(self, name: str, expected: float, timeout: float = 60.0) -> None:
        try:
            until(lambda: self.metric(name) == expected, f"{name} at {expected}", timeout)
        except TimeoutError as error:
            raise AssertionError(f"{error}: it is {self.metric(name)}") from None

    def wait_for(self, query: str, expected: Any, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll ``query`` until its first value equals ``expected``."""

        def matching() -> list[dict[str, Any]] | None:
            rows = self.sql(query)
            return rows if rows and next(iter(rows[0].values())) == expected else None

        try:
            return until(matching, f"{query!r} giving {expected!r}", timeout, every=0.3)
        except TimeoutError as error:
            raise AssertionError(f"{error}: it gives {self.sql(query)!r}") from None


@pytest.fixture
def worker_env(broker: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM360_")}
    env.update(
        CRM360_KAFKA_BOOTSTRAP=broker,
        CRM360_APP_ID=f"crm360-test-{uuid.uuid4().hex[:8]}",
        CRM360_DATA_DIR=str(tmp_path / "data"),
        CRM360_WEB_PORT=str(free_port()),
        CRM360_CLICKHOUSE_HTTP_PORT=str(free_port()),
        CRM360_AGING_INTERVAL_S="1.0",
        CRM360_AGING_MIN_ADVANCE_S="0",
        PYTHONPATH=str(ROOT),
    )
    return env


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Start workers on demand (``start_worker(**env_overrides)``); all are stopped at the end."""
    started: list[WorkerProcess] = []

    def start(**overrides: str) -> WorkerProcess:
        worker = WorkerProcess(worker_env | overrides, tmp_path / f"worker{len(started)}.log")
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


#: Small model settings so a few hundred simulated customers train, score, segment and alert.
MODEL_ENV = {
    "CRM360_CHURN_HORIZON_DAYS": "30",
    "CRM360_SNAPSHOT_EVERY_DAYS": "7",
    "CRM360_SEGMENT_WARMUP": "50",
    "CRM360_RESCORE_INTERVAL_S": "0.5",
    "CRM360_ALERT_THRESHOLD": "0.6",
    "CRM360_ALERT_REARM_BELOW": "0.4",
}


def settle(worker: Any, timeout: float = 120.0, quiet_s: float = 2.0) -> dict[str, float]:
    """Until the published model learned every released label, every row carries it, and no
    newer version came for ``quiet_s`` (re-scored customers feed the trainer a little more)."""
    last: dict[str, Any] = {"settled": None, "since": 0.0}

    def quiet() -> dict[str, float] | None:
        released, learned = worker.metric("crm360_labels_released_total"), worker.metric("crm360_model_labels_learned")
        version = worker.metric("crm360_model_version")
        rows = worker.sql("SELECT min(model_version) AS low, max(model_version) AS high FROM customer_features FINAL")
        last["figures"] = f"{released=} {learned=} {version=} {rows=}"
        if not (version and released and learned >= released and rows[0]["low"] == rows[0]["high"] == version):
            last["settled"] = None
            return None
        now = {"version": version, "learned": learned, "released": released}
        if now != last["settled"]:
            last["settled"], last["since"] = now, time.monotonic()
            return None
        return now if time.monotonic() - last["since"] >= quiet_s else None

    try:
        return until(quiet, "models settled", timeout, every=0.5)
    except TimeoutError:
        raise AssertionError(f"models did not settle: {last.get('figures')}") from None


def publish(broker: str, events: list[dict[str, Any]]) -> None:
    with EventPublisher(broker, partitions=4) as publisher:
        for event in events:
            publisher.publish(event)


def purchases(count: int, customers: int, first: int = 0) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """``count`` purchases spread over ``customers``, and per customer [count, total]."""
    events: list[dict[str, Any]] = []
    expected: defaultdict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for n in range(first, first + count):
        customer, amount = f"k{n % customers}", float(n % 97) + 0.5
        events.append(
            {
                "type": "purchase",
                "event_id": f"e{n}",
                "customer_id": customer,
                "ts": 1_700_000_000 + n * 60,
                "channel": "pos",
                "order_id": f"o{n}",
                "amount": amount,
                "currency": "EUR",
            }
        )
        expected[customer][0] += 1
        expected[customer][1] += amount
    return events, dict(expected)


def assert_exact_purchases(worker: WorkerProcess, expected: dict[str, list[float]], timeout: float = 120.0) -> None:
    """Every customer's count and total, in ClickHouse and in the live profile."""
    total = sum(n for n, _ in expected.values())

    def features() -> dict[str, Any]:
        query = "SELECT customer_id, purchase_count, monetary_total FROM customer_features FINAL"
        return {r["customer_id"]: r for r in worker.sql(query)}

    def complete() -> bool:  # features and raw rows (in one write, table after table)
        return (
            sum(r["purchase_count"] for r in features().values()) == total
            and worker.sql("SELECT count() AS n FROM purchases FINAL")[0]["n"] >= total
        )

    with contextlib.suppress(TimeoutError):  # the comparison below says what differs
        until(complete, "every purchase counted", timeout, every=0.5)
    rows = features()
    assert {c: (r["purchase_count"], pytest.approx(r["monetary_total"])) for c, r in rows.items()} == {
        c: (n, pytest.approx(t)) for c, (n, t) in expected.items()
    }
    assert worker.sql("SELECT count() AS n FROM purchases FINAL")[0]["n"] == total
    for customer in list(expected)[:5]:
        status, answer = worker.get(f"/customers/{customer}")
        assert status == 200 and answer["customer"]["purchase_count"] == expected[customer][0], answer
