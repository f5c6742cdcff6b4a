"""The ``crm360`` command."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from streams.settings import Settings

if TYPE_CHECKING:
    from streams.sdk.subscriber import Unreadable


def fail(message: str) -> NoReturn:
    """Stop with one line saying what is wrong and what to do."""
    click.echo(f"crm360: {message}", err=True)
    sys.exit(1)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except Exception as error:  # noqa: BLE001 - pydantic's message, in one line
        fail(f"bad setting: {str(error).splitlines()[0]} (check your CRM360_* variables)")


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where crm360 keeps its data (default ./.crm360).",
)


@click.group()
def main() -> None:
    """crm360: a real-time 360-degree customer view (Kafka -> Faust -> ClickHouse)."""


def start_local_kafka(settings: Settings) -> Any:
    """The local broker and its storage under the data dir, unless a broker answers already
    (then None)."""
    from streams.local.broker import BrokerError, LocalKafka
    from streams.local.storage import StorageError
    from streams.worker.ports import answers, claim

    if answers(settings.kafka_bootstrap):
        return None
    claim(settings.web_port, settings.clickhouse_http_port)  # the worker binds them after the storage drew its ports
    settings.data_path.mkdir(parents=True, exist_ok=True)
    kafka = LocalKafka(settings.kafka_bootstrap, settings.data_path)
    try:
        kafka.start()
    except (BrokerError, StorageError) as error:
        fail(str(error))
    return kafka


def prepare_topics(settings: Settings) -> None:
    """Create the topics, and check an existing installation has the configured partitions."""
    from streams.worker.topic_admin import ensure_topics, topic_specs

    require_broker(settings)
    counts = ensure_topics(settings.kafka_bootstrap, settings.partitions, settings.topic_retention_days)
    expected = {
        spec.name: spec.num_partitions for spec in topic_specs(settings.partitions, settings.topic_retention_days)
    }
    wrong = {t: n for t, n in counts.items() if n != expected[t]}
    if wrong:
        fail(f"topics {wrong} do not have CRM360_PARTITIONS={settings.partitions} partitions: set it to match")


def run_worker(settings: Settings) -> None:
    from streams.worker.app import Worker

    try:
        worker = Worker(settings)
    except Exception as error:  # noqa: BLE001 - e.g. the embedded database is locked
        fail(f"cannot start the worker: {str(error).strip().splitlines()[0]}")
    worker.run()


@main.command()
@data_dir_option
def up(data_dir: Path | None) -> None:
    """Run the whole local stack in the foreground: broker (with its storage), worker, embedded ClickHouse."""
    from streams.local.supervisor import Supervisor

    settings = load_settings(data_dir=data_dir)
    kafka = start_local_kafka(settings)
    try:
        prepare_topics(settings)
        where = f" (local broker, its log in {settings.data_path / 'kafka'})" if kafka else ""
        click.echo(f"crm360 up: Kafka {settings.kafka_bootstrap}{where}")
        click.echo(f"  ClickHouse {settings.clickhouse_url}")
        click.echo(f"  worker processes {settings.processes} (CRM360_WORKER_PROCESSES)")
        click.echo(f"  live dashboard {settings.web_url}/dashboard")
        click.echo(f"  web {settings.web_url}  (POST /events, GET /customers/<id>, POST /sql, /health, /metrics)")
        click.echo("  Ctrl-C stops everything; the data dir keeps it all for the next start.")
    except BaseException:
        if kafka:
            kafka.stop()
        raise
    sys.exit(Supervisor(settings, kafka, click.echo).run())


@main.command()
@data_dir_option
def broker(data_dir: Path | None) -> None:
    """Run only the local Kafka broker (and its storage under the data dir), in the foreground."""
    import signal
    import threading

    settings = load_settings(data_dir=data_dir)
    kafka = start_local_kafka(settings)
    if kafka is None:
        fail(f"something already answers at {settings.kafka_bootstrap}: stop it or set CRM360_KAFKA_BOOTSTRAP")
    click.echo(
        f"local Kafka broker on {settings.kafka_bootstrap}, its log in {settings.data_path / 'kafka'}; Ctrl-C stops it"
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            for event in kafka.restart_exited():
                click.echo(f"crm360 broker: {event}")
    finally:
        kafka.stop()


@main.command()
@data_dir_option
def worker(data_dir: Path | None) -> None:
    """Run only the worker (needs a broker at CRM360_KAFKA_BOOTSTRAP)."""
    settings = load_settings(data_dir=data_dir)
    prepare_topics(settings)
    run_worker(settings)


def format_result(result: Any, fmt: str) -> str:
    """A query result as an aligned table, CSV with a header row, or JSON objects."""
    import csv
    import io
    import json

    if fmt == "json":
        return json.dumps([dict(zip(result.columns, row)) for row in result.rows], default=str, indent=1)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows(result.rows)
        return out.getvalue().rstrip("\n")
    cells = [[str(c) for c in result.columns]] + [["" if v is None else str(v) for v in row] for row in result.rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(result.columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + [f"({len(result.rows)} rows)"])


def run_query(settings: Settings, sql: str) -> Any:
    from streams.sdk.client import QueryClient, QueryError

    try:
        return QueryClient(settings).query(sql)
    except QueryError as error:
        fail(str(error))


@main.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@data_dir_option
def sql(query: str, fmt: str, data_dir: Path | None) -> None:
    """Run read-only SQL (database crm360), e.g. crm360 sql "SELECT count() FROM customer_features FINAL"."""
    settings = load_settings(data_dir=data_dir)
    click.echo(format_result(run_query(settings, query), fmt))


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"), show_default=True)
@click.option(
    "--since", type=click.DateTime(["%Y-%m-%d"]), help="Time charts (revenue, cohorts, alerts) from this day on."
)
@data_dir_option
def report(out: Path, since: datetime | None, data_dir: Path | None) -> None:
    """Write the CRM analysis report: one self-contained HTML file (charts embedded, opens offline)."""
    from streams.analytics.report import build_report
    from streams.sdk.client import QueryClient, QueryError

    client = QueryClient(load_settings(data_dir=data_dir))
    try:
        client.query("SELECT count() FROM customer_features")
    except QueryError as error:
        fail(f"cannot read the crm360 data: {error}")
    page = build_report(
        client.query,
        since.date() if since else None,
        progress=lambda step: click.echo(f"\r{step:<60}", nl=False, err=True),
    )
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as error:
        fail(f"cannot write {out}: {error.strerror}")
    click.echo(f"\r{'':<60}\r", nl=False, err=True)
    click.echo(f"wrote {out} ({len(page.encode()) / 1e6:.1f} MB, self-contained: open it in any browser, offline)")


@main.command()
@click.argument("customer_id")
@data_dir_option
def customer(customer_id: str, data_dir: Path | None) -> None:
    """Show one customer's 360-degree profile, live from the worker."""
    settings = load_settings(data_dir=data_dir)
    data = ask_worker(settings, lambda client: client.customer(customer_id))
    for name, value in data["customer"].items():
        click.echo(f"{name:>28}  {'' if value is None else value}")
    click.echo(f"{'identifiers':>28}  {', '.join(data.get('identifiers', []))}")
    for merge in data.get("merges", []):
        at = merge["at"] if isinstance(merge["at"], str) else datetime.fromtimestamp(merge["at"], UTC).isoformat()
        what = f"merged {merge['absorbed']}" if merge["outcome"] == "merged" else f"refused {merge['absorbed']}"
        click.echo(f"{'':>28}  {at}: {what} ({merge['rule']})")


