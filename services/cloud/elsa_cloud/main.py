"""The cloud coordinator app (DESIGN §1): registration, runs, rounds, aggregation. It never
runs the model."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from elsa import __version__
from elsa.infra.embedded_redis import EmbeddedRedis
from elsa.infra.limits import install_rate_limits
from elsa.infra.live import LiveStore
from elsa.infra.logs import configure_logging
from elsa.infra.metrics import install_metrics
from elsa.infra.migrate import migrate
from elsa.infra.sql import SqlStore
from elsa.infra.web import install_error_handlers, warn_placeholder_secrets
from elsa_cloud.metrics import CloudMetrics
from elsa_cloud.routers import adapters, health, nodes, operator_page, runs, tasks
from elsa_cloud.settings import CloudSettings
from elsa_cloud.state import CloudState

logger = logging.getLogger(__name__)


async def open_stores(settings: CloudSettings) -> tuple[SqlStore, LiveStore, EmbeddedRedis | None]:
    """Connect SQL (migrated) and Redis (embedded when no URL is configured)."""
    sqlite_prefix = "sqlite+aiosqlite:///"
    if settings.database_url.startswith(sqlite_prefix):
        Path(settings.database_url[len(sqlite_prefix) :]).parent.mkdir(parents=True, exist_ok=True)
    if settings.migrate_on_start:
        await migrate(settings.database_url, schema=settings.database_schema)
    store = await SqlStore.connect(settings.database_url, schema=settings.database_schema)
    if not settings.migrate_on_start:
        await store.create_all()
    embedded: EmbeddedRedis | None = None
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedRedis()
        embedded.start()
        url = embedded.url
    return store, LiveStore.from_url(url), embedded


def create_app(settings: CloudSettings | None = None) -> FastAPI:
    """Build the cloud app; settings come from ``ELSA_CLOUD_*`` when not given."""
    settings = settings or CloudSettings()
    configure_logging("cloud", settings.log_level)
    warn_placeholder_secrets("cloud", join_secret=settings.join_secret, admin_token=settings.admin_token)
    metrics = CloudMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store, live, embedded = await open_stores(settings)
        state = CloudState(store, live, metrics)
        app.state.cloud = state
        for record in await store.list_runs():
            if record.state in ("running", "paused"):
                logger.info("resuming run", extra={"run_id": record.run_id, "round": record.current_round})
                runs.start_coordinator(state, settings, record.run_id)
        try:
            yield
        finally:
            for task in state.coordinators.values():
                task.cancel()
            await asyncio.gather(*state.coordinators.values(), return_exceptions=True)
            await live.close()
            await store.close()
            if embedded is not None:
                embedded.stop()

    app = FastAPI(
        title="ELSA cloud coordinator",
        version=__version__,
        description=(
            "Registration, task distribution, round state machine, global aggregation and the operator API "
            "of an ELSA deployment. Operator endpoints need the admin bearer token; node endpoints the token "
            "issued at join."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)

    async def refresh_metrics() -> None:
        state = getattr(app.state, "cloud", None)
        if state is not None:
            await metrics.refresh(state)

    metrics.on_scrape(refresh_metrics)
    install_rate_limits(app, settings.rate_limits())
    install_metrics(app, metrics, settings.metrics_token)
    for module in (health, nodes, tasks, runs, adapters, operator_page):
        app.include_router(module.router)
    return app
