"""``crm360 demo``: the local stack, the simulator, and a live line of figures."""

from __future__ import annotations

import time

import click

from streams.local.simulate import Simulation
from streams.local.stack import WorkerProcess
from streams.sdk.publisher import EventPublisher
from streams.settings import Settings

SEGMENT_QUERY = (
    "SELECT ifNull(rfm_segment, 'unscored') AS segment, count() AS customers "
    "FROM customer_features FINAL GROUP BY segment ORDER BY customers DESC"
)


def run_demo(settings: Settings, seconds: float | None, customers: int, rate: float, seed: int) -> None:
    worker = WorkerProcess.for_settings(settings, settings.data_path / "worker.log")
    click.echo("starting the worker ...")
    worker.start()
    click.echo(f'worker ready: {settings.web_url}  (try: crm360 sql "{SEGMENT_QUERY}")')
    click.echo(f"live dashboard: {settings.web_url}/dashboard  (open it in a browser; it refreshes itself)")
    if settings.embedded_clickhouse and settings.clickhouse_http_port:
        click.echo(
            f"ClickHouse for your own clients: http://{settings.web_host}:{settings.clickhouse_http_port}  "
            "(read-only; clickhouse-connect, DBeaver, Grafana, curl)"
        )
    click.echo(f"API: {settings.web_url}/docs")
    simulation = Simulation(customers=customers, days=730, seed=seed)
    truth_path = settings.data_path / "simulation_truth.json"
    simulation.save_ground_truth(truth_path)
    click.echo(f"simulating {customers} customers at ~{rate:.0f} events/s; ground truth in {truth_path}")
    started = time.monotonic()
    last_report, last_applied = started, 0.0
    sent = 0
    segments = ""
    try:
        with EventPublisher(settings.kafka_bootstrap, partitions=settings.partitions) as publisher:
            for event in simulation.events():
                publisher.publish(event)
                sent += 1
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
                now = time.monotonic()
                if now - last_report >= 1.0:
                    m = worker.metrics()
                    applied = m.get("crm360_events_applied_total", 0.0)
                    if int(now - started) % 3 == 0:
                        segments = " ".join(f"{name}:{n}" for name, n in worker.sql(SEGMENT_QUERY)[:4])
                    click.echo(
                        f"\r{now - started:6.0f}s  {(applied - last_applied) / (now - last_report):8.0f} events/s  "
                        f"{int(m.get('crm360_customers', 0)):6d} customers  "
                        f"{int(m.get('crm360_dead_letters_total', 0))} dead  {segments[:80]:<80}",
                        nl=False,
                    )
                    last_report, last_applied = now, applied
                if seconds is not None and now - started >= seconds:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("")
        try:
            time.sleep(2.0)
            m = worker.metrics()
            click.echo(
                f"summary: {sent} events sent, {int(m['crm360_events_applied_total'])} applied, "
                f"{int(m['crm360_customers'])} customers, {int(m['crm360_dead_letters_total'])} dead letters"
            )
            for name, count in worker.sql(SEGMENT_QUERY):
                click.echo(f"  {name:<20} {count}")
        finally:
            worker.stop()
