"""``crm360 bench --cpu``: the processing cost of the pipeline, reproducibly, in one process.

``crm360 bench`` measures the whole stack in wall-clock time, and on a shared machine its runs
differ by more than a 10-20% change of the hot path. This measures only what our code costs:
the bench's simulated events, in the bench's envelopes, go through :class:`CustomerPipeline`
in fixed batches with a trainer publishing models, a table that serializes every write as the
changelog does, embedded ClickHouse inserts (staged in files, as the worker's are) and the
worker's garbage collection policy; process CPU time per stage is counted. A fixed clock makes
every output reproducible, and a digest of all of them (dead letters, alerts, training
records, ClickHouse rows, final states) tells whether a change altered any.

The machine's speed drifts by up to 2x within minutes here, so each batch is also given to the
``crm360 bench`` baseline's work (JSON decode and a per-customer count, :func:`plain_update`)
right before the pipeline: ``times_baseline_cpu``, the pipeline's CPU over the baseline's in
the same moments, is the figure to compare between runs.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import orjson
from clickhouse_connect.driver.client import Client
from faust.stores.rocksdb import RocksDBOptions

from processors.audiences import Membership
from processors.features import CustomerState
from processors.identity_graph import Op
from processors.models import Models, Trainer
from processors.privacy import identifier_hash
from schemas.audiences import Audience
from schemas.envelope import pack
from schemas.topics import IDENTITY_OPS, partition_for
from sinks.clickhouse import ClickHouseSink, connect, encode, migrate
from sinks.current import read_current
from streams.measure.bench import TYPICAL_AUDIENCES, plain_update, simulated_events
from streams.settings import Settings
from streams.worker.backfill import SLICE
from streams.worker.changelog import V
from streams.worker.memory import rare_garbage_collection
from streams.worker.message import Message
from streams.worker.modelhub import encode_training
from streams.worker.pipeline import CustomerPipeline
from streams.worker.statestore import DiskTable

#: Backfills of ``crm360 bench --cpu --backfill``: every customer enters, leaves, enters...
BACKFILL_ROUNDS = 10

#: The wall clock the pipeline sees (rows' ingestion times, alerts' creation times).
FIXED_CLOCK = 1_750_000_000.0


class ChangelogTable(dict[bytes, CustomerState]):
    """The customer table, serializing each written state as the Faust table's changelog does."""

    changelog_bytes = 0

    def __setitem__(self, key: bytes, state: CustomerState) -> None:
        self.changelog_bytes += len(state.to_json())
        super().__setitem__(key, state)


