"""Reading historical files as events with their original event times.

Event ids are derived from the file's name and the line number, so replaying the same
file twice publishes the same events and changes nothing downstream.

Examples
--------
>>> line = " 00003 19970102  2   20.76"
>>> event = cdnow_event(line, 7, source="cdnow_dev.txt")
>>> event.customer_id, event.ts.date().isoformat(), event.amount, event.items[0].quantity
('00003', '1997-01-02', 20.76, 2)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.events import BaseEvent, Purchase, PurchaseItem, parse_event
from streams.local.until import until

FORMATS = ("cdnow", "csv", "jsonl")


class ReplayError(ValueError):
    """A line of the file cannot be read as an event."""


def cdnow_event(line: str, number: int, source: str) -> Purchase:
    """One CDNOW order line: customer id, yyyymmdd, number of CDs, dollar value."""
    parts = line.split()
    if len(parts) != 4:
        raise ReplayError(f"{source}:{number}: expected 4 columns (customer_id date cds dollars), got {len(parts)}")
    customer, day, cds, dollars = parts
    try:
        ts = datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC)
        event_id = f"{source}:{number}"
        return Purchase(
            type="purchase",
            event_id=event_id,
            customer_id=customer,
            ts=ts,
            channel="web",
            order_id=event_id,
            amount=float(dollars),
            currency="USD",
            items=[PurchaseItem(sku="cd", category="music", quantity=int(cds), unit_price=0.0)],
        )
    except ValueError as error:
        raise ReplayError(f"{source}:{number}: {str(error).splitlines()[0]}") from None


def _with_id(data: dict[str, Any], source: str, number: int) -> dict[str, Any]:
    data.setdefault("event_id", f"{source}:{number}")
    return data


def read_events(path: Path, fmt: str) -> Iterator[BaseEvent]:
    """Events of a ``cdnow``, ``csv`` (one event per row, header of field names) or
    ``jsonl`` file, in file order; raises :class:`ReplayError` on the first bad line."""
    source = path.name
    with path.open(encoding="utf-8") as handle:
        if fmt == "cdnow":
            for number, line in enumerate(handle, start=1):
                if number == 1 and not line.split()[0].isdigit():
                    continue  # header
                if line.strip():
                    yield cdnow_event(line, number, source)
        elif fmt == "jsonl":
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield parse_event(_with_id(json.loads(line), source, number))
                    except ValueError as error:
                        raise ReplayError(f"{source}:{number}: {str(error).splitlines()[0]}") from None
        elif fmt == "csv":
            for number, row in enumerate(csv.DictReader(handle), start=2):
                data = {k: v for k, v in row.items() if v not in (None, "")}
                try:
                    yield parse_event(_with_id(data, source, number))
                except ValueError as error:
                    raise ReplayError(f"{source}:{number}: {str(error).splitlines()[0]}") from None
        else:
            raise ReplayError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def replay_file(settings: Any, path: Path, fmt: str, until: datetime | None, wait: bool, timeout: float) -> int:
    """Publish the file's events in event-time order; with ``wait``, block until ClickHouse
    reflects them all. Returns the number of events published."""
    import click

    from streams.sdk.publisher import EventPublisher

    events = list(read_events(path, fmt))
    if until is not None:
        end = until.replace(tzinfo=UTC).timestamp() + 86_400
        events = [e for e in events if e.epoch < end]
    events.sort(key=lambda e: e.epoch)
    with (
        EventPublisher(settings.kafka_bootstrap, partitions=settings.partitions) as publisher,
        click.progressbar(events, label=f"replaying {path.name}", show_pos=True) as bar,
    ):
        for event in bar:
            publisher.publish(event)
    click.echo(f"published {len(events)} events from {path.name}")
    if wait:
        wait_until_reflected(settings, events, timeout)
    return len(events)


def wait_until_reflected(settings: Any, events: list[BaseEvent], timeout: float) -> None:
    """Poll ClickHouse until every event's row is there (features are written first)."""

    import click

    from sinks.query import sql_string
    from sinks.tables import RAW_EVENT_TABLES
    from streams.sdk.client import QueryClient

    ids_by_table: dict[str, list[str]] = {}
    for event in events:
        ids_by_table.setdefault(RAW_EVENT_TABLES[type(event)], []).append(event.event_id)
    client = QueryClient(settings)
    total = len(events)

    def seen() -> int:
        count = 0
        for table, ids in ids_by_table.items():
            for start in range(0, len(ids), 5_000):
                chunk = ",".join(sql_string(i) for i in ids[start : start + 5_000])
                result = client.query(f"SELECT uniqExact(event_id) FROM {table} WHERE event_id IN ({chunk})")
                count += int(result.rows[0][0])
        click.echo(f"\rin ClickHouse: {count}/{total} events", nl=False)
        return count

    try:
        until(lambda: seen() >= total, "every event in ClickHouse", timeout, every=1.0)
    except TimeoutError:
        raise TimeoutError(
            f"not every one of {total} events reached ClickHouse within {timeout:.0f}s: is the worker running (crm360 up)?"
        ) from None
    finally:
        click.echo("")
