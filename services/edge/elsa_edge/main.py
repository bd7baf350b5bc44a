"""The edge server app (DESIGN §1): split sessions over one shared frozen body."""

from __future__ import annotations

import logging

import torch
from fastapi import FastAPI

from elsa import __version__
from elsa.infra.http import CloudClient
from elsa.infra.limits import install_rate_limits
from elsa.infra.logs import configure_logging
from elsa.infra.metrics import install_metrics
from elsa.infra.web import install_error_handlers, warn_placeholder_secrets, worker_lifespan
from elsa_edge.routers import health, ping, sessions
from elsa_edge.settings import EdgeSettings
from elsa_edge.state import EdgeState
from elsa_edge.workflows.serve import EdgeWorker

logger = logging.getLogger(__name__)


def create_app(settings: EdgeSettings | None = None) -> FastAPI:
    """Build the edge app; settings come from ``ELSA_EDGE_*`` when not given."""
    settings = settings or EdgeSettings()
    configure_logging("edge", settings.log_level)
    warn_placeholder_secrets("edge", join_secret=settings.join_secret)
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    state = EdgeState()
    cloud = CloudClient(settings.cloud_url, timeout_s=120.0, ca_file=settings.ca_file)

    worker = EdgeWorker(settings, state, cloud)
    lifespan = worker_lifespan(
        worker.run, worker.stop, name="edge-worker", autostart=settings.autostart, on_exit=cloud.close
    )

    app = FastAPI(
        title="ELSA edge server",
        version=__version__,
        description="Serves split-training sessions (body segment) and aggregates its devices' adapters.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.edge = state
    app.state.cloud = cloud
    app.state.worker = worker
    install_error_handlers(app)

    async def refresh_metrics() -> None:
        state.metrics.sessions.set(len(state.sessions))
        state.metrics.rounds_served.set(len(state.rounds))

    state.metrics.on_scrape(refresh_metrics)
    install_rate_limits(app, settings.rate_limits())
    install_metrics(app, state.metrics, settings.metrics_token)
    for module in (health, ping, sessions):
        app.include_router(module.router)
    return app
