"""``elsa demo``: the service runtime on loopback (DESIGN §6).

Starts an embedded Redis-protocol server (unless a Redis URL is given), the cloud, the edges
and the device agents as separate processes, creates a run through the cloud's operator API,
follows it, and writes a report. Every child is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil

from elsa.errors import ConfigError, UnavailableError
from elsa.runtime.config import RunConfig


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """A child process and where its log goes."""

    name: str
    kind: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    url: str | None = None
    peak_rss: int = 0


@dataclass
class Cluster:
    """The processes of a loopback deployment."""

    run_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(
        self, name: str, kind: str, args: list[str], env: dict[str, str], url: str | None = None
    ) -> Child:
        """Start a child with ``env`` added to this process's environment; logs to run_dir/logs."""
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = (logs / f"{name}.log").open("wb")
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **env}
        process = subprocess.Popen(
            [sys.executable, *args],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child = Child(name, kind, process, log, url)
        self.children.append(child)
        return child

    def uvicorn(self, name: str, kind: str, app: str, port: int, env: dict[str, str]) -> Child:
        """Start one service app (factory) under uvicorn on 127.0.0.1:port."""
        args = [
            "-m",
            "uvicorn",
            app,
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        return self.start(name, kind, args, env, f"http://127.0.0.1:{port}")

    def sample_memory(self) -> None:
        """Record each child's peak RSS so far."""
        for child in self.children:
            with contextlib.suppress(psutil.Error):
                child.peak_rss = max(child.peak_rss, psutil.Process(child.process.pid).memory_info().rss)

    def check_alive(self, kinds: tuple[str, ...] = ("cloud", "redis")) -> None:
        """UnavailableError naming an essential child that exited."""
        for child in self.children:
            if child.kind in kinds and child.process.poll() is not None:
                raise UnavailableError(
                    f"{child.name} exited with code {child.process.returncode}; see {self.run_dir / 'logs' / (child.name + '.log')}"
                )

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every child (process group), then SIGKILL what is left after ``timeout_s``."""
        for child in self.children:
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            remaining = max(deadline - time.monotonic(), 0.1)
            try:
                child.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait(timeout=5)
            child.log.close()

    def peak_memory_by_kind(self) -> dict[str, dict[str, float]]:
        """Max and mean peak RSS (MB) per process kind."""
        out: dict[str, dict[str, float]] = {}
        for kind in sorted({c.kind for c in self.children}):
            peaks = [c.peak_rss / 1e6 for c in self.children if c.kind == kind]
            out[kind] = {"count": len(peaks), "max_mb": max(peaks), "mean_mb": sum(peaks) / len(peaks)}
        return out


@contextlib.contextmanager
def running_cluster(run_dir: Path) -> Iterator[Cluster]:
    """A cluster whose children are always stopped on exit (errors and Ctrl-C included)."""
    cluster = Cluster(run_dir)
    try:
        yield cluster
    finally:
        cluster.stop()


def wait_healthy(
    urls: list[str], timeout_s: float, on_wait: Callable[[int, int], None] | None = None
) -> None:
    """Wait until every ``url``/health answers 200; UnavailableError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    pending = list(urls)
    with httpx.Client(timeout=2.0) as client:
        while pending:
            still = []
            for url in pending:
                try:
                    if client.get(f"{url}/health").status_code != 200:
                        still.append(url)
                except httpx.HTTPError:
                    still.append(url)
            pending = still
            if on_wait is not None:
                on_wait(len(urls) - len(pending), len(urls))
            if pending and time.monotonic() > deadline:
                raise UnavailableError(f"services not healthy after {timeout_s:.0f}s: {pending}")
            if pending:
                time.sleep(0.5)


@dataclass(frozen=True)
class DemoPlan:
    """Ports, secrets and URLs of a loopback deployment."""

    cloud_port: int
    edge_ports: tuple[int, ...]
    device_ports: tuple[int, ...]
    join_secret: str
    admin_token: str
    database_url: str
    redis_url: str | None
    edge_capacity: int = 16

    @property
    def cloud_url(self) -> str:
        """Base URL of the cloud."""
        return f"http://127.0.0.1:{self.cloud_port}"


def plan_demo(config: RunConfig, run_dir: Path, redis_url: str | None, database_url: str | None) -> DemoPlan:
    """Free ports and fresh secrets for a demo of ``config``'s topology."""
    import secrets

    return DemoPlan(
        cloud_port=free_port(),
        edge_ports=tuple(free_port() for _ in range(config.topology.edges)),
        device_ports=tuple(free_port() for _ in range(config.num_devices)),
        join_secret=secrets.token_urlsafe(16),
        admin_token=secrets.token_urlsafe(16),
        database_url=database_url or f"sqlite+aiosqlite:///{(run_dir / 'elsa.db').resolve()}",
        redis_url=redis_url,
        edge_capacity=config.topology.devices_per_edge,
    )


def start_services(
    cluster: Cluster,
    plan: DemoPlan,
    run_dir: Path,
    overrides: Mapping[str, Mapping[str, str]] | None = None,
    *,
    with_devices: bool = True,
) -> str:
    """Start Redis (embedded unless given), cloud, edges and (unless ``with_devices`` is False)
    the device agents; returns the Redis URL.

    ``overrides`` adds environment variables per process kind ("cloud", "edge", "device").
    """
    extra = {k: dict(v) for k, v in (overrides or {}).items()}
    redis_url = plan.redis_url
    if redis_url is None:
        port = free_port()
        cluster.start("redis", "redis", ["-m", "elsa.infra.embedded_redis", "--port", str(port)], {})
        redis_url = f"redis://127.0.0.1:{port}/0"
        _wait_port(port, 30.0)
    cluster.uvicorn(
        "cloud",
        "cloud",
        "elsa_cloud.main:create_app",
        plan.cloud_port,
        {
            "ELSA_CLOUD_DATABASE_URL": plan.database_url,
            "ELSA_CLOUD_REDIS_URL": redis_url,
            "ELSA_CLOUD_JOIN_SECRET": plan.join_secret,
            "ELSA_CLOUD_ADMIN_TOKEN": plan.admin_token,
            "ELSA_CLOUD_ADAPTER_DIR": str((run_dir / "adapters").resolve()),
            **extra.get("cloud", {}),
        },
    )
    for i, port in enumerate(plan.edge_ports):
        cluster.uvicorn(
            f"edge-{i}",
            "edge",
            "elsa_edge.main:create_app",
            port,
            {
                "ELSA_EDGE_NAME": f"edge-{i}",
                "ELSA_EDGE_CLOUD_URL": plan.cloud_url,
                "ELSA_EDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
                "ELSA_EDGE_JOIN_SECRET": plan.join_secret,
                "ELSA_EDGE_CAPACITY": str(plan.edge_capacity),
                "ELSA_EDGE_TORCH_THREADS": "1",
                **extra.get("edge", {}),
            },
        )
    for i, port in enumerate(plan.device_ports if with_devices else ()):
        cluster.uvicorn(
            f"device-{i:03d}",
            "device",
            "elsa_client.main:create_app",
            port,
            {
                "ELSA_CLIENT_PARTITION_INDEX": str(i),
                "ELSA_CLIENT_CLOUD_URL": plan.cloud_url,
                "ELSA_CLIENT_JOIN_SECRET": plan.join_secret,
                "ELSA_CLIENT_TORCH_THREADS": "1",
                **extra.get("device", {}),
            },
        )
    return redis_url


def _wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise UnavailableError(f"nothing listens on port {port} after {timeout_s:.0f}s")


@dataclass
class Operator:
    """The operator's client of the cloud API."""

    url: str
    admin_token: str

    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {self.admin_token}"}, timeout=30.0
        )

    def get(self, path: str) -> Any:
        """GET a JSON document."""
        with self._client() as client:
            response = client.get(path)
        if response.status_code >= 400:
            raise UnavailableError(f"GET {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    def create_run(self, config: RunConfig) -> dict[str, Any]:
        """POST /v1/runs."""
        with self._client() as client:
            response = client.post("/v1/runs", json={"config": config.model_dump(mode="json")})
        if response.status_code >= 400:
            raise ConfigError(f"run rejected: {response.text[:500]}")
        data: dict[str, Any] = response.json()
        return data

    def download_adapter(self, run_id: str, version: int, out_dir: Path) -> Path:
        """Fetch a version's PEFT files into ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        with self._client() as client:
            for name in ("adapter_config.json", "adapter_model.safetensors"):
                response = client.get(f"/v1/runs/{run_id}/adapters/{version}/peft/{name}")
                if response.status_code >= 400:
                    raise UnavailableError(f"download {name}: {response.status_code}")
                (out_dir / name).write_bytes(response.content)
        return out_dir
