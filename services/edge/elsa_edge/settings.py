"""Edge server settings: ``ELSA_EDGE_*`` environment variables (nested with ``__``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from elsa.infra.limits import RateLimits


class EdgeSettings(BaseSettings):
    """Configuration of one edge server."""

    model_config = SettingsConfigDict(env_prefix="ELSA_EDGE_", env_nested_delimiter="__", extra="ignore")

    name: str = Field("edge-0", description="stable edge name (its node id derives from it)")
    cloud_url: str = Field("http://127.0.0.1:8000", description="base URL of the cloud coordinator")
    public_url: str = Field("http://127.0.0.1:8100", description="base URL devices use to reach this edge")
    join_secret: str = Field("change-me", description="deployment join secret")
    capacity: int = Field(16, ge=1, description="max devices served at once")
    max_body_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="largest accepted request body")
    poll_wait_s: float = Field(20.0, gt=0, description="long-poll wait for cloud tasks")
    edge_round_deadline_s: float = Field(
        300.0, gt=0, description="close an edge round with the devices present"
    )
    heartbeat_s: float = Field(5.0, gt=0, description="liveness signal interval")
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    autostart: bool = Field(True, description="join the cloud and poll tasks on startup")
    tls_certfile: str | None = Field(
        None, description="PEM certificate: serve HTTPS (read by `elsa edge` and passed to uvicorn)"
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

    def rate_limits(self) -> RateLimits:
        """The request limits of this service."""
        return RateLimits(self.rate_limit_per_s, self.rate_limit_burst, self.auth_failures_per_min)
