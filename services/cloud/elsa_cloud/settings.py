"""Cloud coordinator settings: ``ELSA_CLOUD_*`` environment variables (nested with ``__``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from elsa.infra.service_settings import ServiceSettings


class CloudSettings(ServiceSettings):
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
    max_body_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="largest accepted request body")
    report_wait_s: float = Field(
        120.0, ge=0, description="after the last round, wait this long for device reports"
    )
    max_round_attempts: int = Field(3, ge=1, description="a round abandoned this often fails the run")
