"""The ``crm360`` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from streams.settings import Settings


def fail(message: str) -> NoReturn:
    """Stop with one line saying what is wrong and what to do."""
    click.echo(f"crm360: {message}", err=True)
    sys.exit(1)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except Exception as error:  # noqa: BLE001 - pydantic's message, in one line
        fail(f"bad setting: {str(error).splitlines()[0]} (check your CRM360_* variables)")


data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Where crm360 keeps its data (default ./.crm360)."
)


@click.group()
def main() -> None:
    """crm360: a real-time 360-degree customer view (Kafka -> Faust -> ClickHouse)."""


def prepare_kafka(settings: Settings, start_local: bool) -> Any:
    """Start the local broker unless one answers, and create the topics."""
    from streams.broker import BrokerError, LocalBroker, answers
    from streams.topics import ensure_topics

    broker = None
    if not answers(settings.kafka_bootstrap):
        if not start_local:
            fail(f"no Kafka broker answers at {settings.kafka_bootstrap}: start one (crm360 broker) or set CRM360_KAFKA_BOOTSTRAP")
        settings.data_path.mkdir(parents=True, exist_ok=True)
        broker = LocalBroker(settings.kafka_bootstrap, log_path=settings.data_path / "broker.log")
        try:
            broker.start()
        except BrokerError as error:
            fail(str(error))
    counts = ensure_topics(settings.kafka_bootstrap, settings.partitions)
    wrong = {t: n for t, n in counts.items() if n != settings.partitions}
    if wrong:
        fail(f"topics {wrong} do not have CRM360_PARTITIONS={settings.partitions} partitions: set it to match")
    return broker


def run_worker(settings: Settings) -> None:
    from streams.app import Worker

    try:
        worker = Worker(settings)
    except Exception as error:  # noqa: BLE001 - e.g. the embedded database is locked
        fail(f"cannot start the worker: {str(error).strip().splitlines()[0]}")
    worker.run()


@main.command()
@data_dir_option
def up(data_dir: Path | None) -> None:
    """Run the whole local stack in the foreground: broker, worker, embedded ClickHouse."""
    settings = load_settings(data_dir=data_dir)
    broker = prepare_kafka(settings, start_local=True)
    click.echo(f"crm360 up: Kafka {settings.kafka_bootstrap}{' (local broker)' if broker else ''}")
    click.echo(f"  ClickHouse {settings.clickhouse_url}")
    click.echo(f"  web {settings.web_url}  (POST /events, GET /customers/<id>, POST /sql, /health, /metrics)")
    click.echo("  Ctrl-C stops everything.")
    try:
        run_worker(settings)
    finally:
        if broker:
            broker.stop()


@main.command()
def broker() -> None:
    """Run only the local Kafka broker, in the foreground."""
    import signal
    import threading

    from streams.broker import BrokerError, LocalBroker, answers

    settings = load_settings()
    if answers(settings.kafka_bootstrap):
        fail(f"something already answers at {settings.kafka_bootstrap}: stop it or set CRM360_KAFKA_BOOTSTRAP")
    local = LocalBroker(settings.kafka_bootstrap)
    try:
        local.start()
    except BrokerError as error:
        fail(str(error))
    click.echo(f"local Kafka broker on {settings.kafka_bootstrap} (memory storage); Ctrl-C stops it")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        if local.process is None or local.process.poll() is not None:
            fail("the local broker exited")
    local.stop()


@main.command()
@data_dir_option
def worker(data_dir: Path | None) -> None:
    """Run only the worker (needs a broker at CRM360_KAFKA_BOOTSTRAP)."""
    settings = load_settings(data_dir=data_dir)
    prepare_kafka(settings, start_local=False)
    run_worker(settings)


if __name__ == "__main__":
    main()
