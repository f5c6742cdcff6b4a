"""The live dashboard and the report, in a real headless Chromium (Debian's chromium and
chromedriver, driven by Selenium), against a real worker on the local broker and chDB.

Screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

from streams.analytics.dashboard import DASHBOARD_PANELS
from streams.analytics.panels import PANELS, SECTIONS
from streams.local.simulate import Simulation
from streams.local.until import until
from tests.conftest import MODEL_ENV, ROOT, publish, settle

pytestmark = pytest.mark.integration  # a real broker and worker

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts"
CHARTS = [p.key for p in DASHBOARD_PANELS if p.kind == "chart"]
TABLES = [p.key for p in DASHBOARD_PANELS if p.kind == "table"]

#: Drawn marks in a plotly chart: bars with a size, heatmap images, line paths.
MARKS_JS = """
const el = document.getElementById(arguments[0]);
if (!el || !el.querySelector('.main-svg')) return 0;
const bars = [...el.querySelectorAll('.point path, .funnellayer path')].filter(p => {
    const d = p.getAttribute('d'); return d && d !== 'M0,0Z'; }).length;
return bars + el.querySelectorAll('.hm image, path.js-line').length;
"""


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Chromium is missing: install Debian's chromium and chromium-driver (`make test` does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,2200",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


def headline(driver: webdriver.Chrome) -> dict[str, str]:
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('[data-headline]')]"
        ".map(e => [e.dataset.headline, e.dataset.value]))"
    )


def number(value: str) -> float:
    return float(value) if value not in ("", None) else 0.0


def expected_headline(worker: Any, events: list[dict[str, Any]]) -> dict[str, float]:
    """The headline figures recomputed: from the events where they are raw facts, else by plain SQL."""
    newest = max(e["ts"] for e in events)
    revenue = sum(
        e["amount"]
        for e in events
        if e["type"] == "purchase" and e.get("kind", "purchase") == "purchase" and e["ts"] > newest - 30 * 86_400
    )
    state = worker.sql(
        "SELECT count() AS customers, "
        "countIf(lifecycle_stage IN ('new', 'active', 'reactivated')) AS active_customers, "
        "countIf(lifecycle_stage = 'churned') / countIf(purchase_count > 0) AS churn_rate, "
        "countIf(churn_probability >= 0.5) AS at_risk_customers FROM customer_features FINAL"
    )[0]
    day = datetime.fromtimestamp(newest, tz=UTC).date().isoformat()
    alerts = worker.sql(f"SELECT count() AS n FROM churn_alerts FINAL WHERE toDate(as_of, 'UTC') = '{day}'")[0]["n"]
    return state | {
        "revenue_30d": round(revenue, 2),
        "alerts_today": alerts,
        "profiles_unified": 2,  # the two devices of the test's events
        "churn_rate": round(state["churn_rate"], 4),
    }


def test_dashboard_live_in_chromium_and_report_offline(
    broker: str, start_worker: Any, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    worker = start_worker(**MODEL_ENV, CRM360_DASHBOARD_REFRESH_S="1")
    browser.get(worker.url + "/dashboard")
    until(lambda: browser.execute_script("return document.body.dataset.refreshed"), "the first refresh")
    # Empty data: a friendly empty state in every panel, zeros on top, no error anywhere.
    assert browser.execute_script("return document.querySelectorAll('.panel .empty').length") == len(CHARTS) + len(
        TABLES
    )
    assert browser.execute_script("return document.querySelectorAll('.error').length") == 0
    assert headline(browser)["customers"] == "0"
    browser.save_screenshot(str(ARTIFACTS / "dashboard-empty.png"))

    audience = {"name": "buyers", "condition": "purchase_count >= 1"}
    assert worker.request("POST", "/audiences", json.dumps(audience).encode())[0] == 200
    events = list(Simulation(customers=200, days=240, seed=5).events())
    # Two devices' visits, then their logins: two profiles unified with customers.
    accounts = sorted({e["customer_id"] for e in events})[:2]
    for n, account in enumerate(accounts):
        visit = {"type": "visit", "ts": events[-1]["ts"], "channel": "web", "session_id": f"s{n}", "duration_s": 30}
        device = {"anonymous_id": f"device-{n}"}
        events.append(visit | {"event_id": f"device-visit-{n}", "identifiers": device})
        events.append(
            {
                "type": "identify",
                "event_id": f"login-{n}",
                "ts": events[-1]["ts"],
                "channel": "web",
                "customer_id": account,
            }
            | {"identifiers": device}
        )
    publish(broker, events)
    settle(worker)
    # The page refreshes itself: no reload, the customers appear.
    until(lambda: headline(browser)["customers"] == "200", "200 customers on the page")
    for key in CHARTS:
        until(partial(browser.execute_script, MARKS_JS, f"body-{key}"), f"chart {key} drawn")
    alerts = until(lambda: worker.sql("SELECT count() AS n FROM churn_alerts FINAL")[0]["n"], "churn alerts")
    until(
        lambda: (
            browser.execute_script("return document.querySelectorAll('#body-alerts tbody tr').length")
            == min(20, alerts)
        ),
        "the latest alerts on the page",
    )
    assert browser.execute_script("return document.querySelectorAll('#body-alert_rules tbody tr').length") >= 1
    empty = browser.execute_script(
        "return [...document.querySelectorAll('.panel .empty, .error')].map(e => e.closest('.panel').id)"
    )
    assert empty == []

    # The headline numbers equal the SQL (polled: aging and re-scoring may still move them for a moment).
    def matches() -> bool:
        want = expected_headline(worker, events)
        shown = headline(browser)
        return all(number(shown[k]) == pytest.approx(v, abs=0.006) for k, v in want.items())

    until(matches, f"headline {headline(browser)} == SQL {expected_headline(worker, events)}")
    browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))

    # The report: written through the worker's read-only path, opened with the network off.
    out = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "report", "--out", str(out)],
        cwd=ROOT,
        env=worker.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
    )
    browser.get(out.as_uri())
    # One full run read no section here (cause not found): first, the browser must be on the file.
    WebDriverWait(browser, 10).until(lambda b: b.current_url == out.as_uri())
    shown_sections = browser.execute_script(
        "return [...document.querySelectorAll('section[data-section]')].map(s => s.dataset.section)"
    )
    assert shown_sections == [s for s in SECTIONS if s != "Headline"]
    articles = browser.execute_script("return [...document.querySelectorAll('article.panel')].map(a => a.id)")
    assert articles == [f"panel-{k}" for k in PANELS if k != "headline"]
    assert browser.execute_script("return document.querySelectorAll('.empty').length") == 0
    for key, panel in PANELS.items():
        if panel.kind == "chart":
            assert browser.execute_script(MARKS_JS, f"chart-{key}"), f"report chart {key} not drawn"
        says = browser.execute_script(f"return document.querySelector('#panel-{key} .says')?.textContent")
        assert key == "headline" or says, f"report panel {key} has no key sentence"
    external = browser.execute_script(
        "return document.querySelectorAll('script[src], link[href], img[src], iframe').length"
    )
    assert external == 0
    assert {k: number(v) for k, v in headline(browser).items()} == pytest.approx(
        expected_headline(worker, events), abs=0.006
    )
    browser.save_screenshot(str(ARTIFACTS / "report.png"))

    # --since limits the time charts: the daily revenue sentence counts only the days from then on.
    since = datetime.fromtimestamp(max(e["ts"] for e in events), tz=UTC).date() - timedelta(days=59)
    later = tmp_path / "later.html"
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "report", "--out", str(later), "--since", since.isoformat()],
        cwd=ROOT,
        env=worker.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    days = worker.sql(f"SELECT count() AS n FROM v_revenue_daily WHERE day >= '{since}'")[0]["n"]
    assert f"over {days} trading days" in later.read_text()
    assert days < worker.sql("SELECT count() AS n FROM v_revenue_daily")[0]["n"]


def test_report_fails_in_one_line_without_data(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "CRM360_DATA_DIR": str(tmp_path / "nothing"),
        "CRM360_WEB_PORT": "1",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "report", "--out", str(tmp_path / "r.html")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        (
            f"crm360: cannot read the crm360 data: no crm360 data at chdb://{tmp_path}/nothing/clickhouse: "
            "run 'crm360 up' first (or pass --data-dir)"
        )
    ]
    assert not (tmp_path / "r.html").exists()
