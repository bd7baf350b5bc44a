"""A short real run shared by the operations tests (metrics, operator page): cloud + 2 edges +
4 device agents + an embedded Redis-protocol server on loopback, ``configs/e2e.yaml`` with one
cloud round. The services stay up until the e2e tests end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from elsa.runtime.config import load_config
from elsa.runtime.launcher import Cluster, DemoPlan, Operator, plan_demo, running_cluster, start_services
from elsa.runtime.launcher import wait_healthy as _wait_healthy

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class FinishedRun:
    """A completed run whose services are still serving."""

    plan: DemoPlan
    cluster: Cluster
    operator: Operator
    run_id: str
    run_dir: Path

    def urls(self, kind: str) -> list[str]:
        """Base URLs of the children of one kind ("cloud", "edge", "device")."""
        return [c.url for c in self.cluster.children if c.kind == kind and c.url]


def wait_for_run(operator: Operator, cluster: Cluster, run_id: str, timeout_s: float) -> dict[str, Any]:
    """Poll the run until it ends; AssertionError with its rounds after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cluster.check_alive()
        view: dict[str, Any] = operator.get(f"/v1/runs/{run_id}")
        if view["state"] in ("completed", "failed", "stopped"):
            return view
        time.sleep(1.0)
    raise AssertionError(
        f"run {run_id} did not finish in {timeout_s}s: {operator.get(f'/v1/runs/{run_id}/rounds')}"
    )


@pytest.fixture(scope="package")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FinishedRun]:
    """One real short run (e2e.yaml, 1 cloud round), completed, services left running."""
    base = load_config(ROOT / "configs" / "e2e.yaml")
    config = base.model_copy(
        update={"name": "operations", "train": base.train.model_copy(update={"cloud_rounds": 1})}
    )
    run_dir = tmp_path_factory.mktemp("operations")
    plan = plan_demo(config, run_dir, None, None)
    with running_cluster(run_dir) as cluster:
        start_services(cluster, plan, run_dir)
        _wait_healthy([c.url for c in cluster.children if c.url], 240)
        operator = Operator(plan.cloud_url, plan.admin_token)
        run_id = operator.create_run(config)["run_id"]
        view = wait_for_run(operator, cluster, run_id, 900)
        assert view["state"] == "completed", view
        yield FinishedRun(plan, cluster, operator, run_id, run_dir)