@main.command()
@click.argument("identifier")
@data_dir_option
def forget(identifier: str, data_dir: Path | None) -> None:
    """Erase one person, given any of their identifiers: their state and every row naming them;
    their events are suppressed from then on (crm360 privacy log keeps the record)."""
    settings = load_settings(data_dir=data_dir)
    answer = ask_worker(settings, lambda client: client.forget(identifier))
    removed = ", ".join(f"{table} {rows}" for table, rows in answer["removed"].items()) or "none"
    click.echo(
        f"erased {answer['identifiers_erased']} of {answer['identifiers']} identifier(s) and "
        f"{answer['customer_states']} customer state(s); rows removed: {removed} (request {answer['request_id']})"
    )
    if not answer["complete"]:
        click.echo("still under way: crm360 privacy log shows when every identifier is erased")


@main.group()
def privacy() -> None:
    """Erasures and suppressions: their record."""


@privacy.command("log")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@data_dir_option
def privacy_log(fmt: str, data_dir: Path | None) -> None:
    """Every suppression and erasure, oldest first: identifiers as digests, rows removed per table."""
    query = (
        "SELECT at, request_id, action, length(identifier_hashes) AS identifiers, customer_states, "
        "toJSONString(removed) AS removed FROM privacy_log ORDER BY at, action DESC"
    )
    click.echo(format_result(run_query(load_settings(data_dir=data_dir), query), fmt))


