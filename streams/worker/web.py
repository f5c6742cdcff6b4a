"""The worker's web endpoints: ingest, the live profile, audiences, read-only SQL, the live
dashboard, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import version
from typing import Any, cast
from urllib.parse import quote

import faust
import orjson
from aiohttp.web_exceptions import HTTPRequestEntityTooLarge
from faust.web import Request, Response, View
from pydantic import ValidationError

from processors.conditions import ConditionError
from processors.features import profile
from processors.identity import MOST_HOPS
from schemas.audiences import Audience, definition_problem
from schemas.rows import FEATURE_TIME_COLUMNS
from schemas.topics import partition_for
from sinks.query import ReadOnlyPool, run_readonly
from streams.analytics.dashboard import DashboardCache, dashboard_data, dashboard_page, plotly_js
from streams.sdk.client import bearer
from streams.settings import Settings
from streams.worker.api import docs_page, openapi_document
from streams.worker.audiences import AudienceDefinitions
from streams.worker.backfill import CurrentReads
from streams.worker.faust_corrections import App
from streams.worker.forget import Forgetting
from streams.worker.health import Health
from streams.worker.intake import Intake
from streams.worker.metrics import combine, metrics_text
from streams.worker.pipeline import CustomerPipeline
from streams.worker.processes import Helpers, erasures_in, staged_inserts
from streams.worker.writes import RowWriter

MAX_BODY_BYTES = 20 * 1024 * 1024
#: A profile's identifiers and the merges it decided, as ClickHouse has them.
IDENTIFIERS_SQL = "SELECT identifier FROM identities FINAL WHERE profile_id = {id:String} ORDER BY identifier"
MERGES_SQL = (
    "SELECT linked_at AS at, survivor, absorbed, identifiers, outcome, rule FROM identity_merges FINAL "
    "WHERE survivor = {id:String} ORDER BY linked_at, absorbed"
)


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


class KeyedView(View):
    """A view that answers only requests with the app's API key (when one is set): as a bearer
    token, or (for the dashboard in a browser) as ``?key=``."""

    async def dispatch(self, request: Request) -> Response:
        api_key = cast(App, self.app).api_key
        if api_key:
            given = bearer(request.query["key"]) if "key" in request.query else request.headers
            expected = bearer(api_key)["Authorization"]
            if not hmac.compare_digest(given.get("Authorization", "").encode(), expected.encode()):
                return self.refused()
        response: Response = await super().dispatch(request)
        return response

    def refused(self) -> Response:
        return self.json(
            {"error": "missing or wrong API key: send 'Authorization: Bearer <CRM360_API_KEY>'"}, status=401
        )


def register_views(
    app: App,
    settings: Settings,
    *,
    pipeline: CustomerPipeline,
    intake: Intake,
    health: Health,
    writer: RowWriter,
    figures: Callable[[], dict[str, float]],
    helpers: Helpers | None,
    table: faust.Table,
    audiences: AudienceDefinitions,
    forgetting: Forgetting | None,
    dashboard_reads: ReadOnlyPool | None,
    sql_reads: ReadOnlyPool | None,
    current_reads: CurrentReads,
) -> None:
    """Add the crm360 endpoints to ``app``'s web server: events through ``intake``, live
    profiles from ``pipeline`` (or the process of ``helpers`` that owns the customer in
    ``table``), ``health`` and ``figures``, and, in the process that owns ClickHouse (the read
    pools are ``None`` in a helper process), SQL, the dashboard and helpers' rows (``writer``)."""
    app.api_key = settings.key or ""
    _event_views(app, settings, intake, health)
    _customer_views(app, settings, pipeline, helpers, table, dashboard_reads, forgetting)
    _process_views(app, settings, health, figures, helpers)
    _audience_views(app, audiences)
    _api_views(app)
    if dashboard_reads is not None and sql_reads is not None:
        _clickhouse_views(app, settings, writer, sql_reads, current_reads)
        _dashboard_views(app, settings, dashboard_reads)


