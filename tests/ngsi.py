"""Shared NGSI-LD test material: the Smart Data Models Environment context and a sensor."""

from __future__ import annotations

from typing import Any

ENV = ("https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/"
       "master/context.jsonld")
CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"
ENV_LINK = {"Link": f'<{ENV}>; rel="{CONTEXT_REL}"; type="application/ld+json"'}
LD = {"Content-Type": "application/ld+json"}


def air_quality(entity_id: str, pm25: float = 12.5, **extra: Any) -> dict[str, Any]:
    """An AirQualityObserved with pm25 (observed, with unit) and a location, as ld+json."""
    body: dict[str, Any] = {
        "id": entity_id, "type": "AirQualityObserved",
        "pm25": {"type": "Property", "value": pm25, "unitCode": "GQ",
                 "observedAt": "2024-03-01T10:00:00Z"},
        "location": {"type": "GeoProperty",
                     "value": {"type": "Point", "coordinates": [116.4, 39.9]}},
        "@context": ENV}
    body.update(extra)
    return body