@privacy.command("lift")
@click.argument("identifier")
@data_dir_option
def privacy_lift(identifier: str, data_dir: Path | None) -> None:
    """Lift IDENTIFIER's suppression: its events start a new profile from now on."""
    answer = ask_worker(load_settings(data_dir=data_dir), lambda client: client.lift_suppression(identifier))
    state = "lifted" if answer["was_suppressed"] else "was not suppressed; recorded anyway"
    click.echo(f"{identifier}: {state} (request {answer['request_id']})")


@main.command()
@click.option("--follow", is_flag=True, help="Wait for new alerts and show them as they come.")
@click.option("--from-beginning", is_flag=True, help="With --follow: also the alerts already published.")
@click.option("--webhook", metavar="URL", help="With --follow: POST each alert as JSON to URL (with retries).")
@click.option("--group", "group_id", default=None, help="With --follow: consumer group, to continue where it stopped.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per alert.")
@click.option("--limit", type=int, default=20, show_default=True, help="Without --follow: how many recent alerts.")
@data_dir_option
def alerts(
    follow: bool,
    from_beginning: bool,
    webhook: str | None,
    group_id: str | None,
    as_json: bool,
    limit: int,
    data_dir: Path | None,
) -> None:
    """Churn alerts: the most recent ones, or live from the churn-alerts topic (--follow)."""
    from schemas.alerts import ChurnAlert
    from streams.sdk.subscriber import AlertSubscriber, WebhookError, alert_line, alerts_json, forward_to_webhook

    settings = load_settings(data_dir=data_dir)
    show = alerts_json if as_json else alert_line
    if not follow:
        times = ("last_purchase_at", "as_of", "created_at")  # as epoch seconds: the same over HTTP and chDB
        columns = ", ".join(
            f"toUnixTimestamp64Milli({c}) / 1000 AS {c}" if c in times else c for c in ChurnAlert.model_fields
        )
        result = run_query(
            settings, f"SELECT {columns} FROM churn_alerts FINAL ORDER BY as_of DESC, customer_id LIMIT {int(limit)}"
        )
        for row in result.rows:
            click.echo(show(ChurnAlert.model_validate(dict(zip(result.columns, row)))))
        return
    require_broker(settings)
    try:
        with AlertSubscriber(
            settings.kafka_bootstrap, group_id=group_id, from_beginning=from_beginning, on_unreadable=say_skipped
        ) as subscriber:
            for alert in subscriber:
                click.echo(show(alert))
                if webhook:
                    try:
                        forward_to_webhook(alert, webhook)
                    except WebhookError as error:
                        click.echo(f"crm360: {error}", err=True)
    except KeyboardInterrupt:
        pass


def say_skipped(record: Unreadable) -> None:
    """A record a follower passed by, on stderr (the followed output stays clean)."""
    click.echo(f"crm360: {record}", err=True)


def require_broker(settings: Settings) -> None:
    """End the command unless a Kafka broker answers."""
    from streams.worker.ports import answers

    if not answers(settings.kafka_bootstrap):
        fail(
            f"no Kafka broker answers at {settings.kafka_bootstrap}: start the stack (crm360 up) or set CRM360_KAFKA_BOOTSTRAP"
        )


