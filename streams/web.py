"""The worker's web endpoints: ingest, the live profile, read-only SQL, the live dashboard,
health and metrics."""

from __future__ import annotations

import asyncio
import hmac
import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View

from processors.features import profile
from schemas.envelope import Rejected, pack, validate
from schemas.events import BaseEvent
from schemas.rows import FEATURE_TIME_COLUMNS
from schemas.topics import INPUT_TOPICS, partition_for
from sinks.query import run_readonly
from sinks.tables import DATABASE
from streams.dashboard import DashboardCache, dashboard_data, dashboard_page, plotly_js
from streams.pipeline import DeadLetterRecord

if TYPE_CHECKING:
    from streams.app import Worker

MAX_BODY_BYTES = 20 * 1024 * 1024


class BadRequest(ValueError):
    """The request body cannot be read as events."""


def parse_body(body: bytes) -> list[Any]:
    """A JSON object, a JSON array, an envelope ``{"events": [...]}`` or NDJSON, as a list.

    >>> parse_body(b'{"a": 1}'), parse_body(b'[{"a": 1}, {"a": 2}]'), parse_body(b'{"a": 1}\\n{"a": 2}\\n')
    ([{'a': 1}], [{'a': 1}, {'a': 2}], [{'a': 1}, {'a': 2}])
    """
    text = body.decode("utf-8", errors="strict").strip()
    if not text:
        raise BadRequest("empty body: send one event, a JSON array of events, or NDJSON")
    try:
        data = json.loads(text)
    except ValueError:
        items = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except ValueError as error:
                    raise BadRequest(f"line {number} is not JSON: {error}") from None
        return items
    if isinstance(data, dict) and isinstance(data.get("events"), list):
        return list(data["events"])
    return data if isinstance(data, list) else [data]


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (datetime.fromtimestamp(v, tz=timezone.utc).isoformat() if k in FEATURE_TIME_COLUMNS and v is not None else v)
        for k, v in row.items()
    }


