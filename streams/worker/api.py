"""The worker's HTTP API described for its users: ``/openapi.json`` (OpenAPI 3.1) and a page
that lists it, ``/docs``.

Each endpoint is an :class:`Operation` of :data:`OPERATIONS`; its bodies are the pydantic
models the endpoint reads and answers with (``schemas.api``, ``schemas.events``,
``schemas.audiences``), so the document cannot drift from the code's types. The document
lists what the server actually serves: an operation the server does not serve is left out,
and a route served without an operation is named under ``x-undocumented`` (a test keeps it
absent).

>>> document = openapi_document({("GET", "/health"), ("GET", "/nowhere")}, "1.0")
>>> list(document["paths"]), document["x-undocumented"]
(['/health'], ['GET /nowhere'])
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from schemas.api import (
    AudienceList,
    CustomerAnswer,
    ErasureAnswer,
    ErrorAnswer,
    EventsAnswer,
    HealthAnswer,
    LiftAnswer,
    ProfileElsewhere,
    SqlAnswer,
)
from schemas.audiences import Audience
from schemas.events import Event

#: A body that is not JSON: its media type and what it holds.
Text = tuple[str, str]
Body = type[BaseModel] | Text | dict[str, Any]
REF = "#/components/schemas/{model}"
#: Any JSON object (figures, the dashboard's data).
OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class Operation:
    """One endpoint and method: what it takes and answers (status -> body), whether it takes
    the API key, and whether it is the worker's own (between its processes)."""

    method: str
    path: str
    summary: str
    responses: dict[int, Body]
    body: Body | None = None
    keyed: bool = True
    internal: bool = False
    parameters: list[str] = field(default_factory=list)


_ERRORS_KEYED: dict[int, Body] = {401: ErrorAnswer}
#: The events ``POST /events`` takes: one event, a JSON array of them, an envelope
#: ``{"events": [...]}``, or JSON lines.
_EVENTS: dict[str, Any] = {
    "oneOf": [
        {"$ref": REF.format(model="Event")},
        {"type": "array", "items": {"$ref": REF.format(model="Event")}},
        {
            "type": "object",
            "properties": {"events": {"type": "array", "items": {"$ref": REF.format(model="Event")}}},
            "required": ["events"],
        },
    ]
}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/events",
        "Publish events (one, an array, an envelope or JSON lines): each is validated, published to its "
        "input topic or dead-lettered",
        {200: EventsAnswer, 400: ErrorAnswer, 401: ErrorAnswer, 413: ErrorAnswer, 422: EventsAnswer, 503: ErrorAnswer},
        body=_EVENTS,
    ),
    Operation(
        "GET",
        "/customers/{customer_id}",
        "A customer's 360-degree profile, given any of their identifiers",
        {200: CustomerAnswer, 307: ProfileElsewhere, 401: ErrorAnswer, 404: ErrorAnswer},
        parameters=["customer_id"],
    ),
    Operation(
        "DELETE",
        "/customers/{customer_id}",
        "Erase the person, given any of their identifiers, and suppress their identifiers",
        {200: ErasureAnswer, 202: ErasureAnswer, 401: ErrorAnswer, 421: ErrorAnswer, 503: ErrorAnswer},
        parameters=["customer_id"],
    ),
    Operation(
        "DELETE",
        "/suppressions/{identifier}",
        "Lift an identifier's suppression: its events start a new profile",
        {200: LiftAnswer, 401: ErrorAnswer, 421: ErrorAnswer, 503: ErrorAnswer},
        parameters=["identifier"],
    ),
    Operation("GET", "/audiences", "Every audience", {200: AudienceList, 401: ErrorAnswer}),
    Operation(
        "POST",
        "/audiences",
        "Create an audience",
        {200: Audience, 400: ErrorAnswer, 401: ErrorAnswer, 409: ErrorAnswer, 503: ErrorAnswer},
        body=Audience,
    ),
    Operation(
        "GET",
        "/audiences/{name}",
        "One audience",
        {200: Audience, 401: ErrorAnswer, 404: ErrorAnswer},
        parameters=["name"],
    ),
    Operation(
        "PUT",
        "/audiences/{name}",
        "Create or change an audience",
        {200: Audience, 400: ErrorAnswer, 401: ErrorAnswer, 503: ErrorAnswer},
        body=Audience,
        parameters=["name"],
    ),
    Operation(
        "DELETE",
        "/audiences/{name}",
        "Delete an audience: its members leave it",
        {200: Audience, 401: ErrorAnswer, 404: ErrorAnswer, 503: ErrorAnswer},
        parameters=["name"],
    ),
    Operation(
        "POST",
        "/sql",
        'One read-only SELECT over crm360\'s tables, as text or as {"sql": ...}',
        {200: SqlAnswer, 400: ErrorAnswer, 401: ErrorAnswer},
        body=("text/plain", "The query."),
    ),
    Operation(
        "GET",
        "/health",
        "200 while the broker answers, partitions are assigned, processing runs and ClickHouse writes "
        "succeed, in every process",
        {200: HealthAnswer, 503: HealthAnswer},
        keyed=False,
    ),
    Operation(
        "GET", "/metrics", "Prometheus figures of every process", {200: ("text/plain", "Prometheus text")}, keyed=False
    ),
    Operation(
        "GET",
        "/dashboard",
        "The live dashboard (a page; the API key as ?key=)",
        {200: ("text/html", "The page."), 401: ("text/plain", "Missing or wrong key.")},
    ),
    Operation("GET", "/dashboard/data", "The dashboard's figures", {200: OBJECT, 401: ErrorAnswer}),
    Operation(
        "GET",
        "/dashboard/plotly.min.js",
        "The dashboard's chart library",
        {200: ("application/javascript", "plotly.js")},
        keyed=False,
    ),
    Operation("GET", "/openapi.json", "This document", {200: OBJECT}, keyed=False),
    Operation("GET", "/docs", "This document, as a page", {200: ("text/html", "The page.")}, keyed=False),
    Operation("GET", "/", "faust's index", {200: OBJECT}, keyed=False),
    Operation("GET", "/internal/figures", "A process's figures", {200: OBJECT, 401: ErrorAnswer}, internal=True),
    Operation(
        "POST",
        "/internal/rows",
        "A helper process's staged inserts and row erasures",
        {200: OBJECT, 400: ErrorAnswer, 401: ErrorAnswer, 503: ErrorAnswer},
        body=OBJECT,
        internal=True,
    ),
    Operation(
        "POST",
        "/internal/current",
        "A helper process's read of its customers for a backfill",
        {200: OBJECT, 400: ErrorAnswer, 401: ErrorAnswer},
        body=OBJECT,
        internal=True,
    ),
)