def worker_client(settings: Settings) -> Any:
    from streams.sdk.client import WorkerClient

    return WorkerClient.for_settings(settings, timeout=30)


def ask_worker(settings: Settings, call: Any) -> Any:
    """``call`` of the worker's client; a refusal or a worker that does not answer ends the command."""
    import urllib.error

    from streams.sdk.client import QueryError

    try:
        return call(worker_client(settings))
    except QueryError as error:
        fail(str(error))
    except urllib.error.URLError:
        fail(f"no worker answers at {settings.web_url}: start one with 'crm360 up'")


def audience_line(audience: dict[str, Any], members: int | None = None) -> str:
    stay = f"  min stay {audience['min_stay_days']:g} d" if audience["min_stay_days"] else ""
    stay += f"  for {audience['purpose']}" if audience.get("purpose") else ""
    stay += f"  -> {audience['webhook']}" if audience.get("webhook") else ""
    size = f"  {members} members" if members is not None else ""
    return f"{audience['name']} (v{audience['version']}){size}{stay}: {audience['condition']}"


@main.group()
def audience() -> None:
    """Live audiences: create, change, list, delete, or apply a file of them."""


@audience.command("list")
@data_dir_option
def audience_list(data_dir: Path | None) -> None:
    """Every audience, with its live number of members."""
    settings = load_settings(data_dir=data_dir)
    audiences = ask_worker(settings, lambda client: client.audiences())
    sizes = run_query(settings, "SELECT audience, count() FROM audience_membership FINAL GROUP BY audience")
    members = dict(sizes.rows)
    for one in audiences:
        click.echo(audience_line(one, members.get(one["name"], 0)))


@audience.command("create")
@click.argument("name")
@click.argument("condition")
@click.option("--description", default="", help="What it is for.")
@click.option("--min-stay-days", type=float, default=0.0, help="Days a member stays at least (against flapping).")
@click.option("--purpose", help="Consent purpose (e.g. marketing_email): only members who gave it are published.")
@click.option("--webhook", metavar="URL", help="POST every published entry and exit to URL (with retries).")
@data_dir_option
def audience_create(
    name: str,
    condition: str,
    description: str,
    min_stay_days: float,
    purpose: str | None,
    webhook: str | None,
    data_dir: Path | None,
) -> None:
    """Create audience NAME of the customers whose features meet CONDITION, e.g.
    "churn_probability > 0.6 AND value_tier IN ('gold', 'platinum')"."""
    settings = load_settings(data_dir=data_dir)
    given = {
        "name": name,
        "condition": condition,
        "description": description,
        "min_stay_days": min_stay_days,
        "purpose": purpose,
        "webhook": webhook,
    }
    click.echo(audience_line(ask_worker(settings, lambda client: client.save_audience(given, create=True))))


@audience.command("change")
@click.argument("name")
@click.option("--condition", help="The new condition.")
@click.option("--description", help="The new description.")
@click.option("--min-stay-days", type=float, help="The new minimum stay in days.")
@click.option("--purpose", help="The new consent purpose ('' for none).")
@click.option("--webhook", metavar="URL", help="The new webhook ('' for none).")
@data_dir_option
def audience_change(
    name: str,
    condition: str | None,
    description: str | None,
    min_stay_days: float | None,
    purpose: str | None,
    webhook: str | None,
    data_dir: Path | None,
) -> None:
    """Change audience NAME; every customer is checked against it again."""
    settings = load_settings(data_dir=data_dir)
    current = {a["name"]: a for a in ask_worker(settings, lambda client: client.audiences())}.get(name)
    if current is None:
        fail(f"no audience {name!r}: create it with 'crm360 audience create'")
    changes = {
        "condition": condition,
        "description": description,
        "min_stay_days": min_stay_days,
        "purpose": purpose,
        "webhook": webhook,
    }
    wanted = {k: current.get(k) for k in ("name", "condition", "description", "min_stay_days", "purpose", "webhook")}
    wanted |= {k: v for k, v in changes.items() if v is not None}
    wanted["purpose"], wanted["webhook"] = wanted["purpose"] or None, wanted["webhook"] or None
    click.echo(audience_line(ask_worker(settings, lambda client: client.save_audience(wanted))))


