"""docker-compose.yml and the Dockerfile: parsed and checked (no Docker engine here)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import yaml

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_wires_worker_to_kafka_and_clickhouse() -> None:
    services = compose()["services"]
    assert set(services) >= {"kafka", "clickhouse", "worker"}
    kafka, clickhouse, worker = services["kafka"], services["clickhouse"], services["worker"]
    env = worker["environment"]
    # Kafka: the worker's bootstrap is the broker's advertised listener, KRaft mode.
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert f"PLAINTEXT://{env['CRM360_KAFKA_BOOTSTRAP']}" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    # ClickHouse: the DSN names the service, its HTTP port and its credentials.
    dsn = urlparse(env["CRM360_CLICKHOUSE_DSN"])
    assert (dsn.scheme, dsn.hostname, dsn.port) == ("http", "clickhouse", 8123)
    assert (dsn.username, dsn.password) == (
        clickhouse["environment"]["CLICKHOUSE_USER"],
        clickhouse["environment"]["CLICKHOUSE_PASSWORD"],
    )
    # The worker starts after both are healthy, listens where it is published, and builds here.
    assert worker["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "clickhouse": {"condition": "service_healthy"},
    }
    assert f"{env['CRM360_WEB_PORT']}:{env['CRM360_WEB_PORT']}" in worker["ports"]
    assert env["CRM360_WEB_HOST"] == "0.0.0.0"
    assert worker["build"] == "." and (ROOT / "Dockerfile").exists()
    # Every variable is a real setting, and the whole environment is valid.
    fields = {f"CRM360_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    settings = Settings(**{k.removeprefix("CRM360_").lower(): v for k, v in env.items()})
    assert not settings.embedded_clickhouse
    assert kafka["environment"]["KAFKA_NUM_PARTITIONS"] == env["CRM360_PARTITIONS"]


def test_compose_volumes_are_declared() -> None:
    data = compose()
    used = {v.split(":")[0] for s in data["services"].values() for v in s.get("volumes", [])}
    binds = {v for v in used if v.startswith(".")}
    assert used - binds <= set(data["volumes"])
    assert all((ROOT / v).exists() for v in binds), binds


def test_dockerfile_installs_the_four_packages() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for package in ("schemas", "processors", "sinks", "streams"):
        assert f"COPY {package} ./{package}" in text
    assert 'CMD ["crm360", "worker"]' in text