def _content(body: Body) -> dict[str, Any]:
    if isinstance(body, tuple):
        media, description = body
        return {media: {"schema": {"type": "string", "description": description}}}
    if isinstance(body, dict):
        return {"application/json": {"schema": body}}
    return {"application/json": {"schema": {"$ref": REF.format(model=body.__name__)}}}


def _operation(operation: Operation) -> dict[str, Any]:
    described: dict[str, Any] = {
        "summary": operation.summary,
        "operationId": f"{operation.method.lower()}{operation.path}".replace("/", "_")
        .replace("{", "")
        .replace("}", ""),
        "responses": {
            str(status): {"description": _reason(status), "content": _content(body)}
            for status, body in operation.responses.items()
        },
    }
    if operation.parameters:
        described["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in operation.parameters
        ]
    if operation.body is not None:
        described["requestBody"] = {"required": True, "content": _content(operation.body)}
    described["security"] = [{"apiKey": []}] if operation.keyed else []
    if operation.internal:
        described["x-internal"] = True
    return described


def _reason(status: int) -> str:
    from http import HTTPStatus

    return HTTPStatus(status).phrase


def _schemas() -> dict[str, Any]:
    models = {
        body
        for operation in OPERATIONS
        for body in [*operation.responses.values(), operation.body]
        if isinstance(body, type)
    }
    _, definitions = models_json_schema(
        [(model, "serialization") for model in sorted(models, key=lambda m: m.__name__)], ref_template=REF
    )
    schemas: dict[str, Any] = definitions.get("$defs", {})
    event = TypeAdapter(Event).json_schema(ref_template=REF)
    schemas |= event.pop("$defs", {})
    schemas["Event"] = event
    return schemas


def openapi_document(served: Iterable[tuple[str, str]], version: str) -> dict[str, Any]:
    """The OpenAPI document of the operations among ``served`` (method, path); those served and
    not described are named under ``x-undocumented``."""
    served = set(served)
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        if (operation.method, operation.path) in served:
            paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(operation)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "crm360 worker", "version": version},
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "CRM360_API_KEY"}},
        },
    }
    described = {(operation.method, operation.path) for operation in OPERATIONS}
    undocumented = sorted(f"{method} {path}" for method, path in served - described if method != "HEAD")
    if undocumented:
        document["x-undocumented"] = undocumented
    return document


def docs_page(document: dict[str, Any]) -> str:
    """A page listing the document's operations and their answers (no script, works offline)."""
    rows = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            answers = ", ".join(operation["responses"])
            key = "API key" if operation["security"] else "open"
            rows.append(
                f"<tr><td><code>{method.upper()} {html.escape(path)}</code></td>"
                f"<td>{html.escape(operation['summary'])}</td><td>{answers}</td><td>{key}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>crm360 API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;text-align:left;"
        "vertical-align:top}tr:nth-child(even){background:#f4f4f4}</style></head><body>"
        "<h1>crm360 worker API</h1><p>The full description, with every body's schema: "
        "<a href='/openapi.json'>/openapi.json</a> (OpenAPI 3.1).</p>"
        "<table><tr><th>endpoint</th><th>what it does</th><th>answers</th><th>auth</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
