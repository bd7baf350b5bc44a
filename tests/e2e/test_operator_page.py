"""The operator page in a real headless browser (Debian's Chromium driven by Playwright) against
real services on loopback: it shows what the JSON operator API says about a finished run, rejects
a wrong token, follows an active run and says when the cloud is unreachable. Every request the
browser makes stays on loopback."""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from elsa.runtime.config import load_config
from elsa.runtime.launcher import Operator, free_port, running_cluster, wait_healthy

from .conftest import FinishedRun

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------ the page's formatting (format.js)


def _half_up(x: float) -> int:
    """Math.round: the nearest integer, halves up."""
    n = math.floor(x)
    return n + 1 if x - n >= 0.5 else n


def fixed(x: float, digits: int) -> str:
    scale = 10**digits
    return f"{_half_up(x * scale) / scale:.{digits}f}"


def percent(x: float) -> str:
    return f"{_half_up(x * 1000) / 10:.1f} %"


def _epoch_ms(iso: str) -> int:
    """Milliseconds since the epoch, as a JavaScript Date holds an ISO time (sub-ms truncated)."""
    return (datetime.fromisoformat(iso) - EPOCH) // timedelta(milliseconds=1)


def utc(iso: str | None) -> str:
    if iso is None:
        return "–"
    moment = EPOCH + timedelta(milliseconds=_epoch_ms(iso))
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def duration(start: str, end: str | None) -> str:
    if end is None:
        return "–"
    return f"{fixed((_epoch_ms(end) - _epoch_ms(start)) / 1000, 1)} s"


# ------------------------------------------------------------------------------ the browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; never a downloaded one."""
    if not CHROMIUM.is_file():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Watched:
    """A page and what it did: console errors, uncaught exceptions, requested URLs."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def assert_stayed_on_loopback(self) -> None:
        assert self.requests
        strays = [u for u in self.requests if urlsplit(u).hostname not in LOOPBACK]
        assert not strays, strays


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    """A fresh browser context (own sessionStorage) with one page under watch."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    out = Watched(page)
    page.on("console", lambda m: out.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: out.page_errors.append(str(e)))
    context.on("request", lambda r: out.requests.append(r.url))
    try:
        yield out
    finally:
        context.close()


def _rows(page: Page, table: str) -> list[list[str]]:
    """The visible text of each body cell of a table, row by row."""
    rows: list[list[str]] = page.eval_on_selector_all(
        f"#{table} tbody tr", "rows => rows.map(r => Array.from(r.cells, c => c.innerText.trim()))"
    )
    return rows


def _sign_in(page: Page, token: str) -> None:
    page.fill("#token-input", token)
    page.press("#token-input", "Enter")