def run_cpu_bench(
    events: int,
    batch_messages: int = 50,
    age_every: int = 3,
    seed: int = 7,
    audiences: int = 0,
    suppressed: int = 0,
    backfill: bool = False,
    identities: bool = False,
) -> dict[str, Any]:
    """Process ``events`` in batches of ``batch_messages`` envelopes, aging every ``age_every``
    batches, with the first ``audiences`` typical audiences live and ``suppressed`` erased
    people's identifiers (none of the stream's: every event is checked, none dropped), then
    with ``backfill`` an audience backfilled over the customers there (:func:`backfill_rounds`);
    with ``identities`` the bench's people named as each channel knows them, the graph's ops
    read back with the next batch (:func:`identity_ops`). Returns CPU seconds per stage, counts
    and the output digest."""
    settings = Settings()
    out = pack(simulated_events(events, seed=seed, identities=identities), settings.partitions, 1000)
    messages = [Message(m.topic, m.partition, offset, m.value) for offset, m in enumerate(out)]
    with tempfile.TemporaryDirectory(prefix="crm360-cpubench-") as workdir, rare_garbage_collection():
        client = connect(f"chdb://{workdir}/clickhouse")
        migrate(client)
        sink = ClickHouseSink(client, Path(workdir) / "staging")
        table: ChangelogTable | DiskTable[CustomerState] = ChangelogTable()
        memberships: dict[bytes, Membership] | DiskTable[Membership] = {}
        if settings.state_store == "rocksdb":  # CRM360_STATE_STORE: states on disk, written every age_every batches
            options = RocksDBOptions(**settings.rocksdb_options())

            def on_disk(name: str, kind: type[V]) -> DiskTable[V]:
                databases = {p: options.open(Path(workdir) / f"{name}-{p}.db") for p in range(settings.partitions)}
                return DiskTable(
                    databases.__getitem__,
                    databases.keys,
                    lambda key: pipeline.partition_of(key),  # as the worker's: remembered
                    settings.state_cache_customers,
                    kind=kind,
                )

            table, memberships = on_disk("customers", CustomerState), on_disk("memberships", Membership)
        changelog_bytes = 0
        pipeline = CustomerPipeline(
            settings.feature_config(),
            sink,
            table,
            settings.partitions,
            settings.models_config(),
            rescore_interval_s=float("inf"),
            clock=lambda: FIXED_CLOCK,
            memberships=memberships,
        )
        for name, condition in TYPICAL_AUDIENCES[:audiences]:
            pipeline.audiences.define(Audience(name=name, condition=condition, version=1))
        for number in range(suppressed):
            pipeline.privacy.suppressions.add(identifier_hash(f"erased-{number}"))
        trainer = Trainer(settings.models_config())
        digest = hashlib.sha256()
        cpu = {"ingest": 0.0, "train": 0.0, "insert": 0.0}
        baseline_cpu = 0.0
        plain_state: dict[str, list[Any]] = {}
        ops: list[Message] = []
        starts = list(range(0, len(messages), batch_messages))
        number = 0
        while starts or ops:  # then the merges the last events started, to the last
            number += 1
            start = starts.pop(0) if starts else len(messages) + number
            batch = messages[start : start + batch_messages]
            began = time.process_time()
            for message in batch:
                plain_update(plain_state, cast(bytes, message.value))  # pack's messages all have a value
            baseline_cpu += time.process_time() - began
            began = time.process_time()
            dead = pipeline.ingest(ops + batch)
            ops = identity_ops(pipeline, start)
            if number % age_every == 0:
                pipeline.age(set(range(settings.partitions)), settings.aging_min_advance_s)
                changelog_bytes += checkpoint(pipeline, number)
                pipeline.checkpointed()
            trained = time.process_time()
            training = pipeline.take_training()
            trainer.observe(training.observations)
            trainer.learn(training.labels)
            pipeline.use_models(Models.from_bytes(trainer.publish(start)))
            inserted = time.process_time()
            digest.update(repr([(d.reason, d.offset) for d in dead]).encode())
            digest.update(repr([a.model_dump_json() for a in pipeline.take_alerts()]).encode())
            entries = pipeline.take_audience_events()
            if entries:  # without audiences the digest stays what it was before they existed
                digest.update(repr([orjson.dumps(e) for e in entries]).encode())
            digest.update(b"".join(encode_training(training)))  # as the trainer receives them
            digest.update(b"".join(merge.model_dump_json().encode() for merge in pipeline.identities.take_merges()))
            for name, rows in sink.pending.items():
                if rows:
                    digest.update(encode(name, rows).body)
            resumed = time.process_time()
            sink.flush()
            done = time.process_time()
            cpu["ingest"] += trained - began
            cpu["train"] += inserted - trained
            cpu["insert"] += done - resumed
        backfilled = backfill_rounds(pipeline, client, sink, digest) if backfill else {}
        for key in sorted(table):
            digest.update(key + table[key].to_json())
        customers = len(table)
        client.close()  # embedded ClickHouse takes one data directory per process: the next run's
    total = sum(cpu.values())
    counters = pipeline.counters
    return {
        "events": counters.events_in,
        "applied": counters.events_applied,
        "customers": customers,
        "feature_rows": counters.feature_rows,
        "alerts": counters.alerts,
        "audiences": audiences,
        "audience_changes": counters.audience_changes,
        "profiles_merged": counters.profiles_merged,
        "identity_ops": counters.identity_ops_in,
        "identity_ops_sent": counters.identity_ops_out,
        "suppressed_identifiers": suppressed,
        "ingest_cpu_s": round(cpu["ingest"], 3),
        "train_cpu_s": round(cpu["train"], 3),
        "insert_cpu_s": round(cpu["insert"], 3),
        "events_per_cpu_s": round(counters.events_in / total, 1),
        "baseline_cpu_s": round(baseline_cpu, 3),
        "times_baseline_cpu": round(total / baseline_cpu, 1),
        "changelog_bytes": table.changelog_bytes if isinstance(table, ChangelogTable) else changelog_bytes,
        "state_store": settings.state_store,
        **backfilled,
        "digest": digest.hexdigest(),
    }


