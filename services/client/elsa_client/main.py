"""The device agent app (DESIGN §1): private data, head and tail; pulls its work from the cloud."""

from __future__ import annotations

import torch
from fastapi import FastAPI

from elsa import __version__
from elsa.infra.http import CloudClient
from elsa.infra.limits import install_rate_limits
from elsa.infra.logs import configure_logging
from elsa.infra.metrics import install_metrics
from elsa.infra.web import install_error_handlers, warn_placeholder_secrets, worker_lifespan
from elsa_client.routers import health
from elsa_client.settings import ClientSettings
from elsa_client.workflows.agent import DeviceAgent


def create_app(settings: ClientSettings | None = None) -> FastAPI:
    """Build the device agent app; settings come from ``ELSA_CLIENT_*`` when not given."""
    settings = settings or ClientSettings()
    configure_logging("client", settings.log_level)
    warn_placeholder_secrets("client", join_secret=settings.join_secret)
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    cloud = CloudClient(settings.cloud_url, timeout_s=120.0, ca_file=settings.ca_file)
    agent = DeviceAgent(settings, cloud)

    lifespan = worker_lifespan(
        agent.run, agent.stop, name="device-agent", autostart=settings.autostart, on_exit=cloud.close
    )

    app = FastAPI(
        title="ELSA device agent",
        version=__version__,
        description="Holds a device's private data, head and tail segments; trains against its edge.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.agent = agent
    install_error_handlers(app)
    install_rate_limits(app, settings.rate_limits())
    install_metrics(app, agent.metrics, settings.metrics_token)
    app.include_router(health.router)
    return app
