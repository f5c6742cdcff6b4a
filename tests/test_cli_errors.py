"""The commands that talk to a worker or a broker, when none answers: one line saying what is
wrong and what to do, exit code 1, no traceback (no broker, no worker, no ClickHouse)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.worker.ports import free_port

ROOT = Path(__file__).resolve().parents[1]


def crm360(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """The command with only ``env`` of the CRM360_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRM360_")} | env
    command = [sys.executable, "-m", "streams.cli", *args]
    return subprocess.run(command, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    "args",
    [
        ["customer", "c1"],
        ["audience", "list"],
        ["audience", "create", "buyers", "purchase_count >= 1"],
        ["audience", "change", "buyers", "--min-stay-days", "3"],
        ["audience", "delete", "buyers"],
        ["forget", "c1"],
        ["privacy", "lift", "c1"],
    ],
    ids=" ".join,
)
def test_without_a_worker(args: list[str], tmp_path: Path) -> None:
    port = free_port()
    done = crm360(args, CRM360_WEB_PORT=str(port), CRM360_DATA_DIR=str(tmp_path))
    assert done.returncode == 1
    assert done.stderr == f"crm360: no worker answers at http://127.0.0.1:{port}: start one with 'crm360 up'\n"


def test_privacy_log_without_data(tmp_path: Path) -> None:
    done = crm360(["privacy", "log"], CRM360_WEB_PORT=str(free_port()), CRM360_DATA_DIR=str(tmp_path / "none"))
    assert done.returncode == 1
    assert done.stderr == (
        f"crm360: no crm360 data at chdb://{tmp_path / 'none' / 'clickhouse'}: run 'crm360 up' first (or pass --data-dir)\n"
    )


@pytest.mark.parametrize("args", [["audiences", "--follow"], ["alerts", "--follow"]], ids=" ".join)
def test_following_without_a_broker(args: list[str]) -> None:
    done = crm360(args, CRM360_KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert done.returncode == 1
    assert done.stderr == (
        "crm360: no Kafka broker answers at 127.0.0.1:1: start the stack (crm360 up) or set CRM360_KAFKA_BOOTSTRAP\n"
    )