def _event_views(app: App, settings: Settings, intake: Intake, health: Health) -> None:
    @app.page("/events")
    class Events(KeyedView):
        async def post(self, request: Request) -> Response:
            try:
                body = await request.read()
            except HTTPRequestEntityTooLarge:
                return self.json({"error": f"body over {MAX_BODY_BYTES} bytes: split it"}, status=413)
            problem = health.intake_problem()
            if problem:
                return self.json({"error": f"{problem}: no event was accepted; send them again later"}, status=503)
            try:
                items = parse_body(body)
            except (BadRequest, UnicodeDecodeError) as error:
                return self.json({"error": f"malformed body: {error}"}, status=400)
            try:
                taken = await intake.take(items)
            except TimeoutError:
                return self.json(
                    {
                        "error": f"Kafka did not acknowledge the events within {settings.publish_timeout_s:g} s: "
                        "none is accepted for sure; send them again (their event ids make that "
                        "safe)"
                    },
                    status=503,
                )
            dead = taken.rejected
            return self.json(
                {"accepted": taken.accepted, "rejected": len(dead), "errors": [d.reason for d in dead[:100]]},
                status=200 if taken.accepted or not dead else 422,
            )


def _customer_views(
    app: App,
    settings: Settings,
    pipeline: CustomerPipeline,
    helpers: Helpers | None,
    table: faust.Table,
    reads: ReadOnlyPool | None,
    forgetting: Forgetting | None,
) -> None:
    @app.page("/suppressions/{identifier}")
    class Suppression(KeyedView):
        async def delete(self, request: Request, identifier: str) -> Response:
            """Lift the identifier's suppression: its events start a new profile from now on."""
            if forgetting is None:  # a helper process
                return self.json({"error": "suppressions are lifted by the worker's main process"}, status=421)
            try:
                return self.json(await forgetting.lift(identifier))
            except TimeoutError:
                return self.json({"error": UNREAD_SUPPRESSIONS}, status=503)

    @app.page("/customers/{customer_id}")
    class Customer(KeyedView):
        async def delete(self, request: Request, customer_id: str) -> Response:
            """Erase the person (``streams.worker.forget``): 200 once done, 202 while under way."""
            if forgetting is None:  # a helper process
                return self.json(
                    {"error": "erasures are taken by the worker's main process: send it there"}, status=421
                )
            try:
                answer = await forgetting.forget(customer_id)
            except TimeoutError:
                return self.json({"error": UNREAD_SUPPRESSIONS}, status=503)
            return self.json(answer, status=200 if answer["complete"] else 202)

        async def get(self, request: Request, customer_id: str) -> Response:
            key = customer_id.encode()
            state = pipeline.table.get(key)
            asked = customer_id
            for _ in range(MOST_HOPS):  # an identifier merged into another profile: that profile
                went = state.identity.merged_into if state is not None and state.identity is not None else None
                if went is None:
                    break
                customer_id, key = went, went.encode()
                state = pipeline.table.get(key)
            if state is None and customer_id != asked:  # the profile is another process's: ask for it
                # A helper sends the client to the main process, which knows who holds what.
                location = f"{settings.main_url or ''}/customers/{quote(customer_id, safe='')}"
                return self.json({"profile": customer_id}, status=307, headers={"Location": location})
            if state is None and helpers:
                # Another process of the worker may own the customer; if this one does (SameNode),
                # or none is known yet, ClickHouse answers below.
                with contextlib.suppress(Exception):
                    return await app.router.route_req(table.name, key, self.web, request)
            if state is not None:
                home = partition_for(key, settings.partitions)
                watermark = pipeline.watermarks.get(home, state.newest_event_at or 0.0)
                row = profile(state, watermark, pipeline.config, pipeline.scorer)
                identity = state.identity
                return self.json(
                    {
                        "source": "live",
                        "customer": _plain_row(row),
                        "identifiers": identity.identifiers if identity else [customer_id],
                        "merges": identity.history if identity else [],
                    }
                )
            if reads is None:  # a helper process: the main process reads ClickHouse
                return self.json({"error": f"no customer {customer_id!r}"}, status=404)
            sql = (
                "SELECT * EXCEPT (version, updated_at, is_deleted) FROM customer_features FINAL WHERE customer_id = "
                "(SELECT coalesce(nullIf(any(profile_id), ''), {id:String}) FROM identities FINAL "
                "WHERE identifier = {id:String})"
            )
            result = await reads.run(lambda client: run_readonly(client, sql, {"id": customer_id}))
            if not result.rows:
                return self.json({"error": f"no customer {customer_id!r}"}, status=404)
            found = dict(zip(result.columns, result.rows[0]))
            named = {"id": found["customer_id"]}
            identifiers = await reads.run(lambda client: run_readonly(client, IDENTIFIERS_SQL, named))
            merges = await reads.run(lambda client: run_readonly(client, MERGES_SQL, named))
            return self.json(
                {
                    "source": "clickhouse",
                    "customer": found,
                    "identifiers": [found["customer_id"]] + [r[0] for r in identifiers.rows if r[0] != named["id"]],
                    "merges": [dict(zip(merges.columns, r)) for r in merges.rows],
                }
            )


