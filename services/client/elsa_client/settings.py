"""Device agent settings: ``ELSA_CLIENT_*`` environment variables (nested with ``__``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from elsa.infra.limits import RateLimits


class ClientSettings(BaseSettings):
    """Configuration of one device agent."""

    model_config = SettingsConfigDict(env_prefix="ELSA_CLIENT_", env_nested_delimiter="__", extra="ignore")

    partition_index: int = Field(
        0, ge=0, description="which partition of the run's dataset this device holds"
    )
    name: str | None = Field(None, description="device name (default device-<partition index>)")
    cloud_url: str = Field("http://127.0.0.1:8000", description="base URL of the cloud coordinator")
    join_secret: str = Field("change-me", description="deployment join secret")
    memory_bytes: int = Field(2 * 1024**3, ge=0, description="memory budget reported to the cloud")
    poll_wait_s: float = Field(20.0, gt=0, description="long-poll wait for cloud tasks")
    probe_bytes: int = Field(256 * 1024, ge=1024, description="payload of the throughput probe")
    edge_model_wait_s: float = Field(600.0, gt=0, description="how long to wait for an edge round's model")
    session_open_wait_s: float = Field(120.0, ge=0, description="wait for the edge to prepare a round")
    heartbeat_s: float = Field(5.0, gt=0, description="liveness signal interval while busy")
    evaluate: bool = Field(True, description="evaluate the start and end models of each round locally")
    eval_batch_size: int = Field(32, ge=1)
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    autostart: bool = Field(True, description="join and start polling on startup")
    tls_certfile: str | None = Field(
        None, description="PEM certificate: serve HTTPS (read by `elsa client` and passed to uvicorn)"
    )
    tls_keyfile: str | None = Field(None, description="PEM private key of tls_certfile")
    ca_file: str | None = Field(
        None,
        description="PEM CA bundle that verifies the cloud's and edges' HTTPS certificates (None = system store)",
    )
    rate_limit_per_s: float = Field(
        200.0,
        ge=0,
        description="sustained requests per second per caller (bearer token, else address); 0 = off",
    )
    rate_limit_burst: int = Field(400, ge=0, description="requests a caller may send at once")
    auth_failures_per_min: int = Field(
        60, ge=0, description="401/403 answers an address may get per minute before a lock-out (0 = off)"
    )
    status_token: str | None = Field(
        None, description="bearer token of the status endpoint (None = loopback callers only)"
    )
    metrics_token: str | None = Field(
        None, description="bearer token Prometheus must present at /metrics (None = open, like /health)"
    )
    log_level: str = Field(
        "INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$", description="log level of ELSA loggers"
    )

    @property
    def device_name(self) -> str:
        """The name this device joins with."""
        return self.name or f"device-{self.partition_index:03d}"

    def rate_limits(self) -> RateLimits:
        """The request limits of this service."""
        return RateLimits(self.rate_limit_per_s, self.rate_limit_burst, self.auth_failures_per_min)
