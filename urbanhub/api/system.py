"""Operational endpoints: health, readiness, metrics, and the shipped JSON-LD contexts."""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from urbanhub import __version__
from urbanhub.api.jsonld import hub_of
from urbanhub.api.problems import problem_responses
from urbanhub.model.errors import ResourceNotFound
from urbanhub.ngsild.context import SHIPPED_CONTEXTS
from urbanhub.store.dead_letters import count_dead_letters

router = APIRouter(tags=["System"], responses=problem_responses(404, 503))


@router.get("/health")
def health(request: Request) -> Response:
    """Liveness plus readiness: database reachable, broker state, ingest counters."""
    hub = hub_of(request)
    checks: dict[str, Any] = {}
    ready = True
    try:
        with hub.engine.connect() as connection:
            dead = count_dead_letters(connection)
        checks["database"] = {"status": "up", "backend": hub.store.dialect}
    except Exception as exc:  # readiness reports any database failure, it never raises
        ready = False
        dead = None
        checks["database"] = {"status": "down", "error": str(exc)}
    broker = getattr(request.app.state, "broker_status", None)
    if broker is not None:
        checks["broker"] = broker()
    body = {"status": "ok" if ready else "degraded", "version": __version__,
            "checks": checks, "ingest": hub.metrics.snapshot(), "deadLetters": dead}
    return Response(orjson.dumps(body), status_code=200 if ready else 503,
                    media_type="application/json")


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ngsi-ld/contexts/{name}", tags=["NGSI-LD"])
async def shipped_context(name: str) -> Response:
    """Serve the core and Smart Data Models contexts from the package (never fetched)."""
    files = set(SHIPPED_CONTEXTS.values())
    if name not in files:
        raise ResourceNotFound(f"No shipped context named {name}.")
    text = resources.files("urbanhub.ngsild").joinpath("contexts", name).read_bytes()
    return Response(text, media_type="application/ld+json")
