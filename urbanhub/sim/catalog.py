"""The demo city's data catalog: who owns each kind of sensor data, how open it is, and why
it is collected. ``urbanhub demo`` loads it before provisioning, so every demo entity lands
in its dataset. It is the document ``urbanhub catalog load`` reads from a file, so it is
also an example of that format.

Environmental and traffic measurements are open, as cities publish them; parking spot
states and waste container levels are internal (they run services and nothing obliges
publishing them); streetlight figures are open energy data. The demo's parking sensors
report occupancy only, so no attribute needs a stricter class; a sensor that read number
plates would add ``"attributeClassifications": {"plateNumber": "personal"}``.
"""

from __future__ import annotations

from typing import Any

from shapely.ops import unary_union

from urbanhub.sim.city import (
    AIR_QUALITY,
    CITY_SLUG,
    DISTRICT_CONTEXT,
    DISTRICT_TYPE,
    NOISE,
    PARKING,
    STREETLIGHT,
    TRAFFIC,
    WASTE,
    SensorKind,
    districts,
)

#: The city departments of the demo: they own the data and run the sensors that collect it.
DEPARTMENTS = {"environment": "Environment Department", "mobility": "Mobility Department",
               "public-works": "Public Works Department", "planning": "Urban Planning"}
#: Which department runs each kind of sensor (and owns its dataset).
SENSOR_OWNERS = {AIR_QUALITY.key: "environment", NOISE.key: "environment",
                 TRAFFIC.key: "mobility", PARKING.key: "mobility",
                 WASTE.key: "public-works", STREETLIGHT.key: "public-works"}
#: The department that owns the district boundaries.
DISTRICT_OWNER = "planning"

PURPOSES = [
    {"id": "environmental-monitoring", "kind": "operations",
     "description": "Monitor air quality and noise against legal limits and warn residents."},
    {"id": "mobility-management", "kind": "operations",
     "description": "Manage traffic flows and on-street parking."},
    {"id": "city-services", "kind": "operations",
     "description": "Run waste collection and street lighting."},
    {"id": "urban-planning", "kind": "analysis",
     "description": "Plan the city's districts, networks and services."},
]


def dataset_id(name: str) -> str:
    return f"urn:urbanhub:dataset:{CITY_SLUG}-{name}"


def _sensor_dataset(name: str, kind: SensorKind, *, title: str, steward: str,
                    classification: str, theme: str, purposes: list[str], retention: str,
                    update_frequency: str, coverage: list[float]) -> dict[str, Any]:
    return {
        "@context": kind.context, "id": dataset_id(name), "title": title,
        "description": f"{kind.entity_type} readings of the city's {title.lower()} sensors.",
        "owner": SENSOR_OWNERS[kind.key], "steward": steward,
        "classification": classification,
        "licence": "CC-BY-4.0" if classification == "open" else "",
        "theme": theme, "entityTypes": [kind.entity_type], "purposes": purposes,
        "legalBasis": "public_task", "retention": retention,
        "updateFrequency": update_frequency, "spatialCoverage": coverage,
        "rules": [{"entityType": kind.entity_type,
                   "idPattern": f"urn:ngsi-ld:{kind.entity_type}:{CITY_SLUG}-.+"}],
    }


def demo_catalog() -> dict[str, Any]:
    """The catalog document of the demo city (the body of a catalog file)."""
    coverage = list(unary_union([d.polygon for d in districts()]).bounds)
    sensors = [
        _sensor_dataset("air-quality", AIR_QUALITY, title="Air quality",
                        steward="env-steward", classification="open",
                        theme="ENVI", purposes=["environmental-monitoring", "urban-planning"],
                        retention="P3653D", update_frequency="PT1H", coverage=coverage),
        _sensor_dataset("noise", NOISE, title="Noise levels",
                        steward="env-steward", classification="open", theme="ENVI",
                        purposes=["environmental-monitoring", "urban-planning"],
                        retention="P1826D", update_frequency="PT15M", coverage=coverage),
        _sensor_dataset("traffic", TRAFFIC, title="Traffic flow",
                        steward="mobility-steward", classification="open", theme="TRAN",
                        purposes=["mobility-management", "urban-planning"],
                        retention="P1826D", update_frequency="PT5M", coverage=coverage),
        _sensor_dataset("parking", PARKING, title="Parking spots",
                        steward="mobility-steward", classification="internal", theme="TRAN",
                        purposes=["mobility-management"], retention="P365D",
                        update_frequency="PT1M", coverage=coverage),
        _sensor_dataset("waste", WASTE, title="Waste containers",
                        steward="works-steward", classification="internal", theme="ENVI",
                        purposes=["city-services"], retention="P730D",
                        update_frequency="PT1H", coverage=coverage),
        _sensor_dataset("streetlights", STREETLIGHT, title="Streetlights",
                        steward="works-steward", classification="open",
                        theme="ENER", purposes=["city-services", "urban-planning"],
                        retention="P1826D", update_frequency="PT15M", coverage=coverage),
    ]
    district_dataset = {
        "@context": DISTRICT_CONTEXT, "id": dataset_id("districts"), "title": "Districts",
        "description": "District boundaries with population and land use.",
        "owner": DISTRICT_OWNER, "steward": "planning-steward", "classification": "open",
        "licence": "CC-BY-4.0", "theme": "REGI", "entityTypes": [DISTRICT_TYPE],
        "purposes": ["urban-planning"], "legalBasis": "public_task", "retention": "P3653D",
        "updateFrequency": "P1Y", "spatialCoverage": coverage,
        "rules": [{"entityType": DISTRICT_TYPE}],
    }
    return {"purposes": PURPOSES, "datasets": [*sensors, district_dataset]}
