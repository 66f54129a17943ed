"""The web dashboard in a real browser against a real kernel with real missions.

`batos serve` runs the tiny image (real ZeroMQ, real ZODB, the tiny random
transformers model), `batos dashboard --http 127.0.0.1:0` runs as its own
process, and headless Chromium from Debian's packages (driven by
playwright, `executable_path` = the system binary) opens the address the
dashboard printed. Checked: the DOM after load (the finished mission, the
counters), a live update arriving (a mission started after the page loaded
appears without a reload), the mission's timeline, a running mission's page
showing the text being written, the adapters by tier, the
audit plots (SVG images that load), a screenshot written by the test, and
requests without the token refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel import wire
from kernel.client import Client
from tests.helpers.kernel import BATOS

RECEIVE_S = 120  # longest wait for one record from a busy 2-core machine
UI_WAIT_MS = 90_000
QUESTION = "What is the capital of France?"


def run_mission(endpoint: str, text: str) -> str:
    record = wire.Mission(text=text)
    with Client(endpoint, timeout=RECEIVE_S) as client:
        final = list(client.stream(record, ref=record.id))[-1]
    assert isinstance(final, wire.Result), final
    return record.id


@pytest.fixture
def dashboard(tiny_image: Path, tmp_path: Path) -> Iterator[str]:
    """`batos dashboard` on a free loopback port; yields the address it printed."""
    proc = subprocess.Popen(
        [*BATOS, "dashboard", "--image", str(tiny_image), "--http", "127.0.0.1:0",
         "--interval", "0.5"],
        stdout=subprocess.PIPE, stderr=(tmp_path / "dashboard.log").open("w"), text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    try:
        assert url.startswith("http://127.0.0.1:") and "?token=" in url, (
            url, (tmp_path / "dashboard.log").read_text())
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def fetch(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=RECEIVE_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.slow
def test_dashboard_in_chromium(tiny_image: Path, serve: Any, dashboard: str,
                               tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is part of the set-up (make system-packages)"
    with serve(tiny_image) as served, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            # the first mission, so that no memory answers it: every pass generates
            first = _running_mission(page, dashboard, served.endpoint)
            with Client(served.endpoint, timeout=RECEIVE_S) as client:
                client.send("auditor", "audit")
            _overview(page, dashboard, first, served.endpoint, tmp_path)
            _mission(page, dashboard, first, tmp_path)
            _adapters_and_audits(page, dashboard, tmp_path)
        finally:
            browser.close()


def _overview(page: Any, url: str, first: str, endpoint: str, tmp_path: Path) -> None:
    page.goto(url)
    assert "token=" not in page.url  # the token went into a cookie, out of the address bar
    row = page.locator(f'#missions tr[data-id="{first}"]')
    assert row.get_attribute("data-state") == "COMPLETE"
    assert page.locator('#counters tr[data-counter="missions.started"]').count() == 1
    page.wait_for_function("Number(document.body.dataset.updates || 0) >= 1",
                           timeout=UI_WAIT_MS)
    page.evaluate("window.loadedOnce = true")  # gone if the page were reloaded
    second = run_mission(endpoint, "Name a primary colour.")
    page.wait_for_selector(f'#missions tr[data-id="{second}"][data-state="COMPLETE"]',
                           timeout=UI_WAIT_MS)
    assert page.evaluate("window.loadedOnce") is True  # a live update, not a reload
    started = page.locator('#counters tr[data-counter="missions.started"] td.num')
    assert int(started.text_content() or "0") >= 2
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _mission(page: Any, url: str, mission_id: str, tmp_path: Path) -> None:
    base = url.split("?")[0].rstrip("/")
    page.goto(f"{base}/missions/{mission_id}")
    passes = page.locator("#timeline tr.pass").evaluate_all(
        "rows => rows.map(r => r.dataset.pass)")
    # the synthesizer runs only when the critic's verdict is "revise" (actors/verdicts.py)
    assert {"route", "draft", "critique", "score"} <= set(passes), passes
    assert page.locator("#mission").get_attribute("data-state") == "COMPLETE"
    assert page.locator("#text-answer").count() == 1
    page.screenshot(path=str(tmp_path / "mission.png"), full_page=True)


def _running_mission(page: Any, url: str, endpoint: str) -> str:
    """A mission's page opened while it runs shows the text being written (counted
    across the page's reloads in sessionStorage), then reloads into the finished one."""
    record = wire.Mission(text=QUESTION)
    begun, outcome = threading.Event(), []

    def run() -> None:
        with Client(endpoint, timeout=RECEIVE_S) as client:
            for msg in client.stream(record, ref=record.id):
                if isinstance(msg, wire.Event) and msg.event == "state":
                    begun.set()
                outcome.append(msg)
        begun.set()

    page.goto(url)  # the token, once: a cookie from here on
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert begun.wait(RECEIVE_S)
    base = url.split("?")[0].rstrip("/")
    page.goto(f"{base}/missions/{record.id}")
    page.wait_for_selector('#mission[data-state="COMPLETE"]', timeout=UI_WAIT_MS)
    thread.join(RECEIVE_S)
    assert isinstance(outcome[-1], wire.Result)
    chunks = page.evaluate("Number(sessionStorage.getItem('batosChunks') || 0)")
    assert chunks > 0
    tokens = page.evaluate("Number(sessionStorage.getItem('batosTokens') || 0)")
    assert tokens > 0  # the live label counts the tokens the chunks carry
    return record.id


def _adapters_and_audits(page: Any, url: str, tmp_path: Path) -> None:
    base = url.split("?")[0].rstrip("/")
    page.goto(f"{base}/adapters")
    tiers = page.locator("table.tier").evaluate_all("ts => ts.map(t => t.dataset.tier)")
    assert tiers[:3] == ["hot", "warm", "cold"]
    page.goto(f"{base}/audits")
    page.wait_for_load_state("load")
    widths = page.locator("img.plot").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == 5 and all(w > 0 for w in widths), widths
    assert page.locator("#audits tbody tr").count() >= 1
    page.screenshot(path=str(tmp_path / "audits.png"), full_page=True)


@pytest.mark.slow
def test_dashboard_refuses_requests_without_the_token(
        tiny_image: Path, serve: Any, dashboard: str) -> None:
    base, token = dashboard.split("/?token=")
    with serve(tiny_image):
        assert fetch(f"{base}/") == 401
        assert fetch(f"{base}/api/overview") == 401
        assert fetch(f"{base}/events") == 401
        assert fetch(f"{base}/?token=not-{token}") == 401
        assert fetch(f"{base}/api/overview", {"Authorization": f"Bearer x{token}"}) == 401
        assert fetch(f"{base}/api/overview", {"Authorization": f"Bearer {token}"}) == 200
        # a page elsewhere that rebinds its name to 127.0.0.1 is still not let in
        assert fetch(f"{base}/api/overview", {"Authorization": f"Bearer {token}",
                                             "Host": "evil.example:80"}) == 421
    token_file = tiny_image / "dashboard.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token_file.read_text().strip() == token

