"""Subscribing to what the stream decides: :class:`AlertSubscriber` for churn alerts (with
webhook forwarding), :class:`AudienceSubscriber` for audience entries and exits and
:class:`MergeSubscriber` for identity merges (kafka-python).

Any Kafka client can read the ``churn-alerts``, ``audience-updates`` and ``identity-merges``
topics (JSON values, see ``schemas.alerts.ChurnAlert``, ``schemas.audiences.AudienceEvent``
and ``schemas.rows.IdentityMerge``); this is the small SDK for Python tools::

    from streams.sdk.subscriber import AlertSubscriber, forward_to_webhook

    with AlertSubscriber("kafka:9092", group_id="email-campaigns") as alerts:
        for alert in alerts:
            forward_to_webhook(alert, "https://crm.example.com/hooks/churn")

Kafka delivers at least once: drop repeats by ``alert_id`` (``event_id``, ``merge_id``).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Generic, Self, TypeVar

from kafka import KafkaConsumer
from pydantic import BaseModel, ValidationError

from schemas.alerts import ChurnAlert
from schemas.audiences import AudienceEvent
from schemas.rows import IdentityMerge
from schemas.topics import AUDIENCE_UPDATES, CHURN_ALERTS, IDENTITY_MERGES

log = logging.getLogger(__name__)


class WebhookError(RuntimeError):
    """The webhook did not accept an alert after every retry."""


M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Unreadable:
    """A record a subscriber passed by: where it is, and why it is not what the topic holds."""

    topic: str
    partition: int
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"skipped {self.topic} record {self.partition}@{self.offset}: {self.reason}"


def _warn(record: Unreadable) -> None:
    log.warning("%s", record)


class Subscriber(Generic[M]):
    """Iterate over one topic's records as ``M`` objects.

    With a ``group_id`` the position is committed, so a restarted subscriber continues where
    it stopped; ``from_beginning`` reads the records already published too. A record that is
    not an ``M`` (another producer's, a tombstone) is passed by: counted in :attr:`skipped`
    and told to ``on_unreadable`` (by default, logged as a warning); the iteration goes on.
    """

    topic: ClassVar[str]
    model: type[M]
    #: The consumer group when none is given (``None``: no group, nothing committed).
    default_group: ClassVar[str]

    def __init__(
        self,
        bootstrap: str,
        group_id: str | None = "",
        from_beginning: bool = False,
        idle_timeout_s: float | None = None,
        on_unreadable: Callable[[Unreadable], None] = _warn,
    ) -> None:
        self.on_unreadable = on_unreadable
        self.skipped = 0
        group = self.default_group if group_id == "" else group_id
        self.consumer = KafkaConsumer(
            self.topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest" if from_beginning else "latest",
            enable_auto_commit=group is not None,
            consumer_timeout_ms=int(idle_timeout_s * 1000) if idle_timeout_s is not None else float("inf"),
        )

    def __iter__(self) -> Iterator[M]:
        for record in self.consumer:
            try:
                item = self.model.model_validate_json(record.value)
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(map(str, first["loc"])) or "the record"
                reason = f"not a valid {self.model.__name__}: {where}: {first['msg']}"
                self.skipped += 1
                self.on_unreadable(Unreadable(record.topic, record.partition, record.offset, reason))
                continue
            yield item

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AlertSubscriber(Subscriber[ChurnAlert]):
    """Churn alerts, from ``churn-alerts``."""

    topic, model, default_group = CHURN_ALERTS, ChurnAlert, "crm360-alerts"


class AudienceSubscriber(Subscriber[AudienceEvent]):
    """Customers entering and leaving audiences, from ``audience-updates``."""

    topic, model, default_group = AUDIENCE_UPDATES, AudienceEvent, "crm360-audiences"


class MergeSubscriber(Subscriber[IdentityMerge]):
    """Profiles merged and links refused, from ``identity-merges``."""

    topic, model, default_group = IDENTITY_MERGES, IdentityMerge, "crm360-merges"


def forward_to_webhook(
    alert: ChurnAlert, url: str, retries: int = 5, backoff_s: float = 0.5, timeout_s: float = 10.0
) -> int:
    """POST the alert as JSON; retries failures and 5xx/429 answers with exponential backoff.
    Returns the HTTP status; raises :class:`WebhookError` when every attempt failed."""
    body = alert.model_dump_json().encode()
    last = ""
    for attempt in range(retries + 1):
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": alert.alert_id},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            if error.code < 500 and error.code != 429:
                raise WebhookError(f"{url} refused alert {alert.alert_id}: HTTP {error.code}") from None
            last = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError) as error:
            last = str(getattr(error, "reason", error))
        if attempt < retries:
            time.sleep(backoff_s * 2**attempt)
    raise WebhookError(f"{url} did not take alert {alert.alert_id} after {retries + 1} attempts: {last}")


def alert_line(alert: ChurnAlert) -> str:
    """One line for people watching alerts live."""
    drivers = ", ".join(f"{name} {value:+.2f}" for name, value in list(alert.drivers.items())[:3])
    previous = f"{alert.previous_probability:.2f}" if alert.previous_probability is not None else "-"
    return (
        f"{alert.as_of:%Y-%m-%d} {alert.customer_id}  churn {previous} -> {alert.churn_probability:.2f}  "
        f"{alert.value_tier}  spent {alert.monetary_total:.2f}  segment {alert.segment_description or alert.segment}"
        f"  drivers: {drivers}"
    )


def alerts_json(alert: ChurnAlert) -> str:
    return json.dumps(alert.model_dump(mode="json"))
