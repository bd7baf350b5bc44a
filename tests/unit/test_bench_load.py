"""``bench/load.py`` drives real services on loopback and counts every failed request.

Each test runs the script in a subprocess: ``--quick`` (16 split sessions on one edge, 200
polling devices on the cloud; about a minute on 2 busy cores) must see no error, and a cloud
started with another join secret (through ``--env``) must have every join counted as an error
and the script exit 1. No timing is asserted.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from elsa.runtime.study_report import parse_study_report

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.slow


def _run_load(*args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = Path(args[args.index("--out") + 1])
    done = subprocess.run(
        [sys.executable, str(BENCH / "load.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.is_file(), f"load.py wrote no result:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    record: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return done, record


def test_load_quick_has_no_errors(tmp_path: Path) -> None:
    done, r = _run_load("--quick", "--threads", "1", "--out", str(tmp_path / "load.json"))
    edge, cloud = r["scenarios"]["edge"], r["scenarios"]["cloud"]
    assert done.returncode == 0, (edge["error_messages"], cloud["error_messages"], done.stderr[-3000:])
    assert r["errors"] == edge["errors"] == cloud["errors"] == 0
    assert r["params"]["quick"] is True
    assert r["machine"]["torch_threads"] == 1
    host = socket.gethostname()
    assert len(host) < 4 or host not in json.dumps(r), "the result names the host"

    # one edge, 16 concurrent split sessions, every one opened and stepped to the end
    steps = edge["params"]["steps_per_session"]
    assert edge["clients"] == edge["sessions"] >= 16
    assert edge["kinds"]["open session"]["requests"] == edge["sessions"]
    assert edge["kinds"]["forward"]["requests"] == edge["kinds"]["backward"]["requests"] == 16 * steps
    assert edge["steps_done"] == 16 * steps
    assert edge["clients_ended"] == {"done": 16}
    assert edge["status_counts"] == {"200": edge["requests"]}
    assert edge["processes"]["edge-0"]["rss_bytes"] > 0

    # the cloud: 200 devices joined, each polled once and heartbeat, all alive at the end
    assert cloud["devices"] >= 200
    assert cloud["joined"] == cloud["kinds"]["join"]["requests"] == cloud["devices"]
    polls = sum(cloud["kinds"].get(k, {"requests": 0})["requests"] for k in ("poll → idle", "poll → task"))
    assert polls == cloud["devices"] * cloud["params"]["polls_per_node"]
    assert cloud["kinds"]["heartbeat"]["requests"] > 0
    assert cloud["devices_alive_after"] == cloud["devices"]
    assert cloud["status_counts"] == {"200": cloud["requests"]}

    for part in (edge, cloud):
        assert part["requests"] == sum(row["requests"] for row in part["kinds"].values())
        for kind, row in part["kinds"].items():
            lat = row["latency_ms"]
            assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], kind
            assert len(row["samples_latency_ms"]) == row["requests"]
    for kind in ("open session", "forward", "backward"):
        assert edge["kinds"][kind]["latency_ms"]["p50"] > 0
    table = parse_study_report(r["report"]).tables[0]
    assert [(row[0], row[1]) for row in table.rows if row[1] == "all"] == [("edge", "all"), ("cloud", "all")]
    assert "edge error" not in done.stdout and "cloud error" not in done.stdout


def test_load_counts_refused_requests_and_exits_1(tmp_path: Path) -> None:
    done, r = _run_load(
        "--scenario",
        "cloud",
        "--devices",
        "3",
        "--polls",
        "1",
        "--no-run",
        "--max-seconds",
        "20",
        "--env",
        "cloud:ELSA_CLOUD_JOIN_SECRET=not-the-one-the-devices-know",
        "--out",
        str(tmp_path / "load.json"),
    )
    assert done.returncode == 1
    assert "3 request(s) failed" in done.stderr
    cloud = r["scenarios"]["cloud"]
    assert r["errors"] == cloud["errors"] == cloud["kinds"]["join"]["errors"] == 3
    assert cloud["status_counts"] == {"401": 3}
    assert cloud["joined"] == 0 and "heartbeat" not in cloud["kinds"]
    assert all("HTTP 401" in message for message in cloud["error_messages"])
    assert r["params"]["env"] == {"cloud": {"ELSA_CLOUD_JOIN_SECRET": "not-the-one-the-devices-know"}}
