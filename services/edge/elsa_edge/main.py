"""The edge server app (DESIGN §1): split sessions over one shared frozen body."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI

from elsa import __version__
from elsa.infra.http import CloudClient
from elsa.infra.logs import configure_logging
from elsa.infra.web import install_error_handlers
from elsa_edge.routers import health, ping, sessions
from elsa_edge.settings import EdgeSettings
from elsa_edge.state import EdgeState
from elsa_edge.workflows.serve import EdgeWorker

logger = logging.getLogger(__name__)


def create_app(settings: EdgeSettings | None = None) -> FastAPI:
    """Build the edge app; settings come from ``ELSA_EDGE_*`` when not given."""
    settings = settings or EdgeSettings()
    configure_logging("edge", settings.log_level)
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    state = EdgeState()
    cloud = CloudClient(settings.cloud_url, timeout_s=120.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = EdgeWorker(settings, state, cloud)
        thread: threading.Thread | None = None
        if settings.autostart:
            thread = threading.Thread(target=worker.run, name="edge-worker", daemon=True)
            thread.start()
        app.state.worker = worker
        try:
            yield
        finally:
            worker.stop.set()
            if thread is not None:
                thread.join(timeout=5)
            cloud.close()

    app = FastAPI(
        title="ELSA edge server",
        version=__version__,
        description="Serves split-training sessions (body segment) and aggregates its devices' adapters.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.edge = state
    app.state.cloud = cloud
    install_error_handlers(app)
    for module in (health, ping, sessions):
        app.include_router(module.router)
    return app
