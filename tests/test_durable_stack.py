"""``crm360 up`` keeps everything it acknowledged, whatever stops it: a stop, a SIGKILL of its
whole process group, a crash of the broker or of its storage, a paused broker. Real
processes throughout: the supervisor, Tansu, SeaweedFS, the worker and embedded ClickHouse."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from streams.local.until import until
from streams.sdk.publisher import EventPublisher
from streams.worker.ports import free_port
from tests.conftest import MODEL_ENV, ROOT, WorkerProcess, assert_exact_purchases, publish, purchases, settle

pytestmark = pytest.mark.integration  # crm360 up: the broker, its storage and a worker


def descendants(pid: int) -> dict[int, str]:
    """Every living process under ``pid``: process id -> command name."""
    found: dict[int, str] = {}
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            children = [
                int(c)
                for task in Path(f"/proc/{parent}/task").iterdir()
                for c in (task / "children").read_text().split()
            ]
        except FileNotFoundError:
            continue
        for child in children:
            try:
                found[child] = Path(f"/proc/{child}/comm").read_text().strip()
            except FileNotFoundError:
                continue
            pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except FileNotFoundError:
        return False
    return state != "Z"


class UpStack:
    """``crm360 up`` in a process group of its own, on free ports, with a data dir that
    outlives it."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.log_path = data_dir.parent / f"up-{uuid.uuid4().hex[:6]}.log"
        self.env = (
            {k: v for k, v in os.environ.items() if not k.startswith("CRM360_")}
            | {
                "CRM360_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
                "CRM360_WEB_PORT": str(free_port()),
                "CRM360_DATA_DIR": str(data_dir),
                "CRM360_AGING_INTERVAL_S": "1.0",
                "CRM360_AGING_MIN_ADVANCE_S": "0",
                "PYTHONPATH": str(ROOT),
            }
            | env
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.worker = WorkerProcess(self.env, None)
        self.seen: dict[int, str] = {}

    @property
    def bootstrap(self) -> str:
        return self.env["CRM360_KAFKA_BOOTSTRAP"]

    def start(self, timeout: float = 120.0) -> float:
        """Start it; returns the seconds until the worker was healthy."""
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "up"],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_healthy(timeout)
        self.watch()
        return time.monotonic() - started

    def wait_healthy(self, timeout: float = 120.0) -> None:
        def healthy() -> bool:
            assert self.process and self.process.poll() is None, self.log()
            return self.worker.health()[0] == 200

        try:
            until(healthy, "crm360 up healthy", timeout)
        except TimeoutError as error:
            raise AssertionError(f"{error}: {self.log()}") from None

    def watch(self) -> dict[int, str]:
        """Remember every process under it (for the check that none is left behind)."""
        assert self.process
        self.seen |= descendants(self.process.pid)
        return self.seen

    def child(self, name: str) -> int:
        (pid,) = [p for p, comm in self.watch().items() if comm == name and alive(p)]
        return pid

    def said(self) -> list[str]:
        """What the supervisor printed."""
        return [line for line in self.log_path.read_text().splitlines() if line.startswith("crm360 up: ")]

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]

    def stop(self, sig: int = signal.SIGTERM, whole_group: bool = False, timeout: float = 60.0) -> float:
        """Stop it; returns the seconds it took. Nothing it started may be left."""
        assert self.process
        self.watch()
        started = time.monotonic()
        if whole_group:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)
        self.process.wait(timeout)
        took = time.monotonic() - started
        with contextlib.suppress(TimeoutError):  # the kernel's kill of orphans takes a moment
            until(lambda: not any(alive(pid) for pid in self.seen), "every process gone", timeout=10, every=0.1)
        left = {pid: name for pid, name in self.seen.items() if alive(pid)}
        assert not left, f"left behind: {left}"
        return took

    def kill_leftovers(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for pid in self.seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def up(tmp_path: Path) -> Any:
    started: list[UpStack] = []

    def start(data_dir: Path | None = None, **env: str) -> UpStack:
        stack = UpStack(data_dir or tmp_path / "data", **env)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.kill_leftovers()


def assert_exact(stack: UpStack, expected: dict[str, list[float]], timeout: float = 120.0) -> None:
    assert_exact_purchases(stack.worker, expected, timeout)


def applied(stack: UpStack) -> float:
    return stack.worker.metric("crm360_events_applied_total")


def wait_applied(stack: UpStack, at_least: float, timeout: float = 60.0) -> None:
    try:
        until(lambda: applied(stack) >= at_least, f"{at_least} events applied", timeout, every=0.05)
    except TimeoutError as error:
        raise AssertionError(f"{error}: {applied(stack)} applied") from None


@pytest.mark.parametrize("whole_group", [False, True], ids=["sigterm", "sigkill-group"])
def test_a_restarted_stack_ends_exact_after_any_stop(up: Any, whole_group: bool) -> None:
    stack = up(CRM360_WORKER_PROCESSES="2")
    empty_start = stack.start()
    events, expected = purchases(20_000, 300)
    publish(stack.bootstrap, events)  # acknowledged by the broker before the stop
    wait_applied(stack, 3_000)
    took = stack.stop(signal.SIGKILL if whole_group else signal.SIGTERM, whole_group=whole_group)
    assert whole_group or (stack.process and stack.process.returncode == 0 and took < 40), stack.log()
    restarted = up(
        Path(stack.env["CRM360_DATA_DIR"]),
        CRM360_WORKER_PROCESSES="2",
        CRM360_WEB_PORT=stack.env["CRM360_WEB_PORT"],
        CRM360_KAFKA_BOOTSTRAP=stack.bootstrap,
    )
    filled_start = restarted.start()
    more, expected_more = purchases(2_000, 300, first=20_000)
    publish(restarted.bootstrap, more)
    for customer, (n, total) in expected_more.items():
        expected[customer][0] += n
        expected[customer][1] += total
    assert_exact(restarted, expected)
    restarted.stop()
    print(f"start-up: empty {empty_start:.1f} s, filled {filled_start:.1f} s")


def test_the_model_and_its_labels_continue_across_a_restart(up: Any) -> None:
    from streams.local.simulate import Simulation

    events = list(Simulation(customers=200, days=240, seed=5).events())
    cut = events[0]["ts"] + 160 * 86_400
    stack = up(**MODEL_ENV)
    stack.start()
    publish(stack.bootstrap, [e for e in events if e["ts"] < cut])
    before = settle(stack.worker)
    assert before["learned"] > 100
    stack.stop()
    restarted = up(
        Path(stack.env["CRM360_DATA_DIR"]),
        **MODEL_ENV,
        CRM360_WEB_PORT=stack.env["CRM360_WEB_PORT"],
        CRM360_KAFKA_BOOTSTRAP=stack.bootstrap,
    )
    restarted.start()
    assert restarted.worker.metric("crm360_model_version") == before["version"]
    assert restarted.worker.metric("crm360_model_labels_learned") == before["learned"]
    publish(restarted.bootstrap, [e for e in events if e["ts"] >= cut])
    after = settle(restarted.worker)
    assert after["version"] > before["version"]
    assert after["learned"] == before["learned"] + after["released"]  # each label learned once
    restarted.stop()


@pytest.mark.parametrize("child", ["tansu", "weed"], ids=["broker", "storage"])
def test_a_crashed_broker_or_storage_is_restarted_and_nothing_is_lost(up: Any, child: str) -> None:
    stack = up(CRM360_WORKER_PROCESSES="2")
    stack.start()
    events, expected = purchases(12_000, 200)
    publish(stack.bootstrap, events[:6_000])
    wait_applied(stack, 1_000)
    victim = stack.child(child)
    os.kill(victim, signal.SIGKILL)
    try:
        until(lambda: replaced(stack, child, victim), f"the {child} replaced")
    except TimeoutError as error:
        raise AssertionError(f"{error}: {stack.log()}") from None
    with EventPublisher(stack.bootstrap, partitions=4) as publisher:  # waits for the broker to be back
        for event in events[6_000:]:
            publisher.publish(event)
    stack.wait_healthy()
    assert_exact(stack, expected)
    assert f"the local {'broker' if child == 'tansu' else 'storage'} exited" in stack.log_path.read_text()
    stack.stop()


def replaced(stack: UpStack, name: str, old: int) -> bool:
    try:
        return stack.child(name) != old
    except ValueError:  # none running (or the old one not reaped yet)
        return False


def post_events(stack: UpStack, events: list[dict[str, Any]]) -> tuple[int, Any, float]:
    """POST ``events`` as NDJSON: status, answer, seconds taken."""
    started = time.monotonic()
    body = "\n".join(json.dumps(e) for e in events).encode()
    status, answer = stack.worker.request("POST", "/events", body)
    return status, answer, time.monotonic() - started


def test_a_paused_broker_is_reported_and_events_get_503_until_it_is_back(up: Any) -> None:
    stack = up(CRM360_WORKER_PROCESSES="1", CRM360_PUBLISH_TIMEOUT_S="3")
    stack.start()
    events, expected = purchases(600, 50)
    assert post_events(stack, events[:200])[0] == 200
    broker = stack.child("tansu")
    os.kill(broker, signal.SIGSTOP)
    try:
        status, answer, took = post_events(stack, events[200:400])  # before the worker noticed, or after
        assert status == 503 and "send them again" in answer["error"] and took < 10, (status, answer, took)
        with contextlib.suppress(TimeoutError):  # the assertion below says what /health answers
            until(lambda: stack.worker.health()[0] != 200, "/health reporting the outage", timeout=20)
        status, answer = stack.worker.health()
        assert status == 503 and "Kafka" in answer["reason"], answer
        status, answer, took = post_events(stack, events[200:400])
        assert status == 503 and "Kafka" in answer["error"] and took < 1, (status, answer, took)
        time.sleep(2)
        assert stack.worker.health()[0] == 503
    finally:
        os.kill(broker, signal.SIGCONT)
    stack.wait_healthy(timeout=30)
    with contextlib.suppress(TimeoutError):  # the supervisor looks twice a second
        until(lambda: stack.said()[-1] == "crm360 up: healthy", "crm360 up saying healthy", timeout=10)
    said = stack.said()
    assert any(line.startswith("crm360 up: unhealthy: Kafka") for line in said), said
    assert said[-1] == "crm360 up: healthy", said
    assert post_events(stack, events[200:])[0] == 200  # what was refused, sent again, lands once
    assert_exact(stack, expected)
    stack.stop()


def test_a_data_dir_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    """Two storages on one directory would corrupt it: the second stack says who holds it."""
    from streams.local.broker import LocalKafka

    first = LocalKafka(f"127.0.0.1:{free_port()}", tmp_path / "data")
    first.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM360_")} | {
            "CRM360_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
            "PYTHONPATH": str(ROOT),
        }
        done = subprocess.run(
            [sys.executable, "-m", "streams.cli", "up", "--data-dir", str(tmp_path / "data")],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        first.stop()
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "is in use by crm360 (process" in done.stderr and "--data-dir" in done.stderr


def test_the_storage_leaves_no_file_in_tmp_after_a_stop_or_a_crash(tmp_path: Path) -> None:
    """SeaweedFS puts Unix sockets and log files in /tmp and removes the sockets only when it
    exits on its own: every start of the stack (every test) left about ten files there for good."""
    from streams.local.storage import LocalStorage

    def seaweed_files() -> set[str]:
        return {p.name for p in Path("/tmp").iterdir() if p.name.startswith(("seaweedfs-", "weed."))}

    before = seaweed_files()
    storage = LocalStorage(tmp_path / "data", log_path=tmp_path / "storage.log")
    storage.start()
    try:
        until(lambda: len(seaweed_files() - before) >= 5, "the storage's sockets", timeout=30)
        storage.process.kill()  # type: ignore[union-attr]
        storage.process.wait(10)  # type: ignore[union-attr]
        storage.start()  # as the supervisor does after a crash
    finally:
        storage.stop()
    assert seaweed_files() - before == set()
