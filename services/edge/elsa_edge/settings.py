"""Edge server settings: ``ELSA_EDGE_*`` environment variables (nested with ``__``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from elsa.infra.service_settings import PeerSettings


class EdgeSettings(PeerSettings):
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