def identity_ops(pipeline: CustomerPipeline, offset: int) -> list[Message]:
    """The graph's ops that the last batch gave, as the worker sends them on ``identity-ops``
    (``offset``: made up) and the next fetch reads them."""
    ops, handled = pipeline.identities.take()
    pipeline.identities.sent(handled)  # every write is durable at once here
    of: dict[int, list[Op]] = {}
    for op in ops:
        of.setdefault(partition_for(op.target, pipeline.partitions), []).append(op)
    return [Message(IDENTITY_OPS, p, offset, raw) for p, some in sorted(of.items()) for raw in Op.pack(some)]


def checkpoint(pipeline: CustomerPipeline, offset: int) -> int:
    """Write the changed states and memberships kept on disk, as a worker's checkpoint does
    (``offset``: the changelog's, made up); returns the bytes of their changelog records."""
    written = 0
    for stored in (pipeline.table, pipeline.memberships):
        if isinstance(stored, DiskTable):
            changes = stored.take_changes(pipeline.partition_of)
            written += sum(len(value or b"") for records in changes.values() for _, value in records)
            stored.persist(changes, dict.fromkeys(changes, offset))
    return written


def backfill_rounds(
    pipeline: CustomerPipeline, client: Client, sink: ClickHouseSink, digest: Any, rounds: int = BACKFILL_ROUNDS
) -> dict[str, Any]:
    """Backfill an audience ``rounds`` times, as a worker process does over every partition
    (``streams.worker.backfill``: rows read from ClickHouse, checked a slice at a time, each
    slice's changes encoded for the topic and its stores checkpointed): created so that every
    customer enters, then changed so that every one leaves, and so on; returns the entries and
    exits, and the CPU seconds of the checks and of their ClickHouse inserts."""
    partitions = set(range(pipeline.partitions))
    checks = inserts = 0.0
    changes = 0
    for version in range(1, rounds + 1):
        condition = "customer_id != ''" if version % 2 else "customer_id = ''"
        pipeline.audiences.define(Audience(name="everyone", condition=condition, version=version))
        _, changed = pipeline.unchecked(partitions)
        columns, conditions = pipeline.audiences.read_for(changed)
        where = [condition.sql for condition in conditions]
        current = read_current(client, columns, changed, sorted(partitions), pipeline.partitions, where)
        pipeline.start_backfill(partitions)
        for start in range(0, len(current.rows), SLICE):
            began = time.process_time()
            changes += pipeline.backfill(current.dicts(start, start + SLICE), current.members, changed)
            published = [orjson.dumps(event) for event in pipeline.take_audience_events()]  # as the outbox sends them
            checkpoint(pipeline, version)
            checked = time.process_time()
            digest.update(b"".join(published))
            for name, rows in sink.pending.items():
                if rows:
                    digest.update(encode(name, rows).body)
            resumed = time.process_time()
            sink.flush()
            checks, inserts = checks + checked - began, inserts + time.process_time() - resumed
        pipeline.end_backfill(pipeline.audiences.generation)
    return {
        "backfill_changes": changes,
        "backfill_cpu_s": round(checks, 3),
        "backfill_insert_cpu_s": round(inserts, 3),
        "backfill_us_per_change": round((checks + inserts) / max(changes, 1) * 1e6, 1),
    }