def register_views(worker: Worker) -> None:
    """Add the crm360 endpoints to the worker's Faust web server."""
    app, settings = worker.app, worker.settings
    api_key = settings.api_key.get_secret_value() if settings.api_key else None

    def authorized(request: Request) -> bool:
        """The API key as a bearer token, or (for the dashboard in a browser) as ``?key=``."""
        if not api_key:
            return True
        given = request.headers.get("Authorization", "")
        if "key" in request.query:
            given = f"Bearer {request.query['key']}"
        return hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode())

    def denied(view: View) -> Response:
        return view.json({"error": "missing or wrong API key: send 'Authorization: Bearer <CRM360_API_KEY>'"}, status=401)

    @app.page("/events")
    class Events(View):
        async def post(self, request: Request) -> Response:
            if not authorized(request):
                return denied(self)
            body = await request.read()
            if len(body) > MAX_BODY_BYTES:
                return self.json({"error": f"body over {MAX_BODY_BYTES} bytes: split it"}, status=413)
            try:
                items = parse_body(body)
            except (BadRequest, UnicodeDecodeError) as error:
                return self.json({"error": f"malformed body: {error}"}, status=400)
            accepted: list[BaseEvent] = []
            dead: list[DeadLetterRecord] = []
            for raw in items:
                result = validate(raw)
                if isinstance(result, Rejected):
                    dead.append(DeadLetterRecord("http", "http:/events", -1, -1, result.reason, result.payload))
                else:
                    accepted.append(result)
            sends = [
                await app.producer.send(m.topic, m.key, m.value, m.partition, None, None)
                for m in pack(accepted, settings.partitions)
            ]
            await asyncio.gather(*sends)
            if dead:
                async with worker.lock:
                    worker.pipeline.record_dead_letters(dead)
                    await worker.publish_dead_letters(dead)
                    await worker.flush()
            return self.json(
                {"accepted": len(accepted), "rejected": len(dead), "errors": [d.reason for d in dead[:100]]},
                status=200 if accepted or not dead else 422,
            )

    @app.page("/customers/{customer_id}")
    class Customer(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            if not authorized(request):
                return denied(self)
            key = customer_id.encode()
            state = worker.table.get(key)
            if state is not None:
                home = partition_for(key, settings.partitions)
                watermark = worker.pipeline.watermarks.get(home, state.newest_event_at or 0.0)
                row = profile(state, watermark, worker.pipeline.config, worker.pipeline.scorer)
                return self.json({"source": "live", "customer": _plain_row(row)})
            sql = "SELECT * EXCEPT (version, updated_at) FROM customer_features FINAL WHERE customer_id = {id:String}"
            result = await asyncio.to_thread(worker.reader.query, sql, parameters={"id": customer_id})
            if not result.result_rows:
                return self.json({"error": f"no customer {customer_id!r}"}, status=404)
            values = dict(zip(result.column_names, result.result_rows[0]))
            return self.json({"source": "clickhouse", "customer": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items()}})

    @app.page("/sql")
    class Sql(View):
        async def post(self, request: Request) -> Response:
            if not authorized(request):
                return denied(self)
            body = (await request.read()).decode("utf-8", errors="replace")
            try:
                sql = json.loads(body)["sql"] if body.lstrip().startswith("{") else body
            except (ValueError, KeyError, TypeError):
                return self.json({"error": 'send the query as text or as {"sql": "..."}'}, status=400)
            try:
                result = await asyncio.to_thread(run_readonly, worker.reader, sql)
            except Exception as error:  # noqa: BLE001 - ClickHouse's own message goes back to the analyst
                return self.json({"error": str(error).strip().splitlines()[0][:2000]}, status=400)
            return self.json(result.to_dict())

    page = dashboard_page(settings.dashboard_refresh_s)
    cache = DashboardCache(max_age_s=settings.dashboard_refresh_s / 2)
    dashboard_lock = asyncio.Lock()

    @app.page("/dashboard")
    class Dashboard(View):
        async def get(self, request: Request) -> Response:
            if not authorized(request):
                return self.text("missing or wrong API key: open /dashboard?key=<CRM360_API_KEY>", status=401)
            return self.html(page)

    @app.page("/dashboard/data")
    class DashboardData(View):
        async def get(self, request: Request) -> Response:
            if not authorized(request):
                return denied(self)
            async with dashboard_lock:
                data = cache.fresh() or cache.keep(
                    await asyncio.to_thread(dashboard_data, lambda sql: run_readonly(worker.reader, sql))
                )
            return self.json(data)

    @app.page("/dashboard/plotly.min.js")
    class PlotlyJs(View):
        async def get(self, request: Request) -> Response:
            script = await asyncio.to_thread(plotly_js)
            return self.bytes(script, content_type="application/javascript",
                              headers={"Cache-Control": "public, max-age=86400"})

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            ok, reason = worker.healthy()
            return self.json({"status": "ok" if ok else "unhealthy", "reason": reason}, status=200 if ok else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.text(metrics_text(worker), content_type="text/plain; version=0.0.4")


def metrics_text(worker: Worker) -> str:
    """Prometheus exposition of the worker's counters."""
    c = worker.pipeline.counters
    trainer = worker.models.trainer
    lines = [
        f"crm360_messages_total {c.messages}",
        f"crm360_events_in_total {c.events_in}",
        f"crm360_events_applied_total {c.events_applied}",
        f"crm360_duplicates_skipped_total {c.duplicates_skipped}",
        f"crm360_late_events_total {c.late_skipped}",
        f"crm360_dead_letters_total {c.dead_letters}",
        f"crm360_feature_rows_total {c.feature_rows}",
        f"crm360_rows_written_total {worker.sink.rows_written}",
        f"crm360_flushes_total {worker.flushes}",
        f"crm360_flush_seconds_total {worker.flush_seconds_total:.6f}",
        f"crm360_flush_seconds_last {worker.sink.last_flush_seconds:.6f}",
        f"crm360_customers {len(worker.table)}",
        f"crm360_state_bytes_avg {c.state_bytes_avg:.1f}",
        f"crm360_labels_released_total {c.labels_released}",
        f"crm360_churn_alerts_total {c.alerts}",
        f"crm360_model_version {worker.pipeline.models.version}",
        f"crm360_model_labels_learned {worker.pipeline.models.churn.labels_learned}",
        f"crm360_trainer_labels_learned {trainer.models.churn.labels_learned if trainer else 0}",
        f"crm360_trainer_model_version {trainer.models.version if trainer else 0}",
        f"crm360_up {1 if worker.healthy()[0] else 0}",
    ]
    for partition, watermark in sorted(c.watermarks.items()):
        lines.append(f'crm360_watermark_seconds{{partition="{partition}"}} {watermark:.3f}')
    consumer = worker.app.consumer
    for tp in sorted(tp for tp in worker.app.assignor.assigned_actives() if tp.topic in INPUT_TOPICS):
        highwater = consumer.highwater(tp)
        position = consumer._read_offset.get(tp)
        if highwater is not None:
            lag = max(highwater - ((position or -1) + 1), 0)
            lines.append(f'crm360_consumer_lag{{topic="{tp.topic}",partition="{tp.partition}"}} {lag}')
    return "\n".join(lines) + "\n"
