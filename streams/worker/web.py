"""The worker's web endpoints: ingest, the live profile, read-only SQL, the live dashboard,
health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import orjson
from aiohttp.web_exceptions import HTTPRequestEntityTooLarge
from faust.web import Request, Response, View

from processors.features import conflicts, profile
from schemas.envelope import Rejected, pack, validate
from schemas.events import BaseEvent, ahead_of_wall_clock
from schemas.rows import FEATURE_TIME_COLUMNS, DeadLetter
from schemas.topics import INPUT_TOPICS, partition_for
from sinks.query import run_readonly
from streams.analytics.dashboard import DashboardCache, dashboard_data, dashboard_page, plotly_js
from streams.sdk.client import bearer
from streams.settings import Role
from streams.worker.pipeline import conflict
from streams.worker.processes import staged_inserts

if TYPE_CHECKING:
    from streams.worker.app import Worker
    from streams.worker.faust_corrections import CheckpointingConsumer

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
        data = orjson.loads(text)  # nesting beyond 1024 levels is an error (the stdlib's recursion crashed)
    except ValueError:
        items = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    items.append(orjson.loads(line))
                except ValueError as error:
                    raise BadRequest(f"line {number} is not JSON: {error}") from None
        return items
    if isinstance(data, dict) and isinstance(data.get("events"), list):
        return list(data["events"])
    return data if isinstance(data, list) else [data]


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (datetime.fromtimestamp(v, tz=UTC).isoformat() if k in FEATURE_TIME_COLUMNS and v is not None else v)
        for k, v in row.items()
    }


def register_views(worker: Worker) -> None:
    """Add the crm360 endpoints to the worker's Faust web server."""
    app, settings = worker.app, worker.settings
    api_key = settings.key

    def authorized(request: Request) -> bool:
        """The API key as a bearer token, or (for the dashboard in a browser) as ``?key=``."""
        if not api_key:
            return True
        given = bearer(request.query["key"]) if "key" in request.query else request.headers
        return hmac.compare_digest(given.get("Authorization", "").encode(), bearer(api_key)["Authorization"].encode())

    class KeyedView(View):
        """A view that answers only requests with the API key (when one is set)."""

        async def dispatch(self, request: Request) -> Response:
            if not authorized(request):
                return self.refused()
            response: Response = await super().dispatch(request)
            return response

        def refused(self) -> Response:
            return self.json(
                {"error": "missing or wrong API key: send 'Authorization: Bearer <CRM360_API_KEY>'"}, status=401
            )

    async def send_all(events: list[BaseEvent]) -> None:
        """Publish ``events`` and wait until Kafka has acknowledged every one."""
        sends = [
            await app.producer.send(m.topic, m.key, m.value, m.partition, None, None)
            for m in pack(events, settings.partitions)
        ]
        await asyncio.gather(*sends)

    @app.page("/events")
    class Events(KeyedView):
        async def post(self, request: Request) -> Response:
            try:
                body = await request.read()
            except HTTPRequestEntityTooLarge:
                return self.json({"error": f"body over {MAX_BODY_BYTES} bytes: split it"}, status=413)
            problem = worker.intake_problem()
            if problem:
                return self.json({"error": f"{problem}: no event was accepted; send them again later"}, status=503)
            try:
                items = parse_body(body)
            except (BadRequest, UnicodeDecodeError) as error:
                return self.json({"error": f"malformed body: {error}"}, status=400)
            accepted: list[BaseEvent] = []
            dead: list[DeadLetter] = []
            max_future_s = worker.pipeline.config.max_future_s
            horizon = time.time() + max_future_s
            for index, raw in enumerate(items):
                result = validate(raw, f"body[{index}]")
                if not isinstance(result, Rejected) and result.epoch > horizon:  # as the pipeline would
                    result = Rejected(
                        f"body[{index}]: {ahead_of_wall_clock(result.epoch, max_future_s)}", result.model_dump_json()
                    )
                if not isinstance(result, Rejected):  # told now when this process holds the customer
                    state = worker.customers.get(result.customer_id.encode())
                    if state is not None and conflicts(state, result, result.epoch):
                        result = Rejected(f"body[{index}]: {conflict(result)}", result.model_dump_json())
                if isinstance(result, Rejected):
                    dead.append(
                        DeadLetter.received(time.time(), "http", "http:/events", -1, -1, result.reason, result.payload)
                    )
                else:
                    accepted.append(result)
            try:
                await asyncio.wait_for(send_all(accepted), settings.publish_timeout_s)
            except TimeoutError:
                return self.json(
                    {
                        "error": f"Kafka did not acknowledge the events within {settings.publish_timeout_s:g} s: "
                        "none is accepted for sure; send them again (their event ids make that "
                        "safe)"
                    },
                    status=503,
                )
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
    class Customer(KeyedView):
        async def get(self, request: Request, customer_id: str) -> Response:
            key = customer_id.encode()
            state = worker.customers.get(key)
            if state is None and worker.helpers:
                # Another process of the worker may own the customer; if this one does (SameNode),
                # or none is known yet, ClickHouse answers below.
                with contextlib.suppress(Exception):
                    return await app.router.route_req(worker.table.name, key, self.web, request)
            if state is not None:
                home = partition_for(key, settings.partitions)
                watermark = worker.pipeline.watermarks.get(home, state.newest_event_at or 0.0)
                row = profile(state, watermark, worker.pipeline.config, worker.pipeline.scorer)
                return self.json({"source": "live", "customer": _plain_row(row)})
            if worker.dashboard_reads is None:  # a helper process: the main process reads ClickHouse
                return self.json({"error": f"no customer {customer_id!r}"}, status=404)
            sql = "SELECT * EXCEPT (version, updated_at) FROM customer_features FINAL WHERE customer_id = {id:String}"
            result = await worker.dashboard_reads.run(lambda client: run_readonly(client, sql, {"id": customer_id}))
            if not result.rows:
                return self.json({"error": f"no customer {customer_id!r}"}, status=404)
            return self.json({"source": "clickhouse", "customer": dict(zip(result.columns, result.rows[0]))})

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            ok, reason = worker.healthy()
            if ok and worker.helpers:
                answers = await worker.helpers.ask(app.http_client, "/health")
                for url, (status, answer) in zip(worker.helpers.urls, answers):
                    if status != 200:
                        ok, reason = False, f"worker process at {url}: {answer.get('reason', status)}"
                        break
            processes = [settings.web_url, *(worker.helpers.urls if worker.helpers else [])]
            return self.json(
                {"status": "ok" if ok else "unhealthy", "reason": reason, "processes": processes},
                status=200 if ok else 503,
            )

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            parts = [process_figures(worker)]
            if worker.helpers:
                answers = await worker.helpers.ask(app.http_client, "/internal/figures")
                parts += [answer for status, answer in answers if status == 200]
            return self.text(metrics_text(combine(parts)), content_type="text/plain; version=0.0.4")

    @app.page("/internal/figures")
    class Figures(KeyedView):
        async def get(self, request: Request) -> Response:
            return self.json(process_figures(worker))

    if settings.role is Role.HELPER:
        return  # what follows reads ClickHouse, which the main process owns

    assert worker.dashboard_reads and worker.sql_reads
    dashboard_reads, sql_reads = worker.dashboard_reads, worker.sql_reads

    @app.page("/internal/rows")
    class Rows(KeyedView):
        """Inserts a helper process's write (see ``streams.worker.processes``)."""

        async def post(self, request: Request) -> Response:
            try:
                inserts = staged_inserts(await request.read(), settings.staging_path)
                await asyncio.to_thread(worker.sink.insert, inserts)
            except ValueError as error:
                return self.json({"error": str(error)}, status=400)
            except Exception as error:  # noqa: BLE001 - the helper retries, as after any failed write
                return self.json({"error": str(error).strip().splitlines()[0][:2000]}, status=503)
            finally:
                await worker.publish_refused()  # rows ClickHouse refused: dead-lettered, the rest written
            return self.json({"inserted_rows": sum(insert.rows for insert in inserts)})

    @app.page("/sql")
    class Sql(KeyedView):
        async def post(self, request: Request) -> Response:
            body = (await request.read()).decode("utf-8", errors="replace")
            try:
                sql = json.loads(body)["sql"] if body.lstrip().startswith("{") else body
            except (ValueError, KeyError, TypeError):
                return self.json({"error": 'send the query as text or as {"sql": "..."}'}, status=400)
            try:
                result = await sql_reads.run(lambda client: run_readonly(client, sql))
            except Exception as error:  # noqa: BLE001 - ClickHouse's own message goes back to the analyst
                return self.json({"error": str(error).strip().splitlines()[0][:2000]}, status=400)
            return self.json(result.to_dict())

    page = dashboard_page(settings.dashboard_refresh_s)
    cache = DashboardCache(max_age_s=settings.dashboard_refresh_s / 2)
    dashboard_lock = asyncio.Lock()

    @app.page("/dashboard")
    class Dashboard(KeyedView):
        def refused(self) -> Response:  # a page for a browser
            return self.text("missing or wrong API key: open /dashboard?key=<CRM360_API_KEY>", status=401)

        async def get(self, request: Request) -> Response:
            return self.html(page)

    @app.page("/dashboard/data")
    class DashboardData(KeyedView):
        async def get(self, request: Request) -> Response:
            async with dashboard_lock:
                data = cache.fresh() or cache.keep(
                    await dashboard_reads.run(lambda client: dashboard_data(partial(run_readonly, client)))
                )
            return self.json(data)

    @app.page("/dashboard/plotly.min.js")
    class PlotlyJs(View):
        async def get(self, request: Request) -> Response:
            script = await asyncio.to_thread(plotly_js)
            return self.bytes(
                script, content_type="application/javascript", headers={"Cache-Control": "public, max-age=86400"}
            )


