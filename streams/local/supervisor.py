"""``crm360 up``: the local stack in the foreground, supervised.

The supervisor owns its children, each in its own process group (a Ctrl-C reaches the
supervisor only, which decides the order) and each killed by the kernel should the supervisor
die (:mod:`streams.worker.children`):

1. the broker's storage, then the broker (:class:`~streams.local.broker.LocalKafka`), unless a
   broker already answers at ``CRM360_KAFKA_BOOTSTRAP``;
2. the worker (``crm360 worker``), which starts its own helper processes.

While they run, a child that exits is started again (the worker's Kafka clients reconnect by
themselves), and every change of the worker's ``/health`` is printed. On SIGINT or SIGTERM the
worker stops first (it writes and commits what it processed), then the broker, then its
storage; a child that does not stop within its grace is killed, so a stop always ends.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from streams.local.broker import LocalKafka
from streams.local.stack import WorkerProcess
from streams.settings import Settings

#: How long the worker gets to write and commit what it processed before it is killed.
WORKER_GRACE_S = 30.0
#: How long the worker gets to answer /health (its event loop may be busy with a long batch or
#: an aging pass under a heavy load: a shorter wait made the health flap).
HEALTH_TIMEOUT_S = 5.0
#: The least time between two starts of the worker.
RESTART_PAUSE_S = 5.0


class Supervisor:
    """Runs ``kafka`` (None: an external broker) and the worker until asked to stop."""

    def __init__(
        self, settings: Settings, kafka: LocalKafka | None, say: Callable[[str], None], check_every_s: float = 0.5
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.say = say
        self.check_every_s = check_every_s
        self.worker = WorkerProcess.for_settings(settings, log_path=None)
        self.stopping = threading.Event()
        self.health = ""
        self.launched_at = 0.0

    def request_stop(self, signum: int, frame: FrameType | None = None) -> None:
        if self.stopping.is_set():
            self.say(
                "crm360 up: already stopping (the worker writes what it processed; it is killed after "
                f"{WORKER_GRACE_S:.0f} s)"
            )
        self.stopping.set()

    def run(self) -> int:
        """Supervise until SIGINT/SIGTERM; returns the exit code."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.request_stop)
        self.launch_worker()
        try:
            while not self.stopping.wait(self.check_every_s):
                self.check()
        finally:
            self.stop()
        return 0

    def check(self) -> None:
        """Restart what exited; print what changed in the worker's health."""
        if self.kafka:
            for event in self.kafka.restart_exited():
                self.say(f"crm360 up: {event}")
        if not self.worker.running:
            if time.monotonic() - self.launched_at >= RESTART_PAUSE_S:  # one that fails at start is not spun
                assert self.worker.process is not None
                self.say(f"crm360 up: the worker exited (code {self.worker.process.returncode}); restarting it")
                self.launch_worker()
            return
        status, answer = self.worker.health(timeout=HEALTH_TIMEOUT_S)
        if status == 0 and not self.health:
            return  # starting
        health = "healthy" if status == 200 else f"unhealthy: {answer.get('reason', status)}"
        if health != self.health:
            self.say(f"crm360 up: {health}")
            self.health = health

    def launch_worker(self) -> None:
        self.worker.launch()
        self.launched_at = time.monotonic()
        self.health = ""

    def stop(self) -> None:
        """The worker first, then the broker, then its storage; each killed after its grace."""
        started = time.monotonic()
        self.say("crm360 up: stopping the worker ...")
        self.worker.stop(signal.SIGTERM, grace_s=WORKER_GRACE_S)
        if self.kafka:
            self.say("crm360 up: stopping the local broker ...")
            self.kafka.stop()
        self.say(f"crm360 up: stopped in {time.monotonic() - started:.1f} s")
