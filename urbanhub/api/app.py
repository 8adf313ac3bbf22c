"""FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from urbanhub import __version__
from urbanhub.api import (
    catalog,
    consent,
    identity,
    ingest,
    ngsild,
    quality,
    requests,
    retention,
    system,
    temporal,
)
from urbanhub.api.problems import install_problem_handlers, problem_responses
from urbanhub.api.security import caller_of
from urbanhub.config import Settings, get_settings
from urbanhub.hub.runtime import Hub


def _mqtt_disabled() -> dict[str, str]:
    return {"status": "disabled"}


def create_app(settings: Settings | None = None, hub: Hub | None = None) -> FastAPI:
    """Build the app; the schema is created or upgraded when it starts serving."""
    settings = settings or get_settings()
    hub = hub or Hub(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.upgrade_schema()
        adapter = hub.mqtt_adapter()
        app.state.broker_status = adapter.status if adapter else _mqtt_disabled
        if adapter is not None:
            adapter.start()  # connects in the background; HTTP serves even if the broker is down
        jobs = [job for job in (hub.disposal_schedule(), hub.compaction_schedule()) if job]
        for job in jobs:
            job.start()
        try:
            yield
        finally:
            for job in jobs:
                await run_in_threadpool(job.stop)  # a run in progress ends its step
            if adapter is not None:
                await run_in_threadpool(adapter.stop)  # commits and acknowledges what is buffered

    # Every route authenticates (caller_of runs once per request, cached for the routes that
    # take the caller), so a bad credential is a 401 wherever it is sent.
    app = FastAPI(title="Urbanhub", version=__version__, lifespan=lifespan,
                  description="Urban data platform: NGSI-LD context hub with governance "
                              "on the data path.",
                  dependencies=[Depends(caller_of)], responses=problem_responses(401))
    app.state.hub = hub
    install_problem_handlers(app)
    app.include_router(system.router)
    app.include_router(ngsild.router)
    app.include_router(temporal.router)
    app.include_router(ingest.router)
    app.include_router(identity.router)
    app.include_router(catalog.router)
    app.include_router(retention.router)
    app.include_router(quality.router)
    app.include_router(requests.router)
    app.include_router(consent.router)
    return app
