"""``crm360 bench``: throughput and freshness on a private local stack, against a baseline.

In one run it measures (a) a plain aiokafka consumer reading the same messages (the
baseline; before and after the pipeline, averaged, as this machine's speed drifts within
minutes), (b) the pipeline end to end, Kafka to rows visible in ClickHouse, and (c)
freshness, event produced to its customer's row visible, at a steady rate. It prints a
table, then one JSON object as its last line. ``worker_cpu_share`` is the worker's CPU time
(all its processes) over the pipeline's wall time, in cores: near ``worker_processes`` means
every process is CPU-bound. ``events_applied_per_s`` counts only until every event was applied;
``after_applied_s`` is the rest of (b): the last merge of identities and the last rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from kafka import KafkaConsumer, KafkaProducer

from schemas.envelope import OutgoingMessage, pack
from schemas.events import parse_event
from schemas.topics import AUDIENCE_UPDATES
from streams.local.simulate import Simulation
from streams.local.stack import WorkerProcess, private_stack
from streams.local.until import until
from streams.settings import Settings

RAW_TOPIC = "bench-raw"
#: Audiences of the kinds marketers define (``--audiences N`` takes the first N, at most 20);
#: the first lets every freshness probe in.
TYPICAL_AUDIENCES = [
    ("buyers", "purchase_count >= 1"),
    ("at_risk_gold", "churn_probability > 0.6 AND value_tier IN ('gold', 'platinum')"),
    ("twice_in_30d", "purchases_30d >= 2"),
    ("lapsed_champions", "rfm_segment = 'Champions' AND recency_days > 60"),
    ("high_value", "monetary_total > 500"),
    ("new_customers", "lifecycle_stage = 'new'"),
    ("engaged_social", "likes_30d >= 3 OR comments_30d >= 1 OR shares_30d >= 1"),
    ("browsers_not_buyers", "visit_count >= 3 AND purchase_count = 0"),
    ("north_gold", "region = 'north' AND value_tier = 'gold'"),
    ("big_basket", "avg_order_value BETWEEN 80 AND 10000"),
    ("refunders", "refund_count >= 1"),
    ("mobile_first", "preferred_channel IN ('app', 'mobile')"),
    ("dormant", "recency_days > 180 AND NOT lifecycle_stage = 'churned'"),
    ("segment_0", "segment = 0"),
    ("segment_1_risky", "segment = 1 AND churn_probability >= 0.5"),
    ("converters", "visit_to_purchase_rate > 0.3"),
    ("young_web", "age_band IN ('18-24', '25-34') AND preferred_channel = 'web'"),
    ("valuable_future", "clv_estimate > 200"),
    ("no_profile", "region IS NULL"),
    ("frequent", "mean_days_between_purchases < 14 AND purchase_count >= 3"),
]


def produce(bootstrap: str, messages: list[OutgoingMessage], topic: str | None = None) -> None:
    """Send ``messages`` as fast as the broker takes them (aiokafka: kafka-python's pure-Python
    record checksums made the load generator, not the pipeline, the limit)."""
    asyncio.run(_produce_async(bootstrap, messages, topic))


async def _produce_async(bootstrap: str, messages: list[OutgoingMessage], topic: str | None) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, max_request_size=16 << 20
    )
    await producer.start()
    try:
        sent = [await producer.send(topic or m.topic, m.value, key=m.key, partition=m.partition) for m in messages]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _raw_consume(bootstrap: str, events: int) -> float:
    """Baseline: aiokafka getmany + JSON decode + a per-customer [count, sum, max_ts] update."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        RAW_TOPIC,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"bench-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    state: dict[str, list[Any]] = {}
    seen = 0
    started = None
    try:
        while seen < events:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if started is None and batch:
                started = time.perf_counter()
            for records in batch.values():
                for record in records:
                    seen += plain_update(state, record.value)
    finally:
        await consumer.stop()
    return seen / (time.perf_counter() - (started or time.perf_counter()))


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) a process and its running child processes (a
    worker's helpers) have used so far; None where the system has no ``/proc`` to tell.

    >>> process_cpu_seconds(os.getpid()) > 0
    True
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        children = [
            int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()
        ]
    except OSError:
        return None
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(process_cpu_seconds(child) or 0.0 for child in children)


def plain_update(state: dict[str, list[Any]], value: bytes) -> int:
    """The baseline's work for one message: JSON decode and a per-customer [count, sum, max_ts]
    update of each event; returns the number of events.

    >>> state = {}
    >>> plain_update(state, b'{"events": [{"customer_id": "c1", "ts": "2024-05-02T00:00:00Z", "amount": 2.5},'
    ...                             b' {"customer_id": "c1", "ts": "2024-05-01T00:00:00Z"}]}')
    2
    >>> state
    {'c1': [2, 2.5, '2024-05-02T00:00:00Z']}
    """
    data = json.loads(value)
    events = data.get("events", [data])
    for e in events:
        row = state.setdefault(e["customer_id"], [0, 0.0, ""])
        row[0] += 1
        row[1] += e.get("amount", 0.0)
        row[2] = max(row[2], e["ts"])
    return len(events)


#: The simulation's first day: its ten years end in 2023.
BENCH_START = datetime(2014, 1, 1, tzinfo=UTC)


def simulated_events(n: int, seed: int, identities: bool = False) -> list[Any]:
    """The first ``n`` events of the bench's simulated population (20,000 customers, seeded),
    over ten years that end before today (the worker refuses times ahead of its clock); with
    ``identities``, people named as each channel knows them (``Simulation(identities=True)``)."""
    out = []
    simulation = Simulation(customers=20_000, days=3_650, seed=seed, start=BENCH_START, identities=identities)
    for event in simulation.events():
        out.append(parse_event(event))
        if len(out) >= n:
            break
    return out


def _freshness(
    worker: WorkerProcess, bootstrap: str, partitions: int, seconds: float, rate: float, audiences: bool = False
) -> tuple[int, list[float], list[float]]:
    """Probe events (one every 0.1 s, as the machine allows) at a steady background rate; the
    probes sent, and the seconds from produce to row visible of those seen, and (``audiences``:
    each probe customer enters the first typical audience) to their entry on ``audience-updates``."""
    background = iter(simulated_events(int(seconds * rate) + 1000, seed=99))
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    entered_at: dict[str, float] = {}
    stop = threading.Event()

    def follow() -> None:
        """Read ``audience-updates`` from its beginning, looking only at probes' keys."""
        consumer = KafkaConsumer(AUDIENCE_UPDATES, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        while not stop.is_set() or (len(entered_at) < len(sent_at) and time.monotonic() - stopped_at[0] < 30):
            for records in consumer.poll(timeout_ms=100).values():
                for record in records:
                    if record.key and record.key.startswith(b"probe-"):
                        entered_at.setdefault(record.key.decode(), time.monotonic())
        consumer.close()

    def poll() -> None:
        while not stop.is_set() or len(seen_at) < len(sent_at):
            pending = [c for c in sent_at if c not in seen_at]
            if pending:
                ids = ",".join(f"'{c}'" for c in pending)
                for (cid,) in worker.sql(f"SELECT customer_id FROM customer_features WHERE customer_id IN ({ids})"):
                    seen_at.setdefault(cid, time.monotonic())
            if stop.is_set() and time.monotonic() - stopped_at[0] > 30:
                return
            time.sleep(0.05)

    stopped_at = [0.0]
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    follower = threading.Thread(target=follow, daemon=True)
    if audiences:
        follower.start()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    started = time.monotonic()
    tick = 0
    while time.monotonic() - started < seconds:
        tick += 1
        batch = [next(background) for _ in range(max(int(rate / 10), 1))]
        for m in pack(batch, partitions, 1000):
            producer.send(m.topic, key=m.key, value=m.value, partition=m.partition)
        probe = parse_event(
            {
                "type": "purchase",
                "event_id": f"probe-{tick}",
                "customer_id": f"probe-{tick}",
                "ts": batch[-1].epoch,
                "channel": "web",
                "order_id": f"probe-{tick}",
                "amount": 1.0,
                "currency": "EUR",
            }
        )
        (m,) = pack([probe], partitions)
        producer.send(m.topic, key=m.key, value=m.value, partition=m.partition)
        producer.flush()
        sent_at[probe.customer_id] = time.monotonic()
        time.sleep(max(0.0, started + tick * 0.1 - time.monotonic()))
    producer.close()
    stopped_at[0] = time.monotonic()
    stop.set()
    poller.join(40)
    if audiences:
        follower.join(40)
    return (
        len(sent_at),
        sorted(seen_at[c] - sent_at[c] for c in sent_at if c in seen_at),
        sorted(entered_at[c] - sent_at[c] for c in sent_at if c in entered_at),
    )


def backfill(worker: WorkerProcess) -> dict[str, Any]:
    """Two audiences created over the customers there, each timed until ``audience_membership``
    holds all its members: a typical one (the few who spent most), then one every customer is in."""
    click.echo("backfill of new audiences ...", err=True)
    # The freshness phase's last events may still be on their way to ClickHouse: count the
    # customers once it holds every one the worker has.
    customers = until(
        lambda: _stored_customers(worker), "every customer of the worker in customer_features", 120, every=0.1
    )
    figures: dict[str, Any] = {"backfill_customers": customers}
    for name, condition in (("big_spenders", "monetary_total > 90"), ("everyone", "customer_id != ''")):
        # The condition means in SQL what it means in the stream: the bench's own count of members.
        expected = worker.sql(f"SELECT count() FROM customer_features FINAL WHERE {condition}")[0][0]
        seconds = _backfilled(worker, name, condition, expected)
        figures |= {f"backfill_{name}_members": expected, f"backfill_{name}_s": round(seconds, 2)}
    figures["backfill_customers_per_s"] = round(customers / figures["backfill_everyone_s"], 1)
    return figures


def _stored_customers(worker: WorkerProcess) -> int | None:
    """How many customers ``customer_features`` holds, once that is how many the worker keeps."""
    held = int(worker.metrics().get("crm360_customers", 0))
    stored = worker.sql("SELECT count() FROM customer_features FINAL")[0][0]
    return stored if stored == held else None


def _backfilled(worker: WorkerProcess, name: str, condition: str, members: int) -> float:
    """Seconds from creating the audience until ``audience_membership`` holds its ``members``."""
    started = time.perf_counter()
    worker.client.save_audience({"name": name, "condition": condition})
    query = f"SELECT count() FROM audience_membership FINAL WHERE audience = '{name}'"
    until(lambda: worker.sql(query)[0][0] >= members, f"every member in {name}", 1800, every=0.1)
    return time.perf_counter() - started


def disk_bytes(directory: Path) -> int:
    """Bytes of disk the files under ``directory`` take (allocated blocks, not apparent sizes)."""
    total = 0
    for folder, _, files in os.walk(directory):  # skips folders that vanish meanwhile (merges)
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(folder, name)).st_blocks * 512
    return total


def run_bench(events: int, partitions: int = 4, identities: bool = False, audiences: int = 0) -> dict[str, Any]:
    own = Settings()  # the store settings of the shell running the bench
    with private_stack(
        "bench", partitions, state_store=own.state_store, state_cache_customers=str(own.state_cache_customers)
    ) as (settings, worker):
        address = settings.kafka_bootstrap
        from kafka.admin import KafkaAdminClient, NewTopic

        KafkaAdminClient(bootstrap_servers=address).create_topics([NewTopic(RAW_TOPIC, partitions, 1)])
        click.echo(f"generating {events} simulated events ...")
        batch = simulated_events(events, seed=7, identities=identities)
        messages = pack(batch, partitions, 1000)
        click.echo("(a) baseline: plain aiokafka consumer ...")
        produce(address, messages, RAW_TOPIC)
        raw_before = asyncio.run(_raw_consume(address, events))
        click.echo("(b) pipeline end to end ...")
        worker.start()
        for name, condition in TYPICAL_AUDIENCES[:audiences]:
            worker.client.save_audience({"name": name, "condition": condition}, create=True)
        disk_before = {part: disk_bytes(settings.data_path / part) for part in ("kafka", "clickhouse")}
        pid = worker.process.pid if worker.process else 0
        cpu_before = process_cpu_seconds(pid)
        started = time.perf_counter()
        produce(address, messages)
        counts = {t: sum(1 for e in batch if e.type == t) for t in ("purchase", "visit")}
        applied_s: float | None = None  # when every event was applied (merges may run on)
        while True:
            m = worker.metrics()
            taken = m.get("crm360_events_in_total", 0)
            # Every event read is applied once (an identifier's merged into another profile: there)
            # and every identity op sent is handled (the merges are done).
            applied = m.get("crm360_events_applied_total", 0) + m.get("crm360_duplicates_skipped_total", 0)
            merged = m.get("crm360_identity_ops_in_total", 0) == m.get("crm360_identity_ops_out_total", 0)
            if applied_s is None and taken >= events and applied >= taken:
                applied_s = time.perf_counter() - started
            if taken >= events and applied >= taken and merged:
                rows = worker.sql("SELECT (SELECT count() FROM purchases), (SELECT count() FROM visits)")[0]
                if rows[0] >= counts["purchase"] and rows[1] >= counts["visit"]:
                    break
            elapsed = time.perf_counter() - started
            merges = f", {int(m.get('crm360_profiles_merged_total', 0))} merges" if identities else ""
            click.echo(f"\r  {int(taken)}/{events} events{merges}, {elapsed:5.1f}s", nl=False)
            time.sleep(0.1)
        pipeline_seconds = time.perf_counter() - started
        applied_s = applied_s or pipeline_seconds
        pipeline_rate = events / pipeline_seconds
        cpu_after = process_cpu_seconds(pid)
        worker_cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
        click.echo("")
        click.echo("(a) baseline again, after the pipeline (the machine's speed drifts) ...")
        raw_after = asyncio.run(_raw_consume(address, events))
        raw_rate = (raw_before + raw_after) / 2
        click.echo("(c) freshness at a steady rate ...")
        steady = min(5_000.0, pipeline_rate / 4)
        probes, latencies, entries = _freshness(
            worker, address, partitions, seconds=15.0, rate=steady, audiences=audiences > 0
        )
        backfill_figures = backfill(worker) if audiences else {}
        m = worker.metrics()
        # Everything the pipeline's events made the broker and ClickHouse store (the freshness
        # probes' few events included), per million events.
        disk = {
            part: (disk_bytes(settings.data_path / part) - before) / events * 1e6 / 2**20
            for part, before in disk_before.items()
        }
        result = {
            "events": events,
            "identities": identities,
            "profiles_merged": int(m.get("crm360_profiles_merged_total", 0)),
            "events_forwarded": int(m.get("crm360_events_forwarded_total", 0)),
            "identity_ops": int(m.get("crm360_identity_ops_in_total", 0)),
            "audiences": audiences,
            "audience_changes": int(m.get("crm360_audience_changes_total", 0)),
            "events_per_s": round(pipeline_rate, 1),
            "events_applied_per_s": round(events / applied_s, 1),
            "after_applied_s": round(pipeline_seconds - applied_s, 2),
            "worker_cpu_s": round(worker_cpu, 2) if worker_cpu is not None else None,
            "worker_cpu_share": round(worker_cpu / pipeline_seconds, 2) if worker_cpu is not None else None,
            "worker_processes": int(m.get("crm360_processes", 1)),
            "raw_consumer_events_per_s": round(raw_rate, 1),
            "raw_consumer_before_after": [round(raw_before, 1), round(raw_after, 1)],
            "ratio_to_raw": round(pipeline_rate / raw_rate, 3),
            "freshness_rate_events_per_s": round(steady, 1),
            "freshness_p50_s": round(statistics.median(latencies), 3) if latencies else None,
            "freshness_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else None,
            "audience_freshness_p50_s": round(statistics.median(entries), 3) if entries else None,
            "audience_freshness_p95_s": round(entries[int(0.95 * (len(entries) - 1))], 3) if entries else None,
            **backfill_figures,
            "freshness_probes": probes,
            "freshness_samples": len(latencies),
            "bytes_per_customer": round(m.get("crm360_state_bytes_avg", 0.0), 1),
            "customers": int(m.get("crm360_customers", 0)),
            "kafka_mib_per_million_events": round(disk["kafka"], 1),
            "clickhouse_mib_per_million_events": round(disk["clickhouse"], 1),
        }
        return result


def print_report(result: dict[str, Any]) -> None:
    click.echo("")
    click.echo(f"{'figure':<32} {'value':>14}")
    for key, value in result.items():
        click.echo(f"{key:<32} {value!s:>14}")
    click.echo(json.dumps(result))
