"""Whether a worker process works, and whether it can take events in now.

>>> import asyncio
>>> class Writer:
...     error = None
>>> class Assignor:
...     def assigned_actives(self): return {("purchases", 0)}
>>> health = Health("127.0.0.1:9092", Assignor(), Writer(), asyncio.Event())
>>> health.healthy()
(False, 'loading the newest model version')
>>> health.broker_error = "Kafka at 127.0.0.1:9092 is not answering (no answer)"
>>> health.intake_problem()
'Kafka at 127.0.0.1:9092 is not answering (no answer)'
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from processors.quality_watch import QualityWatch
from schemas.alerts import ModelQualityAlert

#: How often the worker asks the broker whether it answers, and how long it waits for it.
BROKER_PROBE_INTERVAL_S = 1.0
BROKER_PROBE_TIMEOUT_S = 3.0


class Failing(Protocol):
    error: str | None


class Assignor(Protocol):
    def assigned_actives(self) -> Any: ...


class Health:
    """What the broker probe, the agent and the row writer last saw, and the model's arrival."""

    def __init__(self, bootstrap: str, assignor: Assignor, writer: Failing, model_caught_up: asyncio.Event) -> None:
        self.bootstrap, self.assignor, self.writer, self.model_caught_up = bootstrap, assignor, writer, model_caught_up
        self.broker_error: str | None = None
        self.agent_error: str | None = None
        #: The live churn model's quality watch, in the process that trains it.
        self.quality: QualityWatch | None = None

    async def probe_broker(self, client: Any) -> None:
        """Whether the broker answers ``client``'s metadata request within
        :data:`BROKER_PROBE_TIMEOUT_S`: a broker that is down, paused or cut from its storage
        still accepts connections, and the worker's clients wait and retry by themselves."""
        try:
            await asyncio.wait_for(client.fetch_all_metadata(), BROKER_PROBE_TIMEOUT_S)
            self.broker_error = None
        except Exception as error:  # noqa: BLE001 - any failure is an outage while it lasts
            reason = "no answer" if isinstance(error, asyncio.TimeoutError) else f"{type(error).__name__}: {error}"
            self.broker_error = f"Kafka at {self.bootstrap} is not answering ({reason[:200]})"

    def intake_problem(self) -> str | None:
        """Why events cannot be taken in now (the broker or ClickHouse is away), or None."""
        if self.broker_error:
            return self.broker_error
        if self.writer.error:
            return f"ClickHouse writes failing ({self.writer.error})"
        return None

    def model_degraded(self) -> ModelQualityAlert | None:
        """The alert of the churn model's quality out of its band, while it is."""
        last = self.quality.last if self.quality is not None else None
        return last if last is not None and last.status == "degraded" else None

    def healthy(self) -> tuple[bool, str]:
        """Consuming (partitions assigned) and writing (last ClickHouse write succeeded)."""
        if self.broker_error:
            return False, self.broker_error
        if self.agent_error:
            return False, f"processing stopped: {self.agent_error}"
        if self.writer.error:
            return False, f"ClickHouse writes failing: {self.writer.error}"
        if not self.assignor.assigned_actives():
            return False, "no partitions assigned yet (joining the consumer group)"
        if not self.model_caught_up.is_set():
            return False, "loading the newest model version"
        return True, "ok"
