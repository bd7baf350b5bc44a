"""Settings every ELSA service has — TLS, request limits, the metrics token, the log level — and
those of the two that call peers (edge, device agent): the CA that verifies peers and the status
token. Each service's settings class adds its own fields and its ``ELSA_<TIER>_`` prefix."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from elsa.infra.limits import RateLimits


class ServiceSettings(BaseSettings):
    """Fields shared by the cloud, edge and device-agent settings."""

    tls_certfile: str | None = Field(
        None, description="PEM certificate: serve HTTPS (read by `elsa cloud|edge|client`, passed to uvicorn)"
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


class PeerSettings(ServiceSettings):
    """Fields of the services that call the cloud and edges (edge server, device agent)."""

    ca_file: str | None = Field(
        None,
        description="PEM CA bundle that verifies the cloud's and edges' HTTPS certificates (None = system store)",
    )
    status_token: str | None = Field(
        None, description="bearer token of the status endpoint (None = loopback callers only)"
    )