@audience.command("delete")
@click.argument("name")
@data_dir_option
def audience_delete(name: str, data_dir: Path | None) -> None:
    """Delete audience NAME: its members leave it."""
    settings = load_settings(data_dir=data_dir)
    gone = ask_worker(settings, lambda client: client.delete_audience(name))
    click.echo(f"deleted {gone['name']} (v{gone['version']})")


@audience.command("apply")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--prune", is_flag=True, help="Also delete the audiences the file does not name.")
@data_dir_option
def audience_apply(path: Path, prune: bool, data_dir: Path | None) -> None:
    """Create or change the audiences of a TOML file (one [[audience]] table each, with name,
    condition and optionally description, min_stay_days, purpose and webhook), e.g. one kept in
    version control."""
    import tomllib

    from pydantic import ValidationError

    from schemas.audiences import Audience, definition_problem

    settings = load_settings(data_dir=data_dir)
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8")).get("audience", [])
        wanted = [Audience.model_validate(table) for table in tables]
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        fail(f"{path} is not TOML: {error}")
    except ValidationError as error:
        fail(f"{path}: {definition_problem(error)}")
    current = {a["name"]: a for a in ask_worker(settings, lambda client: client.audiences())}
    for one in wanted:
        given = one.model_dump(include={"name", "condition", "description", "min_stay_days", "purpose", "webhook"})
        saved = ask_worker(settings, lambda client, given=given: client.save_audience(given))
        before = current.get(one.name)
        what = "created" if before is None else "unchanged" if before["version"] == saved["version"] else "changed"
        click.echo(f"{what} {audience_line(saved)}")
    if prune:
        for name in sorted(set(current) - {one.name for one in wanted}):
            ask_worker(settings, lambda client, name=name: client.delete_audience(name))
            click.echo(f"deleted {name}")


@main.command()
@click.option("--follow", is_flag=True, help="Wait for new entries and exits and show them as they come.")
@click.option("--from-beginning", is_flag=True, help="With --follow: also those already published.")
@click.option("--group", "group_id", default=None, help="With --follow: consumer group, to continue where it stopped.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry or exit.")
@click.option("--limit", type=int, default=20, show_default=True, help="Without --follow: how many recent ones.")
@data_dir_option
def audiences(
    follow: bool, from_beginning: bool, group_id: str | None, as_json: bool, limit: int, data_dir: Path | None
) -> None:
    """Customers entering and leaving audiences: the most recent, or live from audience-updates (--follow)."""
    from schemas.audiences import AudienceEvent
    from streams.sdk.subscriber import AudienceSubscriber

    settings = load_settings(data_dir=data_dir)

    def show(event: AudienceEvent) -> str:
        if as_json:
            return event.model_dump_json()
        return f"{event.as_of:%Y-%m-%d} {event.customer_id} {event.change} {event.audience} (v{event.version})"

    if not follow:
        result = run_query(
            settings,
            "SELECT audience, version, change, customer_id, identifiers, features, "
            "toUnixTimestamp64Milli(as_of) / 1000 AS as_of, toUnixTimestamp64Milli(created_at) / 1000 AS created_at "
            f"FROM audience_events FINAL ORDER BY as_of DESC, created_at DESC LIMIT {int(limit)}",
        )
        import json

        for row in result.rows:
            found = dict(zip(result.columns, row))
            click.echo(show(AudienceEvent.model_validate(found | {"features": json.loads(found["features"])})))
        return
    require_broker(settings)
    try:
        with AudienceSubscriber(
            settings.kafka_bootstrap, group_id=group_id, from_beginning=from_beginning, on_unreadable=say_skipped
        ) as follower:
            for event in follower:
                click.echo(show(event))
    except KeyboardInterrupt:
        pass


@main.group()
def schema() -> None:
    """The event contract as JSON Schema."""


