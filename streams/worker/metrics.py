"""A worker process's figures, and the worker's (its processes' added up), for Prometheus."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import faust

from processors.models import Trainer
from schemas.topics import IDENTITY_OPS, INPUT_TOPICS
from streams.worker.changelog import BufferedTable
from streams.worker.health import Health
from streams.worker.pipeline import CustomerPipeline
from streams.worker.writes import RowWriter

if TYPE_CHECKING:
    from streams.worker.faust_corrections import CheckpointingConsumer


def process_figures(
    app: faust.App,
    pipeline: CustomerPipeline,
    customers: BufferedTable,
    writer: RowWriter,
    health: Health,
    trainer: Trainer | None,
) -> dict[str, float]:
    """The figures of this process, by Prometheus series name."""
    c = pipeline.counters
    figures: dict[str, float] = {
        "crm360_messages_total": c.messages,
        "crm360_events_in_total": c.events_in,
        "crm360_events_applied_total": c.events_applied,
        "crm360_duplicates_skipped_total": c.duplicates_skipped,
        "crm360_late_events_total": c.late_applied,
        "crm360_events_forwarded_total": c.events_forwarded,
        "crm360_profiles_merged_total": c.profiles_merged,
        "crm360_links_refused_total": c.links_refused,
        "crm360_identity_ops_out_total": c.identity_ops_out,
        "crm360_identity_ops_in_total": c.identity_ops_in,
        "crm360_identity_ops_waiting": len(pipeline.identities.outgoing),
        "crm360_dead_letters_total": c.dead_letters,
        "crm360_feature_rows_total": c.feature_rows,
        "crm360_rows_written_total": writer.sink.rows_written,
        "crm360_flushes_total": writer.flushes,
        "crm360_flush_seconds_total": round(writer.seconds_total, 6),
        "crm360_flush_seconds_last": round(writer.sink.last_flush_seconds, 6),
        "crm360_customers": len(customers),
        "crm360_customers_in_memory": customers.in_memory(),
        "crm360_state_bytes_avg": round(c.state_bytes_avg, 1),
        "crm360_labels_released_total": c.labels_released,
        "crm360_aging_passes_total": c.aging_passes,
        "crm360_churn_alerts_total": c.alerts,
        "crm360_churn_alerts_held_out_total": c.alerts_held_out,
        "crm360_audience_changes_total": c.audience_changes,
        "crm360_suppressed_total": c.suppressed,
        "crm360_erasures_total": c.erasures,
        "crm360_audiences": len(pipeline.audiences.live),
        "crm360_model_version": pipeline.models.version,
        "crm360_model_labels_learned": pipeline.models.churn.labels_learned,
        "crm360_value_model_buyers_learned": pipeline.models.value.buyers_learned,
        "crm360_value_model_spend_retention": round(pipeline.models.value.retention_of(math.inf), 4),
        "crm360_value_model_smearing": round(pipeline.models.value.smearing, 4),
        "crm360_trainer_labels_learned": trainer.models.churn.labels_learned if trainer else 0,
        "crm360_trainer_model_version": trainer.models.version if trainer else 0,
        "crm360_trainer_labels_held": len(trainer.order.held) if trainer else 0,
        "crm360_up": 1 if health.healthy()[0] else 0,
    }
    for partition, watermark in sorted(c.watermarks.items()):
        figures[f'crm360_watermark_seconds{{partition="{partition}"}}'] = round(watermark, 3)
    consumer = cast("CheckpointingConsumer", app.consumer)  # faust's ConsumerT has no read offsets
    for tp in sorted(tp for tp in app.assignor.assigned_actives() if tp.topic in (*INPUT_TOPICS, IDENTITY_OPS)):
        lag = consumer.lag(tp)
        if lag is not None:
            figures[f'crm360_consumer_lag{{topic="{tp.topic}",partition="{tp.partition}"}}'] = lag
    return figures


#: Gauges that add up across processes (besides counters).
SUMMED_GAUGES = ("crm360_customers", "crm360_customers_in_memory", "crm360_identity_ops_waiting")


def combine(parts: list[dict[str, float]]) -> dict[str, float]:
    """The worker's figures from those of its processes: counters, customers (all, and those
    decoded in memory) and identity ops waiting add up, the state size is the customers'
    average, up is the lowest, the rest the highest (per-partition series come from the one
    process that owns the partition).

    >>> combine([{"crm360_events_in_total": 5, "crm360_customers": 1, "crm360_state_bytes_avg": 100.0, "crm360_up": 1},
    ...          {"crm360_events_in_total": 7, "crm360_customers": 3, "crm360_state_bytes_avg": 200.0, "crm360_up": 0}])
    {'crm360_events_in_total': 12, 'crm360_customers': 4, 'crm360_state_bytes_avg': 175.0, 'crm360_up': 0, 'crm360_processes': 2}
    """
    out: dict[str, float] = {}
    for part in parts:
        for name, value in part.items():
            if name not in out:
                out[name] = value
            elif name.endswith("_total") or name in SUMMED_GAUGES:
                out[name] += value
            elif name == "crm360_up":
                out[name] = min(out[name], value)
            elif name != "crm360_state_bytes_avg":
                out[name] = max(out[name], value)
    customers = sum(part.get("crm360_customers", 0) for part in parts)
    if customers and "crm360_state_bytes_avg" in out:
        weighted = sum(part.get("crm360_state_bytes_avg", 0) * part.get("crm360_customers", 0) for part in parts)
        out["crm360_state_bytes_avg"] = round(weighted / customers, 1)
    out["crm360_processes"] = len(parts)
    return out


def metrics_text(figures: dict[str, float]) -> str:
    """Prometheus exposition of the worker's figures."""
    return "".join(f"{name} {value}\n" for name, value in figures.items())
