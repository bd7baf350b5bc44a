"""`elsa migrate` and `elsa submit`, the deployment's one-shot commands: against a SQLite file,
a real cloud served over HTTP in a thread, an address where nothing listens, and (for the round
by round report of a run that completes) a scripted cloud."""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from typer.testing import CliRunner

from elsa.cli import app
from elsa.errors import AuthError, ConfigError, UnavailableError
from elsa.infra.migrate import head_revision, migrate_when_reachable
from elsa.infra.sql.models import Base
from elsa.runtime.config import load_config
from elsa.runtime.launcher import free_port
from elsa.runtime.submit import ADMIN_TOKEN_ENV, CLOUD_URL_ENV, CloudOperator, FinishedRound, submit_run
from elsa_cloud.main import create_app
from elsa_cloud.settings import CloudSettings

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "compose.yaml"
ADMIN_TOKEN = "test-admin-token"
#: variables the commands read, unset so that the caller's environment cannot leak in
CLEAN_ENV: dict[str, str | None] = {
    "ELSA_CLOUD_DATABASE_URL": None,
    "ELSA_CLOUD_DATABASE_SCHEMA": None,
    CLOUD_URL_ENV: None,
    ADMIN_TOKEN_ENV: None,
}


def invoke(*args: str, **env: str) -> Any:
    """Run ``elsa ARGS`` in-process with a clean ELSA environment plus ``env``."""
    return CliRunner().invoke(app, list(args), env={**CLEAN_ENV, **env})


def closed_port_url(scheme: str = "http") -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    return f"{scheme}://127.0.0.1:{free_port()}"


# --- elsa migrate --------------------------------------------------------------------------------


def _tables_and_revision(db: Path) -> tuple[set[str], str]:
    with sqlite3.connect(db) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    return tables, str(revision)


def test_migrate_brings_the_database_to_head_and_again_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "elsa.db"
    url = f"sqlite+aiosqlite:///{db}"
    first = invoke("migrate", ELSA_CLOUD_DATABASE_URL=url)
    assert first.exit_code == 0, first.output
    assert f"is at revision {head_revision()}" in first.output
    tables, revision = _tables_and_revision(db)
    assert set(Base.metadata.tables) <= tables
    assert revision == head_revision()
    again = invoke("migrate", "--database-url", url)
    assert again.exit_code == 0, again.output
    assert _tables_and_revision(db) == (tables, revision)


def test_migrate_without_a_url_says_how_to_give_one() -> None:
    result = invoke("migrate")
    assert result.exit_code == 2
    assert "ELSA_CLOUD_DATABASE_URL" in result.output


def test_migrate_rejects_an_unsupported_url_at_once(tmp_path: Path) -> None:
    result = invoke("migrate", "--database-url", "mysql://elsa@localhost/elsa", "--timeout-s", "30")
    assert result.exit_code == 2
    assert "unsupported database driver" in result.output


def test_migrate_reports_an_unreachable_database() -> None:
    url = closed_port_url("postgresql+asyncpg").replace("://", "://elsa:secret-pw@") + "/elsa"
    result = invoke("migrate", "--database-url", url, "--timeout-s", "0")
    assert result.exit_code == 3, result.output
    assert "unavailable" in result.output
    assert "secret-pw" not in result.output


def test_migrate_when_reachable_retries_until_its_deadline() -> None:
    ticks = iter(range(0, 100, 4))  # each look at the clock is 4 s later
    retries: list[UnavailableError] = []
    url = closed_port_url("postgresql+asyncpg") + "/elsa"
    with pytest.raises(UnavailableError, match="gave up after 10s"):
        migrate_when_reachable(
            url, timeout_s=10, on_retry=retries.append, sleep=lambda s: None, clock=lambda: next(ticks)
        )
    assert len(retries) == 2  # attempts at t = 4 and 8 are retried, the one at 12 gives up


# --- elsa submit against a real cloud -------------------------------------------------------------