@schema.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def schema_export(directory: Path) -> None:
    """Write one JSON Schema file per event type (and one for any event) into DIRECTORY."""
    from schemas.export import export_json_schemas

    for path in export_json_schemas(directory):
        click.echo(str(path))


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["cdnow", "csv", "jsonl"]), required=True)
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Only events before the end of this day.")
@click.option("--wait", is_flag=True, help="Return only when every event is reflected in ClickHouse.")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds --wait waits.")
def replay(path: Path, fmt: str, until: Any, wait: bool, timeout: float) -> None:
    """Publish a historical file as events with their original event times."""
    from streams.local.replay import ReplayError, replay_file
    from streams.sdk.client import QueryError

    settings = load_settings()
    prepare_topics(settings)
    try:
        replay_file(settings, path, fmt, until, wait, timeout)
    except (ReplayError, TimeoutError, QueryError) as error:
        fail(str(error))


@main.command()
@click.option("--seconds", type=float, help="Stop after this many seconds and print a summary.")
@click.option("--customers", type=int, default=5_000, show_default=True)
@click.option("--rate", type=float, default=3_000.0, show_default=True, help="Events per second.")
@click.option("--seed", type=int, default=42, show_default=True)
@data_dir_option
def demo(seconds: float | None, customers: int, rate: float, seed: int, data_dir: Path | None) -> None:
    """Local stack + simulated customers + a live line of figures (Ctrl-C ends it)."""
    from streams.local.demo import run_demo

    settings = load_settings(data_dir=data_dir)
    kafka = start_local_kafka(settings)
    try:
        prepare_topics(settings)
        run_demo(settings, seconds, customers, rate, seed)
    except RuntimeError as error:
        fail(str(error))
    finally:
        if kafka:
            kafka.stop()


