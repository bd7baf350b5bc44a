"""Cloud coordinator settings: ``ELSA_CLOUD_*`` environment variables (nested with ``__``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from elsa.infra.limits import RateLimits


class CloudSettings(BaseSettings):
    """Configuration of the cloud coordinator."""

    model_config = SettingsConfigDict(env_prefix="ELSA_CLOUD_", env_nested_delimiter="__", extra="ignore")

    database_url: str = Field("sqlite+aiosqlite:///runs/elsa.db", description="SQLAlchemy async URL")
    database_schema: str | None = Field(None, description="PostgreSQL schema (search_path) for ELSA's tables")
    redis_url: str | None = Field(None, description="Redis URL; None = an embedded Redis-protocol server")
    join_secret: str = Field("change-me", description="secret nodes present to join")
    admin_token: str = Field("change-me-admin", description="bearer token of operator endpoints")
    adapter_dir: Path = Field(Path("runs/adapters"), description="where global adapter versions are stored")
    migrate_on_start: bool = Field(True, description="apply Alembic migrations at startup")
    round_deadline_s: float = Field(900.0, gt=0, description="a cloud round closes with the edges present")
    join_wait_s: float = Field(120.0, ge=0, description="how long a new run waits for its devices to join")
    min_device_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="quorum: fraction of the run's devices needed to start a round and to commit it "
        "(below it the round is abandoned and retried)",
    )
    heartbeat_ttl_s: float = Field(90.0, gt=0, description="a node not heard from for this long is dead")
    max_task_wait_s: float = Field(60.0, gt=0, description="longest long-poll")
    max_body_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    report_wait_s: float = Field(
        120.0, ge=0, description="after the last round, wait this long for device reports"
    )
    max_round_attempts: int = Field(3, ge=1, description="a round abandoned this often fails the run")
    tls_certfile: str | None = Field(
        None, description="PEM certificate: serve HTTPS (read by `elsa cloud` and passed to uvicorn)"
    )
    tls_keyfile: str | None = Field(None, description="PEM private key of tls_certfile")
    rate_limit_per_s: float = Field(
        200.0,
        ge=0,
        description="sustained requests per second per caller (bearer token, else address); 0 = off",
    )
    rate_limit_burst: int = Field(400, ge=0, description="requests a caller may send at once")
    auth_failures_per_min: int = Field(
        60, ge=0, description="401/403 answers an address may get per minute before a lock-out (0 = off)"
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