#: The answer to an erasure while the suppression list cannot be read.
UNREAD_SUPPRESSIONS = "the suppressions topic cannot be read (is the broker up?): nothing changed; try again"
#: The answer to a change of audiences while their topic cannot be read.
UNREAD = "the audiences topic cannot be read (is the broker up?): nothing changed; try again"


def _audience_views(app: App, audiences: AudienceDefinitions) -> None:
    def plain(audience: Audience) -> dict[str, Any]:
        return audience.model_dump(mode="json", exclude={"deleted"})

    async def save(view: View, request: Request, name: str | None) -> Response:
        try:
            given = orjson.loads(await request.read())
            if not isinstance(given, dict):
                raise TypeError("send one audience as a JSON object")
            if name is not None:
                given.setdefault("name", name)
                if given["name"] != name:
                    raise ValueError(f"the body names {given['name']!r}, the path {name!r}")
            audience = Audience.model_validate(
                {k: v for k, v in given.items() if k not in ("version", "updated_at", "deleted")}
            )
            if name is None and audiences.get(audience.name) is not None:
                problem = f"audience {audience.name!r} exists: change it with PUT /audiences/{audience.name}"
                return view.json({"error": problem}, status=409)
            saved = await audiences.save(audience)
        except ValidationError as error:
            return view.json({"error": definition_problem(error)}, status=400)
        except TimeoutError:
            return view.json({"error": UNREAD}, status=503)
        except (ValueError, TypeError, ConditionError) as error:  # orjson's errors are ValueErrors
            return view.json({"error": f"{error}"}, status=400)
        return view.json(plain(saved))

    @app.page("/audiences")
    class AudienceList(KeyedView):
        async def get(self, request: Request) -> Response:
            return self.json({"audiences": [plain(a) for a in audiences.listed()]})

        async def post(self, request: Request) -> Response:
            return await save(self, request, None)

    @app.page("/audiences/{name}")
    class OneAudience(KeyedView):
        async def get(self, request: Request, name: str) -> Response:
            audience = audiences.get(name)
            if audience is None:
                return self.json({"error": f"no audience {name!r}"}, status=404)
            return self.json(plain(audience))

        async def put(self, request: Request, name: str) -> Response:
            return await save(self, request, name)

        async def delete(self, request: Request, name: str) -> Response:
            try:
                gone = await audiences.delete(name)
            except TimeoutError:
                return self.json({"error": UNREAD}, status=503)
            if gone is None:
                return self.json({"error": f"no audience {name!r}"}, status=404)
            return self.json(plain(gone))


def _api_views(app: App) -> None:
    def served() -> set[tuple[str, str]]:
        router = app.web.web_app.router  # type: ignore[attr-defined]  # the aiohttp driver's
        return {(route.method, route.resource.canonical) for route in router.routes() if route.resource is not None}

    @app.page("/openapi.json")
    class OpenApi(View):
        async def get(self, request: Request) -> Response:
            return self.json(openapi_document(served(), version("crm360")))

    @app.page("/docs")
    class Docs(View):
        async def get(self, request: Request) -> Response:
            return self.html(docs_page(openapi_document(served(), version("crm360"))))