def process_figures(worker: Worker) -> dict[str, float]:
    """The figures of this process, by Prometheus series name."""
    c = worker.pipeline.counters
    trainer = worker.models.trainer
    figures: dict[str, float] = {
        "crm360_messages_total": c.messages,
        "crm360_events_in_total": c.events_in,
        "crm360_events_applied_total": c.events_applied,
        "crm360_duplicates_skipped_total": c.duplicates_skipped,
        "crm360_late_events_total": c.late_applied,
        "crm360_dead_letters_total": c.dead_letters,
        "crm360_feature_rows_total": c.feature_rows,
        "crm360_rows_written_total": worker.sink.rows_written,
        "crm360_flushes_total": worker.flushes,
        "crm360_flush_seconds_total": round(worker.flush_seconds_total, 6),
        "crm360_flush_seconds_last": round(worker.sink.last_flush_seconds, 6),
        "crm360_customers": len(worker.customers),
        "crm360_customers_in_memory": worker.customers.in_memory(),
        "crm360_state_bytes_avg": round(c.state_bytes_avg, 1),
        "crm360_labels_released_total": c.labels_released,
        "crm360_aging_passes_total": c.aging_passes,
        "crm360_churn_alerts_total": c.alerts,
        "crm360_model_version": worker.pipeline.models.version,
        "crm360_model_labels_learned": worker.pipeline.models.churn.labels_learned,
        "crm360_trainer_labels_learned": trainer.models.churn.labels_learned if trainer else 0,
        "crm360_trainer_model_version": trainer.models.version if trainer else 0,
        "crm360_up": 1 if worker.healthy()[0] else 0,
    }
    for partition, watermark in sorted(c.watermarks.items()):
        figures[f'crm360_watermark_seconds{{partition="{partition}"}}'] = round(watermark, 3)
    consumer = cast("CheckpointingConsumer", worker.app.consumer)  # faust's ConsumerT has no read offsets
    for tp in sorted(tp for tp in worker.app.assignor.assigned_actives() if tp.topic in INPUT_TOPICS):
        highwater = consumer.highwater(tp)
        position = consumer._read_offset.get(tp)
        if highwater is not None:
            lag = max(highwater - ((position or -1) + 1), 0)
            figures[f'crm360_consumer_lag{{topic="{tp.topic}",partition="{tp.partition}"}}'] = lag
    return figures


def combine(parts: list[dict[str, float]]) -> dict[str, float]:
    """The worker's figures from those of its processes: counters and customers (all, and those
    decoded in memory) add up, the
    state size is the customers' average, up is the lowest, the rest the highest (per-partition
    series come from the one process that owns the partition).

    >>> combine([{"crm360_events_in_total": 5, "crm360_customers": 1, "crm360_state_bytes_avg": 100.0, "crm360_up": 1},
    ...          {"crm360_events_in_total": 7, "crm360_customers": 3, "crm360_state_bytes_avg": 200.0, "crm360_up": 0}])
    {'crm360_events_in_total': 12, 'crm360_customers': 4, 'crm360_state_bytes_avg': 175.0, 'crm360_up': 0, 'crm360_processes': 2}
    """
    out: dict[str, float] = {}
    for part in parts:
        for name, value in part.items():
            if name not in out:
                out[name] = value
            elif name.endswith("_total") or name in ("crm360_customers", "crm360_customers_in_memory"):
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
