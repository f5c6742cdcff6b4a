"""ClickHouse tables, derived from the pydantic models of ``schemas/`` so the two never drift.

Examples
--------
>>> clickhouse_type(float | None), clickhouse_type(datetime), clickhouse_type(dict[str, bool] | None)
('Nullable(Float64)', "DateTime64(3, 'UTC')", 'Map(String, Bool)')
>>> [c for c, _ in TABLES["purchases"].columns][:4]
['event_id', 'customer_id', 'identifiers', 'ts']
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel

from schemas.alerts import ChurnAlert
from schemas.audiences import AudienceEvent, AudienceMember
from schemas.events import BaseEvent, CustomerProfile, Identify, Purchase, SocialInteraction, Visit
from schemas.privacy import PrivacyRecord
from schemas.rows import (
    CustomerFeatures,
    DeadLetter,
    IdentityLink,
    IdentityMerge,
    MembershipChange,
    ModelMetrics,
    SegmentInfo,
)

DATABASE = "crm360"
#: The read-only user of a ClickHouse server: analysts' queries and the dashboard (see sinks.query).
READER = "crm360_reader"
TIME = "DateTime64(3, 'UTC')"


def clickhouse_type(annotation: Any) -> str:
    """The ClickHouse column type of a pydantic field annotation."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        inner = clickhouse_type(next(a for a in args if a is not type(None)))
        # ClickHouse has no NULL map or array: a missing one is empty.
        return inner if inner.startswith(("Map(", "Array(")) else f"Nullable({inner})"
    if typing.get_origin(annotation) is typing.Annotated:
        return clickhouse_type(args[0])
    if typing.get_origin(annotation) is Literal:
        return "LowCardinality(String)"
    if typing.get_origin(annotation) is dict:
        return f"Map({clickhouse_type(args[0])}, {clickhouse_type(args[1])})"
    if typing.get_origin(annotation) is list:
        return f"Array({clickhouse_type(args[0])})"
    simple = {str: "String", int: "Int64", float: "Float64", datetime: TIME, AwareDatetime: TIME, bool: "Bool"}
    if annotation in simple:
        return simple[annotation]
    raise TypeError(f"no ClickHouse type for {annotation!r}")


def model_columns(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(name, ClickHouse type) of every field of ``model``, in order."""
    return [(name, clickhouse_type(f.annotation)) for name, f in model.model_fields.items() if name not in skip]


@dataclass(frozen=True)
class Table:
    """A table we write: its columns and engine clause."""

    name: str
    columns: list[tuple[str, str]]
    engine: str

    @cached_property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def ddl(self) -> str:
        cols = ",\n  ".join(f"`{name}` {kind}" for name, kind in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {DATABASE}.{self.name} (\n  {cols}\n) ENGINE = {self.engine}"


#: Columns of the flattened ``items`` of a purchase.
ITEM_COLUMNS = [
    ("item_skus", "Array(String)"),
    ("item_categories", "Array(String)"),
    ("item_quantities", "Array(Int64)"),
    ("item_unit_prices", "Array(Float64)"),
]
INGESTED = [("ingested_at", TIME)]
RAW_ENGINE = "ReplacingMergeTree(ingested_at) PARTITION BY toYYYYMM(ts) ORDER BY (customer_id, event_id)"

RAW_EVENT_TABLES: dict[type[BaseEvent], str] = {
    Purchase: "purchases",
    Visit: "visits",
    SocialInteraction: "social_interactions",
    CustomerProfile: "customer_profiles",
    Identify: "identify_events",
}


def _raw_table(model: type[BaseEvent], name: str) -> Table:
    columns = model_columns(model, skip=("type", "items"))
    if model is Purchase:
        columns += ITEM_COLUMNS
    return Table(name, columns + INGESTED, RAW_ENGINE)


TABLES: dict[str, Table] = {
    **{name: _raw_table(model, name) for model, name in RAW_EVENT_TABLES.items()},
    # A profile merged into another is written once more, as deleted: FINAL leaves it out.
    "customer_features": Table(
        "customer_features",
        model_columns(CustomerFeatures) + [("version", "UInt64"), ("updated_at", TIME), ("is_deleted", "UInt8")],
        "ReplacingMergeTree(version, is_deleted) ORDER BY customer_id",
    ),
    "dead_letters": Table(
        "dead_letters",
        model_columns(DeadLetter),
        "MergeTree ORDER BY received_at",
    ),
    "churn_alerts": Table(
        "churn_alerts",
        model_columns(ChurnAlert),
        "ReplacingMergeTree(created_at) PARTITION BY toYYYYMM(as_of) ORDER BY (customer_id, alert_id)",
    ),
    "model_metrics": Table("model_metrics", model_columns(ModelMetrics), "MergeTree ORDER BY measured_at"),
    "segments": Table("segments", model_columns(SegmentInfo), "ReplacingMergeTree(model_version) ORDER BY segment"),
    "segment_membership": Table(
        "segment_membership", model_columns(MembershipChange), "SummingMergeTree ORDER BY (dimension, name)"
    ),
    # A decision made again after a restart is the same row.
    "identity_merges": Table(
        "identity_merges",
        model_columns(IdentityMerge),
        "ReplacingMergeTree(decided_at) ORDER BY (survivor, absorbed, outcome, linked_at)",
    ),
    "identities": Table(
        "identities", model_columns(IdentityLink), "ReplacingMergeTree(updated_at) ORDER BY identifier"
    ),
    # An entry or exit decided again after a restart is the same row.
    "audience_events": Table(
        "audience_events",
        [
            ("event_id", "String"),
            *model_columns(AudienceEvent, skip=("features",)),
            ("features", "String"),
            ("published", "Bool"),  # told to its destinations (not: withheld for want of consent)
        ],
        "ReplacingMergeTree(created_at) ORDER BY (audience, customer_id, event_id)",
    ),
    "audience_membership": Table(
        "audience_membership",
        model_columns(AudienceMember) + [("version", "UInt64"), ("updated_at", TIME), ("is_deleted", "UInt8")],
        "ReplacingMergeTree(version, is_deleted) ORDER BY (audience, customer_id)",
    ),
    # What was suppressed and erased, by request: digests of identifiers, never the identifiers.
    "privacy_log": Table("privacy_log", model_columns(PrivacyRecord), "MergeTree ORDER BY (at, request_id)"),
}