def _api(url: str, token: str, path: str) -> Any:
    response = httpx.get(f"{url}{path}", headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# ---------------------------------------------------------------------------------- tests


def test_operator_page_shows_the_finished_run(
    watched: Watched, finished_run: FinishedRun, tmp_path: Path
) -> None:
    page = watched.page
    url, token, run_id = finished_run.operator.url, finished_run.operator.admin_token, finished_run.run_id

    page.goto(f"{url}/operator")
    expect(page.locator("#message")).to_contain_text("Enter the admin token")

    # a wrong token: rejected, nothing shown, not kept
    _sign_in(page, "not-the-admin-token")
    expect(page.locator("#message")).to_contain_text("token rejected (403)")
    expect(page.locator("#runs-section")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    # the browser reports the refused request itself; nothing else went wrong
    assert all("403" in text for text in watched.console_errors), watched.console_errors
    watched.console_errors.clear()

    # the admin token: the run is listed as completed
    _sign_in(page, token)
    run = _api(url, token, f"/v1/runs/{run_id}")
    link = page.locator(f'#runs a[href="#run={run_id}"]')
    expect(link).to_have_text(run_id)
    run_row = page.locator("#runs tbody tr", has=page.locator(f'a[href="#run={run_id}"]'))
    expect(run_row).to_contain_text("completed")
    assert run["state"] == "completed"
    assert run_row.locator("td").all_inner_texts() == [
        run_id,
        run["name"],
        "completed",
        f"{run['latest_version']} / {run['cloud_rounds']}",
        f"v{run['latest_version']}",
        utc(run["created_at"]),
    ]

    # select it: every section shows what the API says
    link.click()
    expect(page.locator("#run-id")).to_have_text(run_id)
    expect(page.locator("#run-state")).to_have_text("completed")
    expect(page.locator("#refresh-status")).to_contain_text("auto-refresh off")
    rounds = _api(url, token, f"/v1/runs/{run_id}/rounds")
    metrics = _api(url, token, f"/v1/runs/{run_id}/metrics")["rounds"]
    control = _api(url, token, f"/v1/runs/{run_id}/control")
    nodes = _api(url, token, "/v1/nodes")
    events = _api(url, token, f"/v1/runs/{run_id}/events")
    text = page.locator("#run-section").inner_text()
    assert run_id in page.locator("#run-section h2").inner_text()

    assert [r["state"] for r in rounds] == ["completed"]
    assert _rows(page, "rounds") == [
        [
            str(r["round"]),
            r["state"],
            f"v{r['version']}",
            str(r["participants"]),
            utc(r["started_at"]),
            utc(r["finished_at"]),
            duration(r["started_at"], r["finished_at"]),
        ]
        for r in rounds
    ]

    # accuracy: the metrics table and the curve (round 0 = the start model, then each round)
    names = [h.strip() for h in page.locator("#metrics thead th").all_inner_texts()]
    column = names.index("eval_accuracy")
    table = _rows(page, "metrics")
    for row, entry in zip(table, metrics, strict=True):
        assert row[:2] == [str(entry["round"]), str(entry["reports"])]
        assert row[column] == percent(entry["metrics"]["eval_accuracy"])
    final = percent(metrics[-1]["metrics"]["eval_accuracy"])
    assert final in text
    polyline = page.locator("#accuracy-chart polyline")
    expect(polyline).to_have_count(1)
    points = (polyline.get_attribute("points") or "").split()
    assert len(points) == 1 + len(metrics) >= 2, points
    assert all(len(p.split(",")) == 2 for p in points)
    tips = page.locator("#accuracy-chart circle title").all_text_contents()
    assert tips[0].endswith(percent(metrics[0]["metrics"]["start_accuracy"]))
    assert tips[-1].endswith(final)
    assert page.locator("#accuracy-chart .axis-label").all_text_contents() == ["cloud round", "accuracy"]
    expect(page.locator("#loss-chart polyline")).to_have_count(2)

    # the control plane: every device, its cluster, trust, edge and cut
    devices = sorted(control["trust"])
    assert len(devices) == 4
    quarantined = set(control["quarantined"])
    assert _rows(page, "devices") == [
        [
            name,
            str(control["clusters"].get(name, "–")),  # e2e.yaml turns clustering off
            fixed(control["trust"][name], 3),
            "quarantined" if name in quarantined else "trusted",
            control["assignment"][name],
            " / ".join(str(b) for b in control["split_plans"][name]),
        ]
        for name in devices
    ]
    assert page.locator("#devices tr.quarantined").count() == len(quarantined)
    by_edge: dict[str, list[str]] = {}
    for name in devices:
        by_edge.setdefault(control["assignment"][name], []).append(name)
    assert sorted(by_edge) == ["edge-0", "edge-1"]
    assert _rows(page, "edges") == [[e, str(len(d)), ", ".join(d)] for e, d in sorted(by_edge.items())]

    # bytes per round by kind, in MB
    kinds = sorted({k for entry in metrics for k in entry["bytes"]})
    assert {"activations", "gradients", "adapters_edge_to_cloud", "probe_reports"} <= set(kinds)
    byte_rows = _rows(page, "bytes")
    assert [row[0] for row in byte_rows] == [*kinds, "total"]
    for row, kind in zip(byte_rows, kinds, strict=False):
        assert row[1:] == [fixed(entry["bytes"].get(kind, 0) / 1e6, 3) for entry in metrics]

    # nodes and events
    shown_nodes = {(row[0], row[1]) for row in _rows(page, "nodes")}
    assert shown_nodes == {(n["name"], n["role"]) for n in nodes}
    assert events, "the run recorded events"
    shown_events = [(row[1], row[2]) for row in _rows(page, "events")]
    assert shown_events == [(e["kind"], str(e.get("round", "–"))) for e in reversed(events)]

    # a picture for people; the assertions above are on the DOM
    shot = tmp_path / "operator.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    width, height = _png_size(data)
    assert width == 1280 and height > 900 and len(data) > 30_000, (width, height, len(data))

    # the token lives in this tab's sessionStorage only: not in the DOM, not in any URL
    assert page.evaluate("sessionStorage.getItem('elsa.operator.token')") == token
    assert token not in page.content()
    assert not [u for u in watched.requests if token in u]
    assert not watched.console_errors, watched.console_errors
    assert not watched.page_errors, watched.page_errors
    watched.assert_stayed_on_loopback()


def test_operator_page_follows_an_active_run_and_reports_an_unreachable_cloud(
    watched: Watched, tmp_path: Path
) -> None:
    """A cloud alone: its run waits for devices (state running) while the page refreshes; then
    the cloud stops and the page says so, keeping what it last read."""
    page = watched.page
    config = load_config(ROOT / "configs" / "e2e.yaml").model_copy(update={"name": "waiting"})
    port, token = free_port(), "operator-page-admin-token"
    with running_cluster(tmp_path) as cluster:
        cloud = cluster.uvicorn(
            "cloud",
            "cloud",
            "elsa_cloud.main:create_app",
            port,
            {
                "ELSA_CLOUD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'elsa.db'}",
                "ELSA_CLOUD_ADMIN_TOKEN": token,
                "ELSA_CLOUD_JOIN_SECRET": "operator-page-join-secret",
                "ELSA_CLOUD_ADAPTER_DIR": str(tmp_path / "adapters"),
                "ELSA_CLOUD_JOIN_WAIT_S": "600",
            },
        )
        assert cloud.url is not None
        wait_healthy([cloud.url], 120)
        run_id = Operator(cloud.url, token).create_run(config)["run_id"]

        page.goto(f"{cloud.url}/operator#run={run_id}")
        _sign_in(page, token)
        expect(page.locator("#run-id")).to_have_text(run_id)
        expect(page.locator("#run-state")).to_have_text("running")
        expect(page.locator("#refresh-status")).to_contain_text("refreshing every 4 s")
        expect(page.locator("#rounds tbody")).to_contain_text("no rounds yet")
        # it keeps reading while the run is active
        for _ in range(2):
            with page.expect_request(lambda r: r.url.endswith(f"/v1/runs/{run_id}/rounds"), timeout=15_000):
                pass
        assert not watched.console_errors, watched.console_errors

        cluster.stop()
        expect(page.locator("#message")).to_contain_text("Cloud unreachable", timeout=15_000)
        expect(page.locator("#run-id")).to_have_text(run_id)
        expect(page.locator("#refresh-status")).to_contain_text("Showing data read at")

    assert not watched.page_errors, watched.page_errors
    watched.assert_stayed_on_loopback()
