"""What the worker's HTTP endpoints answer, as models: ``/openapi.json`` is generated from them
(``streams.worker.api``), and the endpoints build their answers with them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from schemas.alerts import ModelQualityAlert
from schemas.audiences import Audience


class ErrorAnswer(BaseModel):
    """A refused request: what is wrong and what to do."""

    error: str


class EventsAnswer(BaseModel):
    """``POST /events``: events accepted (published to Kafka) and rejected (dead-lettered)."""

    accepted: int
    rejected: int
    errors: list[str] = Field(description="The first 100 rejections' reasons.")


class CustomerAnswer(BaseModel):
    """``GET /customers/{id}``: a profile, live from the worker's state or from ClickHouse."""

    source: Literal["live", "clickhouse"]
    customer: dict[str, Any] = Field(description="The columns of customer_features.")
    identifiers: list[str]
    merges: list[dict[str, Any]] = Field(description="The merges the profile decided.")


class ProfileElsewhere(BaseModel):
    """The identifier merged into ``profile``, which another process answers (see Location)."""

    profile: str


class ErasureAnswer(BaseModel):
    """``DELETE /customers/{id}``: what was erased where; ``complete`` false while under way."""

    request_id: str
    complete: bool
    identifiers: int = Field(description="Identifiers of the person suppressed.")
    identifiers_erased: int
    customer_states: int
    removed: dict[str, int] = Field(description="Rows removed per ClickHouse table.")


class LiftAnswer(BaseModel):
    """``DELETE /suppressions/{id}``: the suppression is lifted."""

    request_id: str
    was_suppressed: bool


class SqlAnswer(BaseModel):
    """``POST /sql``: a read-only query's columns and rows."""

    columns: list[str]
    rows: list[list[Any]]


class HealthAnswer(BaseModel):
    """``GET /health``: healthy only when every process of the worker is; ``model_quality``
    names the churn model's quality out of its band (the worker still works)."""

    status: Literal["ok", "unhealthy"]
    reason: str | None
    processes: list[str]
    model_quality: ModelQualityAlert | None = None


class AudienceList(BaseModel):
    """``GET /audiences``: every audience, by name."""

    audiences: list[Audience]