@main.command()
@click.option("--customers", type=int, default=2_000, show_default=True)
@click.option("--days", type=int, default=365, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--truth",
    "truth_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("simulation_truth.json"),
    show_default=True,
    help="Where the ground truth (latent segment, churn time) is saved.",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write JSONL here instead of publishing.")
@click.option(
    "--identities",
    is_flag=True,
    help="Name people as each channel knows them (cookies, loyalty cards, social handles, identify events); "
    "the ground truth then lists each person's identifiers and events.",
)
def simulate(customers: int, days: int, seed: int, truth_path: Path, out: Path | None, identities: bool) -> None:
    """Generate a realistic synthetic stream (seeded) and publish it, or write it as JSONL."""
    import json

    from streams.local.simulate import Simulation

    simulation = Simulation(customers=customers, days=days, seed=seed, identities=identities)
    count = 0
    if out:
        with out.open("w", encoding="utf-8") as handle:
            for event in simulation.events():
                handle.write(json.dumps(event) + "\n")
                count += 1
    else:
        from streams.sdk.publisher import EventPublisher

        settings = load_settings()
        prepare_topics(settings)
        with (
            EventPublisher(settings.kafka_bootstrap, partitions=settings.partitions) as publisher,
            click.progressbar(simulation.events(), label="publishing", show_pos=True) as events,
        ):
            for event in events:
                publisher.publish(event)
                count += 1
    simulation.save_ground_truth(truth_path)  # with identities, it lists the events generated
    click.echo(f"{count} events for {customers} customers over {days} days; ground truth in {truth_path}")


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option(
    "--until",
    type=click.DateTime(["%Y-%m-%d"]),
    default="1997-09-30",
    show_default=True,
    help="End of the calibration period; the rest of the file is the holdout.",
)
@click.option("--min-auc", type=float, default=0.77, show_default=True, help="Fail below this ROC AUC.")
def evaluate(path: Path | None, until: datetime, min_auc: float) -> None:
    """Quality on real purchases (CDNOW file PATH): churn (ROC AUC of churn_probability vs recency)
    and customer value (clv_estimate vs BG/NBD + Gamma-Gamma and spend per week)."""
    import json

    from streams.measure.evaluate import DEFAULT_DATA, run_evaluation

    path = path or DEFAULT_DATA
    if not path.is_file():
        fail(f"no CDNOW file at {path}: give its path, e.g. crm360 evaluate ../shared/data/cdnow_dev.txt")
    try:
        result = run_evaluation(path, until.replace(tzinfo=UTC))
    except (RuntimeError, TimeoutError) as error:
        fail(str(error))
    click.echo(
        f"customers {result['customers']}, scored {result['scored']}, churned in holdout {result['churn_rate']:.1%}"
    )
    click.echo(
        f"ROC AUC  churn_probability {result['roc_auc']:.4f}   days since last purchase {result['recency_baseline_roc_auc']:.4f}"
    )
    value = result["value"]
    click.echo(
        f"customer value over the next {value['horizon_days']:g} days against each customer's actual spend "
        f"({value['customers']} customers, ${value['holdout_revenue']:,.0f} in all):"
    )
    click.echo(f"  {'predictor':<22} Spearman  top-10%  top-20%  Gini   MAE $   RMSE $  predicted total")
    for name in ("clv_estimate", "bg_nbd_gamma_gamma", "spend_per_week"):
        f = value[name]
        click.echo(
            f"  {name:<22} {f['spearman']:>8.3f} {f['top_10_capture']:>8.3f} {f['top_20_capture']:>8.3f} "
            f"{f['normalized_gini']:>5.3f} {f['mae']:>7.2f} {f['rmse']:>8.2f}  ${f['predicted_total']:>13,.0f}"
        )
    scaled = value["at_actual_total"]
    click.echo(
        "  scaled to the actual total, MAE $ / RMSE $: "
        + ", ".join(f"{name} {scaled[name]['mae']:.2f} / {scaled[name]['rmse']:.2f}" for name in scaled)
    )
    coverage = value["clv_interval_coverage"]
    click.echo(f"  80% interval of clv_estimate: {'none yet' if coverage is None else f'covers {coverage:.1%}'}")
    click.echo(json.dumps(result))
    if result["scored"] < result["customers"]:
        fail(f"{result['customers'] - result['scored']} customers have no churn score")
    if result["roc_auc"] < min_auc:
        fail(f"ROC AUC {result['roc_auc']:.4f} is below --min-auc {min_auc}")


@main.command()
@click.option("--events", type=int, default=300_000, show_default=True)
@click.option(
    "--cpu",
    is_flag=True,
    help="Instead: CPU cost of processing in one process, reproducible, with a digest of all outputs.",
)
@click.option(
    "--identities",
    is_flag=True,
    help="People named as each channel knows them (cookies, cards, handles, identify events), resolved in the stream.",
)
@click.option(
    "--audiences", type=click.IntRange(0, 20), default=0, help="Live audiences of typical conditions (up to 20)."
)
@click.option(
    "--suppressed",
    type=click.IntRange(0),
    default=0,
    help="With --cpu: this many erased people's identifiers suppressed (every event checked against them).",
)
@click.option(
    "--backfill",
    is_flag=True,
    help="With --cpu: then an audience backfilled over the customers there, everyone entering then leaving, ten times.",
)
def bench(events: int, cpu: bool, identities: bool, audiences: int, suppressed: int, backfill: bool) -> None:
    """Measure throughput (against a plain consumer) and freshness on a private local stack.

    Its worker runs on the defaults, but for the shell's CRM360_STATE_STORE and
    CRM360_STATE_CACHE_CUSTOMERS."""
    import json

    from streams.measure.bench import print_report, run_bench

    if backfill and not cpu:
        fail("--backfill is measured in one process: add --cpu (without it the bench times backfills end to end)")
    if cpu:
        from streams.measure.cpubench import run_cpu_bench

        click.echo(f"processing {events} simulated events in one process ...", err=True)
        figures = run_cpu_bench(
            events, audiences=audiences, suppressed=suppressed, backfill=backfill, identities=identities
        )
        for name, value in figures.items():
            click.echo(f"  {name:<18} {value}")
        click.echo(json.dumps(figures))
        return
    try:
        result = run_bench(events, identities=identities, audiences=audiences)
    except RuntimeError as error:
        fail(str(error))
    print_report(result)


if __name__ == "__main__":
    main()