@dataclass
class LiveCloud:
    """A cloud app served by uvicorn on 127.0.0.1 in a background thread."""

    url: str

    def runs(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/v1/runs", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code == 200, response.text
        runs: list[dict[str, Any]] = response.json()
        return runs


@contextmanager
def live_cloud(tmp_path: Path, join_wait_s: float) -> Iterator[LiveCloud]:
    """Serve a cloud (SQLite, embedded Redis) whose runs wait ``join_wait_s`` for devices."""
    settings = CloudSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'elsa.db'}",
        redis_url=None,
        adapter_dir=tmp_path / "adapters",
        admin_token=ADMIN_TOKEN,
        join_wait_s=join_wait_s,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="live-cloud", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the cloud did not start"
        time.sleep(0.05)
    try:
        yield LiveCloud(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_submit_waits_for_the_run_and_exits_1_when_it_fails(tmp_path: Path) -> None:
    # no device ever joins: the cloud fails the run after join_wait_s
    with live_cloud(tmp_path, join_wait_s=0.5) as cloud:
        result = invoke(
            "submit",
            "--config",
            str(CONFIG),
            "--wait",
            "--poll-s",
            "0.2",
            **{CLOUD_URL_ENV: cloud.url, ADMIN_TOKEN_ENV: ADMIN_TOKEN},
        )
        runs = cloud.runs()
    assert result.exit_code == 1, result.output
    assert len(runs) == 1 and runs[0]["state"] == "failed"
    assert f"created run {runs[0]['run_id']}" in result.output
    assert f"run {runs[0]['run_id']} failed" in result.output


def test_submit_attach_follows_the_active_run_instead_of_adding_one(tmp_path: Path) -> None:
    with live_cloud(tmp_path, join_wait_s=300) as cloud:
        args = ("submit", "--config", str(CONFIG), "--cloud-url", cloud.url, "--admin-token", ADMIN_TOKEN)
        created = invoke(*args)
        attached = invoke(*args, "--attach")
        added = invoke(*args)
        runs = cloud.runs()
    assert [r.exit_code for r in (created, attached, added)] == [0, 0, 0], created.output
    first, second = (r["run_id"] for r in runs)
    assert f"created run {first} (running)" in created.output
    assert f"following active run {first}" in attached.output
    assert f"created run {second}" in added.output


def test_submit_rejects_a_wrong_admin_token(tmp_path: Path) -> None:
    with live_cloud(tmp_path, join_wait_s=300) as cloud:
        result = invoke("submit", "--config", str(CONFIG), "--cloud-url", cloud.url, "--admin-token", "wrong")
        runs = cloud.runs()
    assert result.exit_code == 2
    assert "the cloud rejected the admin token (403)" in result.output
    assert runs == []


def test_submit_says_what_the_cloud_rejected_in_the_config(tmp_path: Path) -> None:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    config["name"] = "not a valid name"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with live_cloud(tmp_path, join_wait_s=300) as cloud:
        result = invoke("submit", "-c", str(path), "--cloud-url", cloud.url, "--admin-token", ADMIN_TOKEN)
    assert result.exit_code == 2
    assert "rejected POST /v1/runs (422)" in result.output and "name" in result.output


def test_submit_checks_the_config_before_calling_the_cloud(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("topology:\n  edges: 0\n", encoding="utf-8")
    result = invoke("submit", "-c", str(path), "--cloud-url", closed_port_url(), "--admin-token", "t")
    assert result.exit_code == 2
    assert "topology.edges" in result.output


def test_submit_needs_an_admin_token() -> None:
    result = invoke("submit", "--config", str(CONFIG))
    assert result.exit_code == 2
    assert ADMIN_TOKEN_ENV in result.output


def test_submit_gives_up_on_an_unreachable_cloud() -> None:
    url = closed_port_url()
    result = invoke("submit", "-c", str(CONFIG), "--cloud-url", url, "--admin-token", "t", "--timeout-s", "0")
    assert result.exit_code == 3
    assert f"cloud at {url} unreachable" in result.output


# --- following a run that completes (a scripted cloud) ----------------------------------------


@dataclass
class ScriptedCloud:
    """A cloud whose one run advances one step per status poll: running, round 1 finished with
    half the device reports, all reports, round 2 finished and the run completed."""

    devices: int
    ready_after: int = 0
    polls: int = 0
    requests: list[str] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(f"{request.method} {path}")
        if path == "/ready":
            self.ready_after -= 1
            return httpx.Response(503 if self.ready_after >= 0 else 200, json={"status": "degraded"})
        if request.headers.get("authorization") != f"Bearer {ADMIN_TOKEN}":
            return httpx.Response(401, json={"error": "unauthorized", "detail": "bad admin token"})
        if request.method == "POST":
            return httpx.Response(201, json=self._run("running"))
        if path == "/v1/runs":
            return httpx.Response(200, json=[])
        if path.endswith("/rounds"):
            return httpx.Response(200, json=self._rounds())
        if path.endswith("/metrics"):
            return httpx.Response(200, json={"rounds": self._metrics()})
        self.polls += 1
        return httpx.Response(200, json=self._run("completed" if self.polls >= 4 else "running"))

    def _run(self, state: str) -> dict[str, Any]:
        return {
            "run_id": "compose-1",
            "name": "compose",
            "state": state,
            "current_round": min(self.polls, 2),
            "cloud_rounds": 2,
            "latest_version": 2 if state == "completed" else None,
            "created_at": "2026-01-01T00:00:00Z",
            "config": {},
        }

    def _rounds(self) -> list[dict[str, Any]]:
        finished = [1] if self.polls >= 2 else []
        finished += [2] if self.polls >= 4 else []
        return [
            {
                "run_id": "compose-1",
                "round": r,
                "state": "completed",
                "started_at": "2026-01-01T00:00:00Z",
                "finished_at": "2026-01-01T00:01:00Z",
                "participants": 6,
                "version": r,
            }
            for r in finished
        ]

    def _metrics(self) -> list[dict[str, Any]]:
        reports = {1: self.devices // 2 if self.polls == 2 else self.devices, 2: 1}
        return [
            {
                "round": r["round"],
                "state": "completed",
                "reports": reports[r["round"]],
                "metrics": {"train_loss": 1.5 / r["round"], "eval_accuracy": 0.4 * r["round"]},
                "bytes": {"activations": 2_000_000, "adapters_up": 500_000},
            }
            for r in self._rounds()
        ]


def test_follow_reports_each_round_once_when_its_device_reports_are_in() -> None:
    script = ScriptedCloud(devices=4, ready_after=2)
    sleeps: list[float] = []
    lines: list[FinishedRound] = []
    with httpx.Client(base_url="http://cloud", transport=httpx.MockTransport(script.handle)) as client:
        operator = CloudOperator(client, ADMIN_TOKEN, timeout_s=60, retry_s=1.0, sleep=sleeps.append)
        run, attached = submit_run(operator, load_config(CONFIG), attach=True)
        assert sleeps == [1.0, 1.0], "two 503s from /ready are waited out"
        final = operator.follow(run.run_id, lines.append, expected_reports=4, poll_s=2.0)
    assert (run.run_id, attached, final.state, final.latest_version) == ("compose-1", False, "completed", 2)
    assert [(r.round, r.version) for r in lines] == [(1, 1), (2, 2)]
    assert lines[0].describe() == (
        "round 1/2 completed · train loss 1.500 · accuracy 0.400 · 6 participants · 2.5 MB moved · adapter v1"
    )
    # round 1 waited for its 4th report (poll 3); round 2 was reported with the run's end
    assert script.polls == 4 and sleeps[2:] == [2.0, 2.0, 2.0]


def test_submit_exits_0_when_the_run_completes(monkeypatch: pytest.MonkeyPatch) -> None:
    script = ScriptedCloud(devices=load_config(CONFIG).num_devices)
    monkeypatch.setattr(
        httpx, "Client", functools.partial(httpx.Client, transport=httpx.MockTransport(script.handle))
    )
    result = invoke("submit", "-c", str(CONFIG), "--wait", "--poll-s", "0", **{ADMIN_TOKEN_ENV: ADMIN_TOKEN})
    assert result.exit_code == 0, result.output
    rounds = [line for line in result.output.splitlines() if line.startswith("round ")]
    assert [line.split(" ")[1] for line in rounds] == ["1/2", "2/2"]
    assert "run compose-1 completed, adapter v2" in result.output
    assert "http://127.0.0.1:8000/v1/runs/compose-1/adapters/2/peft/" in result.output


def test_operator_errors_say_what_was_rejected() -> None:
    def answer(status: int, body: dict[str, str]) -> CloudOperator:
        transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
        client = httpx.Client(base_url="http://cloud", transport=transport)
        return CloudOperator(client, ADMIN_TOKEN, timeout_s=0, sleep=lambda s: None)

    with pytest.raises(AuthError, match=re.escape("rejected the admin token (403)")):
        answer(403, {"error": "forbidden", "detail": "no"}).runs()
    with pytest.raises(ConfigError, match=re.escape("config: train.cloud_rounds")):
        answer(422, {"error": "invalid_config", "detail": "config: train.cloud_rounds"}).create_run(
            load_config(CONFIG)
        )
    with pytest.raises(UnavailableError, match="HTTP 503"):
        answer(503, {"error": "unavailable", "detail": "starting"}).wait_ready()


def test_a_post_that_may_have_reached_the_cloud_is_not_repeated() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        raise httpx.ReadError("connection reset", request=request)

    client = httpx.Client(base_url="http://cloud", transport=httpx.MockTransport(handler))
    operator = CloudOperator(client, ADMIN_TOKEN, timeout_s=60, sleep=lambda s: None)
    with pytest.raises(UnavailableError, match="connection lost after sending"):
        operator.create_run(load_config(CONFIG))
    assert calls == ["POST", "POST"]  # the refused attempt was retried, the lost one is not
