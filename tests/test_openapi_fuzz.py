"""Property-based fuzzing of the whole HTTP API from its OpenAPI schema (schemathesis).

Every generated request must get a documented status and content type, a body that
matches the documented schema, and never a 5xx.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from urbanhub.api.app import create_app
from urbanhub.config import Settings
from urbanhub.hub.runtime import Hub
from urbanhub.ngsild.context import ContextLoader

SEED = {"id": "urn:ngsi-ld:AirQualityObserved:fuzz", "type": "AirQualityObserved",
        "pm25": {"type": "Property", "value": 3, "observedAt": "2024-01-01T00:00:00Z"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}}}


def _refuse(url: str, _timeout: float) -> object:
    raise OSError(f"network disabled in tests ({url})")


def _app() -> FastAPI:
    """A hub on a throw-away SQLite file, seeded with one entity (built at collection)."""
    path = Path(tempfile.mkdtemp(prefix="urbanhub-fuzz-")) / "hub.db"
    hub = Hub(Settings(database_url=f"sqlite:///{path}", mqtt_url=None),
              loader=ContextLoader(fetch=_refuse))
    hub.upgrade_schema()
    app = create_app(hub.settings, hub=hub)
    with TestClient(app) as client:
        client.post("/ngsi-ld/v1/entities", json=SEED)
    return app


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_api_answers_every_request_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance,
                                   content_type_conformance, response_schema_conformance])