def _process_views(
    app: App, settings: Settings, health: Health, figures: Callable[[], dict[str, float]], helpers: Helpers | None
) -> None:
    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            ok, reason = health.healthy()
            if ok and helpers:
                answers = await helpers.ask(app.http_client, "/health")
                for url, (status, answer) in zip(helpers.urls, answers):
                    if status != 200:
                        ok, reason = False, f"worker process at {url}: {answer.get('reason', status)}"
                        break
            processes = [settings.web_url, *(helpers.urls if helpers else [])]
            degraded = health.model_degraded()  # the model is judged where it is trained: here
            return self.json(
                {
                    "status": "ok" if ok else "unhealthy",
                    "reason": reason,
                    "processes": processes,
                    "model_quality": degraded.model_dump(mode="json") if degraded else None,
                },
                status=200 if ok else 503,
            )

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            parts = [figures()]
            if helpers:
                answers = await helpers.ask(app.http_client, "/internal/figures")
                parts += [answer for status, answer in answers if status == 200]
            return self.text(metrics_text(combine(parts)), content_type="text/plain; version=0.0.4")

    @app.page("/internal/figures")
    class Figures(KeyedView):
        async def get(self, request: Request) -> Response:
            return self.json(figures())


def _clickhouse_views(
    app: App, settings: Settings, writer: RowWriter, reads: ReadOnlyPool, current_reads: CurrentReads
) -> None:
    @app.page("/internal/rows")
    class Rows(KeyedView):
        """Inserts a helper process's write (see ``streams.worker.processes``)."""

        async def post(self, request: Request) -> Response:
            try:
                body = await request.read()
                inserts, erasures = staged_inserts(body, settings.staging_path), erasures_in(body)
                await asyncio.to_thread(writer.sink.insert, inserts)
                await asyncio.to_thread(writer.sink.erase, erasures)
            except ValueError as error:
                return self.json({"error": str(error)}, status=400)
            except Exception as error:  # noqa: BLE001 - the helper retries, as after any failed write
                return self.json({"error": str(error).strip().splitlines()[0][:2000]}, status=503)
            finally:
                await writer.publish_refused()  # rows ClickHouse refused: dead-lettered, the rest written
            return self.json({"inserted_rows": sum(insert.rows for insert in inserts)})

    @app.page("/internal/current")
    class Current(KeyedView):
        """Reads a helper process's customers for a backfill (see ``streams.worker.backfill``)."""

        async def post(self, request: Request) -> Response:
            try:
                ask = orjson.loads(await request.read())
                columns, audiences = list(ask["columns"]), list(ask["audiences"])
                conditions, partitions = list(ask["conditions"]), [int(p) for p in ask["partitions"]]
            except (ValueError, KeyError, TypeError):
                wanted = '{"columns": [...], "audiences": [...], "conditions": [...], "partitions": [...]}'
                return self.json({"error": f"send {wanted}"}, status=400)
            try:
                current = await current_reads.read(columns, audiences, conditions, partitions)
            except ValueError as error:  # a column or condition that is not one (ConditionError is one)
                return self.json({"error": str(error)}, status=400)
            return self.bytes(await asyncio.to_thread(current.to_json), content_type="application/json")

    @app.page("/sql")
    class Sql(KeyedView):
        async def post(self, request: Request) -> Response:
            body = (await request.read()).decode("utf-8", errors="replace")
            try:
                sql = json.loads(body)["sql"] if body.lstrip().startswith("{") else body
            except (ValueError, KeyError, TypeError):
                return self.json({"error": 'send the query as text or as {"sql": "..."}'}, status=400)
            try:
                result = await reads.run(lambda client: run_readonly(client, sql))
            except Exception as error:  # noqa: BLE001 - ClickHouse's own message goes back to the analyst
                return self.json({"error": str(error).strip().splitlines()[0][:2000]}, status=400)
            return self.json(result.to_dict())


def _dashboard_views(app: App, settings: Settings, reads: ReadOnlyPool) -> None:
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
                    await reads.run(lambda client: dashboard_data(partial(run_readonly, client)))
                )
            return self.json(data)

    @app.page("/dashboard/plotly.min.js")
    class PlotlyJs(View):
        async def get(self, request: Request) -> Response:
            script = await asyncio.to_thread(plotly_js)
            return self.bytes(
                script, content_type="application/javascript", headers={"Cache-Control": "public, max-age=86400"}
            )
