"""Security properties of a real short run (cloud + 2 edges + 4 device agents on loopback):
probes to edges are authenticated and still work, and no secret reaches any process's log."""

from __future__ import annotations

import re

import httpx
import pytest

from .conftest import FinishedRun

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

#: what ``secrets.token_urlsafe(32)`` (node and session tokens) looks like
_TOKEN = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


def test_devices_probed_every_edge_with_their_node_tokens(finished_run: FinishedRun) -> None:
    edges = {n["node_id"] for n in finished_run.operator.get("/v1/nodes") if n["role"] == "edge"}
    for url in finished_run.urls("device"):
        status = httpx.get(f"{url}/status", timeout=10).json()
        assert {link["edge_id"] for link in status["links"]} == edges, status
    for url in finished_run.urls("edge"):  # an anonymous probe is refused
        assert httpx.get(f"{url}/v1/ping", timeout=10).status_code == 401


def test_no_secret_is_logged(finished_run: FinishedRun) -> None:
    logs = sorted((finished_run.run_dir / "logs").glob("*.log"))
    assert len(logs) >= 7, logs  # redis, cloud, 2 edges, 4 devices
    secrets = {finished_run.plan.join_secret, finished_run.plan.admin_token}
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"{path.name} logs a deployment secret"
        # node and session tokens: 43 url-safe characters; sha256 digests (hex) are not tokens
        leaked = [t for t in _TOKEN.findall(text) if not re.fullmatch(r"[0-9a-f]+", t)]
        assert not leaked, f"{path.name} logs token-like strings: {leaked[:3]}"
