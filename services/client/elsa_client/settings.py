"""Device agent settings: ``ELSA_CLIENT_*`` environment variables (nested with ``__``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from elsa.infra.service_settings import PeerSettings


class ClientSettings(PeerSettings):
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
    eval_batch_size: int = Field(32, ge=1, description="batch size of local evaluation")
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    autostart: bool = Field(True, description="join and start polling on startup")

    @property
    def device_name(self) -> str:
        """The name this device joins with."""
        return self.name or f"device-{self.partition_index:03d}"
